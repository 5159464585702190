"""The plug-ins of this gateway, in the order they attach: the one registration line of each.

Sources first (Modbus, then the MQTT sink, whose `host.messages` the rules use, then Pico boards,
CoAP and the gateway's own I/O), then the rules (which see every source's points), then EdgeX
(which describes every point, LET points included), then the Sparkplug Edge Node (whose births
carry every point), then the operator console (which shows all of it).  The whole file's schema is
composed from their sections here, so that `config/` knows no protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from picogate import coap, console, edgex, local, modbus, mqtt, pico, rules, sparkplug
from picogate._host import Plugin
from picogate.config import ConfigIssue, CoreConfig, compose
from picogate.config import load_config as _load
from picogate.config import parse_config as _parse

PLUGINS: tuple[Plugin[Any], ...] = (
    modbus.PLUGIN,
    mqtt.PLUGIN,
    pico.PLUGIN,
    coap.PLUGIN,
    local.PLUGIN,
    rules.PLUGIN,
    edgex.PLUGIN,
    sparkplug.PLUGIN,
    console.PLUGIN,
)

GatewayConfig: type[CoreConfig] = compose([p.section for p in PLUGINS], name="GatewayConfig")
"""The schema of the whole `gateway.yaml`: the core's sections and every plug-in's."""


def load_config(path: str | Path, *, warnings: list[ConfigIssue] | None = None) -> CoreConfig:
    """Read and validate a `gateway.yaml`.  Raises ConfigError listing every problem found; adds
    to `warnings` what is valid but probably not meant."""
    return _load(path, GatewayConfig, warnings=warnings)


def parse_config(
    text: str, *, filename: str = "<string>", warnings: list[ConfigIssue] | None = None
) -> CoreConfig:
    """Validate the text of a `gateway.yaml`.  Raises ConfigError listing every problem found; adds
    to `warnings` what is valid but probably not meant."""
    return _parse(text, GatewayConfig, filename=filename, warnings=warnings)
