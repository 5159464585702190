"""`gateway.yaml`: the core's sections, the building blocks of every plug-in's section, the
composition of the whole file, and the loader that reports every problem with its position.

`config/` knows no protocol: the gateway composes the file's model from the sections its plug-ins
register (`picogate.gateway.GatewayConfig`), and loads it with

    from picogate.config import ConfigError
    from picogate.gateway import load_config

    try:
        config = load_config("/etc/picogate/gateway.yaml")
    except ConfigError as exc:
        print(exc)  # file:line:column: path: message, with the source line and a caret

See docs/configuration.md for every key.
"""

from picogate.config._base import (
    Deadband,
    Duration,
    EnvName,
    Name,
    Port,
    PositiveDuration,
    StrictModel,
    UnitId,
    parse_deadband,
    parse_duration,
)
from picogate.config._commands import CommandsSection, DeadlineSection, RateLimitSection
from picogate.config._load import ConfigError, ConfigIssue, load_config, parse_config
from picogate.config._schema import (
    ClockSection,
    CoreConfig,
    GatewaySection,
    Location,
    MetricsSection,
    OutboxSection,
    Section,
    compose,
)
from picogate.config._show import effective, format_duration, show_yaml

__all__ = [
    "ClockSection",
    "CommandsSection",
    "ConfigError",
    "ConfigIssue",
    "CoreConfig",
    "Deadband",
    "DeadlineSection",
    "Duration",
    "EnvName",
    "GatewaySection",
    "Location",
    "MetricsSection",
    "Name",
    "OutboxSection",
    "Port",
    "PositiveDuration",
    "RateLimitSection",
    "Section",
    "StrictModel",
    "UnitId",
    "compose",
    "effective",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_deadband",
    "parse_duration",
    "show_yaml",
]
