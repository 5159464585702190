"""`gateway.yaml`: the `boards:` section, Raspberry Pi Pico I/O boards (docs/pico.md).

A board is found by its USB serial number (= `machine.unique_id()`) or by its serial port.  Its
I/O points become points of a device named after the board; Modbus RTU devices wired to the
board's UART are devices of their own, with the same point schema as any Modbus device.  Pins are
checked against the board definition (boards/*.json) here, so a wrong pin is a config error with
its line and column, before anything reaches a board.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from picogate.config import (
    Deadband,
    Duration,
    Location,
    Name,
    PositiveDuration,
    Section,
    parse_deadband,
    parse_duration,
)
from picogate.config import StrictModel as _Model
from picogate.modbus import ByteOrder, PointConfig, point_warnings
from picogate.pico._boards import BOARD_NAMES, Board, board, pin_number

__all__ = ["BoardBus", "BoardConfig", "BoardDevice", "IoKind", "IoPoint"]

IoKind = Literal["di", "cnt", "do", "pwm", "adc", "temp", "ds18b20", "dht22", "sht3x"]

Pin = Annotated[int, BeforeValidator(pin_number)]
"""`GP26` or 26."""

# Keys a point may give beyond the common ones (name, kind, unit, description, deadband,
# max_silence), by kind.
_KIND_KEYS: dict[str, set[str]] = {
    "di": {"pin", "pull", "debounce", "invert"},
    "cnt": {"pin", "pull", "edge", "every"},
    "do": {"pin", "init", "safe", "writable"},
    "pwm": {"pin", "freq", "init", "safe", "writable"},
    "adc": {"pin", "oversample", "every", "scale", "offset"},
    "temp": {"every"},
    "ds18b20": {"pin", "rom", "every"},
    "dht22": {"pin", "every"},
    "sht3x": {"i2c", "sda", "scl", "addr", "every"},
}
_COMMON_KEYS = {"name", "kind", "unit", "description", "deadband", "max_silence"}
_NEEDS_PIN = {"di", "cnt", "do", "pwm", "adc", "ds18b20", "dht22"}
TWO_VALUES = {"dht22": ("_t", "_h"), "sht3x": ("_t", "_h")}
"""Kinds that report two points: `<name>_t` (°C) and `<name>_h` (%RH)."""


class IoPoint(_Model):
    """One I/O point of the board itself (a pin, the internal temperature sensor, a sensor)."""

    name: Annotated[Name, Field(max_length=30)]
    kind: IoKind
    """di (digital input), cnt (edge counter), do (digital output), pwm, adc (volts), temp (the
    chip's sensor), ds18b20 (1-Wire), dht22, sht3x (I2C)."""
    pin: Pin | None = None
    """GPIO, `GP2` or 2; not for temp and sht3x."""
    pull: Literal["up", "down"] | None = None
    debounce: Duration = 0.02
    invert: bool = False
    edge: Literal["rise", "fall", "both"] = "rise"
    every: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.01)] = 1.0
    """How often a counter, ADC, temperature or sensor is reported."""
    init: bool | float | None = None
    """do/pwm: the value set when the configuration is applied (default off / 0.0)."""
    safe: bool | float | None = None
    """do/pwm: the value set when the agent has been silent for the board's safe_timeout (null:
    keep the value)."""
    freq: Annotated[int, Field(ge=8, le=62_500_000)] = 1000
    """pwm: Hz."""
    oversample: Annotated[int, Field(ge=1, le=256)] = 16
    """adc: samples averaged per reading."""
    scale: float = 1.0
    """adc: value = volts × scale + offset."""
    offset: float = 0.0
    rom: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{16}$")] | None = None
    """ds18b20: the sensor's ROM code (16 hex digits); null: the only sensor on the pin."""
    i2c: Literal[0, 1] = 0
    sda: Pin | None = None
    scl: Pin | None = None
    addr: Annotated[int, Field(ge=0x08, le=0x77)] = 0x44
    writable: bool = True
    """do/pwm: whether commands may set it."""
    unit: str = ""
    description: str = ""
    deadband: Annotated[Deadband, BeforeValidator(parse_deadband)] = Deadband()
    max_silence: Duration | None = None

    def applicable_keys(self) -> set[str]:
        """The keys a point of this kind may give (`picogate config show` shows only these)."""
        return _KIND_KEYS[self.kind] | _COMMON_KEYS

    @model_validator(mode="after")
    def _check(self) -> IoPoint:
        allowed = _KIND_KEYS[self.kind] | _COMMON_KEYS
        extra = sorted(self.model_fields_set - allowed)
        if extra:
            raise ValueError(f"{extra[0]}: does not apply to a point of kind {self.kind}")
        if self.kind in _NEEDS_PIN and self.pin is None:
            raise ValueError(f"a point of kind {self.kind} needs pin (e.g. GP2)")
        if self.kind == "sht3x" and (self.sda is None or self.scl is None):
            raise ValueError("a sht3x point needs sda and scl")
        if self.kind == "do":
            for key in ("init", "safe"):
                v = getattr(self, key)
                if v is not None and not isinstance(v, bool):
                    raise ValueError(f"{key}: a do point's value is true or false")
        if self.kind == "pwm":
            for key in ("init", "safe"):
                v = getattr(self, key)
                if v is not None and (isinstance(v, bool) or not 0.0 <= v <= 1.0):
                    raise ValueError(f"{key}: a pwm duty is 0.0 to 1.0")
        if self.scale == 0:
            raise ValueError("scale: must not be 0")
        return self

    def pins(self) -> list[tuple[str, int]]:
        """(key, GPIO) of every pin the point uses."""
        out = [("pin", self.pin)] if self.pin is not None else []
        if self.kind == "sht3x":
            assert self.sda is not None
            assert self.scl is not None
            out += [("sda", self.sda), ("scl", self.scl)]
        return out


