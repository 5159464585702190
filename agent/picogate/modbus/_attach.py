"""Plugs the Modbus devices of `gateway.yaml` into the gateway (see picogate._host): one poller per
link (a TCP connection or a serial bus), its points registered, its devices writable.

Each link is a part of the plug-in (`host.part`): when `gateway.yaml` is reloaded, `update` stops
and builds again only the links whose devices changed (a device changed, added or removed); the
other links go on polling, on the same connection."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from picogate._host import Plugin
from picogate._registry import PointRegistry
from picogate.modbus._config import SECTION, ModbusRtuDevice, ModbusTcpDevice

if TYPE_CHECKING:
    from picogate._host import Host
    from picogate.modbus._source import ModbusLine

Devices = list[ModbusTcpDevice | ModbusRtuDevice]
LinkKey = tuple[str, ...]


@dataclass(slots=True)
class _Running:
    """What the plug-in keeps between `attach` and `update` (`host.state`)."""

    observe: _Observer
    lines: list[ModbusLine] = field(default_factory=list)
    """The running lines (read by the metrics collector at each scrape)."""
    by_link: dict[LinkKey, ModbusLine] = field(default_factory=dict)


async def attach(host: Host, devices: Devices) -> None:
    from picogate.modbus._metrics import collector

    running = host.state = _Running(_Observer(host.metrics.request_seconds))
    _start(host, running, devices, devices)
    host.add_collector(collector(running.lines))


async def update(host: Host, old: Devices, new: Devices) -> None:
    """Rebuild the links whose devices changed; leave the others polling."""
    running: _Running = host.state
    before, after = _by_link(old), _by_link(new)
    for name in {d.name for d in old} - {d.name for d in new}:
        running.observe.forget(name)
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) == after.get(key):
            continue
        line = running.by_link.pop(key, None)
        if line is not None:
            running.lines.remove(line)
        await host.drop_part(_part(key))
        # (no await from the old line's points leaving the registry to the new one's arriving:
        # the rules see them come back in the same turn)
        _start(host, running, after.get(key, []), new)


def _start(host: Host, running: _Running, devices: Devices, everyone: Devices) -> None:
    """Build and start the lines of `devices`, their first polls spread as among `everyone`."""
    from picogate.modbus._source import build_lines, link_key

    if not devices:
        return
    # A poll is acknowledged to nobody: its readings are handed over without waiting for the
    # commit, so that a line polls as fast as its devices answer.
    lines = build_lines(
        devices,
        registry=host.registry,
        emit=functools.partial(host.pipeline.emit, wait=False),
        status_changed=functools.partial(host.pipeline.device_status, wait=False),
    )
    index = {d.name: i for i, d in enumerate(everyone)}
    configs = {d.name: d for d in devices}
    for line in lines:
        line.phases = {name: index[name] / len(everyone) for name in line.devices}
        key = link_key(configs[next(iter(line.devices))])
        part = host.part(_part(key))
        line.register()
        part.track_points((d, p) for d, dev in line.devices.items() for p in dev.infos)
        line.set_write_queue(host.router.policy.queue_per_device)
        for name in line.devices:
            part.register_writer(name, line.writer_for(name))
        line.latency_observer = running.observe
        running.lines.append(line)
        running.by_link[key] = line
        part.add_component(line)
    for d in devices:
        host.registry.set_device_address(d.name, protocols(d))


def _by_link(devices: Devices) -> dict[LinkKey, Devices]:
    from picogate.modbus._source import link_key

    groups: dict[LinkKey, Devices] = {}
    for d in devices:
        groups.setdefault(link_key(d), []).append(d)
    return groups


def _part(key: LinkKey) -> str:
    return ":".join(key)


class _Observer:
    """Observe a request's time in the device's child of `histogram`, looked up once per device
    (labels() costs more than observe(), and this runs for every request)."""

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram
        self._children: dict[str, Any] = {}

    def __call__(self, device: str, seconds: float) -> None:
        child = self._children.get(device)
        if child is None:
            child = self._children[device] = self._histogram.labels(device)
        child.observe(seconds)

    def forget(self, device: str) -> None:
        """A device removed from the configuration: its series leaves /metrics."""
        self._children.pop(device, None)
        with contextlib.suppress(KeyError):
            self._histogram.remove(device)


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


PLUGIN: Plugin[Devices] = Plugin("modbus", SECTION, attach, declare, update)
