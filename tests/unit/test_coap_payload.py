"""CoAP payload decoding (SenML JSON/CBOR, plain JSON, values) and the `coap:` config section."""

from __future__ import annotations

import cbor2
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picogate._model import Quality, Reading
from picogate.coap._payload import (
    PayloadError,
    Record,
    decode_report,
    decode_value,
    encode_reading,
    split_name,
)
from picogate.config import ConfigError
from picogate.gateway import parse_config

NOW = 1_800_000_000_000_000_000


def test_senml_base_fields_carry_over() -> None:
    doc = [
        {"bn": "dev/", "bt": 1.7e9, "bu": "Cel", "bv": 10, "n": "a", "v": 1.5},
        {"n": "b", "t": 2, "v": 2, "u": "K"},
        {"bn": "", "n": "c", "t": -5, "bt": 0, "vs": "x"},
    ]
    recs = decode_report(orjson.dumps(doc), 110, now_ns=NOW)
    assert recs == [
        Record("dev/a", 11.5, 1_700_000_000_000_000_000, "Cel"),
        Record("dev/b", 12.0, 1_700_000_002_000_000_000, "K"),
        Record("c", "x", NOW - 5_000_000_000, "Cel"),  # relative time (< 2**28): from now
    ]


def test_senml_cbor_labels() -> None:
    payload = cbor2.dumps([{-2: "n/", -3: 10, 0: "x", 2: 3}, {0: "y", 4: True, 6: 1}])
    recs = decode_report(payload, 112, now_ns=NOW)
    assert recs == [Record("n/x", 3, NOW + 10_000_000_000, ""), Record("n/y", True, NOW + 11_000_000_000, "")]


def test_plain_json_and_no_content_format() -> None:
    assert decode_report(b'{"a": 1, "b": true}', 50, now_ns=NOW) == [
        Record("a", 1, NOW, ""),
        Record("b", True, NOW, ""),
    ]
    # without a content format: an object is plain JSON, an array SenML
    assert decode_report(b'{"a": 1}', None, now_ns=NOW)[0].name == "a"
    assert decode_report(b'[{"n": "a", "v": 1}]', None, now_ns=NOW)[0].name == "a"


