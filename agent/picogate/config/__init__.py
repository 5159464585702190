"""`gateway.yaml`: the typed schema and the loader that reports every problem with its position.

    from picogate.config import ConfigError, load_config

    try:
        config = load_config("/etc/picogate/gateway.yaml")
    except ConfigError as exc:
        print(exc)  # file:line:column: path: message, with the source line and a caret

See docs/configuration.md for every key.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.config._base import Duration, PositiveDuration, parse_duration
    from picogate.config._load import ConfigError, ConfigIssue, load_config, parse_config
    from picogate.config._schema import (
        ClockSection,
        Deadband,
        Device,
        GatewayConfig,
        GatewaySection,
        MetricsSection,
        ModbusRtuDevice,
        ModbusTcpDevice,
        MqttSection,
        OutboxSection,
        PointConfig,
        PublishMode,
        ReconnectSection,
        TlsSection,
        reference_to_address,
    )

# Loaded on first use: the plug-ins' sections (coap/_config.py, ...) import the building blocks
# of config/_base.py, and config/_schema.py imports those sections.
_WHERE = {
    "Duration": "_base",
    "PositiveDuration": "_base",
    "parse_duration": "_base",
    "ConfigError": "_load",
    "ConfigIssue": "_load",
    "load_config": "_load",
    "parse_config": "_load",
    "ClockSection": "_schema",
    "Deadband": "_schema",
    "Device": "_schema",
    "GatewayConfig": "_schema",
    "GatewaySection": "_schema",
    "MetricsSection": "_schema",
    "ModbusRtuDevice": "_schema",
    "ModbusTcpDevice": "_schema",
    "MqttSection": "_schema",
    "OutboxSection": "_schema",
    "PointConfig": "_schema",
    "PublishMode": "_schema",
    "ReconnectSection": "_schema",
    "TlsSection": "_schema",
    "reference_to_address": "_schema",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ClockSection",
    "ConfigError",
    "ConfigIssue",
    "Deadband",
    "Device",
    "Duration",
    "GatewayConfig",
    "GatewaySection",
    "MetricsSection",
    "ModbusRtuDevice",
    "ModbusTcpDevice",
    "MqttSection",
    "OutboxSection",
    "PointConfig",
    "PositiveDuration",
    "PublishMode",
    "ReconnectSection",
    "TlsSection",
    "load_config",
    "parse_config",
    "parse_duration",
    "reference_to_address",
]
