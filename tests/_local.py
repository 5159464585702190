"""The gateway's own I/O without hardware: Blinka's OS-agnostic test board, and register-level
models of I²C chips behind the object Blinka's `busio.I2C` delegates to.

Importing this module sets `BLINKA_OS_AGNOSTIC=1` (Blinka reads it once, when `board` is first
imported).  `ModelBus` replaces the agnostic board's I²C class (a stub with nothing but `scan`), so
that `busio.I2C(board.SCL, board.SDA)` talks to the models: the real CircuitPython drivers, real
Blinka above that seam and the agent's source all run, only the silicon is simulated.  Each model
answers the driver's reads and writes as the chip's datasheet says (a BME280's register file and
compensation, an SHT3x's and an SHT4x's commands and CRC-8, an ADS1115's registers and PGA), and
can be told to stop answering (`silent`: the
bus NACKs, OSError 121 as Linux's i2c-dev gives it), to answer garbage, or to hang.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("BLINKA_OS_AGNOSTIC", "1")

Mode = Literal["ok", "silent", "garbage", "hang"]


class ChipModel:
    """What every model shares: its mode, a count of transfers, and the hang gate."""

    def __init__(self) -> None:
        self.mode: Mode = "ok"
        self.transfers = 0
        self.release = threading.Event()  # a hanging transfer returns once this is set

    def check(self) -> None:
        self.transfers += 1
        if self.mode == "silent":
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        if self.mode == "hang":
            self.release.wait(30)

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        raise NotImplementedError


# --------------------------------------------------------------------------- BME280

# Calibration words as a real chip carries them (the datasheet's example values).
_T = (27504, 26435, -1000)
_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
_H1, _H2, _H3, _H4, _H5, _H6 = 75, 362, 0, 313, 50, 30


def _t_fine(adc_t: float) -> float:
    var1 = (adc_t / 16384.0 - _T[0] / 1024.0) * _T[1]
    var2 = (adc_t / 131072.0 - _T[0] / 8192.0) ** 2 * _T[2]
    return float(int(var1 + var2))


def _pressure(adc_p: float, t_fine: float) -> float:
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = _P
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    p = (1048576.0 - adc_p - var2 / 4096.0) * 6250.0 / var1
    return (p + (p9 * p * p / 2147483648.0 + p * p8 / 32768.0 + p7) / 16.0) / 100.0


def _humidity(adc_h: float, t_fine: float) -> float:
    v = t_fine - 76800.0
    v = (adc_h - (_H4 * 64.0 + _H5 / 16384.0 * v)) * (
        _H2 / 65536.0 * (1.0 + _H6 / 67108864.0 * v * (1.0 + _H3 / 67108864.0 * v))
    )
    return v * (1.0 - _H1 * v / 524288.0)


def _solve(f: Any, target: float, lo: int, hi: int) -> int:
    """The raw ADC value for which the monotonic `f` gives `target`."""
    rising = f(hi) > f(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return lo if abs(f(lo) - target) <= abs(f(hi) - target) else hi


class Bme280Model(ChipModel):
    """A BME280's register file: chip id 0x60, soft reset, calibration, ctrl registers, and the
    data registers holding raw ADC values that compensate to `temperature` (°C), `humidity` (%RH)
    and `pressure` (hPa).  Register auto-increment on reads, pairs on writes, as on the chip."""

    def __init__(self, temperature: float = 21.5, humidity: float = 45.0, pressure: float = 1013.0) -> None:
        super().__init__()
        self.regs = bytearray(256)
        self.regs[0xD0] = 0x60
        self.regs[0x88:0xA0] = struct.pack("<Hhh", *_T) + struct.pack("<Hhhhhhhhh", *_P)
        self.regs[0xA1] = _H1
        e4, e5, e6 = _H4 >> 4, ((_H5 & 0xF) << 4) | (_H4 & 0xF), _H5 >> 4
        self.regs[0xE1:0xE8] = struct.pack("<hBbBbb", _H2, _H3, e4, e5, e6, _H6)
        self.pointer = 0
        self.resets = 0
        self.set(temperature, humidity, pressure)

    def set(self, temperature: float, humidity: float, pressure: float) -> None:
        adc_t = _solve(lambda a: _t_fine(a) / 5120.0, temperature, 0, (1 << 20) - 1)
        t_fine = _t_fine(adc_t)
        adc_p = _solve(lambda a: _pressure(a, t_fine), pressure, 0, (1 << 20) - 1)
        adc_h = _solve(lambda a: _humidity(a, t_fine), humidity, 0, (1 << 16) - 1)
        self.regs[0xF7:0xFA] = (adc_p << 4).to_bytes(3, "big")
        self.regs[0xFA:0xFD] = (adc_t << 4).to_bytes(3, "big")
        self.regs[0xFD:0xFF] = adc_h.to_bytes(2, "big")

    def write(self, data: bytes) -> None:
        self.check()
        if not data:
            return
        if len(data) == 1:  # the register pointer, for the read that follows
            self.pointer = data[0]
            return
        for reg, value in zip(data[0::2], data[1::2], strict=False):  # register/value pairs
            if reg == 0xE0 and value == 0xB6:
                self.resets += 1
            elif reg in (0xF2, 0xF4, 0xF5):
                self.regs[reg] = value

    def read(self, n: int) -> bytes:
        self.check()
        if self.mode == "garbage":
            return bytes([0xA5]) * n
        out = bytes(self.regs[(self.pointer + i) & 0xFF] for i in range(n))
        self.pointer = (self.pointer + n) & 0xFF
        return out


# --------------------------------------------------------------------------- SHT3x


def crc8(data: bytes) -> int:
    """Sensirion's CRC-8 (polynomial 0x31, init 0xFF), as the SHT3x datasheet gives it."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _word(value: int) -> bytes:
    raw = value.to_bytes(2, "big")
    return raw + bytes([crc8(raw)])


