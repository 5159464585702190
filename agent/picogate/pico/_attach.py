"""Plugs the Pico boards of `gateway.yaml` into the gateway (see picogate._host): one `PicoBoard`
per board, each a part of the plug-in that a reload rebuilds alone."""

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
    from picogate.pico._session import PicoBoard


async def attach(host: Host, boards: list[BoardConfig]) -> None:
    """One `PicoBoard` per `boards:` entry: its points registered, its devices writable.  Each
    board is a part of the plug-in (`host.part`), so that a reload rebuilds only the boards that
    changed."""
    if not boards:
        return
    from picogate.pico._metrics import collector

    running: list[PicoBoard] = []
    host.state = running
    for cfg in boards:
        _start(host, running, cfg)
    host.add_collector(collector(running))


async def update(host: Host, old: list[BoardConfig], new: list[BoardConfig]) -> None:
    """Rebuild the boards whose entry changed (added, removed, changed); the others run on."""
    if host.state is None:  # no board at start: attached as at start
        await attach(host, new)
        return
    running: list[PicoBoard] = host.state
    before, after = {b.name: b for b in old}, {b.name: b for b in new}
    for name in [*before, *(n for n in after if n not in before)]:
        if after.get(name) == before.get(name):
            continue
        running[:] = [b for b in running if b.cfg.name != name]
        await host.drop_part(name)
        cfg = after.get(name)
        if cfg is not None:  # (in the same turn as the old board's points left)
            _start(host, running, cfg)


def _start(host: Host, running: list[PicoBoard], cfg: BoardConfig) -> None:
    from picogate.pico._session import PicoBoard

    part = host.part(cfg.name)
    # Readings are acknowledged to the board once committed (emit waits); device states are
    # acknowledged to nobody and only handed over.
    board = PicoBoard(
        cfg,
        registry=host.registry,
        emit=host.pipeline.emit,
        status_changed=functools.partial(host.pipeline.device_status, wait=False),
    )
    board.register()
    part.track_points((p.device, p.name) for p in board.plan.infos)
    for device, writer in board.writers().items():
        part.register_writer(device, writer)
    running.append(board)
    part.add_component(board)


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
    "pico", dataclasses.replace(SECTION, after_load=_derivable), attach, declare, update
)
