"""Property tests: random text and random token soup never crash the parser or the checker — they
compile, or raise RuleErrors whose errors point inside the text."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _rules_util import POINTS, Harness
from picogate.rules import RuleError, RuleErrors, compile_rules

TOKENS = [
    "ON", "on", "RULE", "END", "FOR", "CLEAR", "THEN", "ELSE", "EVERY", "LET", "UNIT", "AND", "OR", "NOT",
    "true", "false", "boiler.temp", "boiler.burner", "door.open", "tank.level", "line.state", "a.b", "x",
    "r1", "boiler", ".", "(", ")", ",", ";", "=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%",
    "!", "&&", "||", "0", "1", "85", "2.5", "1e3", "10s", "500ms", "5m", "1h", "10x", "0s", '"msg"',
    '"at {boiler.temp}"', '"{"', '"}"', "'q'", '"a/b"', '"a/+"', "alert", "set", "publish", "log", "avg",
    "min", "max", "sum", "count", "rate", "delta", "changed", "age", "offline", "quality", "good", "abs",
    "round", "severity", "#c\n", "\n", "\t", "{", "}", "@", '"',
]  # fmt: skip

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    lines = text.split("\n")
    for points in (POINTS, None):
        errors: list[RuleError] = []
        try:
            compile_rules({"f.rules": text}, points)
        except RuleErrors as exc:
            errors = exc.errors
        for e in errors:
            assert e.file == "f.rules"
            assert 1 <= e.line <= len(lines)
            assert e.col >= 1
            assert e.message
            e.format()


@FAST
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _check(text)


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup(tokens: list[str]) -> None:
    _check(" ".join(tokens))


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=25))
def test_token_soup_after_a_good_rule(tokens: list[str]) -> None:
    _check('ON boiler.temp > 85 THEN alert("x")\n' + " ".join(tokens) + '\nEVERY 1m THEN log("y")')


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=3)
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["boiler.temp", "tank.level", "door.open"]), _VALUES), max_size=30))
def test_any_readings_never_raise(readings: list[tuple[str, object]]) -> None:
    h = Harness(
        'RULE a ON boiler.temp / tank.level > 2 FOR 1s CLEAR boiler.temp < 1 THEN alert("{boiler.temp}") END\n'
        'RULE b ON changed(door.open) AND door.open OR avg(tank.level, 1m) > 3 THEN log("b") END\n'
        'LET x.y = boiler.temp * 2\nEVERY 1s THEN publish("p/q", max(tank.level, 10s))'
    )
    for i, (key, value) in enumerate(readings):
        h.feed(i * 0.7, key, value)
    h.advance(len(readings) + 5)
    for st_ in h.engine.status()["rules"].values():
        assert st_["state"] in ("idle", "active", "unknown", "errored")
