"""Rules whose ON and CLEAR conditions can both be true: `rules check` warns (with values that make
them so), and a rule that fires and clears faster than its status is looked at is reported
`chattering` (the demo's pump chattered twice a second while the live view showed `idle`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _rules_util import POINTS, Harness
from picogate.cli import main
from picogate.rules import RuleErrors, compile_rules

OVERLAP = 'RULE tank_high\n  ON tank.level > 65\n  CLEAR tank.level < 75\n  THEN log("slow")\nEND\n'


def test_rules_check_warns_and_still_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tank.rules"
    path.write_text(OVERLAP)
    assert main(["rules", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}:3:9: warning: ON and CLEAR can both be true (when tank.level = 70): while they are, the rule "
        "fires and clears again at every evaluation (CLEAR must be false whenever ON is true)",
        "    CLEAR tank.level < 75",
        "          ^~~~~~~~~~~~~~~",
        "1 file(s), 1 rule(s) and LET(s): OK, 1 warning",
    ]
    path.write_text(OVERLAP + 'ON boiler.temp = 1 THEN log("x")\n')
    assert main(["rules", "check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert ": warning: ON and CLEAR can both be true" in out
    assert ":6:16: error: unexpected '=': compare with ==" in out
    assert err.endswith("1 error, 1 warning\n")


def test_without_the_points_numbers_bools_and_strings_are_read_from_how_they_are_used() -> None:
    text = (
        'ON line.state == "run" CLEAR line.state != "stop" THEN log("x")\n'
        'ON door.open == true CLEAR door.open THEN log("y")\n'
        'ON door.open CLEAR NOT door.open THEN log("z")\n'
        'ON tank.level > 5 CLEAR tank.level THEN log("w")\n'  # a number here, a bool there: undecided
    )
    rs = compile_rules({"t.rules": text}, None)
    assert [(w.line, w.message.split("(when ", 1)[1].split(")")[0]) for w in rs.warnings] == [
        (1, 'line.state = "run"'),
        (2, "door.open = true"),
    ]


def test_errors_carry_the_warnings_found_meanwhile() -> None:
    with pytest.raises(RuleErrors) as info:
        compile_rules({"t.rules": OVERLAP + 'ON boiler.tmp > 1 THEN log("x")\n'}, POINTS)
    assert [w.line for w in info.value.warnings] == [3]


# --------------------------------------------------------------------------- against brute force

_C = st.integers(0, 6)


def _literal() -> st.SearchStrategy[tuple[str, Callable[[float, bool], bool]]]:
    def cmp(op: str, c: int) -> tuple[str, Callable[[float, bool], bool]]:
        f: Callable[[float, float], bool] = {
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
        }[op]
        return f"tank.level {op} {c}", lambda x, d: f(x, c)

    return st.one_of(
        st.builds(cmp, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), _C),
        st.just(("door.open", lambda x, d: d)),
        st.builds(lambda c: (f"tank.level * 2 - 1 > {c}", lambda x, d: x * 2 - 1 > c), _C),  # a linear form
    )


def _combine(
    inner: st.SearchStrategy[tuple[str, Callable[[float, bool], bool]]],
) -> st.SearchStrategy[tuple[str, Callable[[float, bool], bool]]]:
    def both(
        a: tuple[str, Callable[[float, bool], bool]], b: tuple[str, Callable[[float, bool], bool]], op: str
    ) -> tuple[str, Callable[[float, bool], bool]]:
        if op == "AND":
            return f"({a[0]} AND {b[0]})", lambda x, d: a[1](x, d) and b[1](x, d)
        return f"({a[0]} OR {b[0]})", lambda x, d: a[1](x, d) or b[1](x, d)

    return st.one_of(
        st.builds(both, inner, inner, st.sampled_from(["AND", "OR"])),
        st.builds(lambda a: (f"NOT {a[0]}", lambda x, d: not a[1](x, d)), inner),
    )


CONDITIONS = st.recursive(_literal(), _combine, max_leaves=5)
GRID = [v / 4 for v in range(-8, 36)]  # every region between the constants 0..6 (and 2x-1 > c)


@settings(max_examples=300, deadline=None)
@given(CONDITIONS, CONDITIONS)
def test_the_warning_is_right_and_complete_for_one_number_and_one_bool(
    on: tuple[str, Callable[[float, bool], bool]], clear: tuple[str, Callable[[float, bool], bool]]
) -> None:
    """Over one numeric point and one bool point the analysis decides every case: a warning iff
    some values make both true, and the values it names do."""
    rs = compile_rules({"t.rules": f'ON {on[0]} CLEAR {clear[0]} THEN log("x")'}, POINTS)
    both = [(x, d) for x in GRID for d in (False, True) if on[1](x, d) and clear[1](x, d)]
    if not rs.warnings:
        assert not both, f"missed: {both[:3]}"
        return
    (w,) = rs.warnings
    witness = w.message.split("(when ", 1)[1].split("):", 1)[0]
    x, d = 0.0, None
    for part in witness.split(" and "):
        name, _, value = part.partition(" = ")
        if name == "door.open":
            d = value == "true"
        else:
            assert name == "tank.level", witness
            x = float(value)
    cases = [d] if d is not None else [False, True]
    assert any(on[1](x, dd) and clear[1](x, dd) for dd in cases), witness


# --------------------------------------------------------------------------- chattering


def test_an_overlapping_rule_is_reported_chattering_whatever_its_state() -> None:
    """Polled every 500 ms, it fires at one reading and clears at the next: a status looked at
    every second in step with the polls always saw `idle`."""
    h = Harness(OVERLAP)
    states = []
    for i in range(8):
        h.feed(i * 0.5, "tank.level", 70.0)
        states.append(h.state("tank_high"))
    assert [s["state"] for s in states] == ["active", "idle"] * 4
    assert not any(s["chattering"] for s in states)  # four firings so far
    h.feed(4.0, "tank.level", 70.0)
    st_ = h.state("tank_high")
    assert st_["chattering"] is True
    assert st_["fired"] == 5
    assert st_["reason"] == (
        "chattering: fired 5 times in 4.0 s, the last 0.0 s ago; do its ON and CLEAR conditions overlap? "
        "(rules check warns)"
    )
    h.advance(14.5)
    assert h.state("tank_high")["chattering"] is False  # quiet for 10 s


def test_a_rule_without_clear_that_crosses_back_and_forth_gets_the_hysteresis_hint() -> None:
    h = Harness('ON tank.level > 70 THEN log("x")')
    for i in range(10):
        h.feed(i * 0.5, "tank.level", 71.0 if i % 2 == 0 else 69.0)
    (rule,) = [r.id for r in h.ruleset.rules]
    st_ = h.state(rule)
    assert st_["chattering"] is True
    assert "a CLEAR condition gives hysteresis" in st_["reason"]


def test_a_thermostat_cycle_is_not_chattering() -> None:
    h = Harness('ON door.open THEN log("x")')
    for i in range(20):
        h.feed(i * 2.5, "door.open", i % 2 == 0)  # fires every 5 s
    (rule,) = [r.id for r in h.ruleset.rules]
    assert h.state(rule)["fired"] == 10
    assert h.state(rule)["chattering"] is False


def test_a_value_excluded_by_not_equal_leaves_room_below() -> None:
    """`level != 0 AND level < 1` holds for 0.5 (and -1): found by the property test above, when
    the analysis only looked above the excluded value."""
    rs = compile_rules(
        {"t.rules": 'ON door.open CLEAR NOT (tank.level == 0 OR NOT tank.level < 1) THEN log("x")'}, POINTS
    )
    (w,) = rs.warnings
    assert "door.open = true" in w.message
