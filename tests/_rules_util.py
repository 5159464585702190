"""Helpers for the rule language tests: a point set, recording actions, a virtual clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from picogate._model import PointInfo, PointType, Quality, Reading
from picogate.rules import RuleEngine, RuleSet, compile_rules

S = 1_000_000_000
T = PointType

POINTS = [
    PointInfo("boiler", "temp", T.FLOAT32, unit="°C"),
    PointInfo("boiler", "burner", T.BOOL, writable=True),
    PointInfo("boiler", "setpoint", T.INT16, writable=True, min=0, max=120),
    PointInfo("boiler", "mode", T.STRING, writable=True),
    PointInfo("boiler", "gain", T.FLOAT32, writable=True),
    PointInfo("pump", "voltage", T.FLOAT32),
    PointInfo("pump", "current", T.FLOAT32),
    PointInfo("pump", "on", T.BOOL),
    PointInfo("tank", "level", T.FLOAT32),
    PointInfo("door", "open", T.BOOL),
    PointInfo("alarm", "siren", T.BOOL, writable=True),
    PointInfo("line", "state", T.STRING),
    PointInfo("line", "count", T.UINT32),
]


@dataclass
class Recorder:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    fail_set: bool = False

    def alert(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        self.events.append(("alert", rule, severity, message, state, ts))

    def set(self, rule: str, device: str, point: str, value: object) -> None:
        if self.fail_set:
            raise RuntimeError("router down")
        self.events.append(("set", rule, f"{device}.{point}", value))

    def publish(self, rule: str, topic: str, value: object, ts: int) -> None:
        self.events.append(("publish", rule, topic, value, ts))

    def log(self, rule: str, message: str) -> None:
        self.events.append(("log", rule, message))

    def take(self) -> list[tuple[Any, ...]]:
        out, self.events = self.events, []
        return out


class Harness:
    """An engine on a virtual clock: feed(t_seconds, "dev.point", value) runs the timers due first."""

    def __init__(self, text: str | dict[str, str], points: list[PointInfo] | None = POINTS) -> None:
        self.clock = 0
        self.acts = Recorder()
        self.transitions: list[tuple[str, str, int]] = []
        self.engine = RuleEngine(
            self.acts,
            now=lambda: self.clock,
            on_transition=lambda r, w, t: self.transitions.append((r, w, t)),
        )
        self.lets: list[Reading] = []
        self.ruleset = self.compile(text, points)
        self.engine.load(self.ruleset)

    @staticmethod
    def compile(text: str | dict[str, str], points: list[PointInfo] | None = POINTS) -> RuleSet:
        files = {"test.rules": text} if isinstance(text, str) else text
        return compile_rules(files, points)

    def advance(self, t: float) -> None:
        until = int(t * S)
        for _ in range(100_000):
            d = self.engine.next_deadline()
            if d is None or d > until:
                break
            self.clock = d
            self.lets += self.engine.tick(d)
        self.clock = until

    def feed(self, t: float, key: str, value: Any, quality: Quality = Quality.GOOD) -> None:
        self.advance(t)
        dev, pt = key.split(".")
        self.lets += self.engine.process([Reading(dev, pt, value, int(t * S), quality)])

    def feed_batch(self, t: float, values: dict[str, Any]) -> None:
        """Several readings in one `process()` call, as one poll of a device brings them."""
        self.advance(t)
        batch = []
        for key, value in values.items():
            dev, pt = key.split(".")
            batch.append(Reading(dev, pt, value, int(t * S), Quality.GOOD))
        self.lets += self.engine.process(batch)

    def state(self, rule: str) -> dict[str, Any]:
        st: dict[str, Any] = self.engine.status()["rules"][rule]
        return st

    def only_rule(self) -> str:
        ids = [r.id for r in self.ruleset.rules]
        assert len(ids) == 1, ids
        return ids[0]
