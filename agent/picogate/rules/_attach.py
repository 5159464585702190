"""Plugs the rules into the gateway (see picogate._component): the engine becomes a pipeline
processor, LET points join the registry, and the "rules" service runs the timers, the actions'
outbox, the status topic and hot reload (rules/_live.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picogate._component import Component

if TYPE_CHECKING:
    from picogate._gateway import Gateway


async def attach(gw: Gateway) -> list[Component]:
    """Load the rule files once and return the service that keeps them running; nothing without a
    `rules:` section (or with `enabled: false`)."""
    config = gw.config.rules
    if config is None or not config.enabled:
        return []
    from picogate.rules._live import LiveRules

    live = LiveRules(gw, config)
    live.setup()
    return [live]
