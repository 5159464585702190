"""`gateway.yaml`: the `devices:` section, Modbus TCP and RTU devices polled by the gateway, and the
point schema that every Modbus device shares (also those behind a Pico board, pico/_config.py).

Every model forbids unknown keys, so a typo is an error that names the key, not a silent default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from picogate._model import PointType
from picogate.config import (
    Deadband,
    Duration,
    Location,
    Name,
    Port,
    PositiveDuration,
    Section,
    StrictModel,
    UnitId,
    parse_deadband,
    parse_duration,
)
from picogate.modbus._codec import ByteOrder, Encoding, Table

PollInterval = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A poll interval: a duration, or 0 for "as fast as the device answers"."""

_Model = StrictModel

# --------------------------------------------------------------------------- points

_REF_TABLES = {0: Table.COIL, 1: Table.DISCRETE_INPUT, 3: Table.INPUT, 4: Table.HOLDING}


def reference_to_address(ref: int) -> tuple[Table, int]:
    """Map a Modicon reference number to (table, 0-based protocol address).

    5 digits: 00001-09999 coils, 10001-19999 discrete inputs, 30001-39999 input registers,
    40001-49999 holding registers.  6 digits extend the range: 400001-465536 etc.
    """
    if not 1 <= ref <= 465536:
        raise ValueError(f"reference {ref} is not a Modicon reference number (e.g. 40001)")
    digits = 6 if ref > 99999 else 5
    base = 10 ** (digits - 1)
    kind, number = divmod(ref, base)
    if kind not in _REF_TABLES or number < 1:
        raise ValueError(
            f"reference {ref}: first digit must be 0 (coil), 1 (discrete input), "
            "3 (input register) or 4 (holding register), and the number starts at 1"
        )
    address = number - 1
    if address > 65535:
        raise ValueError(f"reference {ref} is past address 65535")
    return _REF_TABLES[kind], address


def _reference_text(value: Any) -> Any:
    """The loader passes numbers written with leading zeros on as text.  `010001` is a 6-digit coil
    reference (coil 10000), but as a number it is 10001, a discrete input: refuse it."""
    digits = value.strip() if isinstance(value, str) else ""
    if digits.isdigit() and digits.startswith("0") and int(digits) > 9999:
        raise ValueError(
            f"reference {digits} is a 6-digit coil reference: write table: coil, address: {int(digits) - 1}"
        )
    return value


class PointConfig(_Model):
    name: Name
    table: Table | None = None
    address: Annotated[int, Field(ge=0, le=65535)] | None = None
    ref: Annotated[int, BeforeValidator(_reference_text)] | None = None
    """Alternative to table + address: a Modicon reference number such as 40001."""
    type: PointType | None = None
    """Default: bool for coils, discrete inputs and `bit` points; uint16 otherwise."""
    order: ByteOrder | None = None
    """Byte/word order; default: the device's."""
    count: Annotated[int, Field(ge=1, le=123)] | None = None
    """Registers of a string point (2 ASCII characters each)."""
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    """Bit N of a holding/input register (the point is a bool)."""
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    poll: PositiveDuration | None = None
    """Poll interval; default: the device's."""
    deadband: Annotated[Deadband, BeforeValidator(parse_deadband)] = Deadband()
    max_silence: Duration | None = None
    """Re-publish an unchanged value after this long; default: the device's."""
    writable: bool = False
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> PointConfig:
        if self.ref is not None:
            if self.table is not None or self.address is not None:
                raise ValueError("give either ref or table + address, not both")
        elif self.table is None or self.address is None:
            raise ValueError("needs table and address (or ref, e.g. 40001)")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.writable and self.resolved_table() in (Table.DISCRETE_INPUT, Table.INPUT):
            raise ValueError(f"a {self.resolved_table().value} point cannot be writable")
        self.encoding(ByteOrder.ABCD)  # raises ValueError naming the problem
        return self

    def resolved_table(self) -> Table:
        if self.ref is not None:
            return reference_to_address(self.ref)[0]
        assert self.table is not None
        return self.table

    def resolved_address(self) -> int:
        if self.ref is not None:
            return reference_to_address(self.ref)[1]
        assert self.address is not None
        return self.address

    def encoding(self, device_order: ByteOrder) -> Encoding:
        table = self.resolved_table()
        ptype = self.type
        if ptype is None:
            ptype = PointType.BOOL if table.is_bit or self.bit is not None else PointType.UINT16
        return Encoding(
            table=table,
            address=self.resolved_address(),
            type=ptype,
            order=self.order or device_order,
            count=self.count or 0,
            bit=self.bit,
            scale=self.scale,
            offset=self.offset,
        )


