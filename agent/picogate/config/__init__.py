"""`gateway.yaml`: the typed schema and the loader that reports every problem with its position.

    from picogate.config import ConfigError, load_config

    try:
        config = load_config("/etc/picogate/gateway.yaml")
    except ConfigError as exc:
        print(exc)  # file:line:column: path: message, with the source line and a caret

See docs/configuration.md for every key.
"""

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
