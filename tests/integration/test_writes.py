"""Writes against real peers: every write happens once, on time, to the right place — or not at
all, with a code that says which (pymodbus devices, mosquitto, a CoAP client, the rule engine).

- a CoAP PUT of a CBOR bignum to a scaled Modbus point is out_of_range; the agent goes on;
- a slow device behind many MQTT commands: a healthy device on another line is not held up, the
  slow one's late commands come back stale or busy, and none reaches it after its deadline;
- retained commands under MQTT 5 (refused) and 3.1.1 (the documented limit);
- an oversized command is refused unread, with a short result and a short audit line;
- a repeated id is answered once and written once;
- two rules that undo each other are held to the point's rate limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import pytest
from aiocoap.numbers.codes import Code

from _agent import Msg, base_config, eventually, recorder, running_gateway, wait_msgs
from _peers import free_port

ROOT = "picogate/gw1"


def device(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "200ms",
        "timeout": "3s",
        "points": [
            {"name": "sp", "table": "holding", "address": 1, "writable": True},
            {
                "name": "level",
                "table": "holding",
                "address": 2,
                "type": "int16",
                "scale": 0.1,
                "writable": True,
            },
            {"name": "run", "table": "coil", "address": 0, "writable": True},
        ],
        **extra,
    }


def results(msgs: list[Msg]) -> dict[str, dict[str, Any]]:
    return {m.json()["id"]: m.json() for m in msgs if m.topic.endswith("/result")}


def result_count(n: int) -> Any:
    return lambda ms: sum(m.topic.endswith("/result") for m in ms) >= n


# --------------------------------------------------------------------------- never a crash


@pytest.fixture
async def coap_client() -> Any:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        yield ctx
    finally:
        await ctx.shutdown()


async def test_coap_bignum_to_a_scaled_modbus_point_is_out_of_range_and_the_agent_goes_on(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, coap_client: Any
) -> None:
    """Before: OverflowError in the Modbus encoder ended the line's task, and the agent (rc 1)."""
    dev = await modbus_tcp_server({1: {"hr": {1: 7, 2: 215}}})
    port = free_port()
    cfg = base_config(
        tmp_path, mosquitto.port, [device("boiler", dev.port)], coap={"bind": "127.0.0.1", "port": port}
    )
    async with running_gateway(cfg) as gw:
        url = f"coap://127.0.0.1:{port}/p/boiler/level"
        server = next(c for c in gw.parts.components if c.name == "coap-server")
        async with asyncio.timeout(5):
            await server.ready.wait()  # type: ignore[attr-defined]

        async def put(payload: bytes, cf: int) -> Any:
            msg = aiocoap.Message(code=Code.PUT, uri=url, payload=payload, content_format=cf)
            async with asyncio.timeout(10):
                return await coap_client.request(msg).response

        await eventually(lambda: ("boiler", "level") in gw.pipeline.latest, what="first poll")
        for big in (10**400, -(10**400)):
            r = await put(cbor2.dumps(big), 60)  # application/cbor: a bignum (tag 2 / 3)
            assert r.code == Code.BAD_REQUEST, (r.code, r.payload)
            assert r.payload.startswith(b"out_of_range"), r.payload
            assert len(r.payload) < 300
        assert not dev.writes
        await asyncio.sleep(0.5)  # a poll or two: the line is still running
        assert gw.ready.is_set()
        r = await put(b"12.5", 50)
        assert r.code == Code.CHANGED, r.payload
        assert dev.get_holding(1, 2) == [125]


# --------------------------------------------------------------------------- slow device


