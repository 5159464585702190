"""The rule language's number model (docs/rules.md, "Numbers"): arithmetic and LET values are
float64; a LET whose value is not a finite number is published bad, with a counted reason; no
LET ever hands the pipeline a value a sink cannot encode."""

from __future__ import annotations

import math

import orjson
import pytest

from _rules_util import POINTS, Harness
from picogate._model import PointInfo, PointType, Quality

T = PointType
METER = [
    *POINTS,
    *(PointInfo("meter", f"r{i}", T.UINT16) for i in range(6)),
    PointInfo("meter", "total", T.UINT64),
]
PRODUCT = "LET plant.p = meter.r0 * meter.r1 * meter.r2 * meter.r3 * meter.r4 * meter.r5"


def _lets(h: Harness) -> dict[str, tuple[object, Quality]]:
    return {r.key: (r.value, r.quality) for r in h.lets}


def test_a_product_of_uint16_points_is_a_float_any_encoder_takes() -> None:
    """Six 65535s multiply to 7.9e28: a Python int beyond 64 bits that orjson refused inside
    Pipeline.emit, which ended the agent at the first poll."""
    h = Harness(PRODUCT, METER)
    h.feed_batch(1, {f"meter.r{i}": 65535 for i in range(6)})
    ((key, value, quality),) = [(r.key, r.value, r.quality) for r in h.lets]
    assert key == "plant.p"
    assert quality is Quality.GOOD
    assert isinstance(value, float)
    assert value == pytest.approx(65535.0**6)
    assert orjson.loads(orjson.dumps({"v": value}))["v"] == pytest.approx(value)
    assert h.ruleset.lets[0].type is T.FLOAT64


def test_a_let_that_is_not_finite_is_bad_with_a_counted_reason_and_comes_back() -> None:
    h = Harness("LET plant.x = boiler.temp * 1e308 * 10\nLET plant.y = boiler.temp - boiler.temp * 0", METER)
    h.feed(1, "boiler.temp", 2.0)
    assert _lets(h)["plant.x"] == (None, Quality.BAD)
    assert _lets(h)["plant.y"] == (2.0, Quality.GOOD)
    st = h.state("plant.x")
    assert st["state"] == "errored"
    assert st["reason"] == "the value is not a finite number (inf)"
    assert h.engine.let_bad == {"not_finite": 1}
    h.lets.clear()
    h.feed(2, "boiler.temp", 0.0)
    assert _lets(h)["plant.x"] == (0.0, Quality.GOOD)
    assert h.state("plant.x")["state"] == "idle"
    assert h.engine.let_bad == {"not_finite": 1}


def test_other_let_errors_are_counted_by_reason() -> None:
    h = Harness("LET plant.q = boiler.temp / tank.level\nLET plant.r = sqrt(boiler.temp)")
    h.feed_batch(1, {"boiler.temp": -1.0, "tank.level": 0.0})
    assert {k: v[1] for k, v in _lets(h).items()} == {"plant.q": Quality.BAD, "plant.r": Quality.BAD}
    assert h.engine.let_bad == {"division_by_zero": 1, "error": 1}


def test_integers_are_floats_in_the_rules() -> None:
    h = Harness(
        "LET plant.c = count(line.count, 1m)\nLET plant.d = line.count + 1\nLET plant.f = floor(tank.level)\n"
        "LET plant.r = round(tank.level)\nLET plant.s = round(tank.level, 1)\nLET plant.h = hour() + 0\n"
        'EVERY 1s THEN publish("a/b", line.count * line.count); publish("a/c", 7)'
    )
    h.feed_batch(0.5, {"line.count": 4294967295, "tank.level": 2.46})
    h.advance(1)
    got = _lets(h)
    for key in ("plant.c", "plant.d", "plant.f", "plant.r", "plant.s"):
        assert isinstance(got[key][0], float), key
    assert got["plant.d"] == (4294967296.0, Quality.GOOD)
    assert (got["plant.f"][0], got["plant.r"][0], got["plant.s"][0]) == (2.0, 2.0, 2.5)
    published = {e[2]: e[3] for e in h.acts.take() if e[0] == "publish"}
    assert published == {"a/b": float(4294967295) ** 2, "a/c": 7}  # a constant is written as it is


def test_an_integer_reading_beyond_float64_makes_the_point_unknown() -> None:
    h = Harness('LET plant.d = meter.total + 1\nON meter.total > 5 THEN log("x")', METER)
    h.feed(1, "meter.total", 10**400)
    assert _lets(h)["plant.d"] == (None, Quality.BAD)
    (rule,) = [r.id for r in h.ruleset.rules if r.kind == "on"]
    assert h.state(rule)["state"] == "unknown"
    assert h.engine.let_bad == {}  # its input is unknown: not an error of the LET
    h.feed(2, "meter.total", 2**64 - 1)
    assert _lets(h)["plant.d"] == (float(2**64), Quality.GOOD)


def test_without_the_points_a_let_is_a_float_or_what_its_input_is() -> None:
    """`rules test` without --config: the LET's type is unknown; numbers are still float64."""
    h = Harness("LET x.y = a.b * a.b * a.b * a.b * a.b\nLET x.z = a.s", None)
    h.feed(1, "a.b", 2**40)
    h.feed(2, "a.s", "text")
    got = _lets(h)
    assert got["x.y"] == (float(2**200), Quality.GOOD)
    assert got["x.z"] == ("text", Quality.GOOD)
    h.feed(3, "a.b", 2**300)
    assert _lets(h)["x.y"] == (None, Quality.BAD)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400, "x", None])
def test_no_reading_gives_a_let_a_value_orjson_refuses(value: object) -> None:
    h = Harness("LET plant.p = tank.level * tank.level")
    h.feed(1, "tank.level", value)
    for r in h.lets:
        orjson.dumps({"v": r.value})
        assert r.value is None or math.isfinite(r.value)
