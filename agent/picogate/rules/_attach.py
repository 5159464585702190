"""Plugs the rules into the gateway (see picogate._host): the engine becomes a pipeline processor,
LET points join the registry, and the "rules" service runs the timers, the actions' outbox, the
status topic and hot reload (rules/_live.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picogate._host import Plugin
from picogate.rules._config import SECTION, RulesSection

if TYPE_CHECKING:
    from picogate._host import Host


async def attach(host: Host, config: RulesSection | None) -> None:
    """Load the rule files once and add the service that keeps them running; nothing without a
    `rules:` section (or with `enabled: false`)."""
    if config is None or not config.enabled:
        return
    from picogate.rules._live import LiveRules
    from picogate.rules._metrics import collector

    live = LiveRules(host, config)
    live.setup()
    host.add_collector(collector(live))
    host.add_component(live)
    host.provide("rules", live)  # the console: rule states, alerts, the rule editor


PLUGIN: Plugin[RulesSection | None] = Plugin("rules", SECTION, attach)
