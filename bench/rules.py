"""Rule engine throughput: ready-made readings through 1,000 stateful rules, single core.

    python bench/rules.py [--rules 1000] [--readings 300000] [--batch 100] [--mix NAME]

333 points, each used by 3 rules, so that each reading touches 3 rules.  The rules are of these
kinds (the templates are in KINDS below):

    for     ON x > 80 FOR 10s THEN alert(...)                          a FOR timer
    clear   ON x > 90 CLEAR x < 70 THEN alert(...) ELSE log(...)       hysteresis
    avg     ON avg(x, 1m) > 60 THEN alert(...)                         a 1-minute window
    max     ON x < 10 AND max(x, 30s) > 20 THEN log(...)               a 30 s min/max window
    both    ON x > 80 FOR 10s CLEAR x < 75 THEN alert(...) ELSE log(...)

The headline mix "standard" is for + clear + avg (one of each per point: each reading touches a
FOR timer, a hysteresis and a window); "heavy" is both + avg + max (two windows per reading).
Every kind is also measured alone (3 rules of that kind per point) for the breakdown.

Readings arrive 1 ms apart on a virtual clock (a point every 333 ms, so windows hold real numbers
of samples and FOR timers run out); the timers run between batches, as in the gateway.  Times are
CPU time of this process (`time.process_time`: the machine may be shared).  Prints one JSON line:
readings/s through process() (the event path); the same with the timers (FOR expiries and the
age/window re-checks once a second per rule, which on this virtual clock are 1,000 times as
dense as in real time: a pessimistic figure); rule evaluations/s; actions; compile and load times
(cold; the same set again; with one rule added: only what changed is compiled again).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from picogate._model import PointInfo, PointType, Reading
from picogate.rules import RuleEngine, RuleSet, compile_rules

KINDS: dict[str, Callable[[str, int], str]] = {
    "for": lambda x, k: f'RULE r{k} ON {x} > 80 FOR 10s THEN alert("{x} high: {{{x}}}") END',
    "clear": lambda x, k: (
        f'RULE r{k} ON {x} > 90 CLEAR {x} < 70 THEN alert("{x} at {{{x}}}") ELSE log("ok") END'
    ),
    "avg": lambda x, k: f'RULE r{k} ON avg({x}, 1m) > 60 THEN alert("{x} average high") END',
    "max": lambda x, k: f'RULE r{k} ON {x} < 10 AND max({x}, 30s) > 20 THEN log("{x} dropped") END',
    "both": lambda x, k: (
        f'RULE r{k} ON {x} > 80 FOR 10s CLEAR {x} < 75 THEN alert("{x} high: {{{x}}}") ELSE log("back") END'
    ),
}
MIXES = {"standard": ("for", "clear", "avg"), "heavy": ("both", "avg", "max")}


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


def make_rules(n_rules: int, kinds: tuple[str, ...]) -> tuple[str, list[PointInfo], list[tuple[str, str]]]:
    n_points = max(n_rules // 3, 1)
    keys = [(f"dev{i // 10}", f"p{i % 10}") for i in range(n_points)]
    points = [PointInfo(d, p, PointType.FLOAT32) for d, p in keys]
    lines = []
    for k in range(n_rules):
        d, p = keys[k % n_points]
        kind = kinds[(k // n_points) % len(kinds)]
        lines.append(KINDS[kind](f"{d}.{p}", k))
    return "\n".join(lines) + "\n", points, keys


def make_readings(keys: list[tuple[str, str]], n: int) -> list[Reading]:
    rnd = random.Random(1)
    vals = [50.0] * len(keys)
    out = []
    ts = 1_000_000_000
    for _ in range(n):
        i = rnd.randrange(len(keys))
        vals[i] = min(100.0, max(0.0, vals[i] + rnd.uniform(-5, 5)))
        ts += 1_000_000
        out.append(Reading(keys[i][0], keys[i][1], vals[i], ts))
    return out


def run(rs: RuleSet, readings: list[Reading], batch: int) -> dict[str, float]:
    clock = [0]
    actions = Count()
    eng = RuleEngine(actions, now=lambda: clock[0])
    eng.load(rs)
    batches = [readings[i : i + batch] for i in range(0, len(readings), batch)]
    process, tick, deadline = eng.process, eng.tick, eng.next_deadline
    timers = 0.0
    perf = time.process_time  # CPU time of this process: the figure of one core, whatever else runs
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
    return {
        "process": len(readings) / (elapsed - timers),
        "with_timers": len(readings) / elapsed,
        "actions": actions.n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--readings", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--mix", default="standard", choices=sorted(MIXES))
    args = ap.parse_args()
    text, points, keys = make_rules(args.rules, MIXES[args.mix])
    t0 = time.perf_counter()
    rs = compile_rules({"bench.rules": text}, points)
    t1 = time.perf_counter()
    eng = RuleEngine(Count())
    eng.load(rs)
    t2 = time.perf_counter()
    eng.load(compile_rules({"bench.rules": text}, points))  # a reload of the same set: state kept
    t3 = time.perf_counter()
    changed = text.replace("RULE r500 ", 'RULE r500 ON dev0.p0 > 1 THEN log("x") END\nRULE r500b ', 1)
    eng.load(compile_rules({"bench.rules": changed}, points))  # one rule more, the rest unchanged
    t4 = time.perf_counter()
    readings = make_readings(keys, args.readings)
    r = run(rs, readings, args.batch)
    per_kind = {}
    for kind in KINDS:
        ktext, kpoints, _ = make_rules(args.rules, (kind,))
        per_kind[kind] = round(
            run(compile_rules({"k.rules": ktext}, kpoints), readings[:100_000], args.batch)["process"]
        )
    out = {
        "mix": args.mix,
        "kinds": list(MIXES[args.mix]),
        "rules": args.rules,
        "readings": args.readings,
        "rules_per_reading": round(args.rules / len(keys), 2),
        "readings_per_s": round(r["process"]),
        "rule_evals_per_s": round(r["process"] * args.rules / len(keys)),
        "readings_per_s_with_timers": round(r["with_timers"]),
        "actions": r["actions"],
        "readings_per_s_by_kind": per_kind,
        "compile_ms": round((t1 - t0) * 1000, 1),
        "load_ms": round((t2 - t1) * 1000, 1),
        "recompile_and_reload_ms": round((t3 - t2) * 1000, 1),
        "one_rule_added_compile_and_reload_ms": round((t4 - t3) * 1000, 1),
        "target_readings_per_s": 500_000,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
