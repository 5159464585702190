"""The points the `local:` section declares, and the checks of its pins against a board (pure).

`infos(section)` is what the registry gets; `check_pins(section, board)` what `config check` and
the start report when a pin name is not one of the detected board's, or is used twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from picogate._model import PointInfo, PointType
from picogate.local._config import I2C_KINDS, SUFFIXES, LocalIo, LocalSection

__all__ = ["BoardPins", "check_pins", "infos", "io_infos"]

_DEFAULT_UNIT = {"ads1115": "V", "ds18b20": "°C"}


@dataclass(frozen=True, slots=True)
class BoardPins:
    """A board as Blinka detected it: its id and its pins (`board.<name>` → the pin's id; two
    names of one pin, e.g. `D2` and `SDA` on a Raspberry Pi, share the id)."""

    board_id: str
    pins: Mapping[str, object]

    def names(self) -> list[str]:
        return sorted(self.pins, key=_natural)


def _natural(name: str) -> tuple[str, int, str]:
    m = re.match(r"^([A-Za-z_]*?)(\d+)(.*)$", name)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else (name, -1, "")


def io_infos(section: LocalSection, p: LocalIo) -> list[PointInfo]:
    """The points of one io entry."""
    silence = p.max_silence if p.max_silence is not None else section.max_silence
    attrs: dict[str, str] = {"kind": p.kind}
    if p.pin is not None:
        attrs["pin"] = p.pin
    if p.kind in I2C_KINDS:
        attrs["i2c"] = f"{p.sda}/{p.scl} 0x{p.address:02X}"
    if p.kind == "ds18b20" and p.rom is not None:
        attrs["rom"] = p.rom

    def info(
        name: str,
        ptype: PointType,
        unit: str,
        *,
        writable: bool = False,
        lo: float | None = None,
        hi: float | None = None,
    ) -> PointInfo:
        return PointInfo(
            device=section.name,
            name=name,
            type=ptype,
            unit=unit,
            writable=writable,
            min=lo,
            max=hi,
            description=p.description,
            deadband=p.deadband.value,
            deadband_percent=p.deadband.percent,
            max_silence=silence,
            origin="local",
            attrs=attrs,
        )

    if p.kind in SUFFIXES:
        return [info(p.name + suffix, PointType.FLOAT64, unit) for suffix, unit in SUFFIXES[p.kind]]
    if p.kind == "di":
        return [info(p.name, PointType.BOOL, p.unit)]
    if p.kind == "cnt":
        return [info(p.name, PointType.UINT64, p.unit)]
    if p.kind == "do":
        return [info(p.name, PointType.BOOL, p.unit, writable=p.writable)]
    if p.kind == "pwm":
        return [info(p.name, PointType.FLOAT64, p.unit, writable=p.writable, lo=0.0, hi=1.0)]
    return [info(p.name, PointType.FLOAT64, p.unit or _DEFAULT_UNIT.get(p.kind, ""))]


def infos(section: LocalSection) -> list[PointInfo]:
    return [i for p in section.io for i in io_infos(section, p)]


def _pins_of(p: LocalIo) -> Iterator[tuple[str, str]]:
    if p.pin is not None:
        yield "pin", p.pin
    if p.kind in I2C_KINDS:
        yield "sda", p.sda
        yield "scl", p.scl


def check_pins(section: LocalSection, board: BoardPins) -> list[tuple[tuple[str | int, ...], str]]:
    """(location under `local`, message) for each pin the board does not have, and each pin two
    entries drive (the I²C pins may be shared by the sensors of one bus, and only by them)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    used: dict[object, tuple[str, str, bool]] = {}  # pin id → (path, name, is an I²C pin)
    for i, p in enumerate(section.io):
        for key, name in _pins_of(p):
            loc: tuple[str | int, ...] = ("io", i, key)
            if name not in board.pins:
                problems.append((loc, _unknown(name, board)))
                continue
            pin_id = board.pins[name]
            if pin_id is None:  # a pin Blinka names but does not number (the test board's SDA)
                continue
            i2c = key in ("sda", "scl")
            here = f"io[{i}].{key}"
            other = used.setdefault(pin_id, (here, name, i2c))
            if other[0] != here and not (i2c and other[2]):
                alias = "" if other[1] == name else f" (as {other[1]})"
                problems.append((loc, f"{name} is already used by {other[0]}{alias}"))
    return problems


def _unknown(name: str, board: BoardPins) -> str:
    names = board.names()
    hint = ""
    gpio = re.fullmatch(r"(?i)(?:gpio|bcm|gp)?(\d+)", name)
    if gpio and f"D{gpio.group(1)}" in board.pins:
        hint = f" (did you mean D{gpio.group(1)}?)"
    elif name.upper() in board.pins:
        hint = f" (did you mean {name.upper()}?)"
    if not names:
        return (
            f"{name} is not a pin of {board.board_id}: Blinka knows no GPIO pins on this board "
            "(is it the board you meant to run this on?)"
        )
    return f"{name} is not a pin of {board.board_id}{hint}: its pins are {', '.join(names)}"
