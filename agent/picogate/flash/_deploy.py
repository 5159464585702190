"""What to change on a board, and the board-side scripts that do it (run over the raw REPL).

Layout during and after a flash (board filesystem root):

    pg_new/            the next version being assembled: main.py, picogate_fw/, pg_fw.json
    main.py, picogate_fw/, pg_fw.json      the running version
    pg_old/            the previous version, kept for rollback (`picogate flash --rollback`)
    pg_commit          present only while a commit or rollback is under way: "<source folder> <0|1>"

Only files whose sha256 differs from both the running and the half-assembled version are sent
over USB; the others are copied on the board. An interrupted upload leaves the running version
untouched (the board boots its last good firmware) and pg_new/ half full: the next flash resumes it.

The commit (and the rollback, the same swap with pg_old/ as the source) is journaled: once the
source is checked complete, `pg_commit` is written (under a temporary name, renamed), then one
rename or copy per step, in an order firmware/main.py replays at boot (`_recover`):

    1. main.py is copied into the save folder, then the new one renamed over it (never absent)
    2. pg_fw.json moves into the save folder (no manifest: a half-installed version reports "dev")
    3. picogate_fw/ moves into the save folder, the new one into place
    4. the new pg_fw.json moves into place; the source folder goes, pg_boots is 0, pg_commit goes

(the rollback renames main.py last instead: the previous version's may be one without recovery).
A power cut anywhere in there leaves `pg_commit`; at the next boot main.py (a commit's new one from
step 1 on) finishes the swap when the source still holds the rest of a complete version (every file
its manifest lists, with that sha256, in the source or already moved), and otherwise puts the
saved version back. Either way the board boots one whole version with its own manifest, and the
next flash finds it consistent. A cut before `pg_commit` exists changes nothing that runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from picogate.flash._build import MANIFEST, PACKAGE, Firmware

__all__ = ["INFO", "Plan", "board_name", "commit_script", "make_plan", "rollback_script", "stage_script"]

NEW = "pg_new"
OLD = "pg_old"
JOURNAL = "pg_commit"  # firmware/main.py reads it at boot: keep the two in step

# One round trip: what the board is and what it holds (hashes computed on the board).
INFO = """
import sys, os, json, binascii
try:
    from hashlib import sha256 as _H
except ImportError:
    _H = None
def _h(p):
    h = _H()
    b = bytearray(512)
    m = memoryview(b)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
def _walk(d, out):
    try:
        it = list(os.ilistdir(d))
    except OSError:
        return
    for e in it:
        if e[0] in ('.', '..'):
            continue
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _walk(p, out)
        else:
            out[p] = _h(p)
