"""The rule language: parsing, the checker's errors (each with its position), the CLI tools.

Error cases are data: tests/cases/rules/errors/NAME.rules, and NAME.expected holds the first line of
each formatted error (`file:line:col: error: message (did you mean …?)`).  Regenerate an expected
file only after reading the new output: PICOGATE_REGEN=1 pytest tests/unit/test_rules_lang.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _rules_util import POINTS, Harness
from picogate.cli import main
from picogate.rules import RuleError, RuleErrors, compile_rules

CASES = Path(__file__).resolve().parents[1] / "cases" / "rules" / "errors"
NAMES = sorted(p.stem for p in CASES.glob("*.rules"))


def errors_of(text: str, points: object = POINTS) -> list[RuleError]:
    with pytest.raises(RuleErrors) as info:
        compile_rules({"t.rules": text}, points)  # type: ignore[arg-type]
    return info.value.errors


@pytest.mark.parametrize("name", NAMES)
def test_error_case(name: str) -> None:
    src = (CASES / f"{name}.rules").read_text(encoding="utf-8")
    errs = errors_of(src)
    got = "\n".join(e.format().splitlines()[0].replace("t.rules:", f"{name}.rules:", 1) for e in errs) + "\n"
    expected = CASES / f"{name}.expected"
    if os.environ.get("PICOGATE_REGEN"):
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")
    for e in errs:  # every error shows its line (a long one around the fault) and a caret under it
        lines = e.format().splitlines()
        line = src.split("\n")[e.line - 1]
        if len(line) <= 160:
            assert lines[1] == "  " + line
            assert lines[2].index("^") == e.col + 1
        else:
            shown = lines[1][2:]
            assert len(shown) <= 162
            assert shown.strip("…") in line
            assert shown[lines[2].index("^") - 2] == line[e.col - 1]


WARNINGS = Path(__file__).resolve().parents[1] / "cases" / "rules" / "warnings"


@pytest.mark.parametrize("name", sorted(p.stem for p in WARNINGS.glob("*.rules")))
def test_warning_case(name: str) -> None:
    """tests/cases/rules/warnings/NAME.rules: the set compiles; NAME.expected holds the first line
    of each warning (empty: none)."""
    src = (WARNINGS / f"{name}.rules").read_text(encoding="utf-8")
    ruleset = compile_rules({"t.rules": src}, POINTS)
    got = "".join(
        w.format().splitlines()[0].replace("t.rules:", f"{name}.rules:", 1) + "\n" for w in ruleset.warnings
    )
    expected = WARNINGS / f"{name}.expected"
    if os.environ.get("PICOGATE_REGEN"):
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")
    for w in ruleset.warnings:  # under the CLEAR condition
        lines = w.format().splitlines()
        assert lines[1] == "  " + src.split("\n")[w.line - 1]
        assert lines[2].index("^") == w.col + 1
        assert w.level == "warning"


def test_format_shows_line_caret_and_suggestion() -> None:
    (e,) = errors_of('RULE r\n  ON boiler.tmp > 85\n  THEN alert("x")\nEND')
    assert (e.file, e.line, e.col, e.suggestion) == ("t.rules", 2, 6, "boiler.temp")
    assert e.format() == (
        "t.rules:2:6: error: device 'boiler' has no point 'tmp' (did you mean boiler.temp?)\n"
        "    ON boiler.tmp > 85\n"
        "       ^~~~~~~~~~"
    )


def test_all_errors_of_all_files_in_order() -> None:
    with pytest.raises(RuleErrors) as info:
        compile_rules(
            {"b.rules": 'ON x.y > 1 THEN log("a")\n', "a.rules": 'ON boiler.tmp > 1 THEN log("a")\nON @'},
            POINTS,
        )
    assert [(e.file, e.line) for e in info.value.errors] == [("a.rules", 1), ("a.rules", 2), ("b.rules", 1)]


def test_the_issue_examples_compile() -> None:
    rs = Harness.compile(
        """
