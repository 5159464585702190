"""The bounds of the rule language's input (docs/rules.md, "Limits"): what is refused is refused
with file:line:col and a caret; nothing in the chain (lexer, parser, AST, checker, code generator,
Python's compiler) recurses or allocates without bound; what stays within the limits compiles."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _rules_util import POINTS, Harness
from picogate.cli import main
from picogate.rules import RuleError, RuleErrors, compile_rules
from picogate.rules import _compile as compile_module
from picogate.rules._limits import (
    MAX_FILE_BYTES,
    MAX_NESTING,
    MAX_OPERATIONS,
    MAX_STATEMENTS,
    MAX_STRING,
    MAX_TOTAL_BYTES,
)
from picogate.rules._worker import read_rule_files


def errors_of(files: str | dict[str, str], points: object = POINTS) -> list[RuleError]:
    with pytest.raises(RuleErrors) as info:
        compile_rules({"t.rules": files} if isinstance(files, str) else files, points)  # type: ignore[arg-type]
    return info.value.errors


def test_a_flat_sum_of_1000_terms_compiles_and_computes() -> None:
    """It used to end `rules check` with a RecursionError."""
    h = Harness(
        "LET plant.total = " + " + ".join(["tank.level"] * 1000) + "\nLET plant.n = tank.level" + " - 1" * 999
    )
    h.feed(1, "tank.level", 0.5)
    got = {r.point: r.value for r in h.lets}
    assert got == {"total": 500.0, "n": -998.5}


def test_an_expression_of_more_than_1000_operations_is_refused_at_the_first_one_too_many() -> None:
    text = "LET plant.total = " + " + ".join(["tank.level"] * (MAX_OPERATIONS + 2))
    (e,) = errors_of(text)
    assert "more than 1,000 operations" in e.message
    assert e.line == 1
    assert text[e.col - 1] == "+"
    assert text[: e.col].count("+") == MAX_OPERATIONS + 1


@pytest.mark.parametrize(
    "text",
    [
        "ON boiler.temp > " + "(" * 1000 + "1" + ")" * 1000 + ' THEN log("x")',
        "ON boiler.temp > " + "-" * 5000 + 'boiler.temp THEN log("x")',
        "ON " + "NOT " * 5000 + 'door.open THEN log("x")',
        "LET a.b = " + "abs(" * 2000 + "boiler.temp" + ")" * 2000,
        'ON boiler.temp > 1 THEN log("{' + "abs(" * 500 + "boiler.temp" + ")" * 500 + '}")',
    ],
    ids=["parentheses", "minus", "not", "calls", "interpolation"],
)
def test_deep_nesting_is_refused_with_its_position(text: str) -> None:
    (e,) = errors_of(text)
    assert e.message == f"expression nested too deeply (more than {MAX_NESTING} levels): split it with LET"
    assert e.line == 1
    assert 1 < e.col < 200
    lines = e.format().splitlines()
    assert len(lines[1]) < 170  # the long line is shown around the fault
    assert "^" in lines[2]


@pytest.mark.parametrize(
    "text",
    [
        "LET a.b = " + "abs(" * 30 + " + ".join(["boiler.temp"] * 960) + ")" * 30,
        "ON " + "NOT (" * 15 + " AND ".join(["boiler.temp > 1"] * 480) + ")" * 15 + ' THEN log("x")',
        "LET a.b = " + "-(" * 15 + " * ".join(["boiler.temp"] * 960) + ")" * 15,
        "LET a.b = " + " + ".join(["(" + " * ".join(["boiler.temp"] * 3) + ")"] * 330),
        'ON boiler.temp > 1 THEN log("'
        + "".join("{" + "abs(" * 30 + "boiler.temp" + ")" * 30 + "}" for _ in range(25))
        + '")',
        "LET a.b = " + "(boiler.temp + " * 15 + "1" + ")" * 15,
        "ON " + " OR ".join(["(" + " AND ".join(["door.open"] * 9) + ")"] * 99) + ' THEN log("x")',
    ],
    ids=[
        "calls-around-a-sum",
        "not-around-and",
        "minus-around-a-product",
        "sum-of-products",
        "interpolations",
        "nested-sums",
        "or-of-ands",
    ],
)
def test_the_largest_expressions_within_the_limits_compile_and_run(text: str) -> None:
    """Python's own compiler takes the generated code of whatever the limits let through."""
    h = Harness(text)
    h.feed(1, "boiler.temp", 2.0)
    h.feed(2, "door.open", True)
    for st_ in h.engine.status()["rules"].values():
        assert st_["state"] != "errored"


def test_a_one_megabyte_string_is_refused_quickly_in_little_memory() -> None:
    """It used to take 950 MB (Python's `re` on the old STRING pattern)."""
    text = 'ON boiler.temp > 1 THEN log("' + "x" * 1_000_000 + '")\n'
    tracemalloc.start()
    try:
        (e,) = errors_of(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.message == f"a string of 1,000,000 characters; a string holds at most {MAX_STRING:,}"
    assert (e.line, e.col) == (1, 29)
    assert peak < 30 * 1024 * 1024
    assert len(e.format()) < 600


def test_a_string_of_4096_characters_is_fine() -> None:
    Harness('ON boiler.temp > 1 THEN log("' + "x" * MAX_STRING + '")')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ON boiler.temp > " + "1" * 5000 + ' THEN log("x")',
            "a number of 5,000 characters; at most 255 are allowed",
        ),
        ('ON boiler.temp > 1e400 THEN log("x")', "number 1e400 is out of range (float64: about ±1.8e308)"),
        (
            "ON boiler." + "t" * 300 + ' > 1 THEN log("x")',
            "a name of 300 characters; at most 255 are allowed",
        ),
    ],
)
def test_long_words_and_huge_numbers(text: str, message: str) -> None:
    """A 5,000-digit number used to end the checker with Python's int() digit limit."""
    (e,) = errors_of(text)
    assert e.message == message


