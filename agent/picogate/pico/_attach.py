"""Plugs the Pico boards of `gateway.yaml` into the gateway (see picogate._component)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from picogate._component import Component

if TYPE_CHECKING:
    from picogate._gateway import Gateway


async def attach(gw: Gateway) -> list[Component]:
    """One `PicoBoard` per `boards:` entry: its points registered, its devices writable."""
    if not gw.config.boards:
        return []
    from picogate.pico._metrics import collector
    from picogate.pico._session import PicoBoard

    boards: list[PicoBoard] = []
    for cfg in gw.config.boards:
        # Readings are acknowledged to the board once committed (emit waits); device states are
        # acknowledged to nobody and only handed over.
        board = PicoBoard(
            cfg,
            registry=gw.registry,
            emit=gw.pipeline.emit,
            status_changed=functools.partial(gw.pipeline.device_status, wait=False),
        )
        board.register()
        for device, writer in board.writers().items():
            gw.router.register_writer(device, writer)
        boards.append(board)
    gw.parts.metrics.add_collector(collector(boards))
    return list(boards)