# comments start with '#'; keywords are case-insensitive; durations: 500ms 10s 5m 1h
ON boiler.temp > 85 THEN alert("overheat")

RULE boiler_overheat
  ON boiler.temp > 85 FOR 10s          # must hold continuously for 10 s (a timer, not "next sample")
  CLEAR boiler.temp < 80                # hysteresis: clears only below 80
  THEN alert("Boiler at {boiler.temp} °C", severity="critical"); set(boiler.burner, false)
  ELSE alert("Boiler back to normal", severity="info")   # runs once when it clears
END

LET pump.power_kw = pump.voltage * pump.current / 1000      # derived point, published like a real one
ON rate(tank.level, 1m) < -5 THEN alert("tank draining fast")
ON age(pump.current) > 30s THEN alert("pump meter silent")   # seconds since last good value
EVERY 1m THEN publish("plant/boiler/temp_avg", avg(boiler.temp, 1m))
ON changed(door.open) AND door.open THEN set(alarm.siren, 1)
"""
    )
    assert [r.kind for r in rs.rules] == ["let", "on", "on", "on", "on", "every", "on"]
    assert rs.rules[2].id == "boiler_overheat"
    assert rs.rules[2].line == 5


def test_keywords_case_insensitive_and_point_names_like_keywords() -> None:
    rs = Harness.compile(
        'rule r on PUMP_ON_X.y > 1 Then LOG("x") eNd\nOn pump.on aNd NOT door.open tHeN log("y")', None
    )
    assert len(rs.rules) == 2


def test_durations() -> None:
    h = Harness(
        'RULE r ON age(boiler.temp) > 1.5m AND age(boiler.temp) < 1h AND 500ms < 1s THEN log("x") END'
    )
    h.feed(0, "boiler.temp", 1.0)
    h.advance(95)
    assert h.acts.take() == [("log", "r", "x")]


def test_unchecked_without_points() -> None:
    rs = compile_rules({"t.rules": "ON anything.at_all > 3 THEN set(some.point, 1)"}, None)
    assert rs.rules[0].points == ("anything.at_all", "some.point")


def test_no_operator_text_in_generated_source() -> None:
    evil = "__import__('os').system('echo pwned')"
    rs = Harness.compile(
        f'RULE r ON boiler.temp > 1 THEN log("{evil}"); publish("a/b", "{{boiler.temp}}{evil}") END'
    )
    assert "__import__" not in rs.source
    assert "pwned" not in rs.source
    assert any(evil in str(c) for c in rs.consts.values())


# ---------------------------------------------------------------------------------------- CLI


def test_cli_check_reports_all_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a.rules"
    f.write_text('ON boiler.temp > 85 FOR 10x THEN log("x")\nON foo THEN log("x")\n', encoding="utf-8")
    assert main(["rules", "check", str(f)]) == 1
    out = capsys.readouterr()
    assert f"{f}:1:25: error: bad duration '10x'" in out.out
    assert f"{f}:2:4: error: unknown name 'foo'" in out.out
    assert '\n  ON boiler.temp > 85 FOR 10x THEN log("x")\n                          ^~~\n' in out.out
    assert "2 errors" in out.err


def test_cli_check_clean_with_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        """
devices:
  - name: boiler
    type: modbus_tcp
    host: 127.0.0.1
    port: 5020
    points:
      - {name: temp, table: input, address: 0, type: float32}
      - {name: burner, table: coil, address: 0, writable: true}
