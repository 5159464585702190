"""Looking up the system for `picogate service install`, and carrying out (or showing) its plan."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TextIO

from picogate.install._plan import InstallPlan


def picogate_executable() -> str:
    """The `picogate` command of this installation (the venv's, when run from one)."""
    beside = Path(sys.executable).parent / "picogate"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("picogate")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m picogate"


def existing_groups() -> set[str]:
    return {g.gr_name for g in grp.getgrall()}


def groups_of(user: str) -> set[str] | None:
    """The groups of `user`, or None when there is no such user."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    with contextlib.suppress(KeyError):
        groups.add(grp.getgrgid(entry.pw_gid).gr_name)
    return groups


def hostname() -> str:
    return socket.gethostname()


def under(root: Path, path: PurePosixPath) -> Path:
    """`path` inside `root` (`/` for the running system)."""
    return root / path.relative_to("/")


def show(plan: InstallPlan, root: Path, out: TextIO) -> None:
    """What `apply` would do, and each file's whole content (`--dry-run`)."""
    for d in plan.directories:
        out.write(f"directory {under(root, d.path)} (mode {d.mode:o})\n")
    for f in plan.files:
        target = under(root, f.path)
        if not f.replace and target.exists():
            out.write(f"keep {target}: it exists (never overwritten)\n")
            continue
        verb = "replace" if target.exists() else "write"
        out.write(f"{verb} {target} (mode {f.mode:o}):\n")
        for line in f.content.splitlines():
            out.write(f"    {line}\n")
    for c in plan.commands:
        out.write(f"run: {' '.join(c.argv)}    # {c.why}\n")


def apply(
    plan: InstallPlan,
    root: Path,
    out: TextIO,
    *,
    run: Callable[[tuple[str, ...]], subprocess.CompletedProcess[str]] | None = None,
) -> int:
    """Create the directories, write the files (atomically; a configuration that exists is kept),
    then run the commands, unless `root` is not `/` (an image being built: the commands are
    listed for its first boot).  0 when everything worked, 1 otherwise (each failure said)."""
    status = 0
    for d in plan.directories:
        path = under(root, d.path)
        if not path.is_dir():
            path.mkdir(parents=True, mode=d.mode)
            out.write(f"created {path}\n")
    for f in plan.files:
        path = under(root, f.path)
        if path.exists():
            if not f.replace:
                out.write(f"kept {path} (it exists; never overwritten)\n")
                continue
            if path.read_text(encoding="utf-8") == f.content:
                out.write(f"unchanged {path}\n")
                continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.picogate-tmp")
        tmp.write_text(f.content, encoding="utf-8")
        tmp.chmod(f.mode)
        os.replace(tmp, path)
        out.write(f"wrote {path}\n")
    if root != Path("/"):
        out.write(f"not run (installing into {root}; run them on the system itself):\n")
        for c in plan.commands:
            out.write(f"  {' '.join(c.argv)}\n")
        return status
    runner = run or _run
    for c in plan.commands:
        try:
            done = runner(c.argv)
        except FileNotFoundError:
            out.write(f"failed: {' '.join(c.argv)}: {c.argv[0]} is not installed here\n")
            status = 1
            continue
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            out.write(f"failed: {' '.join(c.argv)} (exit {done.returncode}): {detail}\n")
            status = 1
        else:
            out.write(f"ran: {' '.join(c.argv)}    # {c.why}\n")
    return status


def _run(argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
