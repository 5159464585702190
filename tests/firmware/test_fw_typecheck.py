"""The firmware type check (tools/fw_typecheck.py, run by `make lint`) uses the rp2 port's API:
the firmware passes, and a misuse of `machine` or of MicroPython's `time` is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fw_typecheck.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_firmware_passes() -> None:
    r = _check()
    assert r.returncode == 0, r.stdout + r.stderr


def test_rp2_api_misuse_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import machine\nimport time\n\n"
        "machine.Pin(5).toggle_twice()\n"  # no such method on the rp2 port
        "time.ticks_diff(time.ticks_ms())\n"  # MicroPython's ticks_diff takes two ticks
    )
    r = _check(str(bad))
    assert r.returncode == 1
    assert 'has no attribute "toggle_twice"' in r.stdout
    assert "ticks_diff" in r.stdout
