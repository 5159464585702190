"""The Modbus value codec: the case table in tests/cases/codec/cases.yaml, then properties."""

from __future__ import annotations

import math
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from picogate._model import PointType
from picogate.modbus._codec import ByteOrder, CodecError, Encoding, Table, bit_masks, decode, encode, set_bit

CASES = yaml.safe_load((Path(__file__).parents[1] / "cases" / "codec" / "cases.yaml").read_text())
ENCODING_KEYS = ("table", "address", "type", "order", "count", "bit", "scale", "offset")


def encoding(row: dict[str, Any]) -> Encoding:
    kwargs = {k: row[k] for k in ENCODING_KEYS if k in row}
    kwargs.setdefault("table", "holding")
    kwargs.setdefault("address", 0)
    return Encoding(**kwargs)


def row_id(row: dict[str, Any]) -> str:
    parts = [
        str(row.get(k)) for k in ("table", "type", "order", "count", "bit", "scale", "offset") if k in row
    ]
    if "words" in row:
        parts.append("[" + ",".join(f"{w:04x}" if type(w) is int else str(w) for w in row["words"]) + "]")
    if "value" in row:
        parts.append(repr(row["value"]))
    return "-".join(parts)[:120]


def same(actual: object, expected: object) -> bool:
    """Equal, of the same type, and for floats equal to the last bit (NaN matches NaN, -0.0 not 0.0)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(actual, float) and isinstance(expected, float):
        return struct.pack(">d", actual) == struct.pack(">d", expected) or (
            math.isnan(actual) and math.isnan(expected)
        )
    return actual == expected


# --- the case table ------------------------------------------------------------------------------


@pytest.mark.parametrize("row", CASES["decode"], ids=row_id)
def test_decode_case(row: dict[str, Any]) -> None:
    enc = encoding(row)
    value = decode(enc, row["words"])
    expected = row["value"]
    if "scale" in row or "offset" in row:  # scaled arithmetic: compare to a few ulps
        assert type(value) is float
        assert value == pytest.approx(expected, rel=1e-12)
    else:
        assert same(value, expected), f"decoded {value!r}, expected {expected!r}"


@pytest.mark.parametrize("row", [r for r in CASES["decode"] if not r.get("decode_only")], ids=row_id)
def test_encode_inverts_decode_case(row: dict[str, Any]) -> None:
    assert encode(encoding(row), row["value"]) == row["words"]


@pytest.mark.parametrize("row", CASES["encode"], ids=row_id)
def test_encode_case(row: dict[str, Any]) -> None:
    words = encode(encoding(row), row["value"])
    assert words == row["words"]
    assert [type(w) for w in words] == [type(w) for w in row["words"]]


@pytest.mark.parametrize("row", CASES["encode_errors"], ids=row_id)
def test_encode_error_case(row: dict[str, Any]) -> None:
    with pytest.raises(CodecError) as raised:
        encode(encoding(row), row["value"])
    assert raised.value.code == row["code"]
    assert isinstance(raised.value, ValueError)
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (copy.code, str(copy)) == (raised.value.code, str(raised.value))


@pytest.mark.parametrize("row", CASES["invalid_encodings"], ids=row_id)
def test_invalid_encoding_case(row: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=re.escape(row["error"])):
        encoding(row)


def test_case_table_covers_every_numeric_type_and_order() -> None:
    seen = {(r["type"], r.get("order", "ABCD")) for r in CASES["decode"]}
    numeric = [t for t in PointType if t.is_numeric]
    assert {(t.value, o.value) for t in numeric for o in ByteOrder} <= seen


# --- the model -----------------------------------------------------------------------------------


def test_tables() -> None:
    assert [t for t in Table if t.is_bit] == [Table.COIL, Table.DISCRETE_INPUT]
    assert [t for t in Table if t.writable] == [Table.COIL, Table.HOLDING]


@pytest.mark.parametrize(
    ("kwargs", "width"),
    [
        ({"table": "coil", "type": "bool"}, 1),
        ({"table": "discrete_input", "type": "bool"}, 1),
        ({"table": "holding", "type": "bool", "bit": 9}, 1),
        ({"table": "input", "type": "int16"}, 1),
        ({"table": "holding", "type": "uint16"}, 1),
        ({"table": "holding", "type": "int32"}, 2),
        ({"table": "holding", "type": "uint32"}, 2),
        ({"table": "holding", "type": "float32"}, 2),
        ({"table": "input", "type": "int64"}, 4),
        ({"table": "holding", "type": "uint64"}, 4),
        ({"table": "holding", "type": "float64"}, 4),
        ({"table": "holding", "type": "string", "count": 17}, 17),
        ({"table": "holding", "type": "string", "count": 123}, 123),
    ],
)
def test_width(kwargs: dict[str, Any], width: int) -> None:
    assert Encoding(address=0, **kwargs).width == width


def test_encoding_coerces_strings_and_compares_by_fields() -> None:
    a = Encoding("holding", 7, "float32", "CDAB", scale=0.5)
    b = Encoding(Table.HOLDING, 7, PointType.FLOAT32, ByteOrder.CDAB, scale=0.5)
    assert a == b
    assert hash(a) == hash(b)
    assert a.table is Table.HOLDING
    assert a.type is PointType.FLOAT32
    assert a.order is ByteOrder.CDAB
    assert a != Encoding("holding", 7, "float32", "ABCD", scale=0.5)
    assert "CDAB" in repr(a)
    assert "_codec" not in repr(a)


def test_encoding_pickles() -> None:
    enc = Encoding("input", 3, "int32", "DCBA", scale=0.25)
    copy = pickle.loads(pickle.dumps(enc))
    assert copy == enc
    assert decode(copy, [0x0100, 0x0000]) == decode(enc, [0x0100, 0x0000]) == 0.25


def test_encoding_is_frozen() -> None:
    enc = Encoding("holding", 0, "uint16")
    with pytest.raises(AttributeError):
        enc.address = 1  # type: ignore[misc]


def test_decode_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="spans 2, got 1"):
        decode(Encoding("holding", 0, "int32"), [1])
    with pytest.raises(ValueError, match="spans 1, got 2"):
        decode(Encoding("holding", 0, "uint16"), [1, 2])
    with pytest.raises(ValueError, match="spans 3, got 0"):
        decode(Encoding("holding", 0, "string", count=3), [])


@pytest.mark.parametrize(
    "enc",
    [
        Encoding("holding", 0, "uint16"),
        Encoding("holding", 0, "int16", scale=2),
        Encoding("holding", 0, "bool", bit=1),
        Encoding("holding", 0, "string", count=1),
    ],
    ids=str,
)
@pytest.mark.parametrize("word", [-1, 65536, 1 << 40])
def test_decode_rejects_register_out_of_range(enc: Encoding, word: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode(enc, [word])


def test_set_bit_and_masks() -> None:
    assert set_bit(0x0000, 0, True) == 0x0001
    assert set_bit(0xFFFF, 15, False) == 0x7FFF
    assert set_bit(0x00F0, 4, True) == 0x00F0
    assert set_bit(0x00F0, 4, False) == 0x00E0
    assert bit_masks(3, True) == (0xFFF7, 0x0008)
    assert bit_masks(3, False) == (0xFFF7, 0x0000)
    assert bit_masks(15, True) == (0x7FFF, 0x8000)
    for bad in (-1, 16):
        with pytest.raises(ValueError):
            set_bit(0, bad, True)
        with pytest.raises(ValueError):
            bit_masks(bad, True)
    with pytest.raises(ValueError):
        set_bit(0x10000, 0, True)


# --- properties ----------------------------------------------------------------------------------

INTEGER_TYPES = [t for t in PointType if t.is_integer]
orders = st.sampled_from(list(ByteOrder))
words16 = st.integers(0, 0xFFFF)


@st.composite
def integer_points(draw: st.DrawFn) -> tuple[Encoding, int]:
    type_ = draw(st.sampled_from(INTEGER_TYPES))
    lo, hi = type_.int_range or (0, 0)
    return Encoding("holding", 0, type_, draw(orders)), draw(st.integers(lo, hi))


@given(integer_points())
def test_integer_round_trip(point: tuple[Encoding, int]) -> None:
    enc, value = point
    words = encode(enc, value)
    assert len(words) == enc.width
    assert all(type(w) is int and 0 <= w <= 0xFFFF for w in words)
    back = decode(enc, words)
    assert type(back) is int
    assert back == value


@given(st.sampled_from(INTEGER_TYPES), orders, st.integers(1, 1 << 70), st.booleans())
def test_integer_out_of_range(type_: PointType, order: ByteOrder, beyond: int, above: bool) -> None:
    lo, hi = type_.int_range or (0, 0)
    value = hi + beyond if above else lo - beyond
    with pytest.raises(CodecError) as raised:
        encode(Encoding("input", 10, type_, order), value)
    assert raised.value.code == "out_of_range"


@given(orders, st.floats(width=32))
def test_float32_round_trip(order: ByteOrder, value: float) -> None:
    enc = Encoding("holding", 0, "float32", order)
    back = decode(enc, encode(enc, value))
    # Decoded as the shortest decimal that is the same float32 (0.1, not 0.10000000149011612).
    assert isinstance(back, float)
    assert struct.pack(">f", back) == struct.pack(">f", value) or (math.isnan(back) and math.isnan(value))
    # ("shortest" in significant digits: 1e15 is shorter than 999999986991104.0, though its
    # repr has more characters)
    assert _digits(back) <= max(_digits(value), 9)


def _digits(x: float) -> int:
    """Significant decimal digits of repr(x)."""
    mantissa = repr(abs(x)).split("e")[0].replace(".", "").strip("0")
    return len(mantissa)


@pytest.mark.parametrize(
    ("scale", "offset", "raw", "expected"),
    [
        (0.1, 0.0, 624, 62.4),
        (0.01, 0.0, 13270, 132.7),
        (0.1, -40.0, 655, 25.5),
        (0.001, 0.0, 1, 0.001),
        (2.0, 0.5, 3, 6.5),
    ],
)
def test_scaled_integers_have_no_binary_noise(scale: float, offset: float, raw: int, expected: float) -> None:
    enc = Encoding("holding", 0, "int16", scale=scale, offset=offset)
    assert repr(decode(enc, [raw])) == repr(expected)


def test_float32_shortest_decimal() -> None:
    enc = Encoding("holding", 0, "float32")
    assert decode(enc, encode(enc, 2.6811351776123047)) == 2.6811352
    assert decode(enc, encode(enc, 21.5)) == 21.5
    assert decode(enc, encode(enc, 0.1)) == 0.1


@given(orders, st.floats())
def test_float64_round_trip(order: ByteOrder, value: float) -> None:
    enc = Encoding("holding", 0, "float64", order)
    assert same(decode(enc, encode(enc, value)), value)


@given(orders, st.floats(min_value=3.5e38, allow_infinity=False), st.booleans())
def test_float32_out_of_range(order: ByteOrder, value: float, negative: bool) -> None:
    with pytest.raises(CodecError) as raised:
        encode(Encoding("holding", 0, "float32", order), -value if negative else value)
    assert raised.value.code == "out_of_range"


@st.composite
def any_point(draw: st.DrawFn) -> Encoding:
    """Any valid register encoding, scaled or not."""
    type_ = draw(st.sampled_from([t for t in PointType if t is not PointType.BOOL]))
    if type_ is PointType.STRING:
        return Encoding("holding", 0, type_, draw(orders), count=draw(st.integers(1, 123)))
    scale = draw(st.sampled_from([1.0, 0.1, -2.0, 0.001, 100.0]))
    offset = draw(st.sampled_from([0.0, 0.0, -40.0, 273.15]))
    return Encoding("input", 0, type_, draw(orders), scale=scale, offset=offset)


@given(any_point(), st.data())
def test_decode_any_words_gives_a_value_of_the_type(enc: Encoding, data: st.DataObject) -> None:
    words = data.draw(st.lists(words16, min_size=enc.width, max_size=enc.width))
    value = decode(enc, words)
    if enc.type is PointType.STRING:
        assert type(value) is str
        assert not value.endswith((" ", "\x00"))
    elif enc.type.is_integer and enc.scale == 1 and enc.offset == 0:
        assert type(value) is int
    else:
        assert type(value) is float


@given(any_point(), st.data())
def test_integer_words_survive_decode_then_encode(enc: Encoding, data: st.DataObject) -> None:
    """Reading a register and writing the value back writes the same register, scaled or not."""
    assume(enc.type.is_integer and abs(enc.scale) >= 0.01)
    # A float holds 53 bits: scaled 64-bit values are not exact.
    assume(enc.width < 4 or (enc.scale == 1 and enc.offset == 0))
    words = data.draw(st.lists(words16, min_size=enc.width, max_size=enc.width))
    assert encode(enc, decode(enc, words)) == words


@given(orders, st.integers(1, 123), st.data())
def test_string_round_trip(order: ByteOrder, count: int, data: st.DataObject) -> None:
    text = data.draw(st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=2 * count))
    text = text.rstrip("\x00 ")
    enc = Encoding("holding", 0, "string", order, count=count)
    words = encode(enc, text)
    assert len(words) == count
    assert decode(enc, words) == text


@given(orders, st.integers(1, 60), st.data())
def test_string_too_long(order: ByteOrder, count: int, data: st.DataObject) -> None:
    text = data.draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=2 * count + 1))
    with pytest.raises(CodecError) as raised:
        encode(Encoding("holding", 0, "string", order, count=count), text)
    assert raised.value.code == "out_of_range"


@given(st.integers(0, 15), words16)
def test_bit_points_read_their_bit(bit: int, word: int) -> None:
    enc = Encoding("holding", 5, "bool", bit=bit)
    assert decode(enc, [word]) is bool(word >> bit & 1)
    assert decode(enc, [set_bit(word, bit, True)]) is True
    assert decode(enc, [set_bit(word, bit, False)]) is False


@given(st.integers(0, 15), st.booleans(), words16)
def test_mask_write_matches_read_modify_write(bit: int, on: bool, word: int) -> None:
    and_mask, or_mask = bit_masks(bit, on)
    # What the device computes for FC 22 (Modbus application protocol, 6.16).
    assert (word & and_mask) | (or_mask & ~and_mask & 0xFFFF) == set_bit(word, bit, on)


@given(
    st.sampled_from([t for t in PointType if t.is_numeric]),
    st.one_of(st.booleans(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2)),
)
def test_numbers_refuse_other_types(type_: PointType, value: Any) -> None:
    with pytest.raises(CodecError) as raised:
        encode(Encoding("holding", 0, type_), value)
    assert raised.value.code == "bad_type"


@given(st.one_of(st.integers(), st.floats()).filter(lambda v: v not in (0, 1)))
def test_bools_refuse_other_numbers(value: float) -> None:
    for enc in (Encoding("coil", 0, "bool"), Encoding("holding", 0, "bool", bit=0)):
        with pytest.raises(CodecError) as raised:
            encode(enc, value)
        assert raised.value.code == "bad_type"
