"""RuleEngine: runs a compiled RuleSet as a pipeline processor."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from picogate._model import Reading
from picogate.rules._ruleset import RuleSet


class Actions(Protocol):
    """What rules do to the world; implemented by the gateway (rules-live) and `rules test`."""

    def alert(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        """state "active" | "cleared"."""

    def set(self, rule: str, device: str, point: str, value: object) -> None:
        """Fire and forget; the outcome comes back via engine.write_result(rule, ok, message)."""

    def publish(self, rule: str, topic: str, value: object, ts: int) -> None: ...

    def log(self, rule: str, message: str) -> None: ...


class RuleEngine:
    """A Pipeline processor.  Not thread-safe: call it from one thread (the event loop)."""

    def __init__(self, actions: Actions, *, now: Callable[[], int] = time.time_ns) -> None:
        self._actions = actions
        self._now = now
        self._ruleset = RuleSet()

    def load(self, ruleset: RuleSet) -> None:
        """Swap atomically.  Rules whose id and text_hash are unchanged keep their state (FOR timers,
        windows, active alarms); changed rules start fresh; a removed rule that was active clears
        its alarm (alert state "cleared")."""
        self._ruleset = ruleset

    def process(self, readings: Sequence[Reading]) -> list[Reading]:
        """Evaluate the rules that reference these readings' points, in order.  Returns the LET
        readings they derived (already seen by the rules: do not feed them back)."""
        return []

    def tick(self, now_ns: int) -> list[Reading]:
        """Run the timers due by now_ns (FOR, EVERY, age/window re-checks); LET readings."""
        return []

    def next_deadline(self) -> int | None:
        """ns of the next timer, None if none."""
        return None

    def write_result(self, rule: str, ok: bool, message: str) -> None:
        """The outcome of a set() that `rule` asked for; a failure marks the rule errored."""

    def status(self) -> dict[str, Any]:
        """{"version", "rules": {id: {"state": "idle|active|unknown|errored", "reason", "last_fired",
        "file", "line"}}}"""
        return {"version": self._ruleset.version, "rules": {}}
