"""The local API's pure parts, as data: the active alerts, a rule's text as written, the write's
value on the command line, who counts as local, and `picogate watch`'s view of a snapshot."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from picogate.api._cli import parse_value
from picogate.api._client import url_of
from picogate.api._server import is_loopback
from picogate.api._watch import render, rule_label
from picogate.gateway import parse_config
from picogate.rules import compile_rules
from picogate.rules._alerts import AlertBook

S = 1_000_000_000


def test_an_alert_is_active_until_its_rule_clears() -> None:
    book = AlertBook()
    book.record("overheat", "critical", "Boiler at 90 °C", "active", 1 * S)
    book.record("overheat", "warning", "burner off", "active", 1 * S)  # a second alert of the same firing
    book.record("door", "warning", "door open", "active", 2 * S)
    assert [(a.rule, a.message) for a in book.active()] == [
        ("overheat", "Boiler at 90 °C"),
        ("overheat", "burner off"),
        ("door", "door open"),
    ]
    # The ELSE alert (state cleared, another text) clears every alert of the rule.
    book.record("overheat", "info", "Boiler back to normal", "cleared", 3 * S)
    assert [a.rule for a in book.active()] == ["door"]
    assert [(a.rule, a.state) for a in book.recent()][-1] == ("overheat", "cleared")
    assert book.raised == 3


def test_a_rule_that_fires_again_replaces_its_alerts_and_a_removed_rule_takes_them() -> None:
    book = AlertBook(max_recent=3, max_per_rule=2)
    book.record("tally", "info", "10 parts", "active", 1 * S)
    book.record("door", "warning", "door open", "active", 2 * S)
    book.record("tally", "info", "12 parts", "active", 3 * S)  # EVERY: the next period
    assert [a.message for a in book.active()] == ["door open", "12 parts"]
    for i in range(3):
        book.record("door", "warning", f"more {i}", "active", 2 * S)
    assert [a.message for a in book.active() if a.rule == "door"] == ["door open", "more 0"]
    assert len(book.recent()) == 3
    book.retain(["door"])
    assert {a.rule for a in book.active()} == {"door"}


def test_a_rules_text_is_as_written() -> None:
    files = {
        "a.rules": "# the boiler\n"
        "ON boiler.temp > 85 FOR 10s   \n"
        '  THEN alert("hot")  # trailing\n'
        "\n"
        "# about x\n"
        "RULE x\n"
        "  ON boiler.temp < 3\n"
        '  THEN log("cold")\n'
        "END\n"
        "LET boiler.double = boiler.temp * 2\n",
    }
    by_line = {r.line: r for r in compile_rules(files, None).rules}
    assert by_line[2].text == 'ON boiler.temp > 85 FOR 10s\n  THEN alert("hot")  # trailing'
    assert by_line[6].text == 'RULE x\n  ON boiler.temp < 3\n  THEN log("cold")\nEND'
    assert by_line[10].text == "LET boiler.double = boiler.temp * 2"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("70", 70),
        ("85.5", 85.5),
        ("-3", -3),
        ("true", True),
        ("false", False),
        ('"Line 2"', "Line 2"),
        ("Line 2", "Line 2"),
        ("85,5", "85,5"),  # not a number: sent as text, the router says what the point takes
        ("off", "off"),
        ("null", "null"),
        ("[1, 2]", "[1, 2]"),
    ],
)
def test_the_value_on_the_command_line(text: str, value: object) -> None:
    got = parse_value(text)
    assert (type(got), got) == (type(value), value)


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("fe80::1%eth0", False),
        ("::ffff:10.0.0.5", False),
        ("", False),
        (None, False),
        ("not an address", False),
    ],
)
def test_who_is_local(address: str | None, local: bool) -> None:
    assert is_loopback(address) is local


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9200"),
        ("0.0.0.0", "http://127.0.0.1:9200"),
        ("::", "http://[::1]:9200"),
        ("::1", "http://[::1]:9200"),
        ("gw.local", "http://gw.local:9200"),
    ],
)
def test_the_address_from_the_config(host: str, url: str) -> None:
    cfg = parse_config(f"metrics:\n  host: '{host}'\n  port: 9200\n", filename="gateway.yaml")
    assert url_of(cfg) == url


# --------------------------------------------------------------------------- the view

NOW = 1_795_431_200_000


def point(name: str, value: Any, **kw: Any) -> dict[str, Any]:
    return {
        "device": "boiler",
        "point": name,
        "key": f"boiler.{name}",
        "value": value,
        "quality": "good" if value is not None else None,
        "ts": NOW - 1500 if value is not None else None,
        "unit": kw.pop("unit", ""),
        "writable": kw.pop("writable", False),
        **kw,
    }


def snapshot(points: int = 3) -> dict[str, Any]:
    anon_text = 'ON boiler.temp > 88\n  THEN alert("very hot")'
    return {
        "gateway": {"id": "gw1", "version": "1.2.3", "uptime_s": 75},
        "status": {
            "outbox": {"depth": 0, "parked": 0, "failing": False},
            "clock_synced": True,
            "health": {"status": "ok", "sinks": {"mqtt": {"connected": True}}},
        },
        "devices": [
            {
                "name": "boiler",
                "state": "online",
                "reason": "",
                "points": [
                    point("temp", 90.0, unit="°C"),
                    point("setpoint", 70, writable=True),
                    point("burner", False, writable=True),
                    *[point(f"extra{i}", i) for i in range(points - 3)],
                ],
            },
            {"name": "pump", "state": "offline", "reason": "timeout", "points": [point("speed", None)]},
        ],
        "rules": {
            "enabled": True,
            "version": "abc",
            "errors": [{"file": "x.rules", "line": 3, "col": 6, "message": "unknown point boiler.tmp"}],
            "rules": [
                {
                    "id": "overheat",
                    "name": "overheat",
                    "kind": "on",
                    "state": "active",
                    "file": "b.rules",
                    "line": 1,
                    "fired": 1,
                    "last_fired": NOW - 5000,
                    "text": "RULE overheat …",
                },
                {
                    "id": "anon-1",
                    "name": None,
                    "kind": "on",
                    "state": "idle",
                    "file": "b.rules",
                    "line": 7,
                    "fired": 0,
                    "last_fired": None,
                    "text": anon_text,
                },
                {
                    "id": "boiler.double",
                    "name": None,
                    "kind": "let",
                    "state": "idle",
                    "file": "b.rules",
                    "line": 9,
                    "text": "LET …",
                },
            ],
        },
        "alerts": {
            "active": [
                {
                    "rule": "overheat",
                    "severity": "critical",
                    "message": "Boiler at 90 °C",
                    "ts": NOW - 5000,
                    "file": "b.rules",
                    "line": 1,
                    "text": "RULE overheat …",
                },
                {
                    "rule": "anon-1",
                    "severity": "warning",
                    "message": "very hot",
                    "ts": NOW - 4000,
                    "file": "b.rules",
                    "line": 7,
                    "text": anon_text,
                },
            ],
            "recent": [],
        },
        "writes": [
            {
                "key": "boiler.burner",
                "value": False,
                "origin": "rule:overheat",
                "ok": True,
                "code": "ok",
                "error": "",
                "ts": NOW - 5000,
            },
            {
                "key": "boiler.setpoint",
                "value": 700,
                "origin": "api:127.0.0.1",
                "ok": False,
                "code": "out_of_range",
                "error": "above the maximum 90",
                "ts": NOW - 1000,
            },
        ],
    }


def shown(snap: dict[str, Any], width: int = 120, height: int = 40) -> list[str]:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None, legacy_windows=False)
    console.print(render(snap, url="http://127.0.0.1:9108", width=width, height=height, now_ms=NOW))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out).rstrip("\n").split("\n")


def test_the_view_shows_alerts_points_rules_and_writes() -> None:
    text = "\n".join(shown(snapshot()))
    assert "gateway gw1 1.2.3 · up 75 s" in text
    assert "2 active alerts" in text
    assert "critical Boiler at 90 °C  overheat" in text
    # an unnamed rule: its place and its text, in the alerts and among the rules
    assert "very hot  b.rules:7  ON boiler.temp > 88" in text
    assert "idle    b.rules:7 ON boiler.temp > 88 …" in text
    assert "active  overheat" in text
    assert "boiler.double" not in text  # LET points are points, not rules here
    assert "reload failed, last good set kept: x.rules:3:6: unknown point boiler.tmp" in text
    assert "pump ● offline (timeout)" in text
    assert "setpoint ✎" in text
    assert "90.00" in text
    assert "boiler.setpoint = 700 by api:127.0.0.1 → out_of_range (above the maximum 90)" in text
    assert "mqtt connected" in text


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40), (60, 15)])
def test_the_view_fits_the_terminal(width: int, height: int) -> None:
    lines = shown(snapshot(points=60), width, height)
    assert len(lines) <= height - 1
    text = "\n".join(lines)
    assert "Boiler at 90 °C" in text  # the alerts come before the long table
    assert "more points" in text


def test_rule_label() -> None:
    assert rule_label({"name": "overheat", "file": "a.rules", "line": 1}) == "overheat"
    assert rule_label(
        {"name": None, "id": "anon-1", "file": "a.rules", "line": 4, "text": 'ON a.b > 1 THEN log("x")'}
    ) == ('a.rules:4 ON a.b > 1 THEN log("x")')


def test_every_write_code_has_an_http_status_and_is_in_the_docs() -> None:
    from pathlib import Path

    from picogate._router import ErrorCode
    from picogate.api import STATUS_OF_CODE

    assert set(STATUS_OF_CODE) == set(ErrorCode)
    assert STATUS_OF_CODE[ErrorCode.OK] == 200
    assert all(400 <= s < 600 for c, s in STATUS_OF_CODE.items() if c is not ErrorCode.OK)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    table = doc.split("The HTTP status follows the code:", 1)[1].split("\n\n", 2)[1]
    for code, status in STATUS_OF_CODE.items():
        row = next((line for line in table.splitlines() if f"`{code.value}`" in line), None)
        assert row is not None, f"docs/api.md does not give the HTTP status of {code.value}"
        assert f"| {status}" in row, row


def test_watch_redraws_and_says_when_the_gateway_stops_answering() -> None:
    from picogate.api._client import GatewayUnreachable
    from picogate.api._watch import watch

    answers: list[Any] = [
        snapshot(),
        snapshot(),
        GatewayUnreachable("http://127.0.0.1:9108", "connection refused"),
        KeyboardInterrupt(),
    ]

    class Client:
        url = "http://127.0.0.1:9108"

        def get(self, path: str) -> Any:
            assert path == "/snapshot"
            answer = answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer

    out = io.StringIO()
    console = Console(file=out, width=100, height=30, force_terminal=True, color_system=None)
    assert watch(Client(), interval=0, console=console) == 0  # type: ignore[arg-type]
    assert answers == []
    text = out.getvalue()
    assert "Boiler at 90 °C" in text
    assert "no gateway answers at http://127.0.0.1:9108 (connection refused); showing the last view" in text


def test_watch_once_prints_all_of_the_view() -> None:
    from picogate.api._watch import watch

    class Client:
        url = "http://127.0.0.1:9108"

        def get(self, path: str) -> Any:
            return snapshot(points=60)

    out = io.StringIO()
    console = Console(file=out, width=100, height=20, color_system=None)
    assert watch(Client(), once=True, console=console) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert "extra56" in text
    assert "more points" not in text
    assert "boiler.setpoint = 700" in text


@pytest.mark.parametrize(
    ("peer", "local", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("::1", "::1", True),
        ("192.168.1.5", "192.168.1.5", True),  # picogate write on the gateway, metrics.host its LAN address
        ("::ffff:192.168.1.5", "192.168.1.5", True),
        ("192.168.1.7", "192.168.1.5", False),
        ("10.0.0.9", "0.0.0.0", False),
        ("0.0.0.0", "0.0.0.0", False),
        (None, "192.168.1.5", False),
        ("192.168.1.7", None, False),
    ],
)
def test_who_may_write_by_default(peer: str | None, local: str | None, allowed: bool) -> None:
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    from picogate.api._server import from_this_machine, loopback_only

    assert from_this_machine(peer, local) is allowed
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: {
        "peername": (peer, 51000) if peer else None,
        "sockname": (local, 9108) if local else None,
    }.get(name, default)
    request = make_mocked_request("POST", "/api/v1/writes", transport=transport)
    refusal = loopback_only(request)
    assert (refusal is None) is allowed
    if not allowed:
        assert "only from this machine" in str(refusal)
