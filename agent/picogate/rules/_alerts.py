"""The alerts the rules raised that are still active, and the last alert events: what the local API
and `picogate watch` show (the MQTT alerts topic carries the same events, one by one).

Pure and bounded.  An alert is active from the moment its rule raises it (state `active`) until
the rule clears (any `cleared` alert of that rule: the THEN alerts sent again, or the ELSE alert).
A rule that fires again replaces its active alerts with the new firing's (an EVERY rule that
alerts each period shows its latest); a rule that a reload removed takes its alerts with it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("picogate.rules")

MAX_RECENT = 200
"""Alert events kept, the newest last."""
MAX_PER_RULE = 16
"""Active alerts of one firing of one rule, at most (a THEN with more alerts keeps its first)."""


@dataclass(frozen=True, slots=True)
class AlertEvent:
    rule: str
    severity: str
    message: str
    state: str  # "active" | "cleared"
    ts: int  # ns since the epoch: when the rule fired or cleared


@dataclass(slots=True)
class _Firing:
    ts: int
    alerts: list[AlertEvent] = field(default_factory=list)


class AlertBook:
    """Active alerts by rule, in the order they were raised, and the last `max_recent` events."""

    def __init__(self, *, max_recent: int = MAX_RECENT, max_per_rule: int = MAX_PER_RULE) -> None:
        self._active: dict[str, _Firing] = {}
        self._recent: deque[AlertEvent] = deque(maxlen=max_recent)
        self._max_per_rule = max_per_rule
        self.raised = 0
        """Alerts raised (state active) since the start."""
        self.listeners: list[Callable[[str, str, str, str, int], None]] = []
        """Called with each alert event (rule, severity, message, state, ts), after it is recorded
        (the console's alarm history); one that raises is logged, and the others still hear it."""

    def record(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        event = AlertEvent(rule, severity, message, state, ts)
        self._recent.append(event)
        if state != "active":
            self._active.pop(rule, None)
        else:
            self.raised += 1
            firing = self._active.get(rule)
            if firing is None or firing.ts != ts:
                self._active.pop(rule, None)  # the newest firing last
                firing = self._active[rule] = _Firing(ts)
            if len(firing.alerts) < self._max_per_rule:
                firing.alerts.append(event)
        for listener in self.listeners:
            try:
                listener(rule, severity, message, state, ts)
            except Exception:
                log.exception("alert listener %r failed", listener)

    def retain(self, rules: Iterable[str]) -> None:
        """Forget the active alerts of rules that are no longer loaded (after a reload)."""
        keep = set(rules)
        for rule in [r for r in self._active if r not in keep]:
            del self._active[rule]

    def active(self) -> list[AlertEvent]:
        """The active alerts, the oldest firing first."""
        return [a for firing in self._active.values() for a in firing.alerts]

    def recent(self) -> list[AlertEvent]:
        """The last alert events (active and cleared), the newest last."""
        return list(self._recent)
