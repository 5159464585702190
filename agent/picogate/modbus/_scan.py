"""Which Modbus unit ids answer on a line (`picogate scan`): a TCP device or gateway, or a serial
line at each of several baud rates and parities.

Each unit id is asked for one holding register (FC 3, address 0).  A unit *answers* when it replies
with the register or with a Modbus exception (an illegal address is still an answer: the unit is
there); a TCP-to-RTU gateway's own exceptions 10 and 11 (no path, the target did not respond) mean
that nothing answered behind it.  Unit 0 is the broadcast address, which never replies, so a serial
scan starts at 1.

The search over serial settings is pure (`search`): it takes the probe as a function, so that the
order of settings and when to stop are tested as data.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from picogate._errors import PicogateError
from picogate.modbus._codec import Table
from picogate.modbus._transport import (
    EXCEPTION_NAMES,
    FailKind,
    ModbusFailure,
    ModbusLink,
    SerialParams,
    TcpParams,
)

__all__ = [
    "BAUD_RATES",
    "PARITIES",
    "Probe",
    "ScanError",
    "ScanLine",
    "Setting",
    "UnitAnswer",
    "parse_units",
    "scan_serial",
    "scan_tcp",
    "search",
    "serial_settings",
]

BAUD_RATES = (19200, 9600, 38400, 57600, 115200, 4800, 2400, 1200)
"""Tried in this order: Modbus's default first, then the others by how often devices use them."""
PARITIES = ("E", "N", "O")
"""Even parity is Modbus RTU's default (8E1); none (8N1) is as common in practice."""
_GATEWAY_NO_TARGET = {10, 11}


class ScanError(PicogateError, ValueError):
    """A scan that cannot start: bad unit ids or settings."""


@dataclass(frozen=True, slots=True)
class Setting:
    """A serial line's settings (`baudrate`, `parity`, `stopbits`, 8 data bits)."""

    baudrate: int
    parity: str
    stopbits: int = 1

    def __str__(self) -> str:
        return f"{self.baudrate} 8{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class UnitAnswer:
    """A unit that answered, and how: `"register 0 = 1234"` or the exception it sent."""

    unit: int
    answer: str


@dataclass(slots=True)
class ScanLine:
    """What one line (at one setting, on serial) gave: the units that answered, how many asked
    units sent something unreadable (`garbled`: often a wrong baud rate or parity), and `error`
    when the line could not be used at all (no such port, connection refused)."""

    target: str
    setting: Setting | None
    asked: int = 0
    units: list[UnitAnswer] = field(default_factory=list)
    garbled: int = 0
    error: str = ""
    seconds: float = 0.0


Probe = Callable[[int], Awaitable[str | None]]
"""Ask one unit id; its answer (a text), or None when nothing answered."""


def parse_units(text: str, *, lowest: int = 0) -> list[int]:
    """`1-247`, `1,2,5-9` → the unit ids, in order, each once."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo_text, sep, hi_text = part.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise ScanError(f"unit ids: {part!r} is not a number or a range such as 1-247") from None
        if lo < lowest == 1:
            raise ScanError(
                f"unit ids: {part!r}: 0 is the broadcast id, which no unit answers on a serial line"
            )
        if not lowest <= lo <= hi <= 255:
            raise ScanError(f"unit ids: {part!r} must be within {lowest}..255, low to high")
        out.extend(u for u in range(lo, hi + 1) if u not in out)
    if not out:
        raise ScanError("unit ids: none given (e.g. 1-247)")
    return out


def serial_settings(
    bauds: Sequence[int] = BAUD_RATES, parities: Sequence[str] = PARITIES, stopbits: int = 1
) -> list[Setting]:
    """Every combination, the baud rates in the order given, each with every parity."""
    for parity in parities:
        if parity not in ("N", "E", "O"):
            raise ScanError(f"parity: {parity!r} must be N, E or O")
    for baud in bauds:
        if baud <= 0:
            raise ScanError(f"baud rate: {baud} must be positive")
    return [Setting(b, p, stopbits) for b in bauds for p in parities]


async def search(
    settings: Sequence[Setting],
    units: Sequence[int],
    probe_line: Callable[[Setting, Sequence[int]], Awaitable[ScanLine]],
    *,
    every_setting: bool = False,
) -> list[ScanLine]:
    """Scan `units` at each setting in turn; stop after the first setting at which a unit answered
    (a bus runs at one setting) unless `every_setting`, or when the line cannot be opened."""
    out = []
    for setting in settings:
        line = await probe_line(setting, units)
        out.append(line)
        if line.error or (line.units and not every_setting):
            break
    return out


def answer_of(exc: ModbusFailure | None, words: list[int] | list[bool] | None) -> str | None:
    """What a probe's outcome says: a text for a unit that answered, None for no unit."""
    if words is not None:
        return f"holding 0 = {int(words[0])}"
    if exc is not None and exc.kind is FailKind.EXCEPTION:
        if exc.exception_code in _GATEWAY_NO_TARGET:
            return None
        code = exc.exception_code
        return f"exception {code} ({EXCEPTION_NAMES.get(code or 0, 'unknown exception')})"
    return None