def _rd(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
live = {}
if _rd('main.py') is not None:
    live['main.py'] = _h('main.py')
_walk('picogate_fw', live)
st = {}
_walk('pg_new', st)
uid = None
try:
    import machine
    uid = binascii.hexlify(machine.unique_id()).decode().upper()
except Exception:
    pass
print(json.dumps({'live': live, 'staged': st, 'manifest': _rd('pg_fw.json'), 'id': _rd('pg_id.json'),
    'old': _rd('pg_old/pg_fw.json'), 'mpy': getattr(sys.implementation, '_mpy', 0),
    'mp': '.'.join(str(x) for x in sys.implementation.version[:3]),
    'machine': getattr(sys.implementation, '_machine', ''), 'platform': sys.platform,
    'board_env': os.getenv('PICOGATE_BOARD') if hasattr(os, 'getenv') else None, 'uid': uid,
    'hashlib': _H is not None}))
"""

_HELPERS = """
import os
def _rm(p):
    try:
        st = os.stat(p)
    except OSError:
        return
    if st[0] & 0x4000:
        for e in list(os.ilistdir(p)):
            if e[0] not in ('.', '..'):
                _rm(p + '/' + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
def _mk(p):
    try:
        os.mkdir(p)
    except OSError:
        pass
def _mv(a, b):
    try:
        os.rename(a, b)
    except OSError:
        _rm(b)
        os.rename(a, b)
def _ex(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
def _put(p, t):
    with open(p + '.tmp', 'w') as f:
        f.write(t)
    _mv(p + '.tmp', p)
def _cp(a, b):
    buf = bytearray(512)
    m = memoryview(buf)
    with open(a, 'rb') as f:
        with open(b, 'wb') as g:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                g.write(m[:n])
"""


def board_name(info: dict[str, Any]) -> str:
    """pico / pico_w / pico2 / pico2_w (from sys.implementation._machine), or the simulated one's."""
    if info.get("platform") == "rp2":
        m = str(info.get("machine", ""))
        return ("pico2" if "RP2350" in m else "pico") + ("_w" if " W" in m else "")
    return str(info.get("board_env") or info.get("platform") or "unknown")


def manifest_version(info: dict[str, Any]) -> str | None:
    try:
        doc = json.loads(info.get("manifest") or "")
    except ValueError:
        return None
    v = doc.get("version") if isinstance(doc, dict) else None
    return v if isinstance(v, str) else None


def manifest_hash(info: dict[str, Any]) -> str | None:
    text = info.get("manifest")
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    h = doc.get("hash") if isinstance(doc, dict) else None
    return h if isinstance(h, str) else None


@dataclass
class Plan:
    """What a flash does to one board."""

    upload: list[str] = field(default_factory=list)  # sent over USB into pg_new/
    copy: list[str] = field(default_factory=list)  # copied on the board from the running version
    keep: list[str] = field(default_factory=list)  # already right in pg_new/ (an interrupted flash)
    remove: list[str] = field(default_factory=list)  # stale files in pg_new/
    dirs: list[str] = field(default_factory=list)
    up_to_date: bool = False
    clean_staging: bool = False


def make_plan(fw: Firmware, info: dict[str, Any]) -> Plan:
    live: dict[str, str] = info.get("live") or {}
    staged_raw: dict[str, str] = info.get("staged") or {}
    staged = {k[len(NEW) + 1 :]: v for k, v in staged_raw.items() if k.startswith(NEW + "/")}
    plan = Plan()
    if live == fw.hashes and manifest_hash(info) == fw.hash:
        plan.up_to_date = True
        plan.clean_staging = bool(staged_raw)
        return plan
    dirs = {NEW}
    for path, want in sorted(fw.hashes.items()):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add(NEW + "/" + "/".join(parts[:i]))
        if staged.get(path) == want:
            plan.keep.append(path)
        elif live.get(path) == want:
            plan.copy.append(path)
        else:
            plan.upload.append(path)
    plan.remove = sorted(p for p in staged if p not in fw.hashes)
    plan.dirs = sorted(dirs, key=lambda d: (d.count("/"), d))
    return plan


def stage_script(plan: Plan) -> str:
    """Make pg_new/'s folders, copy the unchanged files into it and remove stale ones."""
    lines = [_HELPERS]
    lines += [f"_rm({NEW + '/' + p!r})" for p in plan.remove]
    lines += [f"_mk({d!r})" for d in plan.dirs]
    lines += [f"_cp({p!r}, {NEW + '/' + p!r})" for p in plan.copy]
    return "\n".join(lines) + "\n"


def _swap_steps(src: str, save: str) -> list[str]:
    """Make src/ the running version and move the running one into save/: one board statement per
    step, in the order firmware/main.py's `_recover` replays after a power cut. main.py is copied,
    then replaced by one rename, so that there always is one."""
    m, p, f = "main.py", PACKAGE, MANIFEST
    main = [f"if _ex({m!r}): _cp({m!r}, {save + '/' + m!r})", f"_mv({src + '/' + m!r}, {m!r})"]
    rest = [
        f"if _ex({f!r}): os.rename({f!r}, {save + '/' + f!r})",
        f"if _ex({p!r}): os.rename({p!r}, {save + '/' + p!r})",
        f"os.rename({src + '/' + p!r}, {p!r})",
        f"if _ex({src + '/' + f!r}): os.rename({src + '/' + f!r}, {f!r})",
    ]
    # the new main.py first: it finishes the rest at boot; a rollback's last: the previous
    # version's main.py may be one from before boot recovery existed
    return main + rest if src == NEW else rest + main


_DONE = ["with open('pg_boots', 'w') as _f:\n    _f.write('0')", f"os.remove({JOURNAL!r})"]


def _script(steps: list[str], last: int | None, done: str) -> str:
    run = steps if last is None else steps[:last]
    tail = [f"print({done!r})"] if last is None else []
    return _HELPERS + "\n".join(run + tail) + "\n"


def commit_steps() -> list[str]:
    """The commit, one step (a power cut point) per item: pg_new/ becomes the running version, the
    running one pg_old/. Nothing changes before pg_new/ is checked complete and the journal written."""
    need = " and ".join(f"_ex({NEW + '/' + n!r})" for n in ("main.py", PACKAGE, MANIFEST))
    return [
        f"if not ({need}): raise OSError('pg_new/ is incomplete: nothing committed')",
        f"_rm({OLD!r})",
        f"_mk({OLD!r})",
        f"_put({JOURNAL!r}, {NEW + ' 1'!r})",
        *_swap_steps(NEW, OLD),
        f"_rm({NEW!r})",
        *_DONE,
    ]


def commit_script(last: int | None = None) -> str:
    """Run `commit_steps()`; `last`: only the first `last` of them (tests: a power cut there)."""
    return _script(commit_steps(), last, "committed")


def rollback_steps() -> list[str]:
    """The rollback: the same swap with pg_old/ as the source and pg_new/ keeping the running
    version, renamed pg_old/ at the end (so that a second rollback undoes the first). A previous
    version without manifest (a development install) is allowed: it reports "dev"."""
    return [
        f"if not (_ex({OLD + '/' + PACKAGE!r}) and _ex({OLD + '/main.py'!r})): "
        "raise OSError('no previous version on this board (pg_old/ is empty)')",
        f"_rm({NEW!r})",
        f"_mk({NEW!r})",
        f"_put({JOURNAL!r}, {OLD + ' '!r} + str(int(_ex({OLD + '/' + MANIFEST!r}))))",
        *_swap_steps(OLD, NEW),
        f"_rm({OLD!r})",
        f"os.rename({NEW!r}, {OLD!r})",
        *_DONE,
    ]


def rollback_script(last: int | None = None) -> str:
    """Run `rollback_steps()`; `last`: only the first `last` of them (tests: a power cut there)."""
    return _script(rollback_steps(), last, "rolled back")


def write_text_script(path: str, text: str) -> str:
    """Write a small file under a temporary name and rename it into place."""
    return (
        _HELPERS
        + f"""
with open({path + ".tmp"!r}, 'w') as _f:
    _f.write({text!r})
_mv({path + ".tmp"!r}, {path!r})
"""
    )


def clean_staging_script() -> str:
    return _HELPERS + f"_rm({NEW!r})\n"