class Sht3xModel(ChipModel):
    """An SHT3x: 16-bit commands (break, soft reset, status, single-shot measurements of any
    repeatability), and a read of the last measurement: temperature and humidity words, each with
    its CRC-8.  In `garbage` mode the CRCs are wrong."""

    SINGLE_SHOT = frozenset({0x2400, 0x240B, 0x2416, 0x2C06, 0x2C0D, 0x2C10})

    def __init__(self, temperature: float = 22.25, humidity: float = 40.0) -> None:
        super().__init__()
        self.temperature, self.humidity = temperature, humidity
        self.out = b""
        self.commands: list[int] = []

    def write(self, data: bytes) -> None:
        self.check()
        if len(data) != 2:
            return  # the address probe (an empty write)
        cmd = int.from_bytes(data, "big")
        self.commands.append(cmd)
        if cmd in self.SINGLE_SHOT:
            t = round((self.temperature + 45.0) * 65535 / 175.0)
            h = round(self.humidity * 65535 / 100.0)
            self.out = _word(t) + _word(h)
        elif cmd == 0xF32D:
            self.out = _word(0x8010)
        else:
            self.out = b""

    def read(self, n: int) -> bytes:
        self.check()
        out, self.out = self.out, b""
        if self.mode == "garbage":
            out = bytes(b ^ 0x5A for b in out)
        return (out + b"\xff" * n)[:n]


class Sht4xModel(ChipModel):
    """An SHT4x: one-byte commands (soft reset, serial number, measurements of any precision or
    heater setting), each answered by two words with their CRC-8."""

    MEASURE = frozenset({0xFD, 0xF6, 0xE0, 0x39, 0x32, 0x2F, 0x24, 0x1E, 0x15})

    def __init__(self, temperature: float = 23.5, humidity: float = 35.0) -> None:
        super().__init__()
        self.temperature, self.humidity = temperature, humidity
        self.out = b""

    def write(self, data: bytes) -> None:
        self.check()
        if not data:
            return
        cmd = data[0]
        if cmd in self.MEASURE:
            t = round((self.temperature + 45.0) * 65535 / 175.0)
            h = round((self.humidity + 6.0) * 65535 / 125.0)
            self.out = _word(t) + _word(h)
        elif cmd == 0x89:
            self.out = _word(0x1234) + _word(0x5678)
        else:
            self.out = b""

    def read(self, n: int) -> bytes:
        self.check()
        out, self.out = self.out, b""
        if self.mode == "garbage":
            out = bytes(b ^ 0x5A for b in out)
        return (out + b"\xff" * n)[:n]


_FULL_SCALE = {0: 6.144, 1: 4.096, 2: 2.048, 3: 1.024, 4: 0.512, 5: 0.256, 6: 0.256, 7: 0.256}


