"""Every `rules` block of docs/rules.md compiles against the points the page lists, and the replay
example prints what the page shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _rules_util import POINTS
from picogate.rules import RuleErrors, compile_rules

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```rules\n(.*?)```", TEXT, re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_rules_example_compiles(block: str) -> None:
    rs = compile_rules({"docs.rules": block}, POINTS)
    assert rs.rules


def test_the_listed_points_are_the_test_points() -> None:
    for p in POINTS:
        assert f"`{p.key}`" in TEXT


def test_replay_example_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from picogate.cli import main

    texts = re.findall(r"```text\n(.*?)```", TEXT, re.S)
    csv = next(t for t in texts if t.startswith("ts,device"))
    shown = next(t for t in texts if "boiler_overheat  fired" in t)
    rule = next(b for b in BLOCKS if "RULE boiler_overheat" in b)
    rule = rule[rule.index("RULE boiler_overheat") : rule.index("END") + 3]
    (tmp_path / "a.rules").write_text(rule, encoding="utf-8")
    (tmp_path / "r.csv").write_text(csv, encoding="utf-8")
    assert main(["rules", "test", str(tmp_path / "a.rules"), "--replay", str(tmp_path / "r.csv")]) == 0
    assert capsys.readouterr().out == shown


def test_check_example_matches() -> None:
    texts = re.findall(r"```text\n(.*?)```", TEXT, re.S)
    src = next(t for t in texts if t.startswith("RULE boiler_guard"))
    shown = next(t for t in texts if "error:" in t)
    with pytest.raises(RuleErrors) as info:
        compile_rules({"rules/boiler.rules": src}, POINTS)
    assert "\n".join(e.format() for e in info.value.errors) + "\n" == shown


def test_common_mistakes_quote_what_the_checker_prints() -> None:
    """Every message in "Common mistakes" is one the tests expect (a case in tests/cases/rules, or a
    test of the rules tools or the gateway's rules), and each source line quoted is the case's."""
    section = TEXT.split("## Common mistakes", 1)[1]
    root = DOC.parents[1]
    cases = root / "tests" / "cases" / "rules"
    expected = "\n".join(p.read_text(encoding="utf-8") for p in cases.rglob("*.expected"))
    sources = "\n".join(p.read_text(encoding="utf-8") for p in cases.rglob("*.rules"))
    tests = "\n".join(
        (root / "tests" / "unit" / n).read_text(encoding="utf-8")
        for n in ("test_rules_lang.py", "test_live_rules.py")
    )
    messages = re.findall(r"^\S+:\d+:\d+: (?:error|warning): (.*)$", section, re.MULTILINE)
    assert len(messages) >= 10
    assert [m for m in messages if m not in expected and m not in tests] == []
    quoted = re.findall(r"^  (\S.*)$", section, re.MULTILINE)
    assert [q for q in quoted if not q.lstrip().startswith("^") and q not in sources] == []
    log = re.findall(r"^rules: rule .*$", section, re.MULTILINE)
    assert log
    # the log line's form is the one tests/unit/test_live_rules.py checks
    assert "was changed; the value it wrote stays in force: " in log[0]
