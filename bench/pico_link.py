"""Readings per second from the firmware to the agent over the link: the real firmware on the
MicroPython unix port (picogate.simboard) → pty → the agent's Pico source (PicoBoard: frame
decoding, rd parsing, batching, acks after emit) → a counting emit.

    python bench/pico_link.py [--seconds 10] [--points 26] [--every 10ms] [--json]

Every point is an edge counter reported every `--every` (26 counters × every 10 ms offer 2,600
readings/s); the firmware batches them into rd frames.  Prints readings/s received by the agent,
frames/s, the agent's CPU seconds per 1,000 readings, how old a frame's last reading is when the
agent has it (its board timestamp mapped to the wall clock: transit + batching + mapping error),
and the board's queue/drop counters.
Target (issue 4): at least 2,000 readings/s on the unix port, so that the link is never the
bottleneck."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from picogate._model import Reading
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate.pico._config import BoardConfig
from picogate.pico._session import PicoBoard
from picogate.simboard import SimBoard, install_firmware

PINS = [*range(0, 23), 25, 26, 27, 28]


async def measure(seconds: float, points: int, every: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        d = install_firmware(Path(tmp) / "board", scenario=json.dumps({"pins": {}}))
        board = SimBoard(d, env={"PICOGATE_BOOT_WINDOW_MS": "100"}).start()
        try:
            io = [{"name": f"p{i}", "kind": "cnt", "pin": PINS[i], "every": every} for i in range(points)]
            cfg = BoardConfig.model_validate(
                {"name": "bench", "port": board.port, "safe_timeout": 0, "io": io}
            )
            registry = PointRegistry()
            count = 0

            lags: list[int] = []  # arrival − the board's timestamp mapped to wall clock, ns

            async def emit(rs: Sequence[Reading]) -> None:
                nonlocal count
                count += len(rs)
                if rs and measuring:
                    lags.append(time.time_ns() - rs[-1].ts)

            online = asyncio.Event()

            async def status(s: DeviceStatus) -> None:
                if s.name == "bench" and s.state is DeviceState.ONLINE:
                    online.set()

            pico = PicoBoard(cfg, registry=registry, emit=emit, status_changed=status)
            pico.register()
            task = asyncio.create_task(pico.run())
            async with asyncio.timeout(60):
                await online.wait()
            measuring = False
            await asyncio.sleep(1.0)  # settle
            measuring = True
            n0, f0 = count, pico.stats.frames_in
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            n1, f1 = count, pico.stats.frames_in
            cpu1, t1 = time.process_time(), time.monotonic()
            pico.stop()
            await task
            dt = t1 - t0
            n = n1 - n0
            lags.sort()
            lag_ms = (
                [round(lags[int(q * (len(lags) - 1))] / 1e6, 2) for q in (0.0, 0.5, 0.99)] if lags else []
            )
            return {
                "points": points,
                "every": every,
                "seconds": round(dt, 2),
                "readings_per_s": round(n / dt),
                "frames_per_s": round((f1 - f0) / dt, 1),
                "readings_per_frame": round(n / max(1, f1 - f0), 1),
                "agent_cpu_ms_per_1000": round((cpu1 - cpu0) * 1e6 / max(1, n), 2),
                "agent_cpu_percent": round(100 * (cpu1 - cpu0) / dt, 1),
                "ts_lag_ms_min_p50_p99": lag_ms,
                "resends": pico.stats.resends,
                "garbage": pico.stats.garbage + pico.stats.bad_crc,
                "board": pico.stats.board,
            }
        finally:
            board.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--points", type=int, default=26, choices=range(1, len(PINS) + 1), metavar="1..27")
    ap.add_argument("--every", default="10ms")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args()
    r = asyncio.run(measure(args.seconds, args.points, args.every))
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"pico link, firmware → agent: {r['readings_per_s']:,} readings/s "
        f"({r['frames_per_s']} frames/s, {r['readings_per_frame']} readings/frame) "
        f"with {r['points']} points every {r['every']}; agent CPU {r['agent_cpu_percent']}% "
        f"({r['agent_cpu_ms_per_1000']} ms per 1,000 readings); reading age at the agent (min/p50/p99) "
        f"{r['ts_lag_ms_min_p50_p99']} ms; resends {r['resends']}, "
        f"board queue {r['board'].get('q')} drop {r['board'].get('drop')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
