"""The Modbus request planner: the cases in tests/cases/planner/, then properties."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from picogate._model import PointType
from picogate.modbus._codec import ByteOrder, Encoding, Table
from picogate.modbus._planner import MAX_READ_BITS, MAX_READ_REGISTERS, Request, plan

CASES_DIR = Path(__file__).parents[1] / "cases" / "planner"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "config.yaml").is_file())
ENCODING_KEYS = ("table", "address", "type", "order", "count", "bit", "scale", "offset")


def load(case: str, name: str) -> Any:
    return yaml.safe_load((CASES_DIR / case / name).read_text())


def run_case(config: dict[str, Any]) -> list[dict[str, Any]]:
    points = [(p["name"], Encoding(**{k: p[k] for k in ENCODING_KEYS if k in p})) for p in config["points"]]
    requests = plan(points, **config.get("options", {}))
    return [
        {
            "table": r.table.value,
            "start": r.start,
            "count": r.count,
            "members": [[key, offset] for key, offset in r.members],
        }
        for r in requests
    ]


def test_there_are_cases() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("case", CASES)
def test_case(case: str) -> None:
    config, expected = load(case, "config.yaml"), load(case, "expected.yaml")
    if "error" in expected:
        with pytest.raises(ValueError, match=expected["error"]):
            run_case(config)
    else:
        assert run_case(config) == expected["requests"]


def test_input_order_does_not_change_the_plan() -> None:
    config = load("overlapping_points", "config.yaml")
    forward = run_case(config)
    config["points"].reverse()
    backward = run_case(config)
    assert [(r["table"], r["start"], r["count"]) for r in forward] == [
        (r["table"], r["start"], r["count"]) for r in backward
    ]
    assert sorted(map(tuple, forward[0]["members"])) == sorted(map(tuple, backward[0]["members"]))


def test_request_slice_gives_each_member_its_words() -> None:
    points = [
        ("a", Encoding("holding", 10, "uint16")),
        ("b", Encoding("holding", 11, "int32")),
        ("c", Encoding("holding", 13, "bool", bit=2)),
    ]
    (request,) = plan(points)
    words = [100, 200, 300, 4]
    encodings = dict(points)
    got = {key: list(request.slice(words, offset, encodings[key].width)) for key, offset in request.members}
    assert got == {"a": [100], "b": [200, 300], "c": [4]}
    assert request.end == 14
    with pytest.raises(ValueError, match="expects 4 words, got 3"):
        request.slice(words[:3], 0, 1)


def test_keys_can_be_any_hashable() -> None:
    points = [((1, "x"), Encoding("coil", 3, "bool")), ((2, "y"), Encoding("coil", 4, "bool"))]
    assert plan(points) == [Request(Table.COIL, 3, 2, (((1, "x"), 0), ((2, "y"), 1)))]


# --- properties ----------------------------------------------------------------------------------

REGISTER_TYPES = [t for t in PointType if t not in (PointType.BOOL, PointType.STRING)]


@st.composite
def encodings(draw: st.DrawFn) -> Encoding:
    table = draw(st.sampled_from(list(Table)))
    if table.is_bit:
        type_, count, bit = PointType.BOOL, 0, None
    else:
        kind = draw(st.sampled_from(["number", "number", "bit", "string"]))
        type_ = {"bit": PointType.BOOL, "string": PointType.STRING}.get(kind) or draw(
            st.sampled_from(REGISTER_TYPES)
        )
        count = draw(st.integers(1, 130 if draw(st.booleans()) else 6)) if kind == "string" else 0
        count = min(count, 123)
        bit = draw(st.integers(0, 15)) if kind == "bit" else None
    enc = Encoding(table, 0, type_, draw(st.sampled_from(list(ByteOrder))), count=count, bit=bit)
    # Mostly a crowded low range so points meet; sometimes further, up to the end of the space.
    address = draw(st.one_of(st.integers(0, 300), st.integers(0, 3000), st.integers(65400, 65535)))
    return dataclasses.replace(enc, address=min(address, 65536 - enc.width))


limits = st.fixed_dictionaries(
    {
        "max_registers": st.one_of(st.integers(1, 130), st.just(125), st.integers(126, 1000)),
        "max_bits": st.one_of(st.integers(1, 40), st.integers(1, 2100), st.just(2000)),
        "max_gap": st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 3000)),
        "no_merge": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(encodings(), max_size=60), limits)
def test_plan_properties(encs: list[Encoding], options: dict[str, Any]) -> None:
    points = [(f"p{i}", enc) for i, enc in enumerate(encs)]
    table_limit = {
        Table.COIL: min(options["max_bits"], MAX_READ_BITS),
        Table.DISCRETE_INPUT: min(options["max_bits"], MAX_READ_BITS),
        Table.HOLDING: min(options["max_registers"], MAX_READ_REGISTERS),
        Table.INPUT: min(options["max_registers"], MAX_READ_REGISTERS),
    }
    if any(enc.width > table_limit[enc.table] for enc in encs):
        with pytest.raises(ValueError, match="read carries at most"):
            plan(points, **options)
        return
    requests = plan(points, **options)
    by_key = dict(points)
    max_gap = options["max_gap"]

    # Every point is served by exactly one request, of its table, that holds all its words.
    served = [key for r in requests for key, _ in r.members]
    assert sorted(served) == sorted(by_key)
    for r in requests:
        assert r.members
        assert 1 <= r.count <= table_limit[r.table]
        assert r.start >= 0
        assert r.start + r.count <= 65536
        ends = []
        for key, offset in r.members:
            enc = by_key[key]
            assert enc.table is r.table
            assert r.start + offset == enc.address
            assert offset >= 0
            assert offset + enc.width <= r.count
            ends.append(offset + enc.width)
        offsets = [offset for _, offset in r.members]
        assert offsets == sorted(offsets)
        assert offsets[0] == 0  # no padding beyond the members
        assert max(ends) == r.count
        # No hole wider than max_gap between consecutive members.
        reach = 0
        for (key, offset), end in zip(r.members, ends, strict=True):
            assert offset - reach <= max_gap, f"gap before {key}"
            reach = max(reach, end)
        if options["no_merge"]:
            assert {(offset, end) for (_, offset), end in zip(r.members, ends, strict=True)} == {(0, r.count)}

    # Deterministic order: by table, then start.
    order = list(Table)
    keys = [(order.index(r.table), r.start) for r in requests]
    assert keys == sorted(keys)

    # Greedy merging leaves no two neighbouring reads of a table that could have been one.
    if not options["no_merge"]:
        for a, b in itertools.pairwise(requests):
            if a.table is b.table:
                assert b.start - a.end > max_gap or max(a.end, b.end) - a.start > table_limit[a.table]


@given(st.lists(encodings(), max_size=40), st.randoms())
def test_plan_ignores_input_order(encs: list[Encoding], rnd: Any) -> None:
    points = [(f"p{i}", enc) for i, enc in enumerate(encs)]
    shuffled = list(points)
    rnd.shuffle(shuffled)
    a, b = plan(points, max_gap=4), plan(shuffled, max_gap=4)
    assert [(r.table, r.start, r.count) for r in a] == [(r.table, r.start, r.count) for r in b]
    assert [sorted(r.members) for r in a] == [sorted(r.members) for r in b]


@pytest.mark.parametrize(
    "options",
    [{"max_registers": 0}, {"max_bits": 0}, {"max_registers": -5}, {"max_gap": -1}],
)
def test_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        plan([], **options)