async def test_a_slow_device_does_not_hold_up_another_and_late_commands_are_never_written(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """Before: behind a semaphore and one write queue per line, commands waited without bound,
    moved the device long after they were sent, and were reported `timeout` although written."""
    slow = await modbus_tcp_server({1: {"hr": {1: 0}, "delay": 1.0}})  # answers after 1 s
    healthy = await modbus_tcp_server({1: {"hr": {1: 0}}})
    ttl = 2.0
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [device("slow", slow.port), device("healthy", healthy.port)],
        mqtt={"command_ttl": f"{ttl:g}s"},
    )
    n_slow, n_healthy = 100, 8
    sent_at: dict[int, float] = {}
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/healthy/sp" for m in ms))
            for i in range(n_slow):
                now = time.time()
                sent_at[1000 + i] = now
                rec.publish(f"{ROOT}/cmd/slow/sp/set", {"v": 1000 + i, "id": f"s{i}", "ts": int(now * 1000)})
            for i in range(n_healthy):
                rec.publish(f"{ROOT}/cmd/healthy/sp/set", {"v": i + 1, "id": f"h{i}"})
            msgs = await wait_msgs(rec, result_count(n_slow + n_healthy), 30, "every result")
    got = results(msgs)
    stream = [m.json()["id"] for m in msgs if m.topic.endswith("/result")]

    # the healthy device: every command written at once, before any slow write was confirmed
    assert [got[f"h{i}"]["code"] for i in range(n_healthy)] == ["ok"] * n_healthy
    last_healthy = max(stream.index(f"h{i}") for i in range(n_healthy))
    assert not [rid for rid in stream[:last_healthy] if rid.startswith("s") and got[rid]["code"] == "ok"]
    assert [w.values for w in healthy.writes] == [(i + 1,) for i in range(n_healthy)]

    # the slow device: late commands stale, the others refused at once (the point's rate limit,
    # the device's bounded queue), at most 32 (commands.queue_per_device) ever waiting; no `timeout`
    codes = [got[f"s{i}"]["code"] for i in range(n_slow)]
    assert set(codes) <= {"ok", "stale", "busy", "rate_limited", "outcome_unknown"}, set(codes)
    assert codes.count("stale") >= 1
    assert len(codes) - codes.count("busy") - codes.count("rate_limited") <= 32
    written = [w.values[0] for w in slow.writes]
    assert len(written) == len(set(written))  # each at most once
    ok = {1000 + i for i, c in enumerate(codes) if c == "ok"}
    assert ok <= set(written)
    refused = {1000 + i for i, c in enumerate(codes) if c in ("stale", "busy", "rate_limited")}
    assert not refused & set(written)  # what was refused never reached the device
    for w in slow.writes:  # and nothing reached it after its deadline (ts + ttl)
        # (0.5 s: from the frame leaving the gateway to the peer's event loop reading it)
        assert w.arrived <= sent_at[int(w.values[0])] + ttl + 0.5, (w, sent_at[int(w.values[0])])


# --------------------------------------------------------------------------- retained


