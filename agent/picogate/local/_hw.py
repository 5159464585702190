"""The only module that imports Adafruit Blinka and the CircuitPython drivers.

Blinka (`board`, `digitalio`, `pwmio`, `analogio`, `busio`) and the drivers are an optional extra,
`picogate[local]`, pinned where their APIs moved (Blinka's board modules, the ADS1x15 driver's
channel numbers in 3.x); `missing()` says which are not installed, so that `config check` can say
how to install them.  Everything here is blocking and runs on a `Worker` thread (_worker.py),
never on the event loop; the one exception is `detect()`, at start and in `config check`.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Iterable
from typing import Any

from picogate._errors import PicogateError
from picogate.local._config import LocalIo
from picogate.local._points import BoardPins

__all__ = ["INSTALL", "Hardware", "LocalError", "detect", "missing", "sensor_reader"]

INSTALL = "pip install 'picogate[local]'"
"""How to install Blinka and the drivers (the extra of pyproject.toml)."""

_BLINKA = ("board", "Adafruit-Blinka")
_DRIVERS = {
    "bme280": ("adafruit_bme280", "adafruit-circuitpython-bme280"),
    "sht3x": ("adafruit_sht31d", "adafruit-circuitpython-sht31d"),
    "sht4x": ("adafruit_sht4x", "adafruit-circuitpython-sht4x"),
    "ads1115": ("adafruit_ads1x15", "adafruit-circuitpython-ads1x15"),
}

RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("bme280", "_t"): (-40.0, 85.0),
    ("bme280", "_h"): (0.0, 100.0),
    ("bme280", "_p"): (300.0, 1100.0),
    ("sht3x", "_t"): (-40.0, 125.0),
    ("sht3x", "_h"): (0.0, 100.0),
    ("sht4x", "_t"): (-40.0, 125.0),
    ("sht4x", "_h"): (0.0, 100.0),
}
"""What each chip can measure: a value outside is garbage on the bus, reported bad."""


class LocalError(PicogateError, RuntimeError):
    """The gateway's own I/O cannot be used: Blinka missing, the board not supported, a pin."""


def _module(name: str) -> Any:
    return importlib.import_module(name)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(kinds: Iterable[str]) -> list[str]:
    """The distributions the io kinds need that are not installed (DS18B20s need none: the
    kernel reads them)."""
    kinds = set(kinds)
    needed = []
    if kinds - {"ds18b20"}:
        needed.append(_BLINKA)
    needed += [_DRIVERS[k] for k in sorted(kinds) if k in _DRIVERS]
    return [dist for module, dist in needed if not _installed(module)]


def detect() -> BoardPins:
    """The board Blinka detects, with its pins (importing `board` runs Blinka's detection)."""
    try:
        board = _module("board")
    except Exception as exc:  # Blinka raises what its platform gives: NotImplementedError, RuntimeError, ...
        raise LocalError(f"Adafruit Blinka does not support this board: {exc}") from exc
    pins: dict[str, object] = {}
    for name in dir(board):
        obj = getattr(board, name)
        if name.startswith("_") or type(obj).__name__ != "Pin" or not hasattr(obj, "id"):
            continue
        pins[name] = obj.id
    return BoardPins(str(getattr(board, "board_id", "unknown board")), pins)


class Hardware:
    """Blinka's objects, opened by pin name (blocking: call it on a Worker)."""

    def __init__(self) -> None:
        self.board = _module("board")
        self.digitalio = _module("digitalio")

    def pin(self, name: str) -> Any:
        try:
            return getattr(self.board, name)
        except AttributeError:
            raise LocalError(f"{name} is not a pin of this board", where=name) from None

    def digital_in(self, name: str, pull: str | None) -> Any:
        dio = self.digitalio.DigitalInOut(self.pin(name))
        pulls = {"up": self.digitalio.Pull.UP, "down": self.digitalio.Pull.DOWN, None: None}
        dio.switch_to_input(pull=pulls[pull])
        return dio

    def digital_out(self, name: str, level: bool) -> Any:
        dio = self.digitalio.DigitalInOut(self.pin(name))
        dio.switch_to_output(value=level)
        return dio

    def pwm(self, name: str, freq: int, duty: float) -> Any:
        return _module("pwmio").PWMOut(self.pin(name), frequency=freq, duty_cycle=duty16(duty))

    def analog_in(self, name: str) -> Any:
        return _module("analogio").AnalogIn(self.pin(name))

    def i2c(self, scl: str, sda: str) -> Any:
        return _module("busio").I2C(self.pin(scl), self.pin(sda))


def duty16(duty: float) -> int:
    """A duty of 0.0-1.0 as CircuitPython's 16-bit `duty_cycle`."""
    return max(0, min(65535, round(duty * 65535)))


def sensor_reader(p: LocalIo, bus: Any) -> Callable[[], dict[str, float]]:
    """Open the driver of an I²C sensor on `bus` (this talks to the chip: its id, its calibration)
    and return what reads it: `{suffix: value}` (the suffix "" for a single value)."""
    addr = p.address
    if p.kind == "bme280":
        chip = _module("adafruit_bme280.basic").Adafruit_BME280_I2C(bus, address=addr)
        device = _module("adafruit_bus_device.i2c_device").I2CDevice(bus, addr, probe=False)
        chip_id = bytearray(1)

        def bme280() -> dict[str, float]:
            # The BME280 has no CRC: its chip id, read again each time, tells garbage on the bus
            # (or another chip at the address) from a measurement.
            with device as dev:
                dev.write_then_readinto(b"\xd0", chip_id)
            if chip_id[0] != 0x60:
                raise OSError(f"chip id 0x{chip_id[0]:02X} at 0x{addr:02X} is not a BME280's (0x60)")
            return {"_t": chip.temperature, "_h": chip.relative_humidity, "_p": chip.pressure}

        return bme280
    if p.kind == "sht3x":
        chip = _module("adafruit_sht31d").SHT31D(bus, address=addr)

        def sht3x() -> dict[str, float]:
            return {"_t": chip.temperature, "_h": chip.relative_humidity}

        return sht3x
    if p.kind == "sht4x":
        chip = _module("adafruit_sht4x").SHT4x(bus, address=addr)

        def sht4x() -> dict[str, float]:
            t, h = chip.measurements
            return {"_t": t, "_h": h}

        return sht4x
    if p.kind == "ads1115":
        ads = _module("adafruit_ads1x15")
        chip = ads.ADS1115(bus, gain=2 / 3 if p.gain == "2/3" else p.gain, address=addr)
        channel = ads.AnalogIn(chip, p.channel)

        def ads1115() -> dict[str, float]:
            return {"": channel.voltage * p.scale + p.offset}

        return ads1115
    raise LocalError(f"{p.kind} is not an I²C sensor", where=p.name)


def check_value(kind: str, suffix: str, value: object) -> float:
    """The value as a float, or ValueError with the reason (not a number, not finite, outside
    what the chip can measure)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"not finite: {v}")
    lo, hi = RANGES.get((kind, suffix), (-math.inf, math.inf))
    if not lo <= v <= hi:
        raise ValueError(f"{v:g} is outside what a {kind} measures ({lo:g} to {hi:g})")
    return v
