"""Board definitions (boards/*.json): which pin can do what on a Pico, Pico W, Pico 2, Pico 2 W.

Read by the config (to check a board's I/O before anything is pushed) and by the flasher (chip,
mpy architecture).  Pure data, no I/O past reading the JSON files once.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from picogate._paths import data_dir

__all__ = ["BOARD_NAMES", "Board", "BoardPin", "board", "pin_number"]

BOARD_NAMES = ("pico", "pico_w", "pico2", "pico2_w")

_PIN_RE = re.compile(r"^(?:GP|GPIO)?(\d{1,2})$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Function:
    id: int
    fn: str  # tx/rx/cts/rts, sda/scl, rx/csn/sck/tx


@dataclass(frozen=True, slots=True)
class BoardPin:
    gpio: int
    adc: int | None
    pwm_slice: int
    pwm_channel: str
    uart: Function
    i2c: Function
    spi: Function

    @property
    def name(self) -> str:
        return f"GP{self.gpio}"


@dataclass(frozen=True, slots=True)
class Board:
    name: str
    title: str
    chip: str
    mpy_arch: str
    led: int | str
    heap_kb: int
    fs_kb: int
    flash_kb: int
    reserved: dict[int, str]
    pins: dict[int, BoardPin]

    def pin(self, gpio: int) -> BoardPin:
        """The pin, or ValueError naming what is wrong with it."""
        found = self.pins.get(gpio)
        if found is not None:
            return found
        why = self.reserved.get(gpio)
        if why:
            raise ValueError(f"GP{gpio} is not available on {self.name}: {why}")
        raise ValueError(f"GP{gpio} does not exist on {self.name}: pins are {self._span()}")

    def _span(self) -> str:
        return _ranges(sorted(self.pins))

    def adc_pin(self, gpio: int) -> BoardPin:
        p = self.pin(gpio)
        if p.adc is None:
            raise ValueError(f"GP{gpio} has no ADC on {self.name}: ADC pins are {self._with('adc')}")
        return p

    def _with(self, what: str) -> str:
        names = [p.name for p in self.pins.values() if getattr(p, what) is not None]
        return ", ".join(names)

    def function_pin(self, gpio: int, bus: str, bus_id: int, fn: str) -> BoardPin:
        """A pin that can be `fn` (tx, rx, sda, scl) of `bus` (uart, i2c) number `bus_id`."""
        p = self.pin(gpio)
        f: Function = getattr(p, bus)
        if (f.id, f.fn) != (bus_id, fn):
            options = [
                q.name for q in self.pins.values() if (getattr(q, bus).id, getattr(q, bus).fn) == (bus_id, fn)
            ]
            raise ValueError(
                f"GP{gpio} cannot be {bus.upper()}{bus_id} {fn.upper()} on {self.name} "
                f"(it is {bus.upper()}{f.id} {f.fn.upper()}): {bus.upper()}{bus_id} {fn.upper()} pins are "
                + ", ".join(options)
            )
        return p


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(f"GP{numbers[i]}" if i == j else f"GP{numbers[i]}-GP{numbers[j]}")
        i = j + 1
    return ", ".join(out)


def pin_number(value: Any) -> int:
    """`GP26`, `GPIO26`, `26` or 26 → 26.  Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"a pin is GPn or a GPIO number, not {value!r}")
    if isinstance(value, int):
        gpio = value
    elif isinstance(value, str) and (m := _PIN_RE.match(value.strip())):
        gpio = int(m.group(1))
    else:
        raise ValueError(f"a pin is GPn or a GPIO number (e.g. GP26), not {value!r}")
    if not 0 <= gpio <= 47:
        raise ValueError(f"GPIO {gpio} is not 0..47")
    return gpio


def _function(d: dict[str, Any]) -> Function:
    return Function(int(d["id"]), str(d["fn"]))


@functools.cache
def board(name: str) -> Board:
    """The definition of board `name` (pico, pico_w, pico2, pico2_w).  Raises ValueError."""
    if name not in BOARD_NAMES:
        raise ValueError(f"unknown board {name!r}: boards are {', '.join(BOARD_NAMES)}")
    path = data_dir("boards") / f"{name}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    pins = {
        int(p["gpio"]): BoardPin(
            gpio=int(p["gpio"]),
            adc=p["adc"],
            pwm_slice=int(p["pwm"]["slice"]),
            pwm_channel=str(p["pwm"]["channel"]),
            uart=_function(p["uart"]),
            i2c=_function(p["i2c"]),
            spi=_function(p["spi"]),
        )
        for p in doc["pins"]
    }
    return Board(
        name=doc["name"],
        title=doc["title"],
        chip=doc["chip"],
        mpy_arch=doc["mpy_arch"],
        led=doc["led"],
        heap_kb=int(doc["heap_kb"]),
        fs_kb=int(doc["fs_kb"]),
        flash_kb=int(doc["flash_kb"]),
        reserved={int(k): str(v) for k, v in doc["reserved"].items()},
        pins=pins,
    )
