"""The host's link codec (agent/picogate/pico/_link.py) against the shared vectors, and parsers
of rd/mb bodies; random input gives a clean error, never a crash."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from picogate.pico._link import (
    MAX_LINE,
    FrameError,
    LineSplitter,
    RdItem,
    decode,
    encode,
    parse_ack,
    parse_mb,
    parse_rd,
)

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "cases" / "link" / "vectors.json").read_text())


@pytest.mark.parametrize("case", VECTORS["good"], ids=lambda c: c["line"][:30])
def test_good_vectors_decode_and_encode(case: dict[str, object]) -> None:
    line = str(case["line"]).encode()
    f = decode(line)
    assert (f.marker, f.seq, f.type, f.body) == (case["marker"], case["seq"], case["type"], case["body"])
    assert encode(f.marker, f.seq, f.type, f.body) == line.replace(b"\r", b"")


@pytest.mark.parametrize("case", VECTORS["bad"], ids=lambda c: str(c["why"]))
def test_bad_vectors_are_refused_with_their_counter(case: dict[str, str]) -> None:
    with pytest.raises(FrameError) as exc:
        decode(case["line"].encode("latin-1"))
    assert exc.value.kind == case["error"]


def test_encode_refuses_what_no_receiver_takes() -> None:
    for args, msg in [
        (("!", 1, "hb", None), "marker"),
        (("#", 70000, "hb", None), "seq"),
        (("#", 1, "HB", None), "lower-case"),
        (("#", 1, "hb", "a\tb"), "printable"),
        (("#", 1, "hb", "x" * MAX_LINE), "longer"),
    ]:
        with pytest.raises(ValueError, match=msg):
            encode(*args)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode("#", 1, "log", "café")


def test_splitter_cuts_lines_across_chunks_and_drops_oversize() -> None:
    s = LineSplitter()
    assert s.feed(b"@1 hb") == []
    assert s.pending == b"@1 hb"
    assert s.feed(b" {} x\n@2") == [b"@1 hb {} x\n"]
    long = b"y" * 3000
    assert s.feed(long[:1500]) == []
    assert s.feed(long[1500:] + b"\nok\n") == [b"ok\n"]
    assert s.oversize == 1
    # exactly MAX_LINE bytes with the LF is allowed; one more is not
    assert s.feed(b"a" * (MAX_LINE - 1) + b"\n") == [b"a" * (MAX_LINE - 1) + b"\n"]
    assert s.feed(b"a" * MAX_LINE + b"\n") == []
    assert s.oversize == 2


def test_rd_mb_ack_bodies() -> None:
    ticks, items = parse_rd("123456 door=T level=1.652 tank=? parts=1042 t=-3 x=1e-05 y=?crc")
    assert ticks == 123456
    assert items == [
        ("door", True, "", ""),
        ("level", 1.652, "", ""),
        ("tank", None, "", ""),
        ("parts", 1042, "", ""),
        ("t", -3, "", ""),
        ("x", 1e-05, "", ""),
        ("y", None, "crc", ""),
    ]
    assert isinstance(items[3].value, int)
    ticks, results = parse_mb("123460 0.0 ok 00fa0001 0.1 exc 2 1.0 timeout 1.1 crc")
    assert results == [
        (0, 0, "ok", b"\x00\xfa\x00\x01"),
        (0, 1, "exc", 2),
        (1, 0, "timeout", None),
        (1, 1, "crc", None),
    ]
    assert parse_ack("17").seq == 17
    assert parse_ack('17 {"ok":true}').result == '{"ok":true}'


@pytest.mark.parametrize(("body", "msg"), [(None, "without ticks"), ("x a=1", "not a number")])
def test_bad_rd_bodies(body: str | None, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_rd(body)


@pytest.mark.parametrize(
    ("body", "item"),
    [
        ("1 a", RdItem("", None, "", "item 'a' is not id=value")),
        ("1 =3", RdItem("", None, "", "item '=3' is not id=value")),
        ("1 a=zz", RdItem("a", None, "", "bad value 'zz'")),
        ("1 a=nan", RdItem("a", None, "", "bad value 'nan'")),
        ("1 a=1e999", RdItem("a", None, "", "bad value '1e999'")),
        ("1 a=-inf", RdItem("a", None, "", "bad value '-inf'")),
    ],
)
def test_a_bad_rd_item_is_that_items_error_not_the_frames(body: str, item: RdItem) -> None:
    """One item that is not a value never costs the others of its frame."""
    ticks, items = parse_rd(body + " ok=1")
    assert (ticks, items) == (1, [item, RdItem("ok", 1)])


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ("1 0.0 ok", "without its data"),
        ("1 0.0 ok 0g", "not hex"),
        ("1 0.0 exc x", "not a number"),
        ("1 0.0 maybe", "unknown status"),
        ("1 00 ok 00", "bus.req"),
        ("t", "not a number"),
    ],
)
def test_bad_mb_bodies(body: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_mb(body)


@given(st.binary(max_size=1200))
def test_random_lines_never_crash(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode(data)
    s = LineSplitter()
    for line in s.feed(data):
        assert len(line) <= MAX_LINE
        assert line.endswith(b"\n")


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200))
def test_random_bodies_never_crash(body: str) -> None:
    for parse in (parse_rd, parse_mb, parse_ack):
        with contextlib.suppress(ValueError):
            parse(body)


@given(
    st.integers(0, 65535),
    st.sampled_from(["rd", "hb", "ack"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=900),
)
def test_round_trip(seq: int, type_: str, body: str) -> None:
    f = decode(encode("@", seq, type_, body))
    assert (f.seq, f.type, f.body) == (seq, type_, body)
