"""`tray.yaml`: what a factory run gives every board (docs/flashing.md, "Factory mode")."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from picogate._model import NAME_PATTERN, NAME_RE
from picogate.config import Name
from picogate.config import StrictModel as _Model
from picogate.flash._errors import FlashError

__all__ = ["Tray", "load_tray"]

_SERIAL = re.compile(r"^[0-9A-Fa-f]{16}$")


class Tray(_Model):
    """A factory tray: the gateway the boards belong to, their names, how many at once."""

    gateway: Name | None = None
    name: str = Field(default="pico_{serial_short}", min_length=1, max_length=64)
    boards: dict[str, Name] = Field(default_factory=dict)
    parallel: int = Field(default=4, ge=1, le=32)
    log: str | None = None
    micropython: str | None = None

    @field_validator("boards", mode="before")
    @classmethod
    def _serials(cls, boards: Any) -> Any:
        if isinstance(boards, dict):
            for key in boards:
                if not _SERIAL.match(str(key)):
                    raise ValueError(
                        f"{str(key)!r} is not a USB serial number: 16 hex digits (0-9, A-F), "
                        "as `picogate boards` shows them"
                    )
            return {str(key): name for key, name in boards.items()}
        return boards

    def unmatched(self, serials: Iterable[str | None]) -> list[str]:
        """The serials of `boards` that none of `serials` (the boards found) has."""
        found = {s.upper() for s in serials if s}
        return [key for key in self.boards if key.upper() not in found]

    def name_for(self, serial: str | None, n: int) -> str:
        serial = (serial or "").upper()
        for key, name in self.boards.items():
            if key.upper() == serial:
                return name
        serial = serial.lower() or f"board{n}"
        return self.name.format(serial=serial, serial_short=serial[-6:], n=n)


def load_tray(path: Path) -> Tray:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise FlashError(f"cannot read: {e.strerror}", where=str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise FlashError(f"not valid YAML: {getattr(e, 'problem', e)}", where=f"{path}{at}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise FlashError(
            "must be a mapping (gateway:, name:, boards:, parallel:, log:, micropython:)", where=str(path)
        )
    try:
        tray = Tray.model_validate(doc)
    except ValidationError as e:
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        )
        raise FlashError(msgs, where=str(path)) from None
    try:
        sample = tray.name_for("E6614103E7000001", 1)
    except (KeyError, IndexError, ValueError) as e:
        raise FlashError(
            f"name: bad template {tray.name!r} ({e}); use {{serial}}, {{serial_short}} or {{n}}",
            where=str(path),
        ) from None
    if not NAME_RE.match(sample):
        raise FlashError(
            f"name: template {tray.name!r} gives names like {sample!r}, which is not a valid name "
            f"({NAME_PATTERN}: a lower-case letter, then lower-case letters, digits and _)",
            where=str(path),
        )
    return tray
