"""`gateway.yaml`: the `local:` section, the gateway's own I/O through Adafruit Blinka (docs/local-io.md).

The points of the gateway's own header (digital inputs and counters, outputs and PWM, analog
inputs where the board has them, I²C sensors, DS18B20s on the kernel's 1-Wire bus) are points of
one device, named by `name`.  Pin names are Blinka's (`board.D17` is `D17`); whether the board has
them is checked once the file is valid (`after_load` in _attach.py), against the board Blinka
detects, because the schema itself knows no board.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from picogate.config import (
    Deadband,
    Duration,
    Name,
    PositiveDuration,
    Section,
    parse_deadband,
    parse_duration,
)
from picogate.config import StrictModel as _Model

__all__ = ["SENSOR_KINDS", "IoKind", "LocalIo", "LocalSection", "SensorKind"]

IoKind = Literal["di", "cnt", "do", "pwm", "adc", "bme280", "sht3x", "sht4x", "ads1115", "ds18b20"]
SensorKind = Literal["bme280", "sht3x", "sht4x", "ads1115", "ds18b20"]
SENSOR_KINDS: frozenset[str] = frozenset({"bme280", "sht3x", "sht4x", "ads1115", "ds18b20"})
I2C_KINDS: frozenset[str] = frozenset({"bme280", "sht3x", "sht4x", "ads1115"})

DEFAULT_ADDR = {"bme280": 0x77, "sht3x": 0x44, "sht4x": 0x44, "ads1115": 0x48}
"""The address each I²C chip answers on when `addr` is not given (the breakout boards' default)."""

_ADDRESSES = {"bme280": (0x76, 0x77), "sht3x": (0x44, 0x45), "sht4x": (0x44, 0x45, 0x46)}
"""The addresses the chips can be strapped to (the ADS1115: 0x48-0x4B)."""

# Keys a point may give beyond the common ones (name, kind, unit, description, deadband,
# max_silence), by kind.
_KIND_KEYS: dict[str, set[str]] = {
    "di": {"pin", "pull", "debounce", "invert"},
    "cnt": {"pin", "pull", "debounce", "edge", "every"},
    "do": {"pin", "init", "safe", "writable", "invert"},
    "pwm": {"pin", "freq", "init", "safe", "writable"},
    "adc": {"pin", "every", "scale", "offset"},
    "bme280": {"addr", "sda", "scl", "every"},
    "sht3x": {"addr", "sda", "scl", "every"},
    "sht4x": {"addr", "sda", "scl", "every"},
    "ads1115": {"addr", "sda", "scl", "every", "channel", "gain", "scale", "offset"},
    "ds18b20": {"rom", "every"},
}
_COMMON_KEYS = {"name", "kind", "unit", "description", "deadband", "max_silence"}
_NEEDS_PIN = {"di", "cnt", "do", "pwm", "adc"}

PinName = Annotated[str, Field(min_length=1, max_length=40)]
"""A pin of Blinka's `board` module: `D17`, `SDA`, `A0`."""


class LocalIo(_Model):
    """One point (or, for a sensor, a group of points) of the gateway's own I/O."""

    name: Annotated[Name, Field(max_length=30)]
    kind: IoKind
    """di (digital input), cnt (edge counter), do (digital output), pwm, adc (the board's own
    analog input), bme280, sht3x, sht4x, ads1115 (I²C), ds18b20 (1-Wire, through the kernel)."""
    pin: PinName | None = None
    """di/cnt/do/pwm/adc: the pin's name in Blinka's `board` module, e.g. `D17` (BCM GPIO 17)."""
    pull: Literal["up", "down"] | None = None
    """di/cnt: the pin's internal pull resistor (null: none, the wiring pulls)."""
    debounce: Duration = 0.02
    """di/cnt: a new level counts once it has been read unchanged for this long (0: at once)."""
    invert: bool = False
    """di: report the inverted level (a contact to ground with a pull-up reads false when closed);
    do: drive the pin low for true (active-low relay boards)."""
    edge: Literal["rise", "fall", "both"] = "rise"
    """cnt: which edges of the (debounced) level are counted."""
    every: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.01)] = 1.0
    """cnt/adc/sensors: how often the value is read and reported."""
    init: bool | float | None = None
    """do/pwm: the value set at start (default off / 0.0)."""
    safe: bool | float | None = None
    """do/pwm: the value set when the agent stops (null: the pin is released as it is)."""
    freq: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """pwm: Hz."""
    writable: bool = True
    """do/pwm: whether commands may set it."""
    scale: float = 1.0
    """adc: value = raw (0-65535) × scale + offset; ads1115: value = volts × scale + offset."""
    offset: float = 0.0
    addr: Annotated[int, Field(ge=0x08, le=0x77)] | None = None
    """I²C sensors: the chip's address (default: bme280 0x77, sht3x/sht4x 0x44, ads1115 0x48)."""
    sda: PinName = "SDA"
    """I²C sensors: the bus's data pin (Blinka's name)."""
    scl: PinName = "SCL"
    """I²C sensors: the bus's clock pin."""
    channel: Annotated[int, Field(ge=0, le=3)] = 0
    """ads1115: the input, A0-A3 as 0-3 (single-ended, against GND)."""
    gain: Literal["2/3", 1, 2, 4, 8, 16] = 1
    """ads1115: the amplifier: full scale ±6.144 V (2/3), ±4.096 V (1), ±2.048 V (2), ±1.024 V
    (4), ±0.512 V (8), ±0.256 V (16)."""
    rom: str | None = None
    """ds18b20: the sensor's id in /sys/bus/w1/devices (e.g. `28-0316a2794eff`); null: the only
    DS18B20 there."""
    unit: str = ""
    description: str = ""
    deadband: Annotated[Deadband, BeforeValidator(parse_deadband)] = Deadband()
    max_silence: Duration | None = None

    @field_validator("rom")
    @classmethod
    def _rom(cls, rom: str | None) -> str | None:
        if rom is not None and not re.fullmatch(r"28-[0-9a-f]{12}", rom):
            raise ValueError(
                f"{rom!r} is not a DS18B20's id: 28- and 12 hex digits, as in /sys/bus/w1/devices"
            )
        return rom

    @model_validator(mode="after")
    def _check(self) -> LocalIo:
        allowed = _KIND_KEYS[self.kind] | _COMMON_KEYS
        extra = sorted(self.model_fields_set - allowed)
        if extra:
            raise ValueError(f"{extra[0]}: does not apply to a point of kind {self.kind}")
        if self.kind in _NEEDS_PIN and self.pin is None:
            raise ValueError(f"a point of kind {self.kind} needs pin (e.g. D17)")
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
        if self.addr is not None and self.kind in _ADDRESSES and self.addr not in _ADDRESSES[self.kind]:
            choices = ", ".join(f"0x{a:02X}" for a in _ADDRESSES[self.kind])
            raise ValueError(f"addr: a {self.kind} answers on {choices}, not 0x{self.addr:02X}")
        if self.kind == "ads1115" and self.addr is not None and not 0x48 <= self.addr <= 0x4B:
            raise ValueError(f"addr: an ads1115 answers on 0x48-0x4B, not 0x{self.addr:02X}")
        if self.scale == 0:
            raise ValueError("scale: must not be 0")
        return self

    @property
    def address(self) -> int:
        """The I²C address (the kind's default when `addr` is not given)."""
        return self.addr if self.addr is not None else DEFAULT_ADDR[self.kind]


