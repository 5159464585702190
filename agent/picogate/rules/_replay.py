"""Replaying readings through a rule set on a virtual clock: what `picogate rules test --replay`
does, as data (the console's rule editor shows it in the page).

Touches nothing: alerts, writes, publishes and logs are recorded as lines, every write is taken
as done, and the clock is the readings' own (timers such as FOR and EVERY fire when the next
reading's time passes their deadline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from picogate._model import Reading
from picogate.rules._engine import RuleEngine
from picogate.rules._ruleset import RuleSet

__all__ = ["ReplayLine", "replay"]

MAX_LINES = 10_000
"""Lines kept at most (a replay of a chattering rule over hours stops recording there)."""
_MAX_TICKS = 1_000_000


@dataclass(frozen=True, slots=True)
class ReplayLine:
    ts: int
    """ns since the epoch (the readings' clock)"""
    rule: str
    what: str
    """`fired`, `cleared`, `alert active high: …`, `set boiler.burner = false`, `publish …`, `log: …`"""


class _Recorder:
    def __init__(self, max_lines: int) -> None:
        self.clock = 0
        self.engine: RuleEngine | None = None
        self.lines: list[ReplayLine] = []
        self.max_lines = max_lines
        self.cut = 0

    def line(self, ts: int, rule: str, what: str) -> None:
        if len(self.lines) < self.max_lines:
            self.lines.append(ReplayLine(ts, rule, what))
        else:
            self.cut += 1

    def alert(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        self.line(ts, rule, f"alert {state} {severity}: {message}")

    def set(self, rule: str, device: str, point: str, value: object) -> None:
        shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
        self.line(self.clock, rule, f"set {device}.{point} = {shown}")
        assert self.engine is not None
        self.engine.write_result(rule, True, "")

    def publish(self, rule: str, topic: str, value: object, ts: int) -> None:
        self.line(ts, rule, f"publish {topic} {value!r}")

    def log(self, rule: str, message: str) -> None:
        self.line(self.clock, rule, f"log: {message}")


def replay(
    ruleset: RuleSet, readings: Sequence[Reading], *, max_lines: int = MAX_LINES
) -> tuple[list[ReplayLine], int]:
    """Run `readings` (sorted by time) through `ruleset`; the lines it produced, and how many more
    there were beyond `max_lines`."""
    out = _Recorder(max_lines)
    if not readings:
        return [], 0
    out.clock = readings[0].ts
    engine = RuleEngine(
        out, now=lambda: out.clock, on_transition=lambda rule, what, ts: out.line(ts, rule, what)
    )
    out.engine = engine
    engine.load(ruleset)

    def run_timers(until: int) -> None:
        for _ in range(_MAX_TICKS):
            d = engine.next_deadline()
            if d is None or d > until:
                return
            out.clock = d
            engine.tick(d)

    for r in readings:
        run_timers(r.ts)
        out.clock = r.ts
        engine.process([r])
    run_timers(readings[-1].ts)
    return out.lines, out.cut
