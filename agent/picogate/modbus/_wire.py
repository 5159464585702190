"""Modbus frames, without I/O: requests built, replies checked, for TCP (MBAP) and RTU (CRC-16).

- A `Request` holds one request PDU and everything its reply must match: the function code, and
  for reads the byte count, for writes the echo.  It is built once per distinct request and can
  be framed any number of times (`mbap_frame` with a transaction id, `rtu_frame` with a CRC).
- `check_reply(req, pdu)` turns a reply PDU into the values read (registers as ints, coils and
  inputs as bools), or raises `ExceptionReply` / `Mismatch`.  Nothing that does not fit the
  request is ever accepted: function code, byte count, length, and for writes the echoed address
  and value or quantity.
- MBAP: `mbap_split` cuts a byte stream into (transaction id, unit, PDU) frames, by the length in
  the header; a header that cannot be Modbus (protocol id, length) raises `Desync`.
- RTU frames carry no length and no transaction id.  `find_rtu_reply` looks for the reply to a
  given request in the bytes received: its unit, function code, byte count or echo, and length
  are known from the request (an exception reply is 5 bytes), and the CRC must hold.
  `scan_rtu` accounts for bytes that are discarded: which units sent the whole frames among them
  (the length of a frame of any unit follows from its function code and byte count), and how many
  bytes were garbage.
- `frame_gap` is RTU's 3.5-character silence between frames; `wire_time` a frame's time on a line.

Every error is a `WireError` whose message names what did not fit and how, in words an operator
can act on; random bytes give a `WireError` or a result, never another exception (tested with
hypothesis).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from picogate._errors import PicogateError

__all__ = [
    "EXCEPTION_NAMES",
    "Desync",
    "ExceptionReply",
    "Mismatch",
    "Request",
    "RtuMatch",
    "WireError",
    "WireStats",
    "check_reply",
    "crc16",
    "find_rtu_reply",
    "frame_gap",
    "mask_write_request",
    "mbap_frame",
    "mbap_one",
    "mbap_split",
    "read_request",
    "rtu_frame",
    "scan_rtu",
    "wire_time",
    "write_request",
]

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

READS = (1, 2, 3, 4)
WRITES = (5, 6, 15, 16, 22)
# Quantity limits of the Modbus application protocol (V1.1b3): reads of bits and registers, writes
# of several coils and registers.
_MAX_QUANTITY = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}
MAX_PDU = 253


@dataclass(slots=True)
class WireStats:
    """What a link discarded (each is also why no reply was ever taken for another's)."""

    late: int = 0
    """Replies that came after their request had given up: an old transaction id (TCP), or a
    frame from a unit that still owed a reply (RTU)."""
    foreign: int = 0
    """Frames from a unit other than the one asked, or from a unit that owed nothing."""
    mismatched: int = 0
    """Replies that do not fit their request: function code, byte count, length or echo."""
    garbage: int = 0
    """Bytes that belong to no frame (RTU: noise, collisions, partial frames)."""
    desync: int = 0
    """Modbus TCP streams with a header that cannot be Modbus (the connection is dropped)."""


class WireError(PicogateError, ValueError):
    """A request that cannot be sent, or bytes that are not the reply they should be."""


class ExceptionReply(WireError):
    """The device answered with a Modbus exception."""

    def __init__(self, fc: int, code: int) -> None:
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(f"device answered exception {code} ({name})")
        self.fc = fc
        self.code = code


class Mismatch(WireError):
    """A reply that does not fit its request (function code, byte count, length, echo)."""


class Desync(WireError):
    """A byte stream that cannot be Modbus TCP any more (bad MBAP header): the connection must go."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request and the shape of its reply.

    `pdu` is function code + data.  `reply_prefix` is how the normal reply PDU starts: function
    code and byte count for reads, the whole echo for FC 5, 6 and 22, function code + address +
    quantity for FC 15 and 16.  `reply_len` is the normal reply PDU's length (an exception reply
    PDU is 2 bytes).  `count` is the number of registers or bits read or written.
    """

    unit: int
    fc: int
    address: int
    count: int
    pdu: bytes
    reply_prefix: bytes
    reply_len: int

    @property
    def is_bits(self) -> bool:
        return self.fc in (1, 2)


def _check_unit(unit: object) -> int:
    if type(unit) is not int or not 0 <= unit <= 255:
        raise WireError(f"unit id {unit!r} is not 0..255")
    return unit


def _check_span(fc: int, address: object, count: object) -> tuple[int, int]:
    if type(address) is not int or not 0 <= address <= 0xFFFF:
        raise WireError(f"address {address!r} is not 0..65535")
    top = _MAX_QUANTITY.get(fc, 1)
    if type(count) is not int or not 1 <= count <= top:
        raise WireError(f"quantity {count!r} is not 1..{top} for function code {fc}")
    if address + count > 0x10000:
        raise WireError(f"{count} from address {address} goes past 65535")
    return address, count


def read_request(unit: int, fc: int, address: int, count: int) -> Request:
    """FC 1 (coils), 2 (discrete inputs), 3 (holding registers), 4 (input registers)."""
    if fc not in READS:
        raise WireError(f"function code {fc!r} is not a read (1, 2, 3, 4)")
    _check_unit(unit)
    _check_span(fc, address, count)
    nbytes = (count + 7) // 8 if fc <= 2 else 2 * count
    return Request(
        unit,
        fc,
        address,
        count,
        struct.pack(">BHH", fc, address, count),
        bytes((fc, nbytes)),
        2 + nbytes,
    )


def _bit(v: object, i: int) -> int:
    if v is True or v is False or (type(v) is int and v in (0, 1)):
        return 1 if v else 0
    raise WireError(f"value {i}: {v!r} is not a coil value (true/false/0/1)")


def _register(v: object, i: int) -> int:
    if type(v) is int and 0 <= v <= 0xFFFF:
        return v
    raise WireError(f"value {i}: {v!r} is not a register value 0..65535")


def write_request(unit: int, fc: int, address: int, values: Sequence[int | bool]) -> Request:
    """FC 5 (one coil), 6 (one register), 15 (coils), 16 (registers)."""
    if fc not in (5, 6, 15, 16):
        raise WireError(f"function code {fc!r} is not a write (5, 6, 15, 16)")
    _check_unit(unit)
    values = list(values)
    n = len(values)
    if fc in (5, 6):
        if n != 1:
            raise WireError(f"function code {fc} writes one value, not {n}")
        _check_span(fc, address, 1)
        word = (0xFF00 if _bit(values[0], 0) else 0) if fc == 5 else _register(values[0], 0)
        pdu = struct.pack(">BHH", fc, address, word)
        return Request(unit, fc, address, 1, pdu, pdu, 5)
    _check_span(fc, address, n)
    if fc == 15:
        packed = bytearray((n + 7) // 8)
        for i, v in enumerate(values):
            if _bit(v, i):
                packed[i >> 3] |= 1 << (i & 7)
        data = bytes(packed)
    else:
        data = struct.pack(f">{n}H", *(_register(v, i) for i, v in enumerate(values)))
    head = struct.pack(">BHH", fc, address, n)
    return Request(unit, fc, address, n, head + bytes((len(data),)) + data, head, 5)


def mask_write_request(unit: int, address: int, and_mask: int, or_mask: int) -> Request:
    """FC 22 Mask Write Register: register = (register AND and_mask) OR (or_mask AND NOT and_mask)."""
    _check_unit(unit)
    _check_span(22, address, 1)
    _register(and_mask, 0)
    _register(or_mask, 1)
    pdu = struct.pack(">BHHH", 22, address, and_mask, or_mask)
    return Request(unit, 22, address, 1, pdu, pdu, 7)


# --------------------------------------------------------------------------------------------------
# replies


_REGS: dict[int, struct.Struct] = {n: struct.Struct(f">{n}H") for n in range(1, 126)}
_BITS: tuple[tuple[bool, ...], ...] = tuple(tuple(bool(b >> i & 1) for i in range(8)) for b in range(256))


def check_reply(req: Request, pdu: bytes | bytearray | memoryview) -> list[int] | list[bool] | None:
    """The values a reply PDU carries (None for a write), if it is the reply to `req`."""
    n = len(pdu)
    if n == req.reply_len and pdu[: len(req.reply_prefix)] == req.reply_prefix:
        fc = req.fc
        if fc == 3 or fc == 4:
            return list(_REGS[req.count].unpack_from(pdu, 2))
        if fc <= 2:
            return list(chain.from_iterable(_BITS[b] for b in pdu[2:]))[: req.count]
        return None
    if n == 0:
        raise Mismatch("empty reply")
    if pdu[0] == req.fc | 0x80:
        if n != 2:
            raise Mismatch(f"exception reply of {n} bytes (2 expected)")
        raise ExceptionReply(req.fc, pdu[1])
    raise Mismatch(_why(req, bytes(pdu)))


def _why(req: Request, pdu: bytes) -> str:
    if pdu[0] != req.fc:
        return f"function code {pdu[0]} in the reply to function code {req.fc}"
    if req.fc in READS:
        if len(pdu) < 2:
            return "reply without a byte count"
        want = req.reply_len - 2
        if pdu[1] != want:
            return f"byte count {pdu[1]} ({want} expected for {req.count} {'bits' if req.is_bits else 'registers'})"
        return f"reply of {len(pdu)} bytes with byte count {pdu[1]}"
    if len(pdu) != req.reply_len:
        return f"reply of {len(pdu)} bytes ({req.reply_len} expected)"
    return f"reply echoes {pdu.hex()} ({req.pdu[: req.reply_len].hex()} expected)"


# --------------------------------------------------------------------------------------------------
# Modbus TCP (MBAP header: transaction id, protocol id 0, length of what follows, unit id)

_MBAP = struct.Struct(">HHHB")


def mbap_frame(tid: int, req: Request) -> bytes:
    return _MBAP.pack(tid, 0, len(req.pdu) + 1, req.unit) + req.pdu


def mbap_one(data: bytes) -> tuple[int, int, bytes] | None:
    """(tid, unit, PDU) when `data` is exactly one well-formed frame (the usual chunk), else None."""
    if len(data) < 7:
        return None
    tid, proto, length, unit = _MBAP.unpack_from(data)
    if proto != 0 or len(data) != 6 + length or not 2 <= length <= MAX_PDU + 1:
        return None
    return tid, unit, data[7:]


def mbap_split(buf: bytearray) -> list[tuple[int, int, bytes]]:
    """Cut the complete frames off the front of `buf` (consumed in place): (tid, unit, PDU) each.

    Raises `Desync` for a header that cannot be Modbus TCP; `buf` then holds what is left."""
    frames: list[tuple[int, int, bytes]] = []
    pos = 0
    end = len(buf)
    try:
        while end - pos >= 7:
            tid, proto, length, unit = _MBAP.unpack_from(buf, pos)
            if proto != 0:
                raise Desync(f"protocol id {proto} in a Modbus TCP header (0 expected)")
            if not 2 <= length <= MAX_PDU + 1:
                raise Desync(f"length {length} in a Modbus TCP header (2..254 expected)")
            stop = pos + 6 + length
            if stop > end:
                break
            frames.append((tid, unit, bytes(buf[pos + 7 : stop])))
            pos = stop
    finally:
        del buf[:pos]
    return frames


# --------------------------------------------------------------------------------------------------
# RTU (unit id, PDU, CRC-16/MODBUS low byte first)


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC = _crc_table()


def crc16(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """CRC-16/MODBUS of data[start:end].  Over a whole frame including its CRC it is 0."""
    table = _CRC
    c = 0xFFFF
    for b in data[start:end]:
        c = (c >> 8) ^ table[(c ^ b) & 0xFF]
    return c


def rtu_frame(req: Request) -> bytes:
    if not 1 <= req.unit <= 247:
        raise WireError(f"unit id {req.unit} cannot be asked on an RTU line (1..247; 0 is broadcast)")
    body = bytes((req.unit,)) + req.pdu
    c = crc16(body)
    return body + bytes((c & 0xFF, c >> 8))


@dataclass(frozen=True, slots=True)
class RtuMatch:
    """Where the reply is in the buffer: buf[start:end], unit and CRC included."""

    start: int
    end: int
    exception: bool

    def pdu(self, buf: bytes | bytearray) -> bytes:
        return bytes(buf[self.start + 1 : self.end - 2])


def find_rtu_reply(req: Request, buf: bytes | bytearray) -> RtuMatch | None:
    """The earliest whole reply to `req` in `buf` (normal or exception, CRC right), or None.

    Bytes before it are not this reply: frames of other units, replies of this unit that do not
    fit (another function code, byte count or echo), garbage."""
    normal = bytes((req.unit,)) + req.reply_prefix
    normal_len = 1 + req.reply_len + 2
    exc = bytes((req.unit, req.fc | 0x80))
    n = len(buf)
    best: RtuMatch | None = None
    for prefix, length, is_exc in ((normal, normal_len, False), (exc, 5, True)):
        i = buf.find(prefix)
        while i >= 0 and i + length <= n and (best is None or i < best.start):
            if crc16(buf, i, i + length) == 0:
                best = RtuMatch(i, i + length, is_exc)
                break
            i = buf.find(prefix, i + 1)
    return best


def rtu_frame_length(buf: bytes | bytearray, i: int = 0) -> int | None:
    """The length a frame starting at buf[i] must have, from its function code (and byte count),
    or None when that needs more bytes; 0 when no Modbus frame starts like this."""
    if len(buf) - i < 2:
        return None
    fc = buf[i + 1]
    if fc & 0x80:
        return 5  # an exception reply, whatever the function
    if fc in READS:
        if len(buf) - i < 3:
            return None
        return 5 + buf[i + 2] if buf[i + 2] else 0
    if fc in (5, 6, 15, 16):
        return 8
    if fc == 22:
        return 10
    return 0


def scan_rtu(buf: bytes | bytearray) -> tuple[list[int], int]:
    """Account for discarded bytes: the units of the whole frames (CRC right) in `buf`, in order,
    and how many bytes belonged to no frame."""
    units: list[int] = []
    garbage = 0
    i = 0
    n = len(buf)
    while i < n:
        length = rtu_frame_length(buf, i)
        if length and i + length <= n and crc16(buf, i, i + length) == 0:
            units.append(buf[i])
            i += length
        else:
            garbage += 1
            i += 1
    return units, garbage


# --------------------------------------------------------------------------------------------------
# timing on a serial line


def char_bits(bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> int:
    """Bits on the wire per character: start, data, parity (unless N), stop."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


def frame_gap(baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """t3.5 in seconds: the silence that separates RTU frames.  A fixed 1.75 ms above 19200 baud
    (Modbus over serial line V1.02, 2.5.1.1); else 3.5 character times."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_bits(bytesize, parity, stopbits) / baudrate


def wire_time(nbytes: int, baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """Seconds that `nbytes` characters take on the line."""
    return nbytes * char_bits(bytesize, parity, stopbits) / baudrate
