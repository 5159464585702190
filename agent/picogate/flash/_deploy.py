"""What to change on a board, and the board-side scripts that do it (run over the raw REPL).

Layout during and after a flash (board filesystem root):

    pg_new/            the next version being assembled: main.py, picogate_fw/, pg_fw.json
    main.py, picogate_fw/, pg_fw.json      the running version
    pg_old/            the previous version, kept for rollback (`picogate flash --rollback`)

Only files whose sha256 differs from both the running and the half-assembled version are sent
over USB; the others are copied on the board. The commit moves the running version to pg_old/ and
pg_new/ into place by renames (atomic on littlefs), pg_fw.json last. An interrupted upload leaves
the running version untouched (the board boots its last good firmware) and pg_new/ half full: the
next flash resumes it. Even a power cut inside the commit leaves a board that boots to its REPL
(main.py missing or the package missing: REPL / safe mode), and the next flash completes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from picogate.flash._build import MANIFEST, Firmware

__all__ = ["INFO", "Plan", "board_name", "commit_script", "make_plan", "rollback_script", "stage_script"]

NEW = "pg_new"
OLD = "pg_old"

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


def commit_script() -> str:
    """pg_new/ becomes the running version, the running one pg_old/; the manifest last."""
    return (
        _HELPERS
        + f"""
_rm({OLD!r})
_mk({OLD!r})
for _n in ('picogate_fw', 'main.py', {MANIFEST!r}):
    try:
        os.rename(_n, {OLD!r} + '/' + _n)
    except OSError:
        pass
os.rename({NEW!r} + '/picogate_fw', 'picogate_fw')
os.rename({NEW!r} + '/main.py', 'main.py')
os.rename({NEW!r} + '/' + {MANIFEST!r}, {MANIFEST!r})
_rm({NEW!r})
with open('pg_boots', 'w') as _f:
    _f.write('0')
print('committed')
"""
    )


def rollback_script() -> str:
    """Swap the running version and pg_old/ (so a second rollback undoes the first)."""
    return (
        _HELPERS
        + f"""
try:
    os.stat({OLD!r} + '/picogate_fw')
    os.stat({OLD!r} + '/main.py')
except OSError:
    raise OSError('no previous version on this board (pg_old/ is empty)')
_rm({NEW!r})
_mk({NEW!r})
for _n in ('picogate_fw', 'main.py', {MANIFEST!r}):
    try:
        os.rename({OLD!r} + '/' + _n, {NEW!r} + '/' + _n)
    except OSError:
        pass  # a previous version without manifest (a development install): it reports "dev"
for _n in ('picogate_fw', 'main.py', {MANIFEST!r}):
    try:
        os.rename(_n, {OLD!r} + '/' + _n)
    except OSError:
        pass
os.rename({NEW!r} + '/picogate_fw', 'picogate_fw')
os.rename({NEW!r} + '/main.py', 'main.py')
try:
    os.rename({NEW!r} + '/' + {MANIFEST!r}, {MANIFEST!r})
except OSError:
    pass
_rm({NEW!r})
with open('pg_boots', 'w') as _f:
    _f.write('0')
print('rolled back')
"""
    )


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
