"""Raspberry Pi Pico I/O boards: the agent's side of the link (docs/pico.md, docs/link-protocol.md).

`PicoBoard` is the gateway component of one `boards:` entry (wired in by `_attach.py`);
`board(name)` gives a board definition from boards/*.json.  The session's names load on first use
(they import pyserial): a gateway without boards does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from picogate.pico._attach import PLUGIN
from picogate.pico._boards import BOARD_NAMES, Board, board, pin_number
from picogate.pico._config import BoardConfig

if TYPE_CHECKING:
    from picogate.pico._session import LinkDown, LinkStats, PicoBoard

_WHERE = {"LinkDown": "_session", "LinkStats": "_session", "PicoBoard": "_session"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BOARD_NAMES",
    "PLUGIN",
    "Board",
    "BoardConfig",
    "LinkDown",
    "LinkStats",
    "PicoBoard",
    "board",
    "pin_number",
]
