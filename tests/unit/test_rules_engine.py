"""The rule engine's semantics, on a virtual clock (no sleeping, no timing assertions)."""

from __future__ import annotations

import pickle
import time

import pytest

from _rules_util import POINTS, Harness, S
from picogate._model import Quality
from picogate.rules import RuleErrors

BAD = Quality.BAD


def test_fires_once_on_the_transition_not_on_every_sample() -> None:
    h = Harness('ON boiler.temp > 85 THEN alert("overheat")')
    for t, v in [(1, 80), (2, 86), (3, 90), (4, 95)]:
        h.feed(t, "boiler.temp", v)
    rid = h.only_rule()
    assert h.acts.take() == [("alert", rid, "warning", "overheat", "active", 2 * S)]
    assert h.state(rid)["state"] == "active"
    h.feed(5, "boiler.temp", 80)  # clears (no CLEAR: when the condition is false) ...
    h.feed(6, "boiler.temp", 90)  # ... and fires again
    assert [e[4] for e in h.acts.take()] == ["cleared", "active"]


def test_for_is_a_timer_that_fires_without_new_samples() -> None:
    h = Harness('RULE hot ON boiler.temp > 85 FOR 10s THEN log("hot") END')
    h.feed(1, "boiler.temp", 90)
    h.advance(10.9)
    assert h.acts.take() == []
    assert "waiting" in (h.state("hot")["reason"] or "")
    h.advance(11)  # no reading: the timer fires on its own
    assert h.acts.take() == [("log", "hot", "hot")]
    assert h.transitions == [("hot", "fired", 11 * S)]
    assert h.engine.next_deadline() is None


def test_for_is_cancelled_when_the_condition_drops() -> None:
    h = Harness('RULE hot ON boiler.temp > 85 FOR 10s THEN log("hot") END')
    h.feed(1, "boiler.temp", 90)
    h.feed(5, "boiler.temp", 70)
    h.feed(8, "boiler.temp", 90)  # starts again
    h.advance(17.9)
    assert h.acts.take() == []
    h.advance(18)
    assert h.acts.take() == [("log", "hot", "hot")]


def test_for_is_cancelled_by_an_unknown_value() -> None:
    h = Harness('RULE hot ON boiler.temp > 85 FOR 10s THEN log("hot") END')
    h.feed(1, "boiler.temp", 90)
    h.feed(5, "boiler.temp", None, BAD)
    h.advance(30)
    assert h.acts.take() == []


def test_clear_hysteresis_and_else_once() -> None:
    h = Harness(
        """
RULE boiler_overheat
  ON boiler.temp > 85
  CLEAR boiler.temp < 80
  THEN alert("Boiler at {boiler.temp} °C", severity="critical"); set(boiler.burner, false)
  ELSE alert("Boiler back to normal", severity="info")
END"""
    )
    h.feed(1, "boiler.temp", 86.5)
    assert h.acts.take() == [
        ("alert", "boiler_overheat", "critical", "Boiler at 86.5 °C", "active", 1 * S),
        ("set", "boiler_overheat", "boiler.burner", False),
    ]
    for t, v in [(2, 84), (3, 81), (4, 86)]:  # below ON but not below CLEAR: stays active
        h.feed(t, "boiler.temp", v)
    assert h.acts.take() == []
    h.feed(5, "boiler.temp", 79)
    h.feed(6, "boiler.temp", 70)
    assert h.acts.take() == [("alert", "boiler_overheat", "info", "Boiler back to normal", "cleared", 5 * S)]
    assert h.state("boiler_overheat")["state"] == "idle"


def test_clear_without_else_alert_clears_the_then_alert() -> None:
    h = Harness('RULE r ON boiler.temp > 85 THEN alert("hot", severity="critical") END')
    h.feed(1, "boiler.temp", 90)
    h.feed(2, "boiler.temp", 80)
    assert [e[2:5] for e in h.acts.take()] == [("critical", "hot", "active"), ("critical", "hot", "cleared")]