class LocalSection(_Model):
    """The gateway's own I/O: GPIO, PWM, I²C sensors and DS18B20s on its header."""

    name: Name
    """The device name of these points."""
    sample: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.001, le=1.0)] = 0.01
    """How often the digital inputs (di, cnt) are read: debouncing and counting work in steps of
    this. A counter sees at most one edge per two samples (50 Hz at 10ms)."""
    timeout: PositiveDuration = 2.0
    """A driver call (a sensor read, an output write) that takes longer is given up: the sensor's
    points go bad, a write is `outcome_unknown`; calls on that bus are refused until it returns."""
    backoff_max: PositiveDuration = 30.0
    """A sensor that stopped answering is retried after `every`, doubling up to this."""
    w1_path: Path = Path("/sys/bus/w1/devices")
    """Where the kernel's 1-Wire driver (w1-gpio, w1-therm) lists its sensors."""
    max_silence: Duration = 0.0
    """Re-publish unchanged values after this long (0: never)."""
    io: list[LocalIo] = Field(default_factory=list)

    @field_validator("io")
    @classmethod
    def _io(cls, io: list[LocalIo]) -> list[LocalIo]:
        names: dict[str, str] = {}
        chips: dict[tuple[str, str, int], tuple[str, str]] = {}
        roms: dict[str | None, str] = {}
        for i, p in enumerate(io):
            where = f"io[{i}]"
            for point in point_names(p):
                other = names.setdefault(point, where)
                if other != where:
                    raise ValueError(f"{where}.name: {point!r} is also a point of {other}")
            if p.kind in I2C_KINDS:
                key = (p.sda, p.scl, p.address)
                other_kind, other_where = chips.setdefault(key, (p.kind, where))
                if other_where != where and not (p.kind == other_kind == "ads1115"):
                    raise ValueError(
                        f"{where}.addr: 0x{p.address:02X} on {p.sda}/{p.scl} is already {other_where} "
                        f"({other_kind})"
                    )
            if p.kind == "ds18b20":
                other = roms.setdefault(p.rom, where)
                if other != where:
                    raise ValueError(f"{where}.rom: the same DS18B20 as {other}")
        if None in roms and len(roms) > 1:
            raise ValueError(f"{roms[None]}.rom: with several DS18B20s, give each its rom")
        return io


SUFFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "bme280": (("_t", "°C"), ("_h", "%RH"), ("_p", "hPa")),
    "sht3x": (("_t", "°C"), ("_h", "%RH")),
    "sht4x": (("_t", "°C"), ("_h", "%RH")),
}
"""Sensors that report several points: `<name><suffix>` and its unit."""


def point_names(p: LocalIo) -> list[str]:
    """The points one io entry reports."""
    return [p.name + suffix for suffix, _ in SUFFIXES.get(p.kind, (("", ""),))]


SECTION = Section(
    "local",
    LocalSection | None,
    default=None,
    doc="The gateway's own I/O through Adafruit Blinka: GPIO, PWM, I²C sensors, DS18B20 (docs/local-io.md).",
    devices=lambda s: [] if s is None else [("local.name", s.name)],
)
