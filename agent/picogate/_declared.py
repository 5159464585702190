"""Every point that `gateway.yaml` declares, registered as the running gateway registers them,
without opening a port: the Modbus devices, the Pico boards (their I/O and the Modbus devices
behind them), the CoAP nodes and the devices the CoAP client reads.

The tools that check against the configuration use it (`picogate config check`, `picogate rules
check|test --config`, `picogate edgex profiles`), so that they see what the gateway will see.
Points that appear only at run time (CoAP `auto_register`, a rule's LET) are not in it.
"""

from __future__ import annotations

from typing import Any

from picogate._registry import PointRegistry
from picogate.config import GatewayConfig


def declared_points(cfg: GatewayConfig) -> PointRegistry:
    from picogate.modbus._source import build_lines

    registry = PointRegistry()

    async def _noop(*_: Any) -> None:
        return None

    for line in build_lines(cfg.devices, registry=registry, emit=_noop, status_changed=_noop):
        line.register()
    if cfg.boards:
        from picogate.pico._derive import derive

        for board in cfg.boards:
            for info in derive(board).infos:
                registry.add(info, replace=True)
    if cfg.coap is not None:
        from picogate.coap._points import client_points, node_points

        for info in node_points(cfg.coap) + client_points(cfg.coap.clients):
            registry.add(info)
    return registry
