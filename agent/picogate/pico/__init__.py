"""Raspberry Pi Pico I/O boards: the agent's side of the link (docs/pico.md, docs/link-protocol.md).

`PicoBoard` is the gateway component of one `boards:` entry (wired in by `_attach.py`);
`board(name)` gives a board definition from boards/*.json.
"""

from picogate.pico._attach import PLUGIN
from picogate.pico._boards import BOARD_NAMES, Board, board, pin_number
from picogate.pico._config import BoardConfig
from picogate.pico._session import LinkDown, LinkStats, PicoBoard

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