async def _scan_link(
    link: ModbusLink,
    line: ScanLine,
    units: Sequence[int],
    progress: Callable[[ScanLine, int], None] | None,
) -> ScanLine:
    started = time.perf_counter()
    stats = link.stats
    try:
        for unit in units:
            words: list[int] | list[bool] | None = None
            failure: ModbusFailure | None = None
            line.asked += 1
            noise = (stats.garbage, stats.mismatched)
            try:
                words = await link.read(unit, Table.HOLDING, 0, 1)
            except ModbusFailure as exc:
                failure = exc
                if exc.kind is FailKind.DISCONNECTED:
                    line.error = str(exc)
                    break
            answer = answer_of(failure, words)
            if answer is not None:
                line.units.append(UnitAnswer(unit, answer))
            elif (stats.garbage, stats.mismatched) != noise or (
                failure is not None and failure.kind is FailKind.PROTOCOL
            ):
                line.garbled += 1  # something answered, unreadably: often a wrong baud rate or parity
            if progress is not None:
                progress(line, unit)
    finally:
        link.close()
        line.seconds = time.perf_counter() - started
    return line


async def scan_tcp(
    host: str,
    port: int,
    units: Sequence[int],
    *,
    timeout: float,
    framing: str = "socket",
    progress: Callable[[ScanLine, int], None] | None = None,
) -> ScanLine:
    """Ask each unit id through one TCP connection (a device, or a gateway to a serial bus)."""
    link = ModbusLink(TcpParams(host, port, framing), timeout=timeout, late_reply=dict.fromkeys(units, 0.0))
    line = ScanLine(f"{host}:{port}", None)
    try:
        await link.connect()
    except ModbusFailure as exc:
        line.error = str(exc)
        return line
    return await _scan_link(link, line, units, progress)


async def scan_serial(
    port: str,
    units: Sequence[int],
    settings: Sequence[Setting],
    *,
    timeout: float,
    every_setting: bool = False,
    progress: Callable[[ScanLine, int], None] | None = None,
) -> list[ScanLine]:
    """Ask each unit id on a serial line at each setting (see `search`)."""

    async def at(setting: Setting, units: Sequence[int]) -> ScanLine:
        params = SerialParams(port, setting.baudrate, setting.parity, setting.stopbits, 8)
        # No late-reply window: a unit that did not answer within the timeout is not asked again,
        # and a late reply is told from the next unit's by its unit id.
        link = ModbusLink(params, timeout=timeout, late_reply=dict.fromkeys(units, 0.0))
        line = ScanLine(port, setting)
        try:
            await link.connect()
        except ModbusFailure as exc:
            line.error = str(exc)
            return line
        return await _scan_link(link, line, units, progress)

    return await search(settings, units, at, every_setting=every_setting)
