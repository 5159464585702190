"""Every result code has its answer in every protocol; the MQTT and EdgeX ingresses are bounded
(busy, never waiting), refuse oversized commands unread, and leave one audit line per write."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest

from picogate._model import PointInfo, PointType, Value
from picogate._registry import PointRegistry
from picogate._router import CommandRouter, ErrorCode, RateLimit, WritePolicy, WriteTicket
from picogate.coap._server import WRITE_CODES
from picogate.edgex._commands import STATUS, CommandError, Commands, EdgexNames
from picogate.mqtt._client import IncomingMessage
from picogate.mqtt._sink import CommandIngress
from picogate.mqtt._topics import Topics


def test_every_code_has_an_edgex_status_and_a_coap_answer() -> None:
    assert set(STATUS) == set(ErrorCode)
    assert set(WRITE_CODES) == set(ErrorCode)
    assert STATUS[ErrorCode.OUTCOME_UNKNOWN] == 504
    assert WRITE_CODES[ErrorCode.OUTCOME_UNKNOWN] == "5.04"
    assert STATUS[ErrorCode.RATE_LIMITED] == 429
    assert WRITE_CODES[ErrorCode.RATE_LIMITED] == "4.29"


class GatedWriter:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[Value] = []

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        ticket.send()
        self.sent.append(value)
        await self.gate.wait()


def router(**policy: Any) -> tuple[CommandRouter, GatedWriter]:
    registry = PointRegistry()
    for dev in ("a", "b"):
        registry.add(PointInfo(dev, "sp", PointType.UINT16, writable=True))
    r = CommandRouter(registry, policy=WritePolicy(rate_limit=RateLimit(interval=0), **policy))
    w = GatedWriter()
    r.register_writer("a", w)
    r.register_writer("b", w)
    return r, w


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.audit for r in caplog.records if r.name == "picogate.audit"]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- MQTT


def ingress(r: CommandRouter) -> tuple[CommandIngress, list[tuple[str, dict[str, Any]]]]:
    replies: list[tuple[str, dict[str, Any]]] = []
    topics = Topics("picogate", "gw1")
    return CommandIngress(topics, r, reply=lambda t, p: replies.append((t, orjson.loads(p)))), replies


def msg(device: str, body: Any, *, retain: bool = False) -> IncomingMessage:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    return IncomingMessage(f"picogate/gw1/cmd/{device}/sp/set", payload, 1, retain)


async def test_mqtt_ingress_refuses_busy_at_once_and_audits_every_command(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: commands beyond a Semaphore(64) waited without bound, all held in memory."""
    r, writer = router(max_pending=3, queue_per_device=100)
    mqtt, replies = ingress(r)
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        for i in range(10):
            mqtt.handle(msg("a", {"v": i, "id": f"c{i}"}))
        assert [c["code"] for _, c in replies] == ["busy"] * 7  # answered at once
        assert mqtt.pending == 3
        writer.gate.set()
        await asyncio.sleep(0.05)
        await mqtt.close()
    codes = [c["code"] for _, c in replies]
    assert sorted(codes) == ["busy"] * 7 + ["ok"] * 3
    assert writer.sent == [0, 1, 2]
    assert len(audit_lines(caplog)) == 10


async def test_mqtt_ingress_refuses_an_oversized_command_unread(caplog: pytest.LogCaptureFixture) -> None:
    r, writer = router(max_payload=1024)
    mqtt, replies = ingress(r)
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        mqtt.handle(msg("a", {"v": "x" * 5000, "id": "big"}))
        mqtt.handle(msg("a", {"v": 1, "id": "i" * 300}))
        mqtt.handle(msg("a", b""))  # deletes a retained command: not a command at all
    assert [(c["code"], c["id"]) for _, c in replies] == [("bad_request", ""), ("bad_request", "")]
    assert "1024" in replies[0][1]["error"]
    assert "id" in replies[1][1]["error"]
    assert all(len(orjson.dumps(c)) < 400 for _, c in replies)
    lines = audit_lines(caplog)
    assert len(lines) == 2
    assert lines[0]["value"].startswith("<")
    assert mqtt.ignored == 1
    assert writer.sent == []


async def test_mqtt_ts_shortens_the_deadline() -> None:
    r, writer = router()
    writer.gate.set()
    mqtt, replies = ingress(r)
    old = int((time.time() - 11) * 1000)  # older than the MQTT deadline (10 s)
    recent = int((time.time() - 1) * 1000)
    future = int((time.time() + 3600) * 1000)  # a clock ahead: no longer than the deadline
    mqtt.handle(msg("a", {"v": 1, "id": "old", "ts": old}))
    mqtt.handle(msg("a", {"v": 2, "id": "recent", "ts": recent}))
    mqtt.handle(msg("a", {"v": 3, "id": "future", "ts": future}))
    await asyncio.sleep(0.05)
    await mqtt.close()
    got = {c["id"]: c["code"] for _, c in replies}
    assert got == {"old": "stale", "recent": "ok", "future": "ok"}
    assert writer.sent == [2, 3]


# --------------------------------------------------------------------------- EdgeX


def commands(r: CommandRouter) -> Commands:
    return Commands(r._registry, r, lambda d, p: None, EdgexNames("picogate", "picogate-", "Readings"))


async def test_edgex_sets_beyond_the_bound_are_refused_busy(caplog: pytest.LogCaptureFixture) -> None:
    r, writer = router(max_pending=2)
    cmds = commands(r)
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        tasks = [asyncio.create_task(cmds.set("a", "sp", {"sp": str(i)}, f"r{i}")) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(CommandError) as exc:
            await cmds.set("b", "sp", {"sp": "9"}, "r9")
        assert exc.value.status == 503
        assert str(exc.value).startswith("busy")
        writer.gate.set()
        await asyncio.gather(*tasks)
    assert writer.sent == [0, 1]
    assert [line["code"] for line in audit_lines(caplog)] == ["busy", "ok", "ok"]


async def test_edgex_oversized_and_early_refusals_leave_one_audit_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r, writer = router(max_payload=1024)
    cmds = commands(r)
    cases = [
        (("a", "sp", {"sp": "1"}), {"size": 5000}, 413),
        (("ghost", "sp", {"sp": "1"}), {}, 404),
        (("a", "sp", {"nope": "1"}), {}, 404),
        (("a", "sp", {"sp": "hot"}), {}, 400),
        (("a", "sp", ["x"]), {}, 400),
    ]
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        for args, kw, status in cases:
            with pytest.raises(CommandError) as exc:
                await cmds.set(*args, **kw)
            assert exc.value.status == status, args
    codes = [line["code"] for line in audit_lines(caplog)]
    assert codes == ["bad_request", "unknown_point", "unknown_point", "bad_type", "bad_request"]
    assert writer.sent == []
