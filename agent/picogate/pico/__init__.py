"""Raspberry Pi Pico I/O boards: the agent's side of the link (docs/pico.md, docs/link-protocol.md).

`PicoBoard` is the gateway component of one `boards:` entry (wired in by `_attach.py`);
`board(name)` gives a board definition from boards/*.json.  The session classes are imported on
first use: the config schema imports the board definitions from here, and the session imports the
schema.
"""

from typing import Any

from picogate.pico._boards import BOARD_NAMES, Board, board, pin_number

__all__ = ["BOARD_NAMES", "Board", "LinkDown", "LinkStats", "PicoBoard", "board", "pin_number"]


def __getattr__(name: str) -> Any:
    if name in ("LinkDown", "LinkStats", "PicoBoard"):
        from picogate.pico import _session

        return getattr(_session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
