"""Runs the firmware's tests on real MicroPython (the unix port, `-X heapsize=220wK`).

Every `def test_*` of tests/firmware/mp/mp_*.py is one pytest test: it runs in its own
`micropython` process, in a fresh board directory (cwd) holding a copy of firmware/, with
tests/firmware/mp on the module path. A test passes when the function returns (the process prints
MPTEST-PASS and exits 0); its output is shown when it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from picogate.simboard._board import _find_micropython

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MP_DIR = HERE / "mp"
FIRMWARE = REPO / "firmware"


def _cases() -> list[tuple[str, str]]:
    cases = []
    for f in sorted(MP_DIR.glob("mp_*.py")):
        for name in re.findall(r"^def (test_\w+)\(", f.read_text(), re.M):
            cases.append((f.stem, name))
    return cases


def run_mp(board_dir: Path, module: str, func: str, *, heapsize: str = "220wK", timeout: float = 60) -> str:
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{MP_DIR}:.frozen"
    env["PICOGATE_REPO"] = str(REPO)
    env["PICOGATE_UID"] = "E6614103E7000001"
    proc = subprocess.run(
        [_find_micropython(), "-X", f"heapsize={heapsize}", str(MP_DIR / "mprun.py"), module, func],
        cwd=board_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    if proc.returncode != 0 or "MPTEST-PASS" not in out:
        pytest.fail(f"{module}.{func} failed on MicroPython (exit {proc.returncode}):\n{out}", pytrace=False)
    return out


@pytest.mark.parametrize(("module", "func"), _cases(), ids=[f"{m}.{f}" for m, f in _cases()])
def test_firmware(tmp_path: Path, module: str, func: str) -> None:
    shutil.copytree(
        FIRMWARE, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "README.md")
    )
    run_mp(tmp_path, module, func)
