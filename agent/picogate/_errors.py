"""The root of picogate's exceptions: `PicogateError`, which says what went wrong and where.

Each area has its own subclasses (the configuration, the outbox, a sink, a Modbus device, a Pico
link, the rule files, flashing, ...); they keep the builtin base they always had (`ValueError` for
bad input, `ConnectionError` for a lost peer, `RuntimeError` for a state), so that

    except PicogateError as exc:
        log.error("%s", exc)          # the message, with its place
        exc.what, exc.where           # the two parts, for a caller that formats them itself

catches every error the agent raises on purpose.  Stable result codes of writes are not
exceptions: they stay the command router's `ErrorCode`.
"""

from __future__ import annotations

__all__ = ["PicogateError"]


class PicogateError(Exception):
    """What went wrong (`what`, a sentence for an operator) and where (`where`: a file and line, a
    device and register, a port, a sink; empty when the error has no single place).

    `PicogateError(what, where=...)`; subclasses with their own constructor call
    `super().__init__(message)` as before and set `where` where they know it.  `str()` is the
    message the subclass always gave.
    """

    where: str = ""

    def __init__(self, *args: object, where: str = "") -> None:
        super().__init__(*args)
        if where:
            self.where = where

    @property
    def what(self) -> str:
        """The message without its place."""
        text = str(self)
        if self.where and text.startswith(self.where):
            return text[len(self.where) :].lstrip(":, ")
        return text
