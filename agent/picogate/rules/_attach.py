"""Plugs this package into the gateway (see picogate._component)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picogate._component import Component

if TYPE_CHECKING:
    from picogate._gateway import Gateway


async def attach(gw: Gateway) -> list[Component]:
    """Nothing yet: the issue that builds this package fills it in."""
    return []
