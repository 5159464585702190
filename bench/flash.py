"""Flashing speed on simulated boards (picogate.simboard: MicroPython's unix port behind a pty).

    .venv/bin/python bench/flash.py            # or: bench/run.py --scenario f

Figures: one board from clean (bare MicroPython, cold and warm compile cache), a re-flash of
unchanged firmware (total and bytes/seconds of transfer), and boards per minute in factory mode
with three boards flashed in parallel. A pty is faster than USB full speed (12 Mbit/s) only a
little for these sizes; on a Pico the flash filesystem's write speed adds to the upload.
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from picogate.flash._factory import FactoryRun, run_many
from picogate.flash._flash import Builder, FlashOptions, flash_board
from picogate.flash._select import Target
from picogate.simboard import SimBoard

ENV = {"PICOGATE_BOOT_WINDOW_MS": "2000"}  # a real board's boot window


def _fresh(d: Path, uid: str) -> SimBoard:
    d.mkdir(parents=True)
    (d / "main.py").write_text("print('fresh MicroPython')\n")  # bare MicroPython: no firmware yet
    return SimBoard(d, uid=uid, env=ENV).start()


def run(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cache = work / "cache"
    b = _fresh(work / "one", "E6614103E7000001")
    try:
        time.sleep(0.5)
        r1 = flash_board(b.port, FlashOptions(name="bench", builder=Builder(cache=cache)))
        assert r1.ok, r1.error
        r2 = flash_board(b.port, FlashOptions(builder=Builder(cache=cache)))
        assert r2.result == "up-to-date", r2.error
    finally:
        b.stop()
    b = _fresh(work / "warm", "E6614103E7000002")
    try:
        time.sleep(0.5)
        r3 = flash_board(b.port, FlashOptions(name="bench", builder=Builder(cache=cache)))
        assert r3.ok, r3.error
    finally:
        b.stop()
    out["clean_cold_s"] = r1.duration
    out["clean_warm_s"] = r3.duration
    out["clean_upload_s"] = r3.upload_seconds
    out["clean_bytes"] = r3.uploaded_bytes
    out["unchanged_s"] = r2.duration
    out["unchanged_bytes"] = r2.uploaded_bytes
    out["unchanged_upload_s"] = r2.upload_seconds

    boards = [_fresh(work / f"tray{i}", f"E66141040396312{i}") for i in range(3)]
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        results = run_many(
            FactoryRun(
                targets=[Target(port=x.port, serial=x.uid) for x in boards],
                opts=FlashOptions(builder=Builder(cache=cache)),
                parallel=3,
            ),
            console=Console(file=io.StringIO()),
        )
        wall = time.monotonic() - t0
    finally:
        for x in boards:
            x.stop()
    assert all(r.ok for r in results), [r.error for r in results]
    out["factory_boards"] = 3
    out["factory_wall_s"] = round(wall, 2)
    out["factory_boards_per_min"] = round(3 / wall * 60, 1)
    return out


def report(r: dict[str, Any]) -> None:
    print(f"   one board from clean (bare MicroPython), cold compile cache: {r['clean_cold_s']:.2f} s")
    print(
        f"   one board from clean, warm cache: {r['clean_warm_s']:.2f} s "
        f"({r['clean_bytes']} bytes uploaded in {r['clean_upload_s']:.2f} s)"
    )
    print(
        f"   re-flash unchanged: {r['unchanged_s']:.2f} s in all, {r['unchanged_bytes']} bytes uploaded "
        f"({r['unchanged_upload_s']:.2f} s of transfer)"
    )
    print(
        f"   factory mode, {r['factory_boards']} boards in parallel: {r['factory_wall_s']:.2f} s "
        f"= {r['factory_boards_per_min']:.1f} boards/minute"
    )


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-flash-"))
    try:
        print("== f. flashing simulated boards (picogate flash, boot window 2 s as on a Pico)")
        report(run(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
