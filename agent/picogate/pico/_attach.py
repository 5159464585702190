"""Plugs the Pico boards of `gateway.yaml` into the gateway (see picogate._host)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from picogate._host import Plugin
from picogate._registry import PointRegistry
from picogate.config import Location
from picogate.pico._config import SECTION, BoardConfig
from picogate.pico._derive import derive

if TYPE_CHECKING:
    from picogate._host import Host


async def attach(host: Host, boards: list[BoardConfig]) -> None:
    """One `PicoBoard` per `boards:` entry: its points registered, its devices writable."""
    if not boards:
        return
    from picogate.pico._metrics import collector
    from picogate.pico._session import PicoBoard

    running: list[PicoBoard] = []
    for cfg in boards:
        # Readings are acknowledged to the board once committed (emit waits); device states are
        # acknowledged to nobody and only handed over.
        board = PicoBoard(
            cfg,
            registry=host.registry,
            emit=host.pipeline.emit,
            status_changed=functools.partial(host.pipeline.device_status, wait=False),
        )
        board.register()
        host.track_points((p.device, p.name) for p in board.plan.infos)
        for device, writer in board.writers().items():
            host.register_writer(device, writer)
        running.append(board)
        host.add_component(board)
    host.add_collector(collector(running))


def declare(boards: list[BoardConfig], registry: PointRegistry) -> None:
    for board in boards:
        for info in derive(board).infos:
            registry.add(info, replace=True)


def _derivable(boards: list[BoardConfig]) -> Iterator[tuple[Location, str]]:
    """What would be pushed to each board (the planner's limits, the board's 16 KB), checked once
    the file is valid."""
    for i, board in enumerate(boards):
        try:
            derive(board)
        except ValueError as exc:
            yield (i,), str(exc)


PLUGIN: Plugin[list[BoardConfig]] = Plugin(
    "pico", dataclasses.replace(SECTION, after_load=_derivable), attach, declare
)