# --------------------------------------------------------------------------- devices


class _DeviceBase(_Model):
    name: Name
    description: str = ""
    unit_id: UnitId = 1
    timeout: PositiveDuration = 1.0
    """Time allowed for one reply (on a serial line, counted from the end of the request on the
    wire, plus the reply's own time on the wire)."""
    late_reply: PositiveDuration | None = None
    """RTU framing (serial, or `framing: rtu`): after a timeout, how much longer the device's
    reply may still come.  Until then the unit is asked nothing else, so that its late reply is
    never taken for another request's (docs/modbus.md).  Default: 3 × `timeout`."""
    driver: Literal["builtin", "pymodbus"] = "builtin"
    """Who speaks Modbus on this device's connection: the agent's own frames, or pymodbus
    (docs/modbus.md); devices sharing a connection must use the same."""
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    """Further tries of a failed request, within one poll."""
    offline_after: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failed polls after which the device is offline (its points go bad)."""
    backoff_max: PositiveDuration = 30.0
    """Longest wait between polls of an offline device."""
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    """Unused registers a read may span to merge two requests."""
    no_merge: bool = False
    """One request per point, for devices that refuse multi-register reads."""
    fc22: bool = False
    """The device supports Mask Write Register (FC 22) for bit writes."""
    byte_order: ByteOrder = ByteOrder.ABCD
    poll: PollInterval = 1.0
    """Poll interval; `0`: as fast as the device answers (the next request as soon as the reply
    came, still one at a time on its line)."""
    max_silence: Duration = 0.0
    """Re-publish unchanged values after this long (0: never; deadband 0 publishes every change)."""
    points: list[PointConfig] = Field(default_factory=list)

    @field_validator("points")
    @classmethod
    def _unique_points(cls, points: list[PointConfig]) -> list[PointConfig]:
        seen: set[str] = set()
        for i, p in enumerate(points):
            if p.name in seen:
                raise ValueError(f"points[{i}].name: {p.name!r} is used twice")
            seen.add(p.name)
        return points


class ModbusTcpDevice(_DeviceBase):
    type: Literal["modbus_tcp"]
    host: str
    port: Port = 502
    framing: Literal["socket", "rtu"] = "socket"
    """`rtu`: Modbus RTU framing on a TCP socket (serial-to-Ethernet converters)."""


class ModbusRtuDevice(_DeviceBase):
    type: Literal["modbus_rtu"]
    port: str
    """Serial device, e.g. /dev/ttyUSB0 or /dev/picogate-rs485."""
    baudrate: Annotated[int, Field(ge=300, le=4_000_000)] = 19200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: Annotated[int, Field(ge=1, le=247)] = 1


Device = Annotated[ModbusTcpDevice | ModbusRtuDevice, Field(discriminator="type")]


def _unique_devices(
    devices: list[ModbusTcpDevice | ModbusRtuDevice],
) -> list[ModbusTcpDevice | ModbusRtuDevice]:
    seen: set[str] = set()
    lines: dict[str, ModbusRtuDevice] = {}
    units: dict[tuple[str, int], str] = {}  # (serial port, unit id) → device name
    drivers: dict[tuple[str, ...], ModbusTcpDevice | ModbusRtuDevice] = {}  # connection → first device
    for i, d in enumerate(devices):
        if d.name in seen:
            raise ValueError(f"devices[{i}].name: {d.name!r} is used twice")
        seen.add(d.name)
        if isinstance(d, ModbusTcpDevice) and d.framing == "rtu" and d.unit_id == 0:
            raise ValueError(
                f"devices[{i}].unit_id: 0 is broadcast on an RTU line and gets no reply; "
                "use the device's address, 1..247"
            )
        link = ("rtu", d.port) if isinstance(d, ModbusRtuDevice) else ("tcp", d.host, str(d.port), d.framing)
        first = drivers.setdefault(link, d)
        if first.driver != d.driver:
            raise ValueError(
                f"devices[{i}].driver: {d.name} shares its connection with {first.name} "
                f"but not its driver ({d.driver} vs {first.driver})"
            )
        if isinstance(d, ModbusRtuDevice):
            other = lines.setdefault(d.port, d)
            if (other.baudrate, other.parity, other.stopbits, other.bytesize) != (
                d.baudrate,
                d.parity,
                d.stopbits,
                d.bytesize,
            ):
                raise ValueError(
                    f"devices[{i}].port: {d.name} shares serial port {d.port} with {other.name} "
                    "but not its baudrate/parity/stopbits/bytesize"
                )
            # Every device on the line, not only the first one, must have its own unit id.
            user = units.setdefault((d.port, d.unit_id), d.name)
            if user != d.name:
                raise ValueError(
                    f"devices[{i}].unit_id: {d.name} and {user} both use unit id {d.unit_id} on {d.port}"
                )
    return devices


Devices = Annotated[list[Device], AfterValidator(_unique_devices)]


_REFERENCE_BASES = {Table.DISCRETE_INPUT: 10000, Table.INPUT: 30000, Table.HOLDING: 40000}


def point_warnings(points: list[PointConfig], byte_order: ByteOrder) -> Iterator[tuple[Location, str]]:
    """`(location under the point list, message)` for what is valid but probably not meant: an
    address that looks like a Modicon reference (`table: holding, address: 40001`), and points
    whose registers overlap (two whole-register points, or two points on the same bit)."""
    taken: dict[Table, list[tuple[int, int, int | None, str]]] = {}
    for j, p in enumerate(points):
        table = p.resolved_table()
        base = _REFERENCE_BASES.get(table)
        if p.address is not None and base is not None and base < p.address < base + 10000:
            yield (
                (j, "address"),
                f"address {p.address} looks like a Modicon reference: did you mean ref: {p.address}? "
                f"(ref: {p.address} is {table.value} address {p.address - base - 1}: address counts from 0, "
                "as on the wire)",
            )
        enc = p.encoding(byte_order)
        first, last = enc.address, enc.address + enc.width - 1
        for o_first, o_last, o_bit, o_name in taken.get(table, []):
            if first <= o_last and o_first <= last and p.bit == o_bit:
                where = (j, "address" if p.address is not None else "ref")
                if p.bit is not None:
                    message = f"bit {p.bit} of {table.value} register {first} is also point '{o_name}'"
                elif table.is_bit:
                    message = f"{table.value} {first} is also point '{o_name}'"
                else:
                    regs = (
                        f"register {first} overlaps"
                        if first == last
                        else f"registers {first}..{last} overlap"
                    )
                    message = (
                        f"{table.value} {regs} point '{o_name}' "
                        f"({_span(o_first, o_last)}): check the address and the type (a float32 or an int32 "
                        "takes 2 registers, a 64-bit type 4)"
                    )
                yield where, message
                break
        taken.setdefault(table, []).append((first, last, p.bit, p.name))


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


def _device_warnings(devices: list[ModbusTcpDevice | ModbusRtuDevice]) -> Iterator[tuple[Location, str]]:
    for i, d in enumerate(devices):
        for (j, *rest), message in point_warnings(d.points, d.byte_order):
            yield (i, "points", j, *rest), message


def _device_names(devices: list[ModbusTcpDevice | ModbusRtuDevice]) -> Iterator[tuple[str, str]]:
    for i, d in enumerate(devices):
        yield f"devices[{i}]", d.name


SECTION = Section(
    "devices",
    Devices,
    default_factory=list,
    doc="Modbus devices polled by the gateway (modbus/_config.py).",
    devices=_device_names,
    warnings=_device_warnings,
)
