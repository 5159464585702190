"""Rule engine throughput: ready-made readings through 1,000 stateful rules, single core.

    python bench/rules.py [--rules 1000] [--readings 300000] [--batch 100]

Each reading touches about 3 rules (333 points, 3 rules each): a third have FOR timers and CLEAR
hysteresis, a third average a 1-minute window, a third compare a value with a threshold and a
window maximum.  Readings arrive 1 ms apart on a virtual clock (so windows hold real numbers of
samples and FOR timers run out); the timers are run between batches, as the gateway does.
Times are CPU time of this process (`time.process_time`: the machine may be shared); the wall clock
figure is printed too.  Prints one JSON line: readings/s through process() (the event path), the same with the timers
(FOR expiries, age/window re-checks once a second per rule: on the virtual clock, 1,000 times as
dense as in real time, so that figure is pessimistic), rule evaluations/s, actions, compile and
load times.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from picogate._model import PointInfo, PointType, Reading
from picogate.rules import RuleEngine, compile_rules


class Count:
    def __init__(self) -> None:
        self.n = 0

    def alert(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        self.n += 1

    def set(self, rule: str, device: str, point: str, value: object) -> None:
        self.n += 1

    def publish(self, rule: str, topic: str, value: object, ts: int) -> None:
        self.n += 1

    def log(self, rule: str, message: str) -> None:
        self.n += 1


def make_rules(n_rules: int) -> tuple[str, list[PointInfo], list[tuple[str, str]]]:
    n_points = max(n_rules // 3, 1)
    keys = [(f"dev{i // 10}", f"p{i % 10}") for i in range(n_points)]
    points = [PointInfo(d, p, PointType.FLOAT32) for d, p in keys]
    lines = []
    for k in range(n_rules):
        d, p = keys[k % n_points]
        kind = (k // n_points) % 3
        if kind == 0:
            lines.append(
                f"RULE r{k}\n  ON {d}.{p} > 80 FOR 10s\n  CLEAR {d}.{p} < 75\n"
                f'  THEN alert("{d}.{p} high: {{{d}.{p}}}")\n  ELSE log("back")\nEND'
            )
        elif kind == 1:
            lines.append(f'ON avg({d}.{p}, 1m) > 60 THEN alert("{d}.{p} average high")')
        else:
            lines.append(f'ON {d}.{p} < 10 AND max({d}.{p}, 30s) > 20 THEN log("{k} dropped")')
    return "\n".join(lines) + "\n", points, keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--readings", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    text, points, keys = make_rules(args.rules)
    t0 = time.perf_counter()
    rs = compile_rules({"bench.rules": text}, points)
    t1 = time.perf_counter()
    clock = [0]
    actions = Count()
    eng = RuleEngine(actions, now=lambda: clock[0])
    eng.load(rs)
    t2 = time.perf_counter()
    eng.load(compile_rules({"bench.rules": text}, points))  # a reload of the same set: state kept
    t3 = time.perf_counter()
    rnd = random.Random(1)
    vals = [50.0] * len(keys)
    readings = []
    ts = 1_000_000_000
    for _ in range(args.readings):
        i = rnd.randrange(len(keys))
        vals[i] = min(100.0, max(0.0, vals[i] + rnd.uniform(-5, 5)))
        ts += 1_000_000
        readings.append(Reading(keys[i][0], keys[i][1], vals[i], ts))
    batches = [readings[i : i + args.batch] for i in range(0, len(readings), args.batch)]
    process, tick, deadline = eng.process, eng.tick, eng.next_deadline
    timers = 0.0
    perf = time.process_time  # CPU time of this process: the figure of one core, whatever else runs
    wall = time.perf_counter()
    start = perf()
    for b in batches:
        process(b)
        now = b[-1].ts
        d = deadline()
        if d is not None and d <= now:
            t4 = perf()
            tick(now)
            timers += perf() - t4
    elapsed = perf() - start
    wall = time.perf_counter() - wall
    per_s = args.readings / (elapsed - timers)
    out = {
        "rules": args.rules,
        "readings": args.readings,
        "rules_per_reading": round(args.rules / len(keys), 2),
        "readings_per_s": round(per_s),
        "rule_evals_per_s": round(per_s * args.rules / len(keys)),
        "readings_per_s_with_timers": round(args.readings / elapsed),
        "readings_per_s_wall_clock": round(args.readings / wall),
        "timer_share_pct": round(100 * timers / elapsed, 1),
        "actions": actions.n,
        "compile_ms": round((t1 - t0) * 1000, 1),
        "first_load_ms": round((t2 - t1) * 1000, 1),
        "recompile_and_reload_ms": round((t3 - t2) * 1000, 1),
        "target_readings_per_s": 500_000,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
