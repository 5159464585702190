"""Nothing accepted is lost: broker outages, kill -9 of the agent, SIGTERM, a full outbox.

The field device holds a counter that the test advances only after the agent has read the current
value (a request reached the device after the change), so with deadband 0 every value is accepted
once and the subscriber must see every one of them, whatever happened in between.  Delivery is at
least once: duplicates are allowed, gaps are not, and per point the first arrivals are in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from _agent import AgentProcess, MqttRecorder, base_config, eventually, recorder, running_gateway, wait_msgs
from _peers import ModbusTcpPeer
from picogate.gateway import GatewayConfig

ROOT = "picogate/gw1"
TOPIC = f"{ROOT}/data/meter/n"


def meter(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "meter",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "50ms",
        "timeout": "500ms",
        "points": [{"name": "n", "table": "holding", "address": 0}],
        **extra,
    }


class GatedCounter:
    """Counts holding registers [0, width) of unit 1 up together; a value is replaced only once a
    request reached the device after it was set (so a poll read it), and no sooner than `period`."""

    def __init__(self, peer: ModbusTcpPeer, *, width: int = 1, period: float = 0.1) -> None:
        self.peer = peer
        self.width = width
        self.period = period
        self.value = 0
        self.running = True
        peer.set_holding(1, 0, [0] * width)

    async def run(self) -> None:
        while self.running:
            seen = self.peer.requests[1]
            await asyncio.sleep(self.period)
            # the agent may be down for a while (kill -9, restart): wait for its next request
            await eventually(lambda s=seen: not self.running or self.peer.requests[1] > s, 60, "a poll")
            if not self.running:
                return
            self.value += 1
            self.peer.set_holding(1, 0, [self.value] * self.width)

    @contextlib.asynccontextmanager
    async def counting(self) -> AsyncIterator[GatedCounter]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self.running = False
            await task


def first_arrivals(values: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def received(rec: MqttRecorder, topic: str = TOPIC) -> list[int]:
    return [m.json()["v"] for m in rec.on(topic)]


def assert_in_order(rec: MqttRecorder, topic: str = TOPIC) -> None:
    """Per point, first arrivals come in order (ts and value); repeats are exact duplicates."""
    firsts: dict[int, bytes] = {}
    order: list[tuple[int, int]] = []
    for m in rec.on(topic):
        body = m.json()
        if body["v"] in firsts:
            assert firsts[body["v"]] == m.payload, f"{body['v']} came twice with different payloads"
            continue
        firsts[body["v"]] = m.payload
        order.append((body["ts"], body["v"]))
    assert order == sorted(order), "first arrivals out of order"


async def has_value(rec: MqttRecorder, value: int, within: float = 15, topic: str = TOPIC) -> None:
    def seen(ms: list[Any]) -> bool:
        return any(m.topic == topic and m.json()["v"] == value for m in ms)

    await wait_msgs(rec, seen, within, f"n = {value}")


def outbox_rows(data_dir: Path, scratch: Path) -> list[tuple[str, bytes]]:
    """(topic, payload) of every record in a stopped agent's outbox, read from a copy of its files."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / "outbox.sqlite"
    for suffix in ("", "-wal"):
        src = data_dir / f"outbox.sqlite{suffix}"
        if src.exists():
            shutil.copyfile(src, scratch / f"outbox.sqlite{suffix}")
    db = sqlite3.connect(copy)
    try:
        return [(k, bytes(p)) for k, p in db.execute("SELECT key, payload FROM outbox ORDER BY id")]
    finally:
        db.close()


def live_outbox_rows(data_dir: Path) -> list[tuple[str, bytes]]:
    """(topic, payload) of every record in a running agent's outbox (a read-only WAL reader)."""
    db = sqlite3.connect(f"file:{data_dir / 'outbox.sqlite'}?mode=ro", uri=True)
    try:
        return [(k, bytes(p)) for k, p in db.execute("SELECT key, payload FROM outbox ORDER BY id")]
    finally:
        db.close()


def subscriber(broker: Any, name: str) -> Any:
    """A persistent-session subscriber: the broker keeps its messages while it is away."""
    return recorder(broker.host, broker.port, f"{ROOT}/#", client_id=name, clean=False)


# --------------------------------------------------------------------------- broker outage


