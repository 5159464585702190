"""The plug-ins of this gateway, in the order they attach: the one registration line of each.

Sources first (Modbus, then the MQTT sink, whose `host.messages` the rules use, then Pico boards,
CoAP and the gateway's own I/O), then the rules (which see every source's points), then EdgeX
(which describes every point, LET points included).  The whole file's schema is composed from their
sections here, so that `config/` knows no protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from picogate import coap, edgex, local, modbus, mqtt, pico, rules
from picogate._host import Plugin
from picogate.config import CoreConfig, compose
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
)

GatewayConfig: type[CoreConfig] = compose([p.section for p in PLUGINS], name="GatewayConfig")
"""The schema of the whole `gateway.yaml`: the core's sections and every plug-in's."""


def load_config(path: str | Path) -> CoreConfig:
    """Read and validate a `gateway.yaml`.  Raises ConfigError listing every problem found."""
    return _load(path, GatewayConfig)


def parse_config(text: str, *, filename: str = "<string>") -> CoreConfig:
    """Validate the text of a `gateway.yaml`.  Raises ConfigError listing every problem found."""
    return _parse(text, GatewayConfig, filename=filename)
