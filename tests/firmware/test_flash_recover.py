"""A power cut inside the flasher's commit or rollback, at every step: the board's next boot
(firmware/main.py on MicroPython's unix port, under picogate.simboard) must end in one whole
version, its files matching its manifest, and run it (the hello reports that manifest's hash).

The state a cut leaves is made by running the real board script (`commit_script(last=k)`, i.e. its
first k steps) on `micropython` in the board directory; two versions A (running) and B (staged in
pg_new/) differ in main.py, in every package file's content and in one file each only has.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from picogate.flash import _deploy
from picogate.flash._build import Firmware, firmware_hash
from picogate.simboard import SimBoard
from picogate.simboard._board import _find_micropython

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent.parent
FIRMWARE = REPO / "firmware"
COMMIT_STEPS = len(_deploy.commit_steps())
ROLLBACK_STEPS = len(_deploy.rollback_steps())
JOURNAL_AT = 4  # steps up to and including writing pg_commit (commit and rollback alike)
assert _deploy.commit_steps()[JOURNAL_AT - 1].startswith("_put('pg_commit'")
assert _deploy.rollback_steps()[JOURNAL_AT - 1].startswith("_put('pg_commit'")
# steps up to and including the rename that puts the previous version's main.py in place
ROLLBACK_MAIN_AT = 1 + next(
    i for i, s in enumerate(_deploy.rollback_steps()) if s.startswith("_mv('pg_old/main.py'")
)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _make_version(
    root: Path, tag: str, *, manifest: bool = True, main: Callable[[str], str] = lambda s: s
) -> str:
    """Version `tag` of the firmware in `root` (main.py, picogate_fw/ as source, pg_fw.json).
    Returns its hash ("dev" without manifest)."""
    root.mkdir(parents=True)
    pkg = root / "picogate_fw"
    shutil.copytree(FIRMWARE / "picogate_fw", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = pkg / "__init__.py"
    init.write_text(init.read_text().replace('VERSION = "', f'VERSION = "{tag}-'))
    for module in pkg.glob("*.py"):
        module.write_text(module.read_text() + f"\n_BUILD = {tag!r}\n")
    (pkg / f"only_{tag}.py").write_text(f"TAG = {tag!r}\n")
    (root / "main.py").write_text(main((FIRMWARE / "main.py").read_text()) + f"\n# version {tag}\n")
    files = {
        p.relative_to(root).as_posix(): p.read_bytes() for p in [root / "main.py", *sorted(pkg.rglob("*.py"))]
    }
    hashes = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    fw = Firmware(version=tag, mpy=6, files=files, hashes=hashes, hash=firmware_hash(hashes))
    if not manifest:
        return "dev"
    (root / "pg_fw.json").write_bytes(fw.manifest())
    return fw.hash


def _no_recovery(main_py: str) -> str:
    """main.py as it was before boot recovery (a board flashed with an older picogate)."""
    out = main_py.replace("if not held and not _recover():", "if False:")
    assert out != main_py
    return out


def version_of(d: Path) -> str:
    """The hash of the one whole version in `d` (main.py, picogate_fw/, pg_fw.json), "dev" without
    manifest; fails when the files are not exactly those of the manifest."""
    files = {"main.py": _sha(d / "main.py")} if (d / "main.py").exists() else {}
    files.update(
        {p.relative_to(d).as_posix(): _sha(p) for p in (d / "picogate_fw").rglob("*") if p.is_file()}
    )
    assert "main.py" in files, f"{d}: no main.py"
    assert "picogate_fw/app.py" in files, f"{d}: no picogate_fw"
    if not (d / "pg_fw.json").exists():
        tags = {n for n in files if n.startswith("picogate_fw/only_")}
        assert len(tags) == 1, f"{d}: files of two versions: {tags}"
        return "dev"
    man = json.loads((d / "pg_fw.json").read_text())
    assert files == man["files"], f"{d}: the files are not the manifest's ({set(files) ^ set(man['files'])})"
    assert firmware_hash(files) == man["hash"]
    return str(man["hash"])


def run_on_board(d: Path, script: str) -> None:
    path = d.parent / "script.py"
    path.write_text(script)
    proc = subprocess.run([_find_micropython(), str(path)], cwd=d, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def boot(d: Path, *, wait: bytes = b"@0 hello ") -> tuple[bytes, dict[str, object] | None]:
    """Power the board up once: main.py runs (recovery, then the application). Returns the output
    and the application's hello, or None when `wait` is not the hello."""
    b = SimBoard(d, env={"PICOGATE_BOOT_WINDOW_MS": "0"}).start()
    try:
        out = b.wait_for_output(wait, timeout=20)
    finally:
        b.stop()
    m = re.search(rb"@0 hello (\{.*?\}) [0-9a-f]{8}\n", out)
    return out, (json.loads(m.group(1)) if m else None)


def assert_runs(d: Path, want: str, out: bytes, hello: dict[str, object] | None) -> None:
    assert not (d / _deploy.JOURNAL).exists(), out
    assert version_of(d) == want, out
    assert hello is not None, out
    assert hello["hash"] == want, out  # what the flasher verifies after a flash


