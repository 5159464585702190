"""Prometheus metrics of the rules service (added to the gateway's /metrics by rules/_attach.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from picogate._metrics import counter, gauge

if TYPE_CHECKING:
    from picogate.rules._live import LiveRules


def collector(live: LiveRules) -> Callable[[], Iterable[Any]]:
    def collect() -> Iterable[Any]:
        s = live.stats
        yield counter(
            "picogate_rules_reloads",
            "Reloads of the rule files",
            ["result"],
            [(["ok"], s.reloads_ok), (["error"], s.reloads_failed), (["unchanged"], s.reloads_unchanged)],
        )
        yield gauge(
            "picogate_rules_errors",
            "Errors in the rule files at the last reload",
            [],
            [([], len(live.attempt.errors))],
        )
        yield gauge(
            "picogate_rules_warnings",
            "Warnings about the rule set loaded (ON and CLEAR conditions that can both be true)",
            [],
            [([], len(live.loaded.warnings) if live.loaded is not None else 0)],
        )
        yield counter(
            "picogate_rules_let_bad",
            "LET readings published bad because their value could not be computed, by reason",
            ["reason"],
            [([reason], n) for reason, n in sorted(live.engine.let_bad.items())],
        )
        yield gauge(
            "picogate_rules_reload_seconds", "Duration of the last reload", [], [([], s.last_reload_s)]
        )
        yield gauge(
            "picogate_rules_swap_seconds", "Event-loop time of the last swap", [], [([], s.last_swap_s)]
        )
        body = live._last_status if isinstance(live._last_status, dict) else live.status()
        yield gauge(
            "picogate_rules",
            "Rules by state",
            ["state"],
            [([k], float(v)) for k, v in body.get("counts", {}).items()],
        )
        yield counter(
            "picogate_rules_actions",
            "Actions of the rules",
            ["action"],
            [(["alert"], s.alerts), (["publish"], s.publishes), (["set"], s.writes), (["log"], s.logs)],
        )
        yield counter(
            "picogate_rules_failures",
            "Failed or refused rule actions, dropped messages and engine failures",
            ["kind"],
            [
                (["write_failed"], s.writes_failed),
                (["write_refused"], s.writes_refused),
                (["publish_refused"], s.publish_refused),
                (["dropped"], s.dropped),
                (["engine"], s.engine_errors),
            ],
        )

    return collect
