"""What can go wrong while listing, building and flashing boards (each error says what to do)."""

from __future__ import annotations

from picogate._errors import PicogateError

__all__ = [
    "BoardNotAnswering",
    "FlashError",
    "NoBoard",
    "PortBusy",
    "PortPermission",
    "Uf2Error",
    "WrongFamily",
]


class FlashError(PicogateError):
    """Base class: a message for the operator, and the port or file it is about (may be empty)."""

    def __init__(self, message: str, *, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message, where=where)


class NoBoard(FlashError):
    """No board found (or the one asked for is not connected)."""


class PortBusy(FlashError):
    """Another process holds the serial port (e.g. the running agent)."""

    def __init__(self, message: str, *, where: str = "", pid: int | None = None, agent: bool = False) -> None:
        super().__init__(message, where=where)
        self.pid = pid
        self.agent = agent


class PortPermission(FlashError):
    """The serial port or the UF2 drive cannot be opened by this user."""


class BoardNotAnswering(FlashError):
    """The board neither speaks the link nor gives its REPL."""


class Uf2Error(FlashError):
    """A UF2 file that is not a valid image."""


class WrongFamily(Uf2Error):
    """A valid UF2 image for another chip than the board's."""
