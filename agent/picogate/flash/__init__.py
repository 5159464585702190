"""Flashing and provisioning Pico boards over USB (`picogate boards`, `picogate flash`).

docs/flashing.md is the guide. The public names are loaded on first use, so that importing the
package (the CLI does, for its subcommands) costs nothing: pyserial, mpremote and rich come in only
when a board is touched.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.flash._build import build_firmware
    from picogate.flash._cli import add_commands
    from picogate.flash._errors import FlashError
    from picogate.flash._flash import Builder, FlashOptions, FlashResult, flash_board
    from picogate.flash._select import BoardInfo, list_boards
    from picogate.flash._uf2 import Uf2Image, check_uf2, parse_uf2

__all__ = [
    "BoardInfo",
    "Builder",
    "FlashError",
    "FlashOptions",
    "FlashResult",
    "Uf2Image",
    "add_commands",
    "build_firmware",
    "check_uf2",
    "flash_board",
    "list_boards",
    "parse_uf2",
]

_WHERE = {
    "add_commands": "_cli",
    "BoardInfo": "_select",
    "list_boards": "_select",
    "Builder": "_flash",
    "FlashOptions": "_flash",
    "FlashResult": "_flash",
    "flash_board": "_flash",
    "FlashError": "_errors",
    "Uf2Image": "_uf2",
    "check_uf2": "_uf2",
    "parse_uf2": "_uf2",
    "build_firmware": "_build",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'picogate.flash' has no attribute {name!r}")
    return getattr(import_module(f"picogate.flash.{module}"), name)
