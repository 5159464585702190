"""Plugs the Modbus devices of `gateway.yaml` into the gateway (see picogate._host): one poller per
link (a TCP connection or a serial bus), its points registered, its devices writable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from picogate._host import Plugin
from picogate._registry import PointRegistry
from picogate.modbus._config import SECTION, ModbusRtuDevice, ModbusTcpDevice

if TYPE_CHECKING:
    from picogate._host import Host

Devices = list[ModbusTcpDevice | ModbusRtuDevice]


async def attach(host: Host, devices: Devices) -> None:
    from picogate.modbus._metrics import collector
    from picogate.modbus._source import build_lines

    # A poll is acknowledged to nobody: its readings are handed over without waiting for the
    # commit, so that a line polls as fast as its devices answer.
    lines = build_lines(
        devices,
        registry=host.registry,
        emit=functools.partial(host.pipeline.emit, wait=False),
        status_changed=functools.partial(host.pipeline.device_status, wait=False),
    )
    request_seconds = host.metrics.request_seconds
    for line in lines:
        line.register()
        host.track_points((d, p) for d, dev in line.devices.items() for p in dev.infos)
        line.set_write_queue(host.router.policy.queue_per_device)
        for name in line.devices:
            host.register_writer(name, line.writer_for(name))
        line.latency_observer = _observer(request_seconds)
        host.add_component(line)
    for d in devices:
        host.registry.set_device_address(d.name, protocols(d))
    host.add_collector(collector(lines))


def _observer(histogram: Any) -> Callable[[str, float], None]:
    """Observe a request's time in the device's child of `histogram`, looked up once per device
    (labels() costs more than observe(), and this runs for every request)."""
    children: dict[str, Any] = {}

    def observe(device: str, seconds: float) -> None:
        child = children.get(device)
        if child is None:
            child = children[device] = histogram.labels(device)
        child.observe(seconds)

    return observe


def declare(devices: Devices, registry: PointRegistry) -> None:
    """The points of `devices:`, registered as the pollers register them (nothing opened)."""
    from picogate.modbus._source import build_lines

    async def _noop(*_: object) -> None:
        return None

    for line in build_lines(devices, registry=registry, emit=_noop, status_changed=_noop):
        line.register()
    for d in devices:
        registry.set_device_address(d.name, protocols(d))


def protocols(d: ModbusTcpDevice | ModbusRtuDevice) -> dict[str, dict[str, str]]:
    """How the device is reached, by protocol (EdgeX's `protocols` of a device: for information)."""
    if d.type == "modbus_tcp":
        return {"modbus-tcp": {"Address": d.host, "Port": str(d.port), "UnitID": str(d.unit_id)}}
    return {
        "modbus-rtu": {
            "Address": d.port,
            "UnitID": str(d.unit_id),
            "BaudRate": str(d.baudrate),
            "DataBits": str(d.bytesize),
            "StopBits": str(d.stopbits),
            "Parity": d.parity,
        }
    }


PLUGIN: Plugin[Devices] = Plugin("modbus", SECTION, attach, declare)