async def test_retained_command_published_while_connected_is_refused_under_mqtt5(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """Before: a retained command published while the gateway was connected was executed (the
    broker clears the retain flag for live delivery) and stayed on the broker."""
    dev = await modbus_tcp_server({1: {"hr": {1: 40}}})
    cfg = base_config(tmp_path, mosquitto.port, [device("boiler", dev.port)], mqtt={"protocol": "5"})
    topic = f"{ROOT}/cmd/boiler/sp/set"
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/boiler/sp" for m in ms))
            rec.publish(topic, {"v": 99, "id": "kept"}, retain=True)
            msgs = await wait_msgs(rec, lambda ms: "kept" in results(ms), 10, "result")
            res = results(msgs)["kept"]
            assert (res["ok"], res["code"]) == (False, "bad_request")
            assert "retained" in res["error"]
            rec.publish(topic, b"", retain=True)  # deleting it is not a command: no result
            rec.publish(topic, {"v": 41, "id": "live"})
            msgs = await wait_msgs(rec, lambda ms: "live" in results(ms), 10, "result")
            assert results(msgs)["live"]["code"] == "ok"
            assert len([m for m in msgs if m.topic.endswith("/result")]) == 2
    assert [w.values for w in dev.writes] == [(41,)]


async def test_retained_command_under_mqtt311_is_refused_when_replayed(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """MQTT 3.1.1 cannot tell a live retained command from another (docs/mqtt.md): it is
    executed once; replayed at the next subscription it is refused, and never written again."""
    dev = await modbus_tcp_server({1: {"hr": {1: 40}}})
    cfg = base_config(tmp_path, mosquitto.port, [device("boiler", dev.port)], mqtt={"protocol": "3.1.1"})
    topic = f"{ROOT}/cmd/boiler/sp/set"
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/boiler/sp" for m in ms))
            rec.publish(topic, {"v": 99, "id": "kept"}, retain=True)
            msgs = await wait_msgs(rec, lambda ms: "kept" in results(ms), 10, "result")
            assert results(msgs)["kept"]["code"] == "ok"  # the limit of 3.1.1
        async with running_gateway(cfg):  # a new subscription: the broker replays it
            msgs = await wait_msgs(rec, result_count(2), 10, "the replay's result")
            replay = [m.json() for m in msgs if m.topic.endswith("/result")][-1]
            assert (replay["id"], replay["code"]) == ("kept", "bad_request")
            assert "retained" in replay["error"]
        rec.publish(topic, b"", retain=True)
    assert [w.values for w in dev.writes] == [(99,)]


# --------------------------------------------------------------------------- size, ids


async def test_an_oversized_command_is_refused_with_a_short_result_and_audit_line(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a 20 MB command came back as a 20 MB result (the value echoed with !r) and 42 MB
    of log."""
    dev = await modbus_tcp_server({1: {"hr": {1: 40}}})
    cfg = base_config(tmp_path, mosquitto.port, [device("boiler", dev.port)])
    topic = f"{ROOT}/cmd/boiler/sp/set"
    with caplog.at_level(logging.INFO), recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/boiler/sp" for m in ms))
            rec.publish(topic, {"v": "x" * 200_000, "id": "huge"})  # above commands.max_payload
            rec.publish(topic, {"v": "y" * 60_000, "id": "long"})  # below it: bad_type
            msgs = await wait_msgs(rec, lambda ms: {"", "long"} <= set(results(ms)), 15, "results")
    got = results(msgs)
    # not read at all, so its id is not known: the result has none
    assert (got[""]["code"], got["long"]["code"]) == ("bad_request", "bad_type")
    assert "65536" in got[""]["error"]
    for m in msgs:
        if m.topic.endswith("/result"):
            assert len(m.payload) < 600, m.payload[:200]
    audit = [r for r in caplog.records if r.name == "picogate.audit"]
    assert len(audit) == 2
    assert all(len(r.getMessage()) < 1000 for r in audit)
    assert sum(len(r.getMessage()) for r in caplog.records) < 20_000
    assert not dev.writes


async def test_a_repeated_id_is_answered_twice_and_written_once(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": {1: 40}}})
    cfg = base_config(tmp_path, mosquitto.port, [device("boiler", dev.port)])
    topic = f"{ROOT}/cmd/boiler/sp/set"
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/boiler/sp" for m in ms))
            rec.publish(topic, {"v": 650, "id": "once"})
            await wait_msgs(rec, result_count(1), 10, "first result")
            rec.publish(topic, {"v": 650, "id": "once"})  # the client's retry
            rec.publish(topic, {"v": 651, "id": "once"})  # the same id for another value
            msgs = await wait_msgs(rec, result_count(3), 10, "every result")
    answers = [m.json() for m in msgs if m.topic.endswith("/result")]
    assert [(a["id"], a["code"]) for a in answers] == [
        ("once", "ok"),
        ("once", "ok"),
        ("once", "bad_request"),
    ]
    assert [w.values for w in dev.writes] == [(650,)]


# --------------------------------------------------------------------------- write storms


async def test_two_rules_undoing_each_other_are_held_to_the_points_rate_limit(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """Before: such rules wrote the device on every poll, for ever (an EEPROM wears out)."""
    dev = await modbus_tcp_server({1: {"co": [False]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "flip.rules").write_text(
        "RULE start\n  ON NOT boiler.run THEN set(boiler.run, true)\nEND\n"
        "RULE stop\n  ON boiler.run THEN set(boiler.run, false)\nEND\n"
    )
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [device("boiler", dev.port, poll="50ms")],
        rules={"dir": str(rules_dir), "debounce": "50ms", "status_interval": "200ms"},
        commands={"points": {"boiler.run": {"burst": 3, "interval": "1m"}}},
    )
    status = f"{ROOT}/rules/status"

    def rule_refused(ms: list[Msg]) -> bool:
        return any(m.topic == status and "rate_limited" in json.dumps(m.json()["rules"]) for m in ms)

    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            await eventually(lambda: gw.router.stats.rate_limited["boiler.run"] >= 1, 20, "a refusal")
            await wait_msgs(rec, rule_refused, 10, "a rule errored with rate_limited")
            await asyncio.sleep(1)  # ten polls more: nothing else is written
            metrics = gw.parts.metrics.render().decode()
            summary = gw.router.summary()
    # the burst, then nothing for a minute: the refused rule shows errored, the storm stops
    assert len([w for w in dev.writes if w.table == "co"]) == 3
    assert summary["rate_limited"] >= 1
    assert 'picogate_write_rate_limited_total{action="refused",point="boiler.run"}' in metrics
