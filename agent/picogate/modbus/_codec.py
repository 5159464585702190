"""Modbus value codec: registers and bits to typed values and back.  Pure, no I/O.

A point is described by an `Encoding`: which table, which address, which type, in which byte
order, with which scaling.  `decode()` turns the words a read returned into the point's value;
`encode()` turns a value to write into the words to send, or raises `CodecError` with a stable
code ("bad_type", "out_of_range") that the command router reports as is.

Byte orders (the convention of Neuron and Kepware): the letters name the bytes of the big-endian
value, A the most significant; the string is the order in which those bytes appear on the wire,
register by register, each register high byte first.  For 0x11223344:

    ABCD → [0x1122, 0x3344]   big endian
    CDAB → [0x3344, 0x1122]   words swapped
    BADC → [0x2211, 0x4433]   bytes swapped in each word
    DCBA → [0x4433, 0x2211]   little endian

Each order is one of these four patterns, whatever the width, so one order can be set per device:

- 64-bit types: ABCD means ABCDEFGH, CDAB means GHEFCDAB (words reversed), BADC means BADCFEHG,
  DCBA means HGFEDCBA; the 8-letter names may be used too, and on a 32-bit type they mean their
  4-letter twin.
- 16-bit types: only the byte swap counts: ABCD and CDAB read AB, BADC and DCBA read BA.
- Strings (ASCII): characters high byte first; BADC or DCBA put them low byte first.
- A bit of a register (`bit=N`) is bit N of the register as read, 0 the least significant; the
  byte order is ignored.

Engineering value = raw * scale + offset.  An integer point with scale 1 and offset 0 decodes to
an int, any other numeric point to a float.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from picogate._errors import PicogateError
from picogate._model import PointType, Value

__all__ = [
    "ByteOrder",
    "CodecError",
    "Encoding",
    "Table",
    "bit_masks",
    "decode",
    "encode",
    "set_bit",
]

MAX_STRING_REGISTERS = 123
"""Longest string point, in registers: what one FC 16 write can carry."""


class Table(enum.StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"  # input registers

    @property
    def is_bit(self) -> bool:
        return self is Table.COIL or self is Table.DISCRETE_INPUT

    @property
    def writable(self) -> bool:
        return self is Table.COIL or self is Table.HOLDING


class ByteOrder(enum.StrEnum):
    """Order of the value's bytes on the wire; see the module docstring."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"
    ABCDEFGH = "ABCDEFGH"
    GHEFCDAB = "GHEFCDAB"
    BADCFEHG = "BADCFEHG"
    HGFEDCBA = "HGFEDCBA"

    @property
    def word_swap(self) -> bool:
        """True if the registers come least significant first."""
        return self in _WORD_SWAPPED

    @property
    def byte_swap(self) -> bool:
        """True if each register carries its low byte first."""
        return self in _BYTE_SWAPPED


_WORD_SWAPPED = frozenset({ByteOrder.CDAB, ByteOrder.DCBA, ByteOrder.GHEFCDAB, ByteOrder.HGFEDCBA})
_BYTE_SWAPPED = frozenset({ByteOrder.BADC, ByteOrder.DCBA, ByteOrder.BADCFEHG, ByteOrder.HGFEDCBA})

CodecErrorCode = Literal["out_of_range", "bad_type"]