async def test_broker_outage_loses_nothing(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    broker = make_mosquitto(persistence=True)
    dev = await modbus_tcp_server({1: None})
    counter = GatedCounter(dev)
    accepted: list[int] = []
    with subscriber(broker, "outage-sub") as rec:
        async with running_gateway(base_config(tmp_path, broker.port, [meter(dev.port)])) as gw:
            gw.pipeline.listeners.append(lambda rs: accepted.extend(r.value for r in rs if r.point == "n"))
            sink = gw.parts.sinks[0]
            await has_value(rec, 0)
            async with counter.counting():
                await eventually(lambda: counter.value >= 8, 10, "values flowing")
                await asyncio.to_thread(broker.stop)
                at_stop = counter.value
                await eventually(lambda: counter.value >= at_stop + 15, 15, "values while the broker is down")
                assert gw.parts.outbox.depth("mqtt") >= 10  # held, not sent
                await asyncio.to_thread(broker.start)
                await eventually(lambda: sink.stats.connects >= 2, 10, "reconnected")
                await eventually(lambda: counter.value >= at_stop + 25, 10, "values after the outage")
            last = counter.value
            await has_value(rec, last)
            await eventually(lambda: gw.parts.outbox.depth("mqtt") == 0, 5, "outbox drained")
    assert accepted == list(range(last + 1)), "each value accepted once (deadband 0)"
    got = received(rec)
    missing = sorted(set(accepted) - set(got))
    assert not missing, f"lost {len(missing)} of {len(accepted)}: {missing[:20]}"
    assert first_arrivals(got) == accepted
    assert_in_order(rec)


# --------------------------------------------------------------------------- the agent process


def agent_config(tmp_path: Path, broker: Any, dev: ModbusTcpPeer) -> dict[str, Any]:
    return base_config(tmp_path, broker.port, [meter(dev.port)])


async def test_kill_9_loses_nothing_accepted(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """kill -9 while the broker is down: what the agent had accepted is in its outbox file and is
    delivered by the next run."""
    broker = make_mosquitto(persistence=True)
    dev = await modbus_tcp_server({1: None})
    counter = GatedCounter(dev)
    cfg = agent_config(tmp_path, broker, dev)
    agent = AgentProcess(cfg, tmp_path / "agent")
    try:
        with subscriber(broker, "kill-sub") as rec:
            agent.start()
            await has_value(rec, 0, 20)
            async with counter.counting():
                await eventually(lambda: counter.value >= 5, 10, "values flowing")
                await asyncio.to_thread(broker.stop)
                at_stop = counter.value
                await eventually(lambda: counter.value >= at_stop + 10, 15, "values while the broker is down")
                await asyncio.to_thread(agent.kill9)
                at_kill = counter.value
                rows = outbox_rows(Path(cfg["gateway"]["data_dir"]), tmp_path / "c")
                held = [orjson.loads(p)["v"] for k, p in rows if k == TOPIC]
                assert len(held) >= 8, held  # accepted while the broker was down
                assert held == list(range(held[0], held[-1] + 1))
                await asyncio.to_thread(broker.start)
                agent.start()
                await eventually(lambda: counter.value >= at_kill + 5, 20, "values after the restart")
            last = counter.value
            await has_value(rec, last, 15)
            got = set(received(rec))
    finally:
        agent.stop()
    missing_held = sorted(set(held) - got)
    assert not missing_held, f"accepted before kill -9 but never delivered: {missing_held}"
    before = sorted(v for v in got if v <= held[-1])
    assert before == list(range(held[-1] + 1)), "a gap before the kill"
    after = sorted(v for v in got if v > held[-1])
    assert after == list(range(after[0], last + 1)), "a gap after the restart"
    # Values read but not yet committed when the process died are not accepted, so may be lost:
    # at most the last commit interval's worth (a value or two at this pace).
    assert after[0] - held[-1] <= 5, (held[-1], after[0])
    assert_in_order(rec)
    assert "Traceback" not in agent.log()


async def test_sigterm_flushes_everything(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """SIGTERM while the outbox holds a backlog: the agent delivers it, says offline, exits 0."""
    broker = make_mosquitto(persistence=True)
    dev = await modbus_tcp_server({1: None})
    counter = GatedCounter(dev)
    cfg = agent_config(tmp_path, broker, dev)
    data_dir = Path(cfg["gateway"]["data_dir"])
    agent = AgentProcess(cfg, tmp_path / "agent")
    try:
        with subscriber(broker, "term-sub") as rec:
            agent.start()
            await has_value(rec, 0, 20)
            async with counter.counting():
                await eventually(lambda: counter.value >= 5, 10, "values flowing")
                await asyncio.to_thread(broker.stop)
                at_stop = counter.value
                await eventually(lambda: counter.value >= at_stop + 10, 15, "a backlog")
            # what the agent holds now must all arrive, though the broker is only just back
            held = [orjson.loads(p)["v"] for k, p in live_outbox_rows(data_dir) if k == TOPIC]
            assert len(held) >= 8, held
            await asyncio.to_thread(broker.start)
            code = await asyncio.to_thread(agent.terminate, 20)
            assert code == 0, agent.log()[-3000:]
            await has_value(rec, held[-1], 10)
            got = received(rec)
    finally:
        agent.stop()
    assert set(held) <= set(got)
    assert sorted(set(got)) == list(range(max(got) + 1))
    assert_in_order(rec)
    assert outbox_rows(data_dir, tmp_path / "c") == []  # nothing accepted was left behind
    assert "still in the outbox" not in agent.log()  # the drain finished in time
    with recorder(broker.host, broker.port, f"{ROOT}/status") as late:
        status = (await asyncio.to_thread(late.wait_topic, f"{ROOT}/status"))[-1]
    assert status.retain
    assert status.json()["state"] == "offline"


# --------------------------------------------------------------------------- a full outbox


async def test_full_outbox_drops_oldest_and_says_so(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """A broker outage longer than the outbox holds: the oldest records go, counted and reported.

    One point, so one record a poll whatever the encoder bundles; the schema's minimum of 1000
    records is bypassed with model_copy (20 records fill in about a second)."""
    broker = make_mosquitto(persistence=True)
    dev = await modbus_tcp_server({1: None})
    counter = GatedCounter(dev, period=0.03)
    cfg = GatewayConfig.model_validate(base_config(tmp_path, broker.port, [meter(dev.port)]))
    cfg = cfg.model_copy(update={"outbox": cfg.outbox.model_copy(update={"max_records": 20})})
    accepted: list[int] = []
    with subscriber(broker, "full-sub") as rec:
        async with running_gateway(cfg) as gw:
            outbox = gw.parts.outbox
            gw.pipeline.listeners.append(lambda rs: accepted.extend(r.value for r in rs if r.point == "n"))
            await has_value(rec, 0)
            async with counter.counting():
                await eventually(lambda: counter.value >= 3, 10, "values flowing")
                await asyncio.to_thread(broker.stop)
                at_stop = len(accepted)
                await eventually(lambda: len(accepted) - at_stop >= 50, 20, "more than the outbox holds")
                assert outbox.depth("mqtt") == 20
                assert outbox.dropped("mqtt") >= 25
            await eventually(lambda: accepted[-1] == counter.value, 5, "the last value accepted")
            await asyncio.to_thread(broker.start)
            last = counter.value
            await has_value(rec, last)
            await eventually(lambda: outbox.depth("mqtt") == 0, 10, "drained")
            dropped = outbox.dropped("mqtt")
            statuses = [m.json() for m in rec.on(f"{ROOT}/status") if m.json()["state"] == "online"]
    assert accepted == list(range(last + 1))
    got = set(received(rec))
    lost = sorted(set(accepted) - got)
    assert len(lost) == dropped, "every record lost was counted as dropped, and only those"
    # the oldest went: one run of values, after which everything arrived
    assert lost == list(range(lost[0], lost[-1] + 1)), lost
    assert set(range(lost[-1] + 1, last + 1)) <= got
    assert_in_order(rec)
    # the status says so when the agent is back
    assert statuses[-1]["outbox"]["dropped"] == dropped, statuses[-1]


async def test_idle_gateway_reconnects_and_takes_commands_after_a_broker_restart(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """Nothing changes on the device, so there is nothing to deliver: the lost connection must still
    be noticed and re-made, or the gateway would sit deaf to commands until a value moved."""
    broker = make_mosquitto(persistence=True)
    dev = await modbus_tcp_server({1: None})
    dev.set_holding(1, 0, [7])
    point = {"name": "n", "table": "holding", "address": 0, "writable": True}
    cfg = base_config(tmp_path, broker.port, [meter(dev.port, points=[point])])
    async with running_gateway(cfg) as gw:
        sink = gw.parts.sinks[0]
        with subscriber(broker, "idle-sub") as rec:
            await has_value(rec, 7)
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not sink.stats.connected, 10, "the lost connection noticed while idle")
        await asyncio.to_thread(broker.start)
        await eventually(lambda: sink.stats.connects >= 2, 15, "reconnected with nothing to send")
        assert gw.parts.outbox.depth("mqtt") == 0
        with recorder(broker.host, broker.port, f"{ROOT}/cmd/#") as rec:
            rec.publish(f"{ROOT}/cmd/meter/n/set", {"v": 42, "id": "after-restart"})
            await wait_msgs(rec, lambda ms: any(m.topic.endswith("/result") for m in ms), 10, "result")
            result = next(m.json() for m in rec.on(f"{ROOT}/cmd/meter/n/result"))
        assert result["ok"] is True, result
    assert dev.get_holding(1, 0) == [42]
