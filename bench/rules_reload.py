"""Hot reload of the rule files: how long a reload of 1,000 rules takes, and how long the event loop
stalls meanwhile (targets: reload under 500 ms, no pause over 50 ms).

    .venv/bin/python bench/rules_reload.py                 # 1,000 rules in 10 files, 5 reloads
    .venv/bin/python bench/rules_reload.py --rules 5000 --reloads 3 --json

A real gateway (no broker, no devices: synthetic points in its registry) runs the rules service
(rules/_live.py) with file watching on.  A feeder emits readings through the pipeline every
millisecond (10 per batch, each touching about 3 rules) and a monitor measures how late a 1 ms sleep
wakes up: the longest of those delays during a reload is the pause an event path would see.  Each
reload changes one rule in one file (so 999 rules keep their state) and is timed from the write of
the file to the moment the new set is live:

    save → live     the whole reload: inotify event, debounce (set to 10 ms here), compilation of
                    the whole set in the compiler process, transfer, load and swap
    compile         parse + check + generate code for the whole set, in the compiler process
    prepare         the engine builds the new set (in a thread; the running set goes on meanwhile)
    swap            the engine swaps it in, on the event loop, between two readings
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    import picogate  # noqa: F401  (installed: .venv)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from picogate._gateway import Gateway
from picogate._model import PointInfo, PointType, Reading, Value
from picogate._router import FunctionWriter
from picogate.gateway import GatewayConfig
from picogate.rules._config import RulesSection
from picogate.rules._live import LiveRules

DEVICES = 30
POINTS = 10


async def _accept_write(point: PointInfo, value: Value) -> None:
    """The bench's devices accept every write at once."""