class Versions(dict[str, tuple[Path, str]]):
    """tag → (folder, hash), each made on first use: a (running), b (staged), adev (a without
    manifest), a0 (a with a main.py before recovery)."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def __missing__(self, tag: str) -> tuple[Path, str]:
        kw = {"a0": {"main": _no_recovery}, "adev": {"manifest": False}}.get(tag, {})
        self[tag] = (self.base / tag, _make_version(self.base / tag, tag, **kw))  # type: ignore[arg-type]
        return self[tag]


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    return Versions(tmp_path_factory.mktemp("versions"))


def _board(tmp_path: Path, running: Path, staged: Path | None = None, old: Path | None = None) -> Path:
    d = tmp_path / "board"
    shutil.copytree(running, d)
    for folder, src in (("pg_new", staged), ("pg_old", old)):
        if src is not None:
            shutil.copytree(src, d / folder)
    return d


@pytest.mark.parametrize("running", ["a", "a0"], ids=["main_recovers", "main_before_recovery"])
@pytest.mark.parametrize("cut", range(COMMIT_STEPS + 1))
def test_power_cut_in_the_commit(
    tmp_path: Path, versions: dict[str, tuple[Path, str]], cut: int, running: str
) -> None:
    """Before pg_commit is written the running version A stays; from then on the board finishes the
    commit (B), with A kept in pg_old/ for a rollback. A's main.py needs no recovery of its own:
    the new main.py is the first thing renamed into place."""
    a_dir, a = versions[running]
    b_dir, b = versions["b"]
    d = _board(tmp_path, a_dir, b_dir, old=versions["adev"][0])
    run_on_board(d, _deploy.commit_script(last=cut))
    if running == "a0" and cut in (JOURNAL_AT, JOURNAL_AT + 1):  # old main.py still there: A, journal left
        out, hello = boot(d)
        assert version_of(d) == a and hello is not None and hello["hash"] == a
        return
    out, hello = boot(d)
    want = a if cut < JOURNAL_AT else b
    assert_runs(d, want, out, hello)
    if JOURNAL_AT <= cut < COMMIT_STEPS:
        assert b"firmware commit interrupted by a reset was finished" in out
    if cut >= JOURNAL_AT:
        assert not (d / "pg_new").exists()
        assert version_of(d / "pg_old") == a  # `picogate flash --rollback` finds A
    elif cut == 0:
        assert version_of(d / "pg_new") == b  # untouched: the next flash commits it


@pytest.mark.parametrize("damage", ["missing", "truncated"])
@pytest.mark.parametrize("cut", range(JOURNAL_AT, COMMIT_STEPS))
def test_commit_that_cannot_complete_is_undone(
    tmp_path: Path, versions: dict[str, tuple[Path, str]], cut: int, damage: str
) -> None:
    """A file of B missing or cut short (wherever it is at that point): B is not whole (its manifest
    says so), the board puts A back."""
    a_dir, a = versions["a"]
    b_dir, _ = versions["b"]
    d = _board(tmp_path, a_dir, b_dir)
    run_on_board(d, _deploy.commit_script(last=cut))
    name = "only_b.py" if damage == "missing" else "app.py"
    staged = d / "pg_new" / "picogate_fw" / name
    victim = staged if staged.exists() else d / "picogate_fw" / name
    if damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:100])
    out, hello = boot(d)
    assert b"firmware commit interrupted by a reset was undone" in out
    assert_runs(d, a, out, hello)


@pytest.mark.parametrize(
    "old", ["a", "adev", "a0"], ids=["with_manifest", "dev_install", "main_before_recovery"]
)
@pytest.mark.parametrize("cut", range(ROLLBACK_STEPS + 1))
def test_power_cut_in_the_rollback(
    tmp_path: Path, versions: dict[str, tuple[Path, str]], cut: int, old: str
) -> None:
    """B runs, A in pg_old/: before pg_commit B stays (A still in pg_old/); from then on the board
    finishes the rollback to A, B kept in pg_old/ (a second rollback undoes the first). A's main.py
    is renamed in last: one from before boot recovery then finds A whole, only the tidying undone."""
    a_dir, a = versions[old]
    b_dir, b = versions["b"]
    d = _board(tmp_path, b_dir, old=a_dir)
    run_on_board(d, _deploy.rollback_script(last=cut))
    out, hello = boot(d)
    if old == "a0" and ROLLBACK_MAIN_AT <= cut < ROLLBACK_STEPS:
        assert version_of(d) == a and hello is not None and hello["hash"] == a, out
        return
    want, kept = (b, a) if cut < JOURNAL_AT else (a, b)
    assert_runs(d, want, out, hello)
    if JOURNAL_AT <= cut < ROLLBACK_STEPS:
        assert b"firmware rollback interrupted by a reset was finished" in out
    assert version_of(d / "pg_old") == kept
    assert not (d / "pg_new").exists() or cut < JOURNAL_AT


def test_recovery_runs_before_maintenance_mode(tmp_path: Path, versions: dict[str, tuple[Path, str]]) -> None:
    """The flasher, getting in through `maint`, finds a whole version."""
    d = _board(tmp_path, versions["a"][0], versions["b"][0])
    run_on_board(d, _deploy.commit_script(last=JOURNAL_AT + 3))
    (d / "pg_maint").write_text("")
    out, _ = boot(d, wait=b">>> ")
    assert b"was finished" in out
    assert b"maintenance mode (pg_maint)" in out
    assert version_of(d) == versions["b"][1]
    assert not (d / "pg_maint").exists()


def test_a_failed_recovery_stops_at_the_repl(tmp_path: Path, versions: dict[str, tuple[Path, str]]) -> None:
    """A journal that makes no sense: nothing is moved, the board stops at its REPL (reachable for
    the next flash), says why and keeps it in pg_crash.txt."""
    d = _board(tmp_path, versions["a"][0], versions["b"][0])
    (d / _deploy.JOURNAL).write_text("garbage")
    out, _ = boot(d, wait=b">>> ")
    assert b"recovery of an interrupted firmware commit failed" in out
    assert b"@0 hello" not in out
    assert (
        (d / "pg_crash.txt")
        .read_text()
        .startswith("boot 0: recovery of an interrupted firmware commit failed")
    )
    assert version_of(d) == versions["a"][1]
    assert version_of(d / "pg_new") == versions["b"][1]