class BoardDevice(_Model):
    """A Modbus RTU device on one of the board's buses; its points are those of any Modbus device."""

    name: Name
    description: str = ""
    unit_id: Annotated[int, Field(ge=1, le=247)] = 1
    offline_after: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failed polls after which the device is offline (its points go bad)."""
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    no_merge: bool = False
    byte_order: ByteOrder = ByteOrder.ABCD
    poll: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.01)] = 1.0
    max_silence: Duration = 0.0
    points: list[PointConfig] = Field(default_factory=list)

    @field_validator("points")
    @classmethod
    def _points(cls, points: list[PointConfig]) -> list[PointConfig]:
        seen: set[str] = set()
        for i, p in enumerate(points):
            if p.name in seen:
                raise ValueError(f"points[{i}].name: {p.name!r} is used twice")
            seen.add(p.name)
            if p.writable and p.bit is not None:
                raise ValueError(
                    f"points[{i}].writable: a bit of a register cannot be written through a board "
                    "(it would need a read-modify-write on the bus)"
                )
        return points


class BoardBus(_Model):
    """A Modbus RTU bus on one of the board's UARTs (RS-485 transceiver, `de` its direction pin)."""

    uart: Literal[0, 1] = 0
    tx: Pin
    rx: Pin
    de: Pin | None = None
    baudrate: Annotated[int, Field(ge=300, le=1_000_000)] = 19200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=10)] = 0.2
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    backoff: PositiveDuration = 5.0
    """How long a slave that stopped answering is left alone before it is asked again."""
    devices: list[BoardDevice] = Field(default_factory=list)

    @field_validator("devices")
    @classmethod
    def _units(cls, devices: list[BoardDevice]) -> list[BoardDevice]:
        units: dict[int, str] = {}
        for i, d in enumerate(devices):
            other = units.setdefault(d.unit_id, d.name)
            if other != d.name:
                raise ValueError(f"devices[{i}].unit_id: {d.name} and {other} both use unit id {d.unit_id}")
        return devices