def test_bad_quality_is_unknown_with_reason_and_no_transition() -> None:
    h = Harness('RULE r ON boiler.temp > 85 THEN log("x") END')
    assert h.state("r")["state"] == "idle"
    h.feed(1, "boiler.temp", None, BAD)
    st = h.state("r")
    assert st["state"] == "unknown"
    assert "boiler.temp" in st["reason"]
    assert "bad" in st["reason"]
    h.feed(2, "boiler.temp", 90)
    assert h.acts.take() == [("log", "r", "x")]
    h.feed(3, "boiler.temp", None, BAD)  # active stays active: unknown is no transition
    assert h.acts.take() == []
    assert h.state("r")["state"] == "active"


def test_missing_value_is_unknown() -> None:
    h = Harness('RULE r ON boiler.temp > 85 AND tank.level < 3 THEN log("x") END')
    h.feed(1, "boiler.temp", 90)
    st = h.state("r")
    assert st["state"] == "unknown"
    assert "tank.level: no reading yet" in st["reason"]


def test_three_valued_and_or() -> None:
    # false AND unknown is false (not unknown): the rule is idle, not unknown
    h = Harness('RULE r ON boiler.temp > 85 AND tank.level < 3 THEN log("x") END')
    h.feed(1, "boiler.temp", 50)
    assert h.state("r")["state"] == "idle"
    h2 = Harness('RULE r ON boiler.temp > 85 OR tank.level < 3 THEN log("x") END')
    h2.feed(1, "boiler.temp", 90)  # true OR unknown is true
    assert h2.acts.take() == [("log", "r", "x")]


def test_uncertain_values_are_used() -> None:
    h = Harness('RULE r ON boiler.temp > 85 THEN log("x") END')
    h.feed(1, "boiler.temp", 90, Quality.UNCERTAIN)
    assert h.acts.take() == [("log", "r", "x")]


def test_a_value_of_the_wrong_type_is_bad_not_a_crash() -> None:
    h = Harness('RULE r ON boiler.temp > 85 THEN log("x") END')
    h.feed(1, "boiler.temp", "hot")
    st = h.state("r")
    assert st["state"] == "unknown"
    assert "bad value" in st["reason"]


def test_nan_and_infinity_are_bad_values() -> None:
    for points in (None, POINTS):
        h = Harness('RULE r ON avg(boiler.temp, 1m) > 1 THEN log("x") END', points)
        h.feed(1, "boiler.temp", float("nan"))
        assert "not a finite number" in h.state("r")["reason"]
        h.feed(2, "boiler.temp", float("inf"))
        h.feed(3, "boiler.temp", 5.0)
        assert h.acts.take() == [("log", "r", "x")]


def test_age_fires_on_time_without_readings_and_on_bad_values() -> None:
    h = Harness('RULE silent ON age(pump.current) > 30s THEN alert("pump meter silent") END')
    h.feed(1, "pump.current", 5.0)
    h.feed(10, "pump.current", None, BAD)  # bad values do not refresh age
    h.advance(30.5)
    assert h.acts.take() == []
    h.advance(32)
    (ev,) = h.acts.take()
    assert ev[3] == "pump meter silent"
    assert 31 * S <= ev[5] <= 32 * S
    h.feed(33, "pump.current", 5.0)
    assert [e[4] for e in h.acts.take()] == ["cleared"]


def test_offline_and_quality_look_at_bad_values() -> None:
    h = Harness(
        'RULE off ON offline(pump.current) THEN log("offline") END\n'
        'RULE q ON quality(pump.voltage) == "bad" THEN log("q bad") END\n'
        'RULE g ON NOT good(tank.level) THEN log("not good") END'
    )
    h.feed(1, "pump.current", 1.0)
    h.feed(2, "pump.current", None, BAD)
    h.feed(3, "pump.voltage", None, BAD)
    h.feed(4, "tank.level", 3.0, Quality.UNCERTAIN)
    assert h.acts.take() == [("log", "off", "offline"), ("log", "q", "q bad"), ("log", "g", "not good")]