def test_a_file_larger_than_1_mib_is_refused_without_being_parsed(tmp_path: Path) -> None:
    big = "# " + "x" * MAX_FILE_BYTES + "\n"
    (e,) = errors_of({"big.rules": big})
    assert (e.file, e.line, e.col) == ("big.rules", 1, 1)
    assert "a rule file may hold at most 1,048,576 (1 MiB)" in e.message
    # the gateway's reader and the CLI read no more than the limit
    (tmp_path / "big.rules").write_text(big)
    (tmp_path / "ok.rules").write_text('ON boiler.temp > 1 THEN log("x")\n')
    files, errors = read_rule_files(tmp_path, "*.rules", recursive=False)
    assert list(files) == ["ok.rules"]
    assert [e.file for e in errors] == ["big.rules"]
    assert "split it into several files" in errors[0].message


def test_the_cli_refuses_a_file_larger_than_1_mib(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.rules"
    path.write_text("#" * (MAX_FILE_BYTES + 10))
    assert main(["rules", "check", str(path)]) == 1
    assert "a rule file may hold at most 1,048,576" in capsys.readouterr().err


def test_all_files_together_are_bounded(tmp_path: Path) -> None:
    chunk = "# " + "x" * (MAX_FILE_BYTES - 100) + "\n"
    files = {f"f{i}.rules": chunk for i in range(MAX_TOTAL_BYTES // len(chunk) + 2)}
    errors = errors_of(files)
    assert len(errors) == 1
    assert "more than 4,194,304 bytes (4 MiB) together" in errors[0].message
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    read, problems = read_rule_files(tmp_path, "*.rules", recursive=False)
    assert len(read) == MAX_TOTAL_BYTES // len(chunk)
    assert "more than 4,194,304 bytes" in problems[0].message


def test_more_than_10000_rules_are_refused_where_the_limit_is_passed() -> None:
    per_file = 4000
    files = {
        f"f{k}.rules": "".join(
            f'ON boiler.temp > {k * per_file + i} THEN log("x")\n' for i in range(per_file)
        )
        for k in range(3)
    }
    errors = errors_of(files, None)
    assert len(errors) == 1
    e = errors[0]
    assert (e.file, e.line, e.col) == ("f2.rules", MAX_STATEMENTS - 2 * per_file + 1, 1)
    assert "more than 10,000 rules and LETs" in e.message


def test_the_tokens_of_all_files_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_module, "MAX_TOKENS", 1000)
    files = {
        f"f{k}.rules": "".join(f'ON boiler.temp > {k * 1000 + i} THEN log("x")\n' for i in range(60))
        for k in range(2)
    }
    errors = errors_of(files)
    assert len(errors) == 1
    assert errors[0].file == "f1.rules"
    assert "this is where the limit is passed" in errors[0].message


def test_a_statement_of_more_than_20000_tokens_is_refused() -> None:
    text = "ON boiler.temp > 1 THEN " + "; ".join(['log("x")'] * 6000) + '\nON door.open THEN log("y")'
    (e,) = errors_of(text)
    assert (e.line, e.col) == (1, 1)
    assert "more than 20,000 tokens" in e.message


def test_errors_in_one_statement_leave_the_others_checked() -> None:
    text = (
        'ON boiler.temp @ 3 THEN log("y")\n'
        'ON boiler.temp > "x" + ' + "(" * 40 + "1" + ")" * 40 + ' THEN log("z")\n'
        'RULE a\n  ON boiler.temp > 85 THEN log("x")\n'  # no END before the next RULE
        'RULE b ON boiler.tmp > 1 THEN log("w") END\n'
        "LET a.b = boiler.temp +\n"
    )
    got = [(e.line, e.message.split(":")[0].split(" (")[0]) for e in errors_of(text)]
    assert got == [
        (1, "unexpected character '@'"),
        (2, "expression nested too deeply"),
        (5, "the RULE block before this is not closed with END"),
        (5, "device 'boiler' has no point 'tmp'"),
        (6, "unexpected end of file; expected '(', '-', a duration"),
    ]


_ATOMS = st.sampled_from(["boiler.temp", "1", "2.5", "door.open", "x", '"s"', "10s", "avg(tank.level, 1m)"])


def _nest(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, n: "(" * n + a + ")" * n, inner, st.integers(1, 60)),
        st.builds(lambda a, p, n: p * n + a, inner, st.sampled_from(["-", "NOT ", "!"]), st.integers(1, 60)),
        st.builds(
            lambda a, f, n: f"{f}(" * n + a + ")" * n,
            inner,
            st.sampled_from(["abs", "sqrt"]),
            st.integers(1, 40),
        ),
        st.builds(
            lambda a, o, n: f" {o} ".join([a] * n),
            inner,
            st.sampled_from(["+", "*", "AND", "OR", "<"]),
            st.integers(2, 600),
        ),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.recursive(_ATOMS, _nest, max_leaves=4), st.sampled_from(["ON {} THEN log(\"x\")", "LET a.b = {}",
       'ON door.open THEN log("{{{}}}")']))  # fmt: skip
def test_deep_and_long_random_expressions_compile_or_are_refused_cleanly(expr: str, form: str) -> None:
    """Never a RecursionError, a MemoryError or a crash: a set, or errors inside the text."""
    text = form.format(expr)
    for points in (POINTS, None):
        try:
            compile_rules({"f.rules": text}, points)
        except RuleErrors as exc:
            for e in exc.errors:
                assert e.line == 1
                assert e.col >= 1
                assert e.message
                assert len(e.format()) < 1000