""",
        encoding="utf-8",
    )
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.rules").write_text("ON boiler.temp > 85 THEN set(boiler.burner, 0)\n", encoding="utf-8")
    assert main(["rules", "check", "--config", str(cfg), str(d)]) == 0
    assert "OK" in capsys.readouterr().out
    (d / "b.rules").write_text("ON boiler.temp > 85 THEN set(boiler.temp, 0)\n", encoding="utf-8")
    assert main(["rules", "check", "-c", str(cfg), str(d)]) == 1
    assert "boiler.temp is read-only" in capsys.readouterr().out


def test_cli_check_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(tmp_path / "missing.rules")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["rules", "check", str(tmp_path)]) == 1
    assert "no *.rules files" in capsys.readouterr().err
    (tmp_path / "bin.rules").write_bytes(b"\xff\xfe\x00")
    assert main(["rules", "check", str(tmp_path / "bin.rules")]) == 1
    assert "bin.rules:1:1: error: not UTF-8 text but UTF-16" in capsys.readouterr().err
    (tmp_path / "latin1.rules").write_bytes(b'# boiler\nON boiler.temp > 85 THEN alert("85 \xb0C")\n')
    assert main(["rules", "check", str(tmp_path / "latin1.rules")]) == 1
    assert capsys.readouterr().err.splitlines()[-3:] == [
        f"picogate rules: {tmp_path / 'latin1.rules'}:2:36: error: not UTF-8 text: byte 0xb0 ('°' in Latin-1 or "
        "Windows-1252) on line 2; save the file as UTF-8 (in Notepad: Save As, Encoding UTF-8)",
        '  ON boiler.temp > 85 THEN alert("85 °C")',
        "  " + " " * 35 + "^",
    ]
    assert main(["rules", "check", "--config", str(tmp_path / "nope.yaml"), str(tmp_path / "bin.rules")]) == 1


def test_cli_check_warns_of_files_it_does_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "boiler.rules").write_text('ON boiler.temp > 85 THEN alert("hot")\n')
    (tmp_path / "door.rules.txt").write_text('ON door.open THEN alert("door open")\n')
    assert main(["rules", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{tmp_path / 'door.rules.txt'}:1:1: warning: this file is not read: rule files are named *.rules: "
        "rename it door.rules" in out
    )
    assert "1 file(s), 1 rule(s) and LET(s): OK, 1 warning" in out
    (tmp_path / "boiler.rules").unlink()
    assert main(["rules", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no *.rules files in this directory" in err
    assert "door.rules.txt:1:1: warning: this file is not read" in err


def test_cli_test_reads_excel_csv_and_warns_of_values_it_doubts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Excel's "CSV UTF-8" (a byte order mark) in a locale with a decimal comma (`;` between columns)."""
    (tmp_path / "a.rules").write_text(
        'LET boiler.temp_f = boiler.temp * 1.8 + 32 UNIT "°F"\nON boiler.temp > 85 THEN alert("hot")\n'
    )
    (tmp_path / "r.csv").write_bytes(
        "\ufeffts;device;point;value\n"
        "1;boiler;temp;80,5\n"
        "2;boiler;temp;86 °C\n"
        "3;boiler;tmp;90\n"
        "4;boiler;temp;90\n".encode()
    )
    assert main(["rules", "test", str(tmp_path / "a.rules"), "--replay", str(tmp_path / "r.csv")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "1970-01-01T00:00:01.000Z  boiler.temp_f  LET = 176.9 °F",
        "1970-01-01T00:00:02.000Z  boiler.temp_f  LET = unknown",
        "1970-01-01T00:00:04.000Z  boiler.temp_f  LET = 194 °F",
        "1970-01-01T00:00:04.000Z  anon-49a2ee590d0f  fired",
        "1970-01-01T00:00:04.000Z  anon-49a2ee590d0f  alert active warning: hot",
    ]
    csv = tmp_path / "r.csv"
    assert [line for line in err.splitlines() if line.startswith("warning")] == [
        f"warning: {csv}:2: '80,5' read as 80.5",
        f"warning: {csv}:3: boiler.temp = '86 °C' is not a number: write 86, without the unit (read as a bad value)",
        f"warning: {csv}:4: no rule uses boiler.tmp (did you mean boiler.temp?): its 1 reading change nothing",
    ]
    (tmp_path / "r.csv").write_text("ts,device,point,value\n1,boiler,temp,80,5\n")
    assert main(["rules", "test", str(tmp_path / "a.rules"), "--replay", str(tmp_path / "r.csv")]) == 1
    assert f"{csv}:2: quality is good, bad or uncertain, not '5' (a decimal comma? write 80.5)" in (
        capsys.readouterr().err
    )


def test_cli_test_replays_on_a_virtual_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = tmp_path / "a.rules"
    r.write_text(
        "RULE hot\n  ON boiler.temp > 85 FOR 10s\n  CLEAR boiler.temp < 80\n"
        '  THEN alert("Boiler at {boiler.temp}", severity="critical"); set(boiler.burner, false)\n'
        '  ELSE log("normal")\nEND\nEVERY 1m THEN publish("plant/avg", avg(boiler.temp, 1m))\n',
        encoding="utf-8",
    )
    csv = tmp_path / "r.csv"
    csv.write_text(
        "ts,device,point,value\n2024-01-01T00:00:00Z,boiler,temp,86\n2024-01-01T00:00:05Z,boiler,temp,88\n"
        "1704067230,boiler,temp,79\n1704067235,boiler,temp,,bad\n1704067260,boiler,temp,70\n",
        encoding="utf-8",
    )
    assert main(["rules", "test", str(r), "--replay", str(csv)]) == 0
    out = capsys.readouterr().out.splitlines()
    every = out[-1].split()[1]
    assert every.startswith("anon-")
    assert out == [
        "2024-01-01T00:00:10.000Z  hot  fired",
        "2024-01-01T00:00:10.000Z  hot  alert active critical: Boiler at 88",
        "2024-01-01T00:00:10.000Z  hot  set boiler.burner = false",
        "2024-01-01T00:00:30.000Z  hot  cleared",
        "2024-01-01T00:00:30.000Z  hot  log: normal",
        "2024-01-01T00:00:30.000Z  hot  alert cleared critical: Boiler at 88",
        f"2024-01-01T00:01:00.000Z  {every}  fired",
        f"2024-01-01T00:01:00.000Z  {every}  publish plant/avg 83.5",
    ]


def test_cli_test_bad_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = tmp_path / "a.rules"
    r.write_text('ON boiler.temp > 85 THEN log("x")\n', encoding="utf-8")
    for text, msg in [
        ("1,boiler,temp\n", "expected ts,device,point,value"),
        ("yesterday,boiler,temp,3\n", "bad timestamp"),
        ("1e999,boiler,temp,3\n", "bad timestamp"),
        ("nan,boiler,temp,3\n", "bad timestamp"),
        ("1,boiler,temp,3,great\n", "quality is good, bad or uncertain"),
        ("", "no readings"),
    ]:
        csv = tmp_path / "r.csv"
        csv.write_text(text, encoding="utf-8")
        assert main(["rules", "test", str(r), "--replay", str(csv)]) == 1
        assert msg in capsys.readouterr().err


REPLAY = Path(__file__).resolve().parents[1] / "cases" / "rules" / "replay"


@pytest.mark.parametrize("name", sorted(p.name for p in REPLAY.iterdir()))
def test_replay_case(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/cases/rules/replay/NAME/{test.rules, readings.csv, expected}: `rules test` output."""
    case = REPLAY / name
    monkeypatch.chdir(case)
    assert main(["rules", "test", "test.rules", "--replay", "readings.csv"]) == 0
    got = capsys.readouterr().out
    expected = case / "expected"
    if os.environ.get("PICOGATE_REGEN"):
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")


def test_string_escapes() -> None:
    rs = compile_rules({"a": r'EVERY 1s THEN log("a\{b\}c\\d\"e\n{{x}}\t" + ' + r"'\'q')"}, None)
    assert 'a{b}c\\d"e\n{x}\t' in rs.consts.values()
    assert "'q" in rs.consts.values()


def test_byte_order_mark_and_crlf() -> None:
    rs = compile_rules({"a": '\ufeffON boiler.temp > 1\r\n  THEN log("x")\r\n'}, POINTS)
    assert len(rs.rules) == 1
    (e,) = errors_of('ON boiler.temp > 1\r\nTHEN lg("x")\r\n')
    assert e.format().splitlines()[1:] == ['  THEN lg("x")', "       ^~"]
