"""Readings per second from the firmware (MicroPython unix port, simulated board) over the link to
a host that acknowledges every frame: python bench/fw_link.py [--seconds 10] [--points 40]

Every point is an ADC input read every 10 ms (os=1); the firmware batches them into rd frames.
Prints readings/s, frames/s, bytes/s, and the board's queue and drop counters."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "firmware"))

from _host import Host

from picogate.simboard import SimBoard, install_firmware


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--points", type=int, default=40)
    ap.add_argument("--every-ms", type=int, default=10)
    args = ap.parse_args()
    pins = list(range(0, 26)) + list(range(30, 48))
    io = [{"id": f"p{i}", "k": "cnt", "pin": pins[i], "every_ms": args.every_ms} for i in range(args.points)]
    cfg = {"v": 1, "hb_ms": 1000, "safe_ms": 0, "io": io}
    with tempfile.TemporaryDirectory() as tmp:
        d = install_firmware(Path(tmp) / "board", scenario="{}")
        board = SimBoard(d, env={"PICOGATE_BOOT_WINDOW_MS": "100"}).start()
        try:
            host = Host(board.port)
            board.wait_for_output(b"@0 hello ", timeout=20)
            host.hello()
            res = host.push_config(cfg)
            if not res or not res["ok"]:
                raise SystemExit(f"config refused: {res}")
            host.pump(1.0)
            host.frames.clear()
            t0 = time.monotonic()
            n_read = 0
            n_frames = 0
            n_bytes = 0
            while time.monotonic() - t0 < args.seconds:
                host.pump(0.1)
                for f in host.frames:
                    if f[2] == "rd":
                        n_frames += 1
                        n_read += (f[3] or "").count("=")
                        n_bytes += len(f[3] or "") + 20
                host.frames.clear()
            dt = time.monotonic() - t0
            host.pump(1.2)
            hb = json.loads([f for f in host.frames if f[2] == "hb"][-1][3] or "{}")
            print(
                json.dumps(
                    {
                        "points": args.points,
                        "every_ms": args.every_ms,
                        "readings_per_s": round(n_read / dt),
                        "frames_per_s": round(n_frames / dt),
                        "bytes_per_s": round(n_bytes / dt),
                        "board_queue": hb["q"],
                        "board_drop": hb["drop"],
                    }
                )
            )
            host.close()
        finally:
            board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
