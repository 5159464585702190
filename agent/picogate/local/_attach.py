"""Plugs the gateway's own I/O (`local:`) into the gateway (see picogate._host)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from picogate._host import Plugin
from picogate._metrics import counter
from picogate._registry import PointRegistry
from picogate.config import Location
from picogate.local._config import SECTION, LocalSection
from picogate.local._hw import INSTALL, LocalError, detect, missing
from picogate.local._points import check_pins, infos

if TYPE_CHECKING:
    from picogate._host import Host
    from picogate.local._source import LocalIoSource


def problems(section: LocalSection) -> list[tuple[Location, str]]:
    """What keeps the section from running here: Blinka or a driver not installed, a board Blinka
    does not support, pins the detected board does not have (listing the pins it has)."""
    kinds = {p.kind for p in section.io}
    absent = missing(kinds)
    if absent:
        return [((), f"needs {', '.join(absent)}, not installed here: install with {INSTALL}")]
    if not kinds - {"ds18b20"}:
        return []
    try:
        board = detect()
    except LocalError as exc:
        return [((), str(exc))]
    return list(check_pins(section, board))


def _after_load(section: LocalSection | None) -> Iterator[tuple[Location, str]]:
    if section is not None:
        yield from problems(section)


async def attach(host: Host, section: LocalSection | None) -> None:
    """One `LocalIoSource` for the section: its points registered, its outputs writable."""
    if section is None:
        return
    found = problems(section)
    if found:
        lines = [
            f"local{''.join(f'[{k}]' if isinstance(k, int) else f'.{k}' for k in loc)}: {msg}"
            for loc, msg in found
        ]
        raise LocalError("; ".join(lines), where="local")
    from picogate.local._source import LocalIoSource

    source = LocalIoSource(
        section,
        registry=host.registry,
        emit=host.pipeline.emit,
        status_changed=functools.partial(host.pipeline.device_status, wait=False),
    )
    source.register()
    host.track_points((i.device, i.name) for i in source.infos)
    if any(i.writable for i in source.infos):
        host.register_writer(section.name, source.writer())
    host.add_collector(functools.partial(_collect, source))
    host.add_component(source)


def _collect(source: LocalIoSource) -> Iterable[Any]:
    yield counter(
        "picogate_local_reads", "Sensor reads of the gateway's own I/O that answered", ["device"],
        [([source.device], source.stats.reads)],
    )  # fmt: skip
    yield counter(
        "picogate_local_failures",
        "Driver calls of the gateway's own I/O that failed, by reason (timeout, error, value)",
        ["device", "reason"],
        [([source.device, r], n) for r, n in sorted(source.stats.failures.items())],
    )
    yield counter(
        "picogate_local_driver_timeouts",
        "Driver calls given up after local.timeout, by worker (gpio, an I²C bus, 1-wire)",
        ["device", "worker"],
        [([source.device, w.name], w.timeouts) for w in (source.gpio, *source.buses.values())],
    )


def declare(section: LocalSection | None, registry: PointRegistry) -> None:
    if section is not None:
        for info in infos(section):
            registry.add(info, replace=True)


PLUGIN: Plugin[LocalSection | None] = Plugin(
    "local", dataclasses.replace(SECTION, after_load=_after_load), attach, declare
)