def run_delay() -> float:
    """Seconds this thread has waited for a CPU while runnable (Linux schedstat; 0 elsewhere)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def make_points() -> list[PointInfo]:
    out = []
    for d in range(DEVICES):
        for p in range(POINTS):
            out.append(PointInfo(f"dev{d}", f"p{p}", PointType.FLOAT64, origin="bench"))
        out.append(PointInfo(f"dev{d}", "out", PointType.FLOAT64, writable=True, origin="bench"))
    return out


def rule_text(i: int, threshold_shift: int = 0) -> str:
    """Stateful rules of four kinds: FOR + CLEAR + ELSE (hysteresis), a window average, a two-point
    condition with set(), a rate."""
    d, p = i % DEVICES, (i // DEVICES) % POINTS
    q = (p + 1) % POINTS
    t = 50 + (i + threshold_shift) % 40
    kind = i % 4
    if kind == 0:
        return (
            f"RULE r{i}\n  ON dev{d}.p{p} > {t} FOR 10s\n  CLEAR dev{d}.p{p} < {t - 10}\n"
            f'  THEN alert("r{i} high: {{dev{d}.p{p}}}", severity="critical")\n'
            f'  ELSE alert("r{i} normal", severity="info")\nEND\n'
        )
    if kind == 1:
        return f'RULE r{i}\n  ON avg(dev{d}.p{p}, 1m) > {t} THEN alert("r{i} average high")\nEND\n'
    if kind == 2:
        return f"RULE r{i}\n  ON dev{d}.p{p} > {t} AND dev{d}.p{q} < 10 THEN set(dev{d}.out, {i})\nEND\n"
    return f'RULE r{i}\n  ON rate(dev{d}.p{p}, 1m) < -{5 + i % 5} THEN log("r{i} falling")\nEND\n'


def write_files(directory: Path, rules: int, files: int, shift_rule: int = -1, shift: int = 0) -> None:
    texts: dict[int, list[str]] = {f: [] for f in range(files)}
    for i in range(rules):
        texts[i % files].append(rule_text(i, shift if i == shift_rule else 0))
    for f, parts in texts.items():
        tmp = directory / f".f{f:03d}.rules.tmp"
        tmp.write_text("\n".join(parts))
        tmp.replace(directory / f"f{f:03d}.rules")  # as editors save: write a temporary, rename


async def bench(rules: int, files: int, reloads: int, seconds_between: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="picogate-rules-reload-") as tmp:
        root = Path(tmp)
        rules_dir = root / "rules"
        rules_dir.mkdir()
        write_files(rules_dir, rules, files)
        cfg = GatewayConfig.model_validate(
            {
                "gateway": {"id": "bench", "data_dir": str(root / "data")},
                "mqtt": {"enabled": False},
                "metrics": {"enabled": False},
                "outbox": {"synchronous": "normal"},
                "clock": {"check_sync": False},
            }
        )
        async with Gateway(cfg) as gw:
            for p in make_points():
                gw.registry.add(p)
            for d in range(DEVICES):
                gw.router.register_writer(f"dev{d}", FunctionWriter(_accept_write))
            section = RulesSection(dir=rules_dir, debounce=0.01)
            live = LiveRules(gw.parts.hosts["rules"], section)
            t0 = time.perf_counter()
            live.setup()
            start_load_s = time.perf_counter() - t0
            if live.loaded is None:
                raise SystemExit(
                    "the generated rules do not compile:\n"
                    + "\n".join(e.format() for e in live.attempt.errors)
                )
            done: asyncio.Queue[Any] = asyncio.Queue()
            live.reload_done.append(lambda attempt: done.put_nowait((time.perf_counter(), attempt)))
            service = asyncio.create_task(live.run(), name="rules")
            async with asyncio.timeout(60):
                await live.warmed.wait()  # the compiler process has compiled the set once

            stop = asyncio.Event()
            lags: list[tuple[float, float]] = []  # (when, how late)
            fed = 0

            waits: list[float] = []  # of each lag, the part the loop's thread waited for a CPU
            collections: list[tuple[float, float]] = []  # (when it ended, how long): full collections
            gc_started = [0.0]

            def on_gc(phase: str, info: dict[str, Any]) -> None:
                if phase == "start":
                    gc_started[0] = time.perf_counter()
                elif info["generation"] == 2:
                    now = time.perf_counter()
                    collections.append((now, now - gc_started[0]))

            gc.callbacks.append(on_gc)

            async def monitor() -> None:
                while not stop.is_set():
                    t, w = time.perf_counter(), run_delay()
                    await asyncio.sleep(0.001)
                    now = time.perf_counter()
                    lags.append((now, now - t - 0.001))
                    waits.append(run_delay() - w)

            async def feeder() -> None:
                nonlocal fed
                rng = random.Random(1)
                keys = [(f"dev{d}", f"p{p}") for d in range(DEVICES) for p in range(POINTS)]
                while not stop.is_set():
                    ts = time.time_ns()
                    batch = [Reading(d, p, rng.uniform(0, 100), ts) for d, p in rng.sample(keys, 10)]
                    await gw.pipeline.emit(batch)
                    fed += len(batch)
                    await asyncio.sleep(0.001)

            tasks = [asyncio.create_task(monitor()), asyncio.create_task(feeder())]
            await asyncio.sleep(1.0)
            quiet_end = time.perf_counter()
            baseline = max((lag for at, lag in lags if at <= quiet_end), default=0.0)
            results = []
            for n in range(reloads):
                saved = time.perf_counter()
                write_files(rules_dir, rules, files, shift_rule=n * 7 % rules, shift=n + 1)
                async with asyncio.timeout(30):
                    while True:
                        at, attempt = await done.get()
                        if attempt.ok and attempt.ts and at >= saved:
                            break
                await asyncio.sleep(0.2)  # the catch-up after the swap belongs to the reload too
                window = [lag for t, lag in lags if saved <= t <= at + 0.2]
                # the same pauses less the time the thread was runnable but had no CPU (other
                # processes: the compiler, or whatever else the machine runs): what the gateway's
                # own threads (GIL) and its event loop cost
                own = [
                    max(0.0, lag - w)
                    for (t, lag), w in zip(lags, waits, strict=False)
                    if saved <= t <= at + 0.2
                ]
                results.append(
                    {
                        "save_to_live_ms": (at - saved) * 1000,
                        "compile_ms": live.stats.last_compile_s * 1000,
                        "prepare_ms": live.stats.last_prepare_s * 1000,
                        "swap_ms": live.stats.last_swap_s * 1000,
                        "max_pause_ms": max(window, default=0.0) * 1000,
                        "max_own_pause_ms": max(own, default=0.0) * 1000,
                        "max_gc_ms": max((d for t, d in collections if saved <= t <= at + 0.2), default=0.0)
                        * 1000,
                    }
                )
                await asyncio.sleep(seconds_between)
            stop.set()
            await asyncio.gather(*tasks)
            live.stop()
            await service
            states = live.status()["counts"]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    def worst(key: str) -> float:
        return max(r[key] for r in results)

    return {
        "rules": rules,
        "files": files,
        "reloads": reloads,
        "start_load_ms": start_load_s * 1000,
        "save_to_live_ms_median": med("save_to_live_ms"),
        "save_to_live_ms_max": worst("save_to_live_ms"),
        "compile_ms_median": med("compile_ms"),
        "prepare_ms_median": med("prepare_ms"),
        "swap_ms_median": med("swap_ms"),
        "max_pause_ms": worst("max_pause_ms"),
        "max_own_pause_ms": worst("max_own_pause_ms"),
        "max_gc_ms": worst("max_gc_ms"),
        "baseline_max_pause_ms": baseline * 1000,
        "readings_fed": fed,
        "rule_states": states,
        "each": results,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", type=int, default=1000)
    p.add_argument("--files", type=int, default=10)
    p.add_argument("--reloads", type=int, default=5)
    p.add_argument("--between", type=float, default=0.5, help="seconds between reloads")
    p.add_argument("--json", action="store_true", help="print one JSON line (for bench/run.py)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the rules' alerts and writes would flood the terminal
    r = asyncio.run(bench(args.rules, args.files, args.reloads, args.between))
    if args.json:
        print(json.dumps(r), flush=True)
        return 0
    print(
        f"rules hot reload: {r['rules']:,} rules in {r['files']} files, {r['reloads']} reloads (one rule changed each)"
    )
    print(f"  load at start (in-process)      {r['start_load_ms']:8.0f} ms")
    print(
        f"  save → live                     {r['save_to_live_ms_median']:8.0f} ms median, "
        f"{r['save_to_live_ms_max']:.0f} ms max   (target < 500 ms)"
    )
    print(f"    compile (compiler process)    {r['compile_ms_median']:8.0f} ms median")
    print(f"    prepare (engine, in a thread) {r['prepare_ms_median']:8.0f} ms median")
    print(f"    swap (engine, on the loop)    {r['swap_ms_median']:8.1f} ms median")
    print(
        f"  longest event-loop pause        {r['max_pause_ms']:8.1f} ms during reloads   (target ≤ 50 ms; "
        f"{r['baseline_max_pause_ms']:.1f} ms without a reload)"
    )
    print(
        f"    of which not waiting for a CPU {r['max_own_pause_ms']:8.1f} ms   (the gateway's own: GIL, event loop;"
        " the rest is the machine's load)"
    )
    print(
        f"    longest full garbage collection {r['max_gc_ms']:7.1f} ms   (Python's cyclic GC, scanning the old and the new set)"
    )
    print(f"  readings fed meanwhile          {r['readings_fed']:8,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