class Ads1115Model(ChipModel):
    """An ADS1115: the pointer register, 16-bit conversion, config and threshold registers; a
    config written with OS set converts the input its MUX selects at its PGA's full scale."""

    def __init__(self, volts: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.volts = list(volts)
        self.regs = {0: 0x0000, 1: 0x8583, 2: 0x8000, 3: 0x7FFF}
        self.pointer = 0

    def write(self, data: bytes) -> None:
        self.check()
        if not data:
            return
        self.pointer = data[0] & 0x03
        if len(data) < 3:
            return
        value = int.from_bytes(data[1:3], "big")
        if self.pointer != 1:
            self.regs[self.pointer] = value
            return
        if value & 0x8000 and (mux := (value >> 12) & 0x7) >= 4:
            full = _FULL_SCALE[(value >> 9) & 0x7]
            raw = max(-32768, min(32767, round(self.volts[mux - 4] / full * 32768)))
            self.regs[0] = raw & 0xFFFF
        self.regs[1] = value | 0x8000  # the conversion is done at once

    def read(self, n: int) -> bytes:
        self.check()
        return (self.regs[self.pointer].to_bytes(2, "big") + b"\x00" * n)[:n]


# --------------------------------------------------------------------------- the bus


class ModelBus:
    """Stands where Blinka's OS-agnostic board puts its I²C stub; talks to `ModelBus.chips`."""

    chips: dict[int, ChipModel] = {}  # noqa: RUF012  (the bench of the test running now)
    opened = 0  # how many buses were opened (busio.I2C objects made)

    def __init__(self, *, frequency: int = 100000) -> None:
        self.frequency = frequency
        ModelBus.opened += 1

    def _chip(self, address: int) -> ChipModel:
        chip = self.chips.get(address)
        if chip is None:
            raise OSError(errno.EREMOTEIO, "Remote I/O error")
        return chip

    def scan(self) -> list[int]:
        return sorted(a for a, c in self.chips.items() if c.mode != "silent")

    def writeto(self, address: int, buffer: Any, *, stop: bool = True) -> None:
        self._chip(address).write(bytes(buffer))

    def readfrom_into(self, address: int, buffer: Any, *, stop: bool = True) -> None:
        data = self._chip(address).read(len(buffer))
        buffer[: len(data)] = data

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: Any,
        buffer_in: Any,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
        stop: bool = False,
    ) -> None:
        chip = self._chip(address)
        chip.write(bytes(buffer_out[out_start:out_end]))
        end = len(buffer_in) if in_end is None else in_end
        buffer_in[in_start:end] = chip.read(end - in_start)


@contextmanager
def bench(chips: dict[int, ChipModel]) -> Iterator[dict[int, ChipModel]]:
    """Put `chips` on the agnostic board's I²C bus for the duration (and let hung ones go after)."""
    from adafruit_blinka.microcontroller.generic_agnostic_board import i2c

    saved = i2c.I2C
    i2c.I2C = ModelBus  # type: ignore[misc]
    ModelBus.chips = chips
    ModelBus.opened = 0
    try:
        yield chips
    finally:
        for chip in chips.values():
            chip.mode = "ok"
            chip.release.set()
        ModelBus.chips = {}
        i2c.I2C = saved  # type: ignore[misc]


def raspberry_pi() -> Any:
    """A Raspberry Pi's 40-pin header as Blinka names it, read from Blinka's own pin map
    (`adafruit_blinka/board/raspberrypi/raspi_40pin.py`: `D17 = pin.D17`, `SDA = pin.SDA`, ...),
    which cannot be imported off a Pi (it needs gpiod)."""
    import re
    from importlib.util import find_spec

    from picogate.local import BoardPins

    spec = find_spec("adafruit_blinka")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations))) / "board" / "raspberrypi" / "raspi_40pin.py"
    ids = {"SDA": 2, "SCL": 3}
    pins: dict[str, object] = {}
    for name, target in re.findall(r"^(\w+) = pin\.(\w+)$", path.read_text(), re.MULTILINE):
        pins[name] = ids.get(target) if target in ids else int(target[1:])
    return BoardPins("RASPBERRY_PI_4B", pins)


def output_level(source: Any, point: str) -> Any:
    """What the agent last drove onto an output's Blinka pin (the agnostic board's pins keep the
    written value in `current_value`; reading them back gives the board's fixed answer instead)."""
    obj = source.outputs[point].obj
    if obj is None:
        return None
    if source.outputs[point].io.kind == "pwm":
        return obj.duty_cycle
    return obj._pin.current_value