class BoardConfig(_Model):
    """One Raspberry Pi Pico I/O board."""

    name: Name
    """The device name of the board's own points; also the name of its configuration."""
    board: Literal["pico", "pico_w", "pico2", "pico2_w"] = "pico"
    serial: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{16}$")] | None = None
    """USB serial number = `machine.unique_id()` in hex; the board is found among the USB devices
    2E8A:0005 by it."""
    port: str | None = None
    """Or: the serial device, e.g. /dev/ttyACM0 or /dev/serial/by-id/..."""
    heartbeat: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.1, le=60)] = 1.0
    """How often each side sends a heartbeat (and the board a full report of its points)."""
    safe_timeout: Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=3600)] = 5.0
    """The board applies its outputs' safe values when it has heard nothing for this long (0: never)."""
    resend_after: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.05, le=10)] = 0.3
    """How long the agent waits for the board's ack before it sends a frame again (5 times, then the
    link is down and the handshake starts over). A Pico acknowledges within 0.3 s; raise it only for
    a slower board, such as an emulated one."""
    max_silence: Duration = 0.0
    """Re-publish unchanged values after this long (0: never)."""
    io: list[IoPoint] = Field(default_factory=list)
    modbus: list[BoardBus] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> BoardConfig:
        if (self.serial is None) == (self.port is None):
            raise ValueError("give serial (the board's USB serial number) or port, one of them")
        if self.safe_timeout and self.safe_timeout < 2 * self.heartbeat:
            raise ValueError(
                f"safe_timeout: {self.safe_timeout:g}s is less than two heartbeats ({self.heartbeat:g}s)"
            )
        # What would be pushed (the planner's limits, the board's 16 KB) is checked once the file is
        # valid: the plug-in's `after_load` (pico/_attach.py).
        return self

    @field_validator("io")
    @classmethod
    def _io(cls, io: list[IoPoint], info: ValidationInfo) -> list[IoPoint]:
        defn = board(info.data.get("board", "pico"))
        used: dict[int, str] = {}
        names: dict[str, str] = {}
        for i, p in enumerate(io):
            for suffix in TWO_VALUES.get(p.kind, ("",)):
                other = names.setdefault(p.name + suffix, f"io[{i}]")
                if other != f"io[{i}]":
                    raise ValueError(f"io[{i}].name: {p.name + suffix!r} is also a point of {other}")
            try:
                _check_pins(defn, p)
            except ValueError as exc:
                raise ValueError(f"io[{i}].{exc}") from None
            for key, gpio in p.pins():
                _use(used, f"io[{i}].{key}", gpio)
        return io

    @field_validator("modbus")
    @classmethod
    def _modbus(cls, buses: list[BoardBus], info: ValidationInfo) -> list[BoardBus]:
        defn = board(info.data.get("board", "pico"))
        used: dict[int, str] = {}
        for i, p in enumerate(info.data.get("io", [])):
            for key, gpio in p.pins():
                used[gpio] = f"io[{i}].{key}"
        uarts: dict[int, int] = {}
        devices: dict[str, str] = {}
        for b, bus in enumerate(buses):
            other_bus = uarts.setdefault(bus.uart, b)
            if other_bus != b:
                raise ValueError(f"modbus[{b}].uart: UART{bus.uart} is already used by modbus[{other_bus}]")
            for key, gpio in (("tx", bus.tx), ("rx", bus.rx)):
                try:
                    defn.function_pin(gpio, "uart", bus.uart, key)
                except ValueError as exc:
                    raise ValueError(f"modbus[{b}].{key}: {exc}") from None
                _use(used, f"modbus[{b}].{key}", gpio)
            if bus.de is not None:
                try:
                    defn.pin(bus.de)
                except ValueError as exc:
                    raise ValueError(f"modbus[{b}].de: {exc}") from None
                _use(used, f"modbus[{b}].de", bus.de)
            for d, dev in enumerate(bus.devices):
                where = f"modbus[{b}].devices[{d}]"
                other_dev = devices.setdefault(dev.name, where)
                if other_dev != where:
                    raise ValueError(f"{where}.name: {dev.name!r} is also {other_dev}")
                if dev.name == info.data.get("name"):
                    raise ValueError(f"{where}.name: {dev.name!r} is the board's own name")
        return buses


def _use(used: dict[int, str], path: str, gpio: int) -> None:
    other = used.setdefault(gpio, path)
    if other != path:
        raise ValueError(f"{path}: GP{gpio} is already used by {other}")


def _check_pins(defn: Board, p: IoPoint) -> None:
    """Raises ValueError("key: message")."""
    try:
        if p.kind == "adc":
            assert p.pin is not None
            defn.adc_pin(p.pin)
        elif p.kind == "sht3x":
            assert p.sda is not None
            assert p.scl is not None
            for key, gpio, fn in (("sda", p.sda, "sda"), ("scl", p.scl, "scl")):
                try:
                    defn.function_pin(gpio, "i2c", p.i2c, fn)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
            return
        elif p.pin is not None:
            defn.pin(p.pin)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(("sda:", "scl:")) else f"pin: {msg}") from None


def _board_devices(boards: list[BoardConfig]) -> Iterator[tuple[str, str]]:
    """A board's own device and the Modbus devices behind it share the gateway's device names."""
    for i, b in enumerate(boards):
        yield f"boards[{i}].name", b.name
        for j, bus in enumerate(b.modbus):
            for k, d in enumerate(bus.devices):
                yield f"boards[{i}].modbus[{j}].devices[{k}].name", d.name


def _board_warnings(boards: list[BoardConfig]) -> Iterator[tuple[Location, str]]:
    for i, b in enumerate(boards):
        for j, bus in enumerate(b.modbus):
            for k, d in enumerate(bus.devices):
                for (n, *rest), message in point_warnings(d.points, d.byte_order):
                    yield (i, "modbus", j, "devices", k, "points", n, *rest), message


SECTION = Section(
    "boards",
    list[BoardConfig],
    default_factory=list,
    doc="Pico boards (pico/_config.py).",
    devices=_board_devices,
    warnings=_board_warnings,
)

__all__ += ["BOARD_NAMES", "SECTION", "TWO_VALUES"]