class CodecError(PicogateError, ValueError):
    """A value that cannot be written to a point.  `code` is "out_of_range" or "bad_type"."""

    def __init__(self, code: CodecErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: CodecErrorCode = code

    def __reduce__(self) -> tuple[type[CodecError], tuple[CodecErrorCode, str]]:
        return CodecError, (self.code, str(self))


# --- per (type, byte pattern) converters, built once and shared by every Encoding -------------------

_WIDTHS = {
    PointType.INT16: 1,
    PointType.UINT16: 1,
    PointType.INT32: 2,
    PointType.UINT32: 2,
    PointType.FLOAT32: 2,
    PointType.INT64: 4,
    PointType.UINT64: 4,
    PointType.FLOAT64: 4,
}
_FORMATS = {
    PointType.INT16: "h",
    PointType.UINT16: "H",
    PointType.INT32: "i",
    PointType.UINT32: "I",
    PointType.FLOAT32: "f",
    PointType.INT64: "q",
    PointType.UINT64: "Q",
    PointType.FLOAT64: "d",
}

Words = Sequence[int] | Sequence[bool]
_CodecKey = tuple[PointType, bool, bool, int]  # type, word swap, byte swap, count or bit


class _Codec:
    """Converters for one (type, byte pattern): words → raw value, raw value → words.

    `number` is `value` typed as a number, so scaling needs no cast on the hot path.
    """

    __slots__ = ("encode", "key", "number", "value")

    def __init__(
        self,
        key: _CodecKey,
        value: Callable[[Sequence[Any]], Value],
        number: Callable[[Sequence[Any]], float],
        encode: Callable[[Any], list[int]],
    ) -> None:
        self.key = key
        self.value = value
        self.number = number
        self.encode = encode

    def __reduce__(self) -> tuple[Callable[[_CodecKey], _Codec], tuple[_CodecKey]]:
        return _codec_for, (self.key,)  # struct objects and closures do not pickle; rebuild instead


def _not_a_number(words: Sequence[Any]) -> float:
    raise TypeError("scale and offset apply to numeric points only")  # ruled out by Encoding


def _no_encode(raw: Any) -> list[int]:
    raise TypeError("bits are encoded by encode() itself")  # never called


_CODECS: dict[_CodecKey, _Codec] = {}


def _codec_for(key: _CodecKey) -> _Codec:
    codec = _CODECS.get(key)
    if codec is None:
        codec = _CODECS[key] = _build(key)
    return codec


def _build(key: _CodecKey) -> _Codec:
    type_, word_swap, byte_swap, n = key
    if type_ is PointType.BOOL:
        if n < 0:  # a coil or discrete input

            def bit_value(words: Sequence[Any]) -> Value:
                return bool(words[0])

            return _Codec(key, bit_value, _not_a_number, _no_encode)
        mask = 1 << n

        def register_bit(words: Sequence[Any]) -> Value:
            word: int = words[0]
            if not 0 <= word <= 0xFFFF:
                raise ValueError(f"register value {word!r} is not 0..65535")
            return (word & mask) != 0

        return _Codec(key, register_bit, _not_a_number, _no_encode)

    if type_ is PointType.STRING:
        # Bytes to words: big endian gives high byte first, little endian swaps each register.
        chars = struct.Struct(f"{'<' if byte_swap else '>'}{n}H")
        pack_chars = chars.pack

        def string_value(words: Sequence[Any]) -> Value:
            return pack_chars(*words).rstrip(b"\x00 ").decode("ascii", "replace")

        def string_words(raw: Any) -> list[int]:
            return list(chars.unpack(raw))

        return _Codec(key, string_value, _not_a_number, string_words)

    # Numbers.  Packing the registers big endian and reading the value big endian is ABCD; reading
    # it little endian reverses all bytes (DCBA); packing each register little endian first swaps
    # its bytes (BADC); doing both reverses the words only (CDAB).  Writing runs the same backwards.
    width = _WIDTHS[type_]
    wire = struct.Struct(f"{'<' if word_swap != byte_swap else '>'}{width}H")
    number = struct.Struct(f"{'<' if word_swap else '>'}{_FORMATS[type_]}")
    pack_wire, unpack_number = wire.pack, number.unpack
    if width == 1:

        def value16(words: Sequence[Any]) -> Any:
            return unpack_number(pack_wire(words[0]))[0]

        value = value16
    else:

        def value_n(words: Sequence[Any]) -> Any:
            return unpack_number(pack_wire(*words))[0]

        value = value_n
    pack_number, unpack_wire = number.pack, wire.unpack

    def number_words(raw: Any) -> list[int]:
        return list(unpack_wire(pack_number(raw)))

    return _Codec(key, value, value, number_words)


# --- point encoding -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Encoding:
    """Where a point lives in a Modbus device and how its value is laid out.

    `address` is the 0-based protocol address (holding register 40001 is address 0).  `count` is
    the number of registers of a string point (0 for the others).  `bit` makes a bool point out of
    bit N (0 = least significant) of a holding or input register.  Engineering value =
    raw * scale + offset.  Enum fields also accept their string values.
    """

    table: Table
    address: int
    type: PointType
    order: ByteOrder = ByteOrder.ABCD
    count: int = 0
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    _codec: _Codec = field(init=False, repr=False, compare=False)
    _width: int = field(init=False, repr=False, compare=False)
    _scaled: bool = field(init=False, repr=False, compare=False)
    _decimals: int = field(init=False, repr=False, compare=False)
    _f32: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            set_(self, "table", Table(self.table))
            set_(self, "type", PointType(self.type))
            set_(self, "order", ByteOrder(self.order))
        except ValueError as e:
            raise ValueError(str(e)) from None
        table, type_, bit, count = self.table, self.type, self.bit, self.count
        integers = {"address": self.address, "count": count, "bit": 0 if bit is None else bit}
        for name, v in integers.items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, not {v!r}")
        for name in ("scale", "offset"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, not {v!r}")
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"address {self.address} is not 0..65535")

        key: _CodecKey
        if table.is_bit:
            if type_ is not PointType.BOOL:
                raise ValueError(f"a {table} holds bits: its points are bool, not {type_}")
            if bit is not None:
                raise ValueError(f"bit selects a bit of a register; a {table} is already one bit")
            width, key = 1, (type_, False, False, -1)
        elif type_ is PointType.BOOL:
            if bit is None:
                raise ValueError(f"a bool point in a {table} register needs bit (0..15)")
            if not 0 <= bit <= 15:
                raise ValueError(f"bit {bit} is not 0..15")
            width, key = 1, (type_, False, False, bit)
        elif bit is not None:
            raise ValueError(f"bit applies to bool points only, not {type_}")
        elif type_ is PointType.STRING:
            if not 1 <= count <= MAX_STRING_REGISTERS:
                raise ValueError(f"a string needs count (registers) 1..{MAX_STRING_REGISTERS}, not {count}")
            width, key = count, (type_, False, self.order.byte_swap, count)
        else:
            width = _WIDTHS[type_]
            key = (type_, self.order.word_swap, self.order.byte_swap, 0)

        if count and type_ is not PointType.STRING:
            raise ValueError(f"count applies to string points only, not {type_}")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        scaled = self.scale != 1 or self.offset != 0
        if scaled and not type_.is_numeric:
            raise ValueError(f"scale and offset apply to numeric points, not {type_}")
        if self.address + width - 1 > 0xFFFF:
            raise ValueError(f"a {type_} at address {self.address} runs past address 65535")
        set_(self, "_codec", _codec_for(key))
        set_(self, "_width", width)
        set_(self, "_scaled", scaled)
        # An integer register scaled by 0.1 gives tenths: round away binary noise (0.1 * 624 is
        # 62.400000000000006) to the decimals the scale and offset imply; -1: don't round.
        decimals = max(_decimals(self.scale), _decimals(self.offset))
        set_(self, "_decimals", decimals if scaled and type_.is_integer and 0 <= decimals <= 9 else -1)
        set_(self, "_f32", type_ is PointType.FLOAT32)

    @property
    def width(self) -> int:
        """Registers the point spans (bits, for a coil or discrete input)."""
        return self._width


def _decimals(x: float) -> int:
    """Decimal places of `x` as written by repr (0.1 → 1, 2.5e-05 → 6, 3 → 0)."""
    text = repr(float(x))
    mantissa, _, exp = text.partition("e")
    places = len(mantissa.partition(".")[2].rstrip("0"))
    return max(0, places - int(exp or 0))


_F32 = struct.Struct(">f")


def _shortest_f32(v: float) -> float:
    """The shortest decimal that is the same float32: 0.10000000149011612 → 0.1."""
    if v != v or v in (float("inf"), float("-inf")):
        return v
    packed = _F32.pack(v)
    for digits in (6, 7, 8):
        candidate = float(f"{v:.{digits}g}")
        if _F32.pack(candidate) == packed:
            return candidate
    return v


def decode(enc: Encoding, words: Words) -> Value:
    """The value of `enc` from the registers (or bits) it spans: exactly `enc.width` of them.

    Floats come back as read, NaN and infinities included; the caller decides their quality.
    Raises ValueError if `words` has the wrong length or a register is not 0..65535.
    """
    if len(words) != enc._width:
        raise ValueError(
            f"{enc.type} at {enc.table} {enc.address} spans {enc._width}, got {len(words)} words"
        )
    try:
        if enc._scaled:
            value = enc._codec.number(words) * enc.scale + enc.offset
            if enc._decimals >= 0:
                return round(value, enc._decimals)
            return value
        if enc._f32:
            return _shortest_f32(enc._codec.value(words))  # type: ignore[arg-type]
        return enc._codec.value(words)
    except struct.error as e:
        raise ValueError(f"register values must be integers 0..65535: {e}") from None


def _brief(value: object) -> str:
    """A value in an error message, cut short: a write's value may be megabytes long."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    text = repr(value[:81]) + "..." if isinstance(value, str) and len(value) > 80 else repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


def encode(enc: Encoding, value: Value) -> list[int] | list[bool]:
    """The registers (or bits) to write `value` to `enc`: the inverse of `decode()`.

    Integer points take raw = (value - offset) / scale rounded to the nearest integer (ties to even).
    Raises CodecError("bad_type") for a value of the wrong kind (a bool or str for a number, a
    number other than 0/1 for a bool, a non-ASCII string) and CodecError("out_of_range") when the
    raw value does not fit the type (or a string its registers).

    A bool point returns `[value]`, also for a bit of a register: writing that takes a
    read-modify-write (`set_bit`) or an FC 22 mask write (`bit_masks`).  Whether the table is
    writable at all is the caller's check (`Table.writable`).
    """
    type_ = enc.type
    if type_ is PointType.BOOL:
        if isinstance(value, bool):
            return [value]
        if isinstance(value, int | float) and value in (0, 1):
            return [value == 1]
        raise CodecError("bad_type", f"a bool point takes true/false or 0/1, not {_brief(value)}")

    if type_ is PointType.STRING:
        if not isinstance(value, str):
            raise CodecError("bad_type", f"a string point takes a string, not {_brief(value)}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError:
            raise CodecError(
                "bad_type", f"a string point takes ASCII text only, not {_brief(value)}"
            ) from None
        room = 2 * enc.count
        if len(data) > room:
            raise CodecError("out_of_range", f"{len(data)} characters do not fit {enc.count} registers")
        return enc._codec.encode(data.ljust(room, b"\x00"))

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError("bad_type", f"a {type_} point takes a number, not {_brief(value)}")
    try:
        raw: int | float = (value - enc.offset) / enc.scale if enc._scaled else value
    except OverflowError:  # an integer no float can hold, scaled
        raise CodecError("out_of_range", f"{_brief(value)} is too large for a {type_} point") from None
    if type_.is_integer:
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise CodecError(
                    "out_of_range", f"{_brief(value)} is not a finite number for a {type_} point"
                )
            raw = round(raw)
        lo, hi = type_.int_range or (0, 0)
        if not lo <= raw <= hi:
            raise CodecError(
                "out_of_range", f"{_brief(value)} gives raw {_brief(raw)}, outside {type_} range {lo}..{hi}"
            )
        return enc._codec.encode(raw)
    try:
        return enc._codec.encode(float(raw))
    except OverflowError:
        raise CodecError("out_of_range", f"{_brief(value)} is too large for a {type_} point") from None


def set_bit(word: int, bit: int, on: bool) -> int:
    """`word` with bit N (0 = least significant) set or cleared: the modify of a read-modify-write."""
    if not 0 <= bit <= 15:
        raise ValueError(f"bit {bit} is not 0..15")
    if not 0 <= word <= 0xFFFF:
        raise ValueError(f"register value {word} is not 0..65535")
    return word | (1 << bit) if on else word & ~(1 << bit) & 0xFFFF


def bit_masks(bit: int, on: bool) -> tuple[int, int]:
    """(and_mask, or_mask) for FC 22 Mask Write Register setting or clearing bit N.

    The device computes (current AND and_mask) OR (or_mask AND NOT and_mask).
    """
    if not 0 <= bit <= 15:
        raise ValueError(f"bit {bit} is not 0..15")
    return 0xFFFF ^ (1 << bit), (1 << bit) if on else 0
