"""Every point that `gateway.yaml` declares, registered as the running gateway registers them,
without opening a port: the Modbus devices, the Pico boards (their I/O and the Modbus devices
behind them), the CoAP nodes and the devices the CoAP client reads (each plug-in's `declare`).

The tools that check against the configuration use it (`picogate config check`, `picogate rules
check|test --config`, `picogate edgex profiles`), so that they see what the gateway will see.
Points that appear only at run time (CoAP `auto_register`, a rule's LET) are not in it.
"""

from __future__ import annotations

from picogate._plugins import PLUGINS
from picogate._registry import PointRegistry
from picogate.config import CoreConfig

__all__ = ["declared_points"]


def declared_points(cfg: CoreConfig) -> PointRegistry:
    registry = PointRegistry()
    for plugin in PLUGINS:
        if plugin.declare is not None:
            plugin.declare(cfg.section(plugin.section.key), registry)
    return registry