@pytest.mark.parametrize(
    ("payload", "cf", "code", "text"),
    [
        (b"[]", 110, "4.00", "non-empty array"),
        (b"[1]", 110, "4.00", "record 0: must be a map"),
        (b'[{"n": "a", "v": 1, "vs": "x"}]', 110, "4.00", "more than one value"),
        (b'[{"n": "a", "vd": "AA=="}]', 110, "4.00", "not supported"),
        (b'[{"n": "a", "v": 1, "x_": 1}]', 110, "4.00", "mandatory field 'x_'"),
        (b'[{"bver": 99, "n": "a", "v": 1}]', 110, "4.00", "version"),
        (b'[{"n": "a", "v": "1"}]', 110, "4.00", "v must be a finite number"),
        (b'[{"n": "a", "vb": 1}]', 110, "4.00", "vb must be true or false"),
        (b'[{"bn": "x/"}]', 110, "4.00", "no record carries a value"),
        (b'{"a": null}', 50, "4.00", "key 'a': value must be"),
        (b'{"a": [1]}', 50, "4.00", "value must be"),
        (b"[]", 50, "4.00", "non-empty object"),
        (b"\xa0", 60, "4.15", "application/cbor"),
        (b"x", 0, "4.15", "text/plain"),
        (b"x", 4711, "4.15", "content format 4711"),
    ],
)
def test_bad_reports(payload: bytes, cf: int, code: str, text: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_report(payload, cf, now_ns=NOW)
    assert info.value.code == code
    assert text in str(info.value)


def test_split_name() -> None:
    for name in ("temp", "boiler/temp", "boiler.temp", "boiler:temp"):
        assert split_name(name, "boiler", "r") == "temp"
    with pytest.raises(PayloadError, match="point name 'other/temp'"):
        split_name("other/temp", "boiler", "record 0")


def test_values() -> None:
    assert decode_value(b"12", 50) == 12
    assert decode_value(b'{"v": true}', 50) is True
    assert decode_value(b"21.5", 0) == 21.5
    assert decode_value(b"on", 0) == "on"
    assert decode_value(cbor2.dumps(3.5), 60) == 3.5
    assert decode_value(orjson.dumps([{"n": "x", "v": 4}]), 110) == 4
    with pytest.raises(PayloadError, match="not accepted"):
        decode_value(b"1", 42)
    with pytest.raises(PayloadError, match="must be a number"):
        decode_value(b"[1, 2]", 50)
    with pytest.raises(PayloadError, match="malformed"):
        decode_value(b"{", 50)


def test_encode_reading_round_trips() -> None:
    r = Reading("dev", "temp", 21.5, 1_800_000_000_123_000_000, Quality.GOOD, "Cel")
    assert orjson.loads(encode_reading(r, 50)) == {
        "v": 21.5,
        "ts": 1_800_000_000_123,
        "unit": "Cel",
        "q": "good",
    }
    for cf in (110, 112):
        assert decode_report(encode_reading(r, cf), cf) == [Record("dev/temp", 21.5, r.ts, "Cel")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([None, 0, 50, 60, 110, 112, 7]))
def test_random_bytes_give_a_clean_error(payload: bytes, cf: int | None) -> None:
    code = "ok"
    try:
        decode_report(payload, cf)
    except PayloadError as exc:
        code = exc.code
    assert code in ("ok", "4.00", "4.15")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
_cbor_keys = st.integers(-8, 9) | st.text(max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_cbor_keys, _json, max_size=5), max_size=4))
def test_random_senml_structures_give_a_clean_error(doc: list[dict[object, object]]) -> None:
    for payload, cf in ((cbor2.dumps(doc), 112),):
        code = "ok"
        try:
            decode_report(payload, cf)
        except PayloadError as exc:
            code = exc.code
        assert code in ("ok", "4.00")


# --------------------------------------------------------------------------- config


def test_config_section() -> None:
    cfg = parse_config(
        "coap:\n  port: 5700\n  nodes:\n    - name: n1\n      points: {temp: {type: float32, unit: Cel}}\n"
    )
    assert cfg.coap is not None
    assert cfg.coap.port == 5700
    assert cfg.coap.nodes[0].points["temp"].unit == "Cel"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("coap:\n  prot: 1\n", "prot"),
        ("coap:\n  nodes:\n    - name: n1\n      points: {}\n", "points"),
        ("coap:\n  nodes:\n    - name: N1\n      points: {a: {}}\n", "name"),
        (
            "coap:\n  nodes:\n    - {name: a, points: {x: {}}}\n    - {name: a, points: {x: {}}}\n",
            "used twice",
        ),
        ("coap:\n  nodes:\n    - {name: a, points: {x: {type: int9}}}\n", "type"),
        ("coap:\n  max_payload: 10\n", "max_payload"),
        ("coap:\n  oscore:\n    - {node: ghost, context: /x}\n", "not one of coap.nodes"),
        ("coap:\n  clients:\n    - {name: c, host: h, resources: [{point: p, path: nope}]}\n", "path"),
        (
            "coap:\n  clients:\n    - {name: c, host: h, resources: [{point: p, path: /a}, {point: p, path: /b}]}\n",
            "used twice",
        ),
    ],
)
def test_config_errors_name_the_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert where in str(info.value)


@pytest.mark.parametrize(
    "doc",
    [
        [{"n": "a", "v": 2**70}],
        [{"n": "a", "bt": 1e300, "t": 1e300, "v": 1}],
        [{"n": "a", "t": 2**34, "v": 1}],
    ],
)
def test_extreme_numbers_give_a_clean_error(doc: list[dict[str, object]]) -> None:
    with pytest.raises(PayloadError) as info:
        decode_report(
            cbor2.dumps([{{"n": 0, "v": 2, "t": 6, "bt": -3}[k]: v for k, v in r.items()} for r in doc]), 112
        )
    assert info.value.code == "4.00"
