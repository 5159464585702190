"""Run the gateway in-process under a profiler: what `picogate run -c FILE` does, plus a report.

    python bench/inproc.py --tool cprofile    -c gateway.yaml --warmup 10 --seconds 20 --out prof.txt
    python bench/inproc.py --tool tracemalloc -c gateway.yaml --warmup 10 --seconds 60 --out mem.txt

`cprofile`: deterministic profile of the window (adds a lot of overhead: use it for call counts
and relative cost, py-spy for time).  `tracemalloc`: two snapshots, at the end of the warm-up and
at the end of the window; the report lists where the memory that grew in between was allocated
(for an RSS that is not flat).  The gateway keeps running after the window until SIGTERM, like the
agent, so the bench runner stops it the same way.  bench/run.py --profile-tool drives this.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import signal
import sys
import time
import tracemalloc
from pathlib import Path


async def _report_later(args: argparse.Namespace, ready: asyncio.Event) -> None:
    await ready.wait()  # polls start once the gateway is up
    await asyncio.sleep(args.warmup)
    out = Path(args.out)
    if args.tool == "cprofile":
        prof = cProfile.Profile()
        prof.enable()
        await asyncio.sleep(args.seconds)
        prof.disable()
        buf = io.StringIO()
        for key in ("tottime", "cumulative"):
            buf.write(f"==== sorted by {key} ({args.seconds:g} s window)\n")
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(args.top)
        await asyncio.to_thread(out.write_text, buf.getvalue())
    else:
        first = tracemalloc.take_snapshot()
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        second = tracemalloc.take_snapshot()
        filters = [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
        ]
        first, second = first.filter_traces(filters), second.filter_traces(filters)
        grown = second.compare_to(first, "lineno")
        total = sum(st.size_diff for st in grown)
        lines = [
            f"==== memory growth over {time.monotonic() - t0:.0f} s: {total / 2**20:+.2f} MiB traced;"
            " by allocation site (size diff, count diff)"
        ]
        for stat in grown[: args.top]:
            lines.append(str(stat))
        lines.append("")
        current, peak = tracemalloc.get_traced_memory()
        lines.append(f"traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB")
        await asyncio.to_thread(out.write_text, "\n".join(lines) + "\n")
    print(f"inproc: report written to {out}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace) -> int:
    from picogate._gateway import Gateway
    from picogate.config import ConfigError
    from picogate.gateway import load_config

    try:
        cfg = load_config(Path(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    async with Gateway(cfg) as gw:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.stop)
        reporter = asyncio.create_task(_report_later(args, gw.ready))
        try:
            await gw.run(install_signals=False)
        finally:
            reporter.cancel()
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tool", choices=["cprofile", "tracemalloc"], required=True)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from picogate._logging import setup_logging

    setup_logging("info", "text")
    if args.tool == "tracemalloc":
        tracemalloc.start(1)  # one frame: deep stacks make the agent too slow to keep up
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(_main(args)))
    sys.exit(uvloop.run(_main(args)))


if __name__ == "__main__":
    main()
