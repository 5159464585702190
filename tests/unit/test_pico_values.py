"""What a board reports is checked against its point's type (pico/_derive.py check_value), and its
text is escaped and rate-limited (pico/_boardtext.py): pure parts as data, and random frames."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picogate._model import PointType, Quality
from picogate._registry import PointRegistry
from picogate.pico._boardtext import TextLimiter, escape
from picogate.pico._config import BoardConfig
from picogate.pico._derive import BadValue, check_value
from picogate.pico._session import PicoBoard

T = PointType


@pytest.mark.parametrize(
    ("ptype", "value", "want"),
    [
        (T.BOOL, True, True),
        (T.BOOL, 0, False),
        (T.BOOL, 1, True),
        (T.BOOL, 6, "not_bool"),
        (T.BOOL, 1.0, "not_bool"),
        (T.BOOL, None, "not_bool"),
        (T.UINT32, 1042, 1042),
        (T.UINT32, 0, 0),
        (T.UINT32, 4294967295, 4294967295),
        (T.UINT32, 4294967296, "out_of_range"),
        (T.UINT32, 10**30, "out_of_range"),
        (T.UINT32, -3, "out_of_range"),
        (T.UINT32, -3.25, "not_integer"),
        (T.UINT32, 3.0, "not_integer"),
        (T.UINT32, True, "not_number"),
        (T.INT16, -32768, -32768),
        (T.FLOAT64, 21.5, 21.5),
        (T.FLOAT64, 3, 3.0),
        (T.FLOAT64, 10**30, 1e30),
        (T.FLOAT64, 10**400, "out_of_range"),
        (T.FLOAT64, math.inf, "not_finite"),
        (T.FLOAT64, math.nan, "not_finite"),
        (T.FLOAT64, False, "not_number"),
        (T.FLOAT64, "3", "not_number"),
        (T.STRING, "ok", "ok"),
        (T.STRING, 3, "not_string"),
    ],
)
def test_check_value(ptype: PointType, value: object, want: object) -> None:
    got = check_value(ptype, value)
    if isinstance(got, BadValue):
        assert got.reason == want
        assert got.message
    else:
        assert got == want
        assert type(got) is type(want)


def test_an_adc_is_scaled_then_checked() -> None:
    assert check_value(T.FLOAT64, 1.25, 40.0, 0.0) == 50.0
    assert check_value(T.FLOAT64, 0.0, 1.0, -5.0) == -5.0
    bad = check_value(T.FLOAT64, 1e308, 10.0, 0.0)
    assert isinstance(bad, BadValue)
    assert bad.reason == "not_finite"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text °C", "plain text °C"),
        ("a\nb", "a\\nb"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("x\u2028y\u2029z\x85", "x\\u2028y\\u2029z\\x85"),
        ("back\\slash", "back\\\\slash"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        (None, "None"),
        ({"a": [1]}, "{'a': [1]}"),
    ],
)
def test_escape(text: object, shown: str) -> None:
    assert escape(text) == shown


def test_escape_cuts_long_text() -> None:
    assert escape("x" * 5000) == "x" * 1000 + "…"


def test_text_limiter() -> None:
    lim = TextLimiter(rate=1.0, burst=3, summary_every=60.0)
    assert [lim.admit(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert lim.summary(0.5) is None  # still no room
    assert lim.summary(1.0) == (2, 1.0)  # a line could go again
    assert lim.summary(1.0) is None
    assert lim.admit(1.0)
    summaries = []
    for t in range(2, 130):  # a flood of 5 lines a second: one through a second, a summary a minute
        for _ in range(5):
            lim.admit(float(t))
        summary = lim.summary(float(t))
        if summary is not None:
            summaries.append((t, summary))
    assert summaries == [(62, (4 * 61, 60.0)), (123, (4 * 61, 60.0))]
    assert (lim.logged_total, lim.held_total) == (4 + 128, 2 + 128 * 4)


CFG = BoardConfig.model_validate(
    {
        "name": "b1",
        "port": "/dev/fake",
        "io": [
            {"name": "door", "kind": "di", "pin": 2},
            {"name": "parts", "kind": "cnt", "pin": 3},
            {"name": "level", "kind": "adc", "pin": 26, "scale": 40},
            {"name": "room", "kind": "dht22", "pin": 5},
        ],
    }
)
_VALUE = st.one_of(
    st.sampled_from(
        ["T", "F", "?", "?nodev", "0", "1", "6", "-3", "-3.25", "1e308", "1e999", "nan", "inf", "x", ""]
    ),
    st.integers(-(10**40), 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
)
_ITEM = st.one_of(
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(["door", "parts", "level", "room_t", "room_h", "nope"]),
        _VALUE,
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ITEM, max_size=12))
def test_any_rd_frame_gives_readings_of_the_points_types(items: list[str]) -> None:
    """Whatever the values, a frame with ticks gives readings: good ones of the point's type, bad
    ones without a value, every one encodable."""
    board = PicoBoard(CFG, registry=PointRegistry(), emit=None, status_changed=None)  # type: ignore[arg-type]
    types = {i.name: i.type for i in board.plan.infos}
    for r in board.readings_of(" ".join(["1000", *items])):
        orjson.dumps({"v": r.value})
        if r.quality is Quality.BAD:
            assert r.value is None
            continue
        t = types[r.point]
        if t is T.BOOL:
            assert isinstance(r.value, bool)
        elif t is T.UINT32:
            assert type(r.value) is int
            assert 0 <= r.value <= 4294967295
        else:
            assert type(r.value) is float
            assert math.isfinite(r.value)
