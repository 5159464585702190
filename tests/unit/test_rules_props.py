"""Property tests: random text and random token soup never crash the parser or the checker — they
compile, or raise RuleErrors whose errors point inside the text."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
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


_POINTS = st.sampled_from(["boiler.temp", "tank.level", "line.count"])
_NUM_LEAVES = st.one_of(_POINTS, st.sampled_from(["1", "0", "-2.5", "10s", "1e3"]))


def _num(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, o, b: f"({a} {o} {b})", inner, st.sampled_from(["+", "-", "*", "/", "%"]), inner),
        st.builds(lambda a: f"-{a}", inner),
        st.builds(
            lambda f, a: f"{f}({a})", st.sampled_from(["abs", "floor", "ceil", "sqrt", "round"]), inner
        ),
        st.builds(lambda f, a, b: f"{f}({a}, {b})", st.sampled_from(["min", "max"]), inner, inner),
        st.builds(
            lambda f, p: f"{f}({p}, 30s)",
            st.sampled_from(["avg", "min", "max", "sum", "count", "rate", "delta"]),
            _POINTS,
        ),
        st.builds(lambda f, p: f"{f}({p})", st.sampled_from(["age", "delta"]), _POINTS),
    )


NUMS = st.recursive(_NUM_LEAVES, _num, max_leaves=6)


def _bool(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, o, b: f"({a} {o} {b})", inner, st.sampled_from(["AND", "OR", "==", "!="]), inner),
        st.builds(lambda a: f"NOT {a}", inner),
        st.builds(
            lambda a, o, b: f"{a} {o} {b}", NUMS, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), NUMS
        ),
    )


BOOLS = st.recursive(
    st.one_of(
        st.sampled_from(["door.open", "true", 'line.state == "run"', 'quality(tank.level) == "bad"']),
        st.builds(lambda f, p: f"{f}({p})", st.sampled_from(["changed", "offline", "good"]), _POINTS),
    ),
    _bool,
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    BOOLS,
    NUMS,
    st.lists(
        st.tuples(
            st.sampled_from(["boiler.temp", "tank.level", "door.open", "line.state", "line.count"]), _VALUES
        ),
        max_size=12,
    ),
)
def test_random_expressions_compile_cleanly_and_run(
    cond: str, msg: str, readings: list[tuple[str, object]]
) -> None:
    text = f'RULE r ON {cond} FOR 1s CLEAR {cond} THEN log("{{{msg}}}") ELSE publish("a/b", {msg}) END\nLET x.y = {msg}'
    errors: list[RuleError] = []
    try:
        h = Harness(text)
    except RuleErrors as exc:
        errors = exc.errors
    if errors:
        assert all(e.line in (1, 2) and e.col >= 1 for e in errors)
        return
    event("compiled")
    for i, (key, value) in enumerate(readings):
        h.feed(i * 0.6, key, value)
    h.advance(len(readings) + 3)
    assert h.engine.status()["rules"]["r"]["state"] in ("idle", "active", "unknown", "errored")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789.,:-TZ+ \n\"'abtrueflsodein#")), max_size=120))
def test_random_replay_csv_is_read_or_refused_cleanly(text: str) -> None:
    import tempfile
    from pathlib import Path

    from picogate.rules._cli import read_replay

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.csv"
        path.write_text(text, encoding="utf-8")
        out = read_replay(path, None)
    if isinstance(out, str):
        assert out.startswith(str(path))
    else:
        assert all(r.device is not None for r in out)