def test_windows_on_a_virtual_clock() -> None:
    h = Harness(
        'EVERY 10s THEN publish("p/avg", avg(boiler.temp, 10s)); publish("p/min", min(boiler.temp, 10s));'
        ' publish("p/max", max(boiler.temp, 10s)); publish("p/sum", sum(boiler.temp, 10s));'
        ' publish("p/count", count(boiler.temp, 10s)); publish("p/delta", delta(boiler.temp, 10s))'
    )
    for t, v in [(1, 10.0), (3, 30.0), (5, 20.0), (12, 50.0), (14, 40.0)]:
        h.feed(t, "boiler.temp", v)
    h.advance(20)
    got = [(e[2], e[3], e[4] // S) for e in h.acts.take()]
    assert got == [
        ("p/avg", 20.0, 10), ("p/min", 10.0, 10), ("p/max", 30.0, 10), ("p/sum", 60.0, 10),
        ("p/count", 3, 10), ("p/delta", 10.0, 10),
        ("p/avg", 45.0, 20), ("p/min", 40.0, 20), ("p/max", 50.0, 20), ("p/sum", 90.0, 20),
        ("p/count", 2, 20), ("p/delta", -10.0, 20),
    ]  # fmt: skip


def test_empty_window_is_unknown_and_publishes_null() -> None:
    h = Harness(
        'EVERY 1m THEN publish("p/avg", avg(boiler.temp, 1m)); publish("p/n", count(boiler.temp, 1m))'
    )
    h.advance(60)
    assert [(e[2], e[3]) for e in h.acts.take()] == [("p/avg", None), ("p/n", 0)]


def test_rate_is_change_per_minute() -> None:
    h = Harness('RULE drain ON rate(tank.level, 1m) < -5 THEN alert("tank draining fast") END')
    h.feed(0, "tank.level", 100.0)
    h.feed(30, "tank.level", 98.0)  # -4/min
    assert h.acts.take() == []
    h.feed(40, "tank.level", 95.0)  # (95-100)/40s = -7.5/min
    assert [e[3] for e in h.acts.take()] == ["tank draining fast"]


def test_delta_and_changed() -> None:
    h = Harness(
        'RULE jump ON delta(boiler.temp) > 5 THEN log("jump {delta(boiler.temp)}") END\n'
        "RULE opened ON changed(door.open) AND door.open THEN set(alarm.siren, 1) END"
    )
    h.feed(1, "boiler.temp", 10.0)
    h.feed(2, "boiler.temp", 20.0)
    h.feed(3, "door.open", False)
    h.feed(4, "door.open", False)
    h.feed(5, "door.open", True)
    h.feed(6, "door.open", True)
    assert h.acts.take() == [("log", "jump", "jump 10"), ("set", "opened", "alarm.siren", True)]


def test_every_fires_on_time_aligned_to_the_period() -> None:
    h = Harness('EVERY 1m THEN log("tick")')
    h.advance(59.9)
    assert h.acts.take() == []
    h.advance(180)
    assert h.acts.take() == [("log", h.only_rule(), "tick")] * 3


def test_let_derives_a_point_that_rules_see() -> None:
    h = Harness(
        'LET pump.power_kw = pump.voltage * pump.current / 1000 UNIT "kW"\n'
        'RULE big ON pump.power_kw > 2 THEN log("{pump.power_kw:.2f} kW") END'
    )
    (info,) = h.ruleset.lets
    assert (info.key, info.type.value, info.unit, info.writable) == ("pump.power_kw", "float64", "kW", False)
    h.feed(1, "pump.voltage", 230.0)
    h.feed(2, "pump.current", 10.0)
    assert [(r.key, r.value, r.quality.value, r.unit) for r in h.lets] == [
        ("pump.power_kw", None, "bad", "kW"),
        ("pump.power_kw", 2.3, "good", "kW"),
    ]
    assert h.acts.take() == [("log", "big", "2.30 kW")]


def test_let_chain_in_dependency_order() -> None:
    h = Harness("LET a.c = a.b * 2\nLET a.b = pump.voltage + 1")
    h.feed(1, "pump.voltage", 1.0)
    assert [(r.key, r.value) for r in h.lets] == [("a.b", 2.0), ("a.c", 4.0)]


def test_let_is_computed_once_per_batch_from_all_its_new_inputs() -> None:
    """One poll brings voltage and current: one power_kw, from both new values (not a first one
    from the new voltage and the old current); rules on it see only that one."""
    h = Harness(
        "LET pump.power_kw = pump.voltage * pump.current / 1000\n"
        'RULE big ON pump.power_kw > 5 THEN log("big {pump.power_kw}") END'
    )
    h.feed_batch(1, {"pump.voltage": 230.0, "pump.current": 10.0})
    assert [(r.key, r.value, r.ts) for r in h.lets] == [("pump.power_kw", 2.3, 1 * S)]
    h.lets.clear()
    # 1000 V with the old 10 A would be 10 kW; with the new 1 A it is 1 kW: "big" must not fire
    h.feed_batch(2, {"pump.voltage": 1000.0, "pump.current": 1.0})
    assert [(r.key, r.value) for r in h.lets] == [("pump.power_kw", 1.0)]
    assert h.acts.take() == []
    h.lets.clear()
    h.feed(3, "pump.current", 6.0)  # one input alone: computed as before
    assert [(r.key, r.value) for r in h.lets] == [("pump.power_kw", 6.0)]
    assert h.acts.take() == [("log", "big", "big 6")]


def test_let_over_a_let_and_a_point_is_computed_once_after_its_inputs() -> None:
    h = Harness("LET a.c = a.b + pump.voltage\nLET a.b = pump.voltage + 1")  # file order: c first
    h.feed(1, "pump.voltage", 1.0)
    assert [(r.key, r.value) for r in h.lets] == [("a.b", 2.0), ("a.c", 3.0)]
    h.lets.clear()
    h.feed_batch(2, {"pump.voltage": 10.0, "pump.current": 1.0})
    assert [(r.key, r.value) for r in h.lets] == [("a.b", 11.0), ("a.c", 21.0)]


def test_runtime_error_marks_only_that_rule_errored() -> None:
    h = Harness(
        'RULE div ON boiler.temp / tank.level > 1 THEN log("div") END\n'
        'RULE ok ON boiler.temp > 1 THEN log("ok") END'
    )
    h.feed(1, "tank.level", 0.0)
    h.feed(2, "boiler.temp", 5.0)
    assert h.state("div") | {"last_fired": None} == h.state("div")
    assert h.state("div")["state"] == "errored"
    assert h.state("div")["reason"] == "division by zero"
    assert h.acts.take() == [("log", "ok", "ok")]
    h.feed(3, "tank.level", 1.0)  # a good evaluation clears the error
    assert h.state("div")["state"] == "active"


def test_failed_write_is_reported_in_status() -> None:
    h = Harness("RULE w ON boiler.temp > 85 THEN set(boiler.burner, false) END")
    h.feed(1, "boiler.temp", 90)
    h.engine.write_result("w", False, "illegal data address")
    st = h.state("w")
    assert st["state"] == "errored"
    assert "illegal data address" in st["reason"]
    h.acts.fail_set = True  # an exception from the router is reported too, never raised
    h.feed(2, "boiler.temp", 50)
    h.feed(3, "boiler.temp", 90)
    assert "router down" in h.state("w")["reason"]


def test_set_of_unknown_value_is_an_error_not_a_write() -> None:
    h = Harness("RULE w ON boiler.temp > 85 THEN set(boiler.gain, tank.level) END")
    h.feed(1, "boiler.temp", 90)
    assert h.acts.take() == []
    assert "unknown" in h.state("w")["reason"]


def test_set_converts_values_at_check_time() -> None:
    h = Harness(
        "RULE w ON boiler.temp > 85 THEN set(boiler.burner, 1); set(boiler.setpoint, 70.0); set(boiler.mode, 3);"
        " set(boiler.gain, 2) END"
    )
    h.feed(1, "boiler.temp", 90)
    assert h.acts.take() == [
        ("set", "w", "boiler.burner", True),
        ("set", "w", "boiler.setpoint", 70),
        ("set", "w", "boiler.mode", "3"),
        ("set", "w", "boiler.gain", 2.0),
    ]


def test_interpolation_formats() -> None:
    h = Harness(
        'RULE m ON boiler.temp > 0 THEN log("t={boiler.temp} r={round(boiler.temp, 1)} b={door.open} '
        'u={tank.level} {{literal}} f={boiler.temp:.3f}") END'
    )
    h.feed(1, "door.open", True)
    h.feed(2, "boiler.temp", 1.23456)
    assert h.acts.take() == [("log", "m", "t=1.2346 r=1.2 b=true u=unknown {literal} f=1.235")]


def test_math_functions_and_strings() -> None:
    h = Harness(
        "RULE m ON abs(boiler.temp) > 5 AND max(boiler.temp, -100, -50) < 0 AND min(boiler.temp, 3) == boiler.temp AND floor(boiler.temp) == -7"
        ' AND ceil(boiler.temp) == -6 AND sqrt(4) == 2 AND boiler.temp % 2 < 2 THEN log("m") END\n'
        'RULE s ON line.state == "run" AND line.state + "!" != "stop!" THEN log("s") END'
    )
    h.feed(1, "boiler.temp", -6.5)
    h.feed(2, "line.state", "run")
    assert h.acts.take() == [("log", "m", "m"), ("log", "s", "s")]


def test_a_reading_reaches_only_rules_that_reference_its_point() -> None:
    h = Harness('RULE a ON boiler.temp > 1 THEN log("a") END\nRULE b ON tank.level > 1 THEN log("b") END')
    h.feed(1, "tank.level", 5.0)
    assert h.state("a")["state"] == "idle"
    assert h.state("b")["state"] == "active"
    h.feed(2, "other.thing", 5.0)  # a point no rule uses: ignored
    assert h.acts.take() == [("log", "b", "b")]


def test_reload_keeps_state_of_unchanged_rules() -> None:
    text = 'RULE hot ON boiler.temp > 85 FOR 10s THEN alert("hot") END\nON tank.level > 5 THEN alert("t")\n'
    h = Harness(text)
    h.feed(1, "boiler.temp", 90)
    h.feed(2, "tank.level", 9.0)
    h.acts.take()
    # same rules, reformatted and with a comment: same identity, FOR timer and active state kept
    h.engine.load(Harness.compile("# edited\nrule hot on boiler.temp>85 for 10s then alert('hot') end\n"
                                  'on   tank.level > 5   then alert("t")  # same\n'))  # fmt: skip
    h.advance(11)
    assert [e[3:5] for e in h.acts.take()] == [("hot", "active")]
    h.feed(12, "tank.level", 9.5)  # still active: no new alert
    assert h.acts.take() == []


def test_reload_changed_rule_starts_fresh_and_removed_rule_clears() -> None:
    h = Harness(
        'RULE a ON boiler.temp > 85 THEN alert("a") END\nRULE b ON tank.level > 5 THEN alert("b") END'
    )
    h.feed(1, "boiler.temp", 90)
    h.feed(2, "tank.level", 9.0)
    h.acts.take()
    h.engine.load(Harness.compile('RULE a ON boiler.temp > 95 THEN alert("a") END'))
    assert h.acts.take() == [
        ("alert", "a", "warning", "a", "cleared", 2 * S),
        ("alert", "b", "warning", "b", "cleared", 2 * S),
    ]
    assert set(h.engine.status()["rules"]) == {"a"}
    assert h.state("a")["state"] == "idle"
    h.feed(3, "boiler.temp", 96)  # the point's value was kept; the changed rule fires afresh
    assert [e[3:5] for e in h.acts.take()] == [("a", "active")]


def test_ruleset_is_picklable_and_loads_in_a_new_engine() -> None:
    rs = Harness.compile('RULE a ON boiler.temp > 85 FOR 1s THEN alert("a") END')
    rs2 = pickle.loads(pickle.dumps(rs))
    h = Harness('RULE x ON boiler.temp > 1 THEN log("x") END')
    h.engine.load(rs2)
    h.feed(1, "boiler.temp", 90)
    h.advance(2)
    assert [e[3] for e in h.acts.take()] == ["a"]


def test_anonymous_identity_is_normalized_text() -> None:
    a = Harness.compile('ON boiler.temp > 85 THEN alert("x")')
    b = Harness.compile('on boiler.temp>85   # comment\n then ALERT( "x" )')
    c = Harness.compile('ON boiler.temp > 86 THEN alert("x")')
    assert a.rules[0].id == b.rules[0].id != c.rules[0].id
    assert a.rules[0].id.startswith("anon-")


def test_status_shape() -> None:
    h = Harness('RULE a ON boiler.temp > 85 THEN alert("a") END')
    h.feed(1, "boiler.temp", 90)
    st = h.engine.status()
    assert st["version"] == h.ruleset.version
    assert st["rules"]["a"] == {
        "kind": "on", "state": "active", "reason": None, "last_fired": 1 * S, "fired": 1, "chattering": False,
        "file": "test.rules", "line": 1,
    }  # fmt: skip


def test_duplicate_identical_anonymous_rules_are_an_error() -> None:
    with pytest.raises(RuleErrors, match="same rule is defined twice"):
        Harness.compile('ON boiler.temp > 85 THEN alert("x")\nON boiler.temp > 85 THEN alert("x")')


def test_for_on_a_rule_of_two_points_and_on_a_window() -> None:
    h = Harness(
        'RULE two ON boiler.temp > 85 AND tank.level < 10 FOR 5s THEN log("two") END\n'
        'RULE win ON avg(boiler.temp, 1m) > 85 FOR 5s THEN log("win") END'
    )
    h.feed(1, "tank.level", 5.0)
    h.feed(2, "boiler.temp", 90.0)
    h.feed(4, "tank.level", 6.0)  # still true: the timer keeps running
    h.advance(7)
    assert h.acts.take() == [("log", "two", "two"), ("log", "win", "win")]
    assert h.transitions == [("two", "fired", 7 * S), ("win", "fired", 7 * S)]


def test_a_window_that_empties_with_time_clears_the_rule() -> None:
    h = Harness('RULE w ON avg(boiler.temp, 10s) > 85 THEN alert("hot") END')
    h.feed(1, "boiler.temp", 90.0)
    assert [e[4] for e in h.acts.take()] == ["active"]
    h.advance(30)  # no reading: the sample leaves the window; avg is unknown, no transition
    assert h.acts.take() == []
    st = h.state("w")
    assert st["state"] == "active"
    h.feed(31, "boiler.temp", 50.0)
    assert [e[4] for e in h.acts.take()] == ["cleared"]


def test_a_let_over_a_window_is_recomputed_by_its_timer() -> None:
    h = Harness("LET boiler.temp_avg = avg(boiler.temp, 10s)")
    h.feed(1, "boiler.temp", 10.0)
    h.feed(2, "boiler.temp", 20.0)
    h.advance(20)
    values = [(r.ts // S, r.value) for r in h.lets]
    assert (1, 10.0) in values
    assert (2, 15.0) in values
    assert (5, 15.0) in values  # recomputed each second without readings
    assert values[-1][1] is None  # the samples left the window: unknown, published as bad
    assert h.lets[-1].quality is BAD


def test_time_of_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        h = Harness(
            'RULE night ON hour() >= 22 OR hour() < 6 THEN log("night {hour()}:{minute()} day {weekday()}") END'
        )
        h.advance(1)  # 00:00:01 is night
        assert h.acts.take() == [("log", "night", "night 0:0 day 4")]  # 1970-01-01 was a Thursday
        h.advance(21 * 3600 + 59 * 60)
        assert h.transitions[-1] == ("night", "cleared", 6 * 3600 * S)
        assert h.acts.take() == []
        h.advance(22 * 3600 + 1)  # no reading: re-checked by its timer
        assert h.acts.take() == [("log", "night", "night 22:0 day 4")]
        h.advance(30 * 3600 + 1)
        assert h.transitions[-1] == ("night", "cleared", 30 * 3600 * S)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_prepare_then_swap_with_readings_in_between() -> None:
    h = Harness('RULE a ON boiler.temp > 85 FOR 10s THEN alert("a") END')
    h.feed(1, "boiler.temp", 90)
    prep = h.engine.prepare(
        Harness.compile(
            'RULE a ON boiler.temp > 85 FOR 10s THEN alert("a") END\nRULE b ON tank.level > 1 THEN log("b") END'
        )
    )
    h.feed(2, "boiler.temp", 80)  # the running set still runs: the FOR timer is reset
    h.feed(3, "boiler.temp", 95)  # and started again at 3 s
    assert set(h.engine.status()["rules"]) == {"a"}
    h.engine.swap(prep)
    assert set(h.engine.status()["rules"]) == {"a", "b"}
    h.advance(12.9)
    assert h.acts.take() == []
    h.advance(13)
    assert [e[3] for e in h.acts.take()] == ["a"]


def test_swap_of_a_stale_prepare_prepares_again() -> None:
    h = Harness('RULE a ON boiler.temp > 85 THEN log("a") END')
    prep = h.engine.prepare(Harness.compile('RULE b ON boiler.temp > 85 THEN log("b") END'))
    h.engine.load(Harness.compile('RULE c ON boiler.temp > 85 THEN log("c") END'))
    h.engine.swap(prep)
    assert set(h.engine.status()["rules"]) == {"b"}
    h.feed(1, "boiler.temp", 90)
    assert h.acts.take() == [("log", "b", "b")]


def test_a_setpoint_written_by_a_replaced_rule_is_reported_as_left_in_force() -> None:
    h = Harness(
        "RULE night ON boiler.temp > 60 THEN set(boiler.setpoint, 55) END\n"
        "RULE siren ON door.open THEN set(alarm.siren, true) END\n"
        "RULE burner ON boiler.temp > 90 THEN set(boiler.burner, false) END\n"
    )
    h.feed(1, "boiler.temp", 70)
    h.feed(2, "door.open", True)
    assert h.engine.status()["left_in_force"] == []
    # night is edited, siren removed; burner never wrote anything
    h.engine.load(
        Harness.compile(
            "RULE night ON boiler.temp > 65 THEN set(boiler.setpoint, 50) END\n"
            "RULE burner ON boiler.temp > 90 THEN set(boiler.burner, false) END\n"
        )
    )
    left = {e["point"]: e for e in h.engine.status()["left_in_force"]}
    assert left == {
        "boiler.setpoint": {
            "point": "boiler.setpoint",
            "value": 55,
            "ts": 1 * S,
            "rule": "night",
            "file": "test.rules",
            "line": 1,
            "rule_was": "changed",
        },
        "alarm.siren": {
            "point": "alarm.siren",
            "value": True,
            "ts": 2 * S,
            "rule": "siren",
            "file": "test.rules",
            "line": 2,
            "rule_was": "removed",
        },
    }
    assert [e["point"] for e in h.engine.left_by_last_swap] == ["boiler.setpoint", "alarm.siren"]
    # the edited rule writes the setpoint again: it is no longer left over
    h.feed(3, "boiler.temp", 60)
    h.feed(4, "boiler.temp", 70)
    assert [e["point"] for e in h.engine.status()["left_in_force"]] == ["alarm.siren"]
    # an unchanged reload reports nothing new
    h.engine.load(h.engine._ruleset)
    assert h.engine.left_by_last_swap == []


def test_a_value_another_rule_wrote_since_is_not_reported_as_left_in_force() -> None:
    h = Harness(
        "RULE a ON boiler.temp > 60 THEN set(boiler.setpoint, 55) END\n"
        "RULE b ON boiler.temp > 80 THEN set(boiler.setpoint, 40) END\n"
    )
    h.feed(1, "boiler.temp", 70)
    h.feed(2, "boiler.temp", 85)  # b wrote after a
    h.engine.load(Harness.compile("RULE b ON boiler.temp > 80 THEN set(boiler.setpoint, 40) END\n"))
    assert h.engine.status()["left_in_force"] == []
