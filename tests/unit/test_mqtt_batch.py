"""QoS 1 messages confirmed as one batch (`MqttClient.publish_many`, the sink's path), against the
scripted broker: a batch is settled only when every one of its PUBACKs has come; a lost connection
fails it, and the outbox re-sends its records; a refused message is named by its place in the
batch, so the sink parks that message and no other."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _mqtt_scripted import ScriptedBroker
from picogate._outbox import Envelope, Outbox, Record
from picogate._sink import RunningSink
from picogate.mqtt import MqttClient, MqttLost, MqttSink, PublishBatch, Topics

CONNACK_5 = b"\x20\x03\x00\x00\x00"


async def until(pred: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what or pred}")
        await asyncio.sleep(0.01)


def topic_and_id(body: bytes) -> tuple[str, bytes]:
    """The topic and packet id of a QoS 1 PUBLISH's body (MQTT 3.1.1 or 5)."""
    n = int.from_bytes(body[:2], "big")
    return body[2 : 2 + n].decode(), body[2 + n : 4 + n]


class Acker:
    """A broker script: acknowledges every QoS 1 PUBLISH except those on `withhold` (in this
    connection), with the reason code `refuse` gives a topic (MQTT 5), and closes the
    connection when `drop` is set."""

    def __init__(self, withhold: set[str] = frozenset(), refuse: dict[str, int] | None = None) -> None:  # type: ignore[assignment]
        self.withhold = set(withhold)
        self.refuse = refuse or {}
        self.drop = asyncio.Event()
        self.connections = 0
        self.published: list[list[str]] = []  # topics, per connection

    async def __call__(
        self, broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        seen: list[str] = []
        self.published.append(seen)
        withhold, self.withhold = self.withhold, set()  # only in the first connection
        dropped = asyncio.ensure_future(self.drop.wait())
        try:
            while True:
                packet = asyncio.ensure_future(broker.read_packet(reader))
                await asyncio.wait({packet, dropped}, return_when=asyncio.FIRST_COMPLETED)
                if dropped.done():
                    packet.cancel()
                    self.drop.clear()
                    return  # the broker goes away: the connection closes
                first, body = packet.result()
                if first >> 4 != 3 or not first & 0x06:
                    continue
                topic, packet_id = topic_and_id(body)
                seen.append(topic)
                if topic in withhold:
                    continue
                code = self.refuse.get(topic)
                writer.write(
                    b"\x40\x02" + packet_id if code is None else b"\x40\x03" + packet_id + bytes([code])
                )
        finally:
            dropped.cancel()


async def test_a_batch_is_settled_only_when_every_puback_has_come() -> None:
    acker = Acker(withhold={"t/2"})
    async with ScriptedBroker(script=acker) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1")
        await client.connect()
        batch = client.batch()
        await client.publish_many([(f"t/{i}", b"x") for i in range(5)], batch)
        batch.seal()
        await until(lambda: client._inflight == 1, what="four PUBACKs")  # all but t/2's
        await asyncio.sleep(0.05)
        assert not batch.done.done()
        await client.disconnect()
        with pytest.raises(MqttLost):
            await batch.done


async def test_a_batch_is_not_settled_before_it_is_sealed() -> None:
    async with ScriptedBroker(script=Acker()) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1")
        await client.connect()
        batch = client.batch()
        await client.publish_many([("t/a", b"x")], batch)
        await until(lambda: client._inflight == 0, what="the PUBACK")
        assert not batch.done.done()  # more messages may come
        await client.publish_many([("t/b", b"x")], batch, retain=True)
        batch.seal()
        async with asyncio.timeout(5):
            await batch.done
        assert batch.refused == []
        await client.disconnect()


async def test_a_lost_connection_fails_the_batch_and_names_what_was_unacknowledged() -> None:
    acker = Acker(withhold={"t/3"})
    async with ScriptedBroker(script=acker) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1")
        await client.connect()
        batch = client.batch()
        await client.publish_many([(f"t/{i}", b"x") for i in range(5)], batch)
        batch.seal()
        await until(lambda: client._inflight == 1, what="four PUBACKs")
        acker.drop.set()
        with pytest.raises(MqttLost, match="1 message\\(s\\) unacknowledged, the oldest on 't/3'"):
            async with asyncio.timeout(5):
                await batch.done
        with pytest.raises(MqttLost):  # and nothing more goes into it
            await client.publish_many([("t/9", b"x")], batch)


async def test_refusals_are_named_by_their_place_in_the_batch() -> None:
    """MQTT 5: the broker refuses one message, the client another (a wildcard in its topic); the
    batch settles with both listed by ordinal, the others delivered."""
    acker = Acker(refuse={"t/3": 0x87})
    async with ScriptedBroker(connack=CONNACK_5, script=acker) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="5")
        await client.connect()
        batch = client.batch()
        await client.publish_many([("t/0", b"x"), ("t/+", b"x")], batch)
        await client.publish_many([("t/2", b"x"), ("t/3", b"x"), ("t/4", b"x")], batch)
        batch.seal()
        async with asyncio.timeout(5):
            await batch.done
        assert [(i, e.reason_code, e.local) for i, e in sorted(batch.refused)] == [
            (1, 0x90, True),
            (3, 0x87, False),
        ]
        assert acker.published[0] == ["t/0", "t/2", "t/3", "t/4"]
        await client.disconnect()


def test_drop_retrieves_the_error_of_a_failed_batch() -> None:
    loop = asyncio.new_event_loop()
    try:
        batch = PublishBatch(loop.create_future())
        batch.done.set_exception(MqttLost("gone"))
        batch.drop()
        assert batch.done._log_traceback is False  # type: ignore[attr-defined]
        pending = PublishBatch(loop.create_future())
        pending.drop()
        assert pending.done.cancelled()
    finally:
        loop.close()


def record(i: int) -> Envelope:
    return Envelope("mqtt", f"pg/gw/data/d{i}/", b"a\x00{}\x00b\x00{}", 1, False, 2)


async def test_the_sink_replays_a_batch_whose_connection_was_lost_before_its_last_puback(
    tmp_path: Path,
) -> None:
    """The broker acknowledges all but one message of the records and then goes away: no record
    is acknowledged in the outbox, and after the reconnect every message is sent again."""
    acker = Acker(withhold={"pg/gw/data/d1/b"})
    async with ScriptedBroker(script=acker) as broker, Outbox(tmp_path / "o.sqlite") as box:

        def factory(**kw: object) -> MqttClient:
            return MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1", **kw)  # type: ignore[arg-type]

        sink = MqttSink(
            client_factory=factory, topics=Topics("pg", "gw"), status_payload=lambda s: s.encode()
        )
        running = RunningSink(sink, box, min_delay=0.05, max_delay=0.1)
        await box.append([record(i) for i in range(3)])
        task = asyncio.create_task(running.run())
        try:
            data = [f"pg/gw/data/d{i}/{p}" for i in range(3) for p in "ab"]
            await until(
                lambda: acker.published and set(data) <= set(acker.published[0]), what="the first sending"
            )
            client = sink.client
            assert client is not None
            await until(lambda: client._inflight == 1, what="all PUBACKs but one")
            await asyncio.sleep(0.05)
            assert box.depth("mqtt") == 3  # not one record settled
            acker.drop.set()
            async with asyncio.timeout(10):
                assert await running.drained(10)
            assert acker.connections == 2
            assert [t for t in acker.published[1] if "/data/" in t] == data  # all again, in order
            assert box.depth("mqtt") == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_sink_parks_only_the_refused_message(tmp_path: Path) -> None:
    acker = Acker(refuse={"pg/gw/data/d1/a": 0x87})
    async with ScriptedBroker(connack=CONNACK_5, script=acker) as broker:

        def factory(**kw: object) -> MqttClient:
            return MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="5", **kw)  # type: ignore[arg-type]

        sink = MqttSink(
            client_factory=factory, topics=Topics("pg", "gw"), status_payload=lambda s: s.encode()
        )
        await sink.open()
        records = [
            Record(1, "mqtt", "pg/gw/data/d0/", b"a\x00{}\x00b\x00{}", 1, False, 0, parts=2),
            Record(2, "mqtt", "pg/gw/data/d+/x", b"{}", 1, False, 0),  # refused before sending
            Record(3, "mqtt", "pg/gw/data/d1/", b"a\x00{1}\x00b\x00{}", 1, False, 0, parts=2),
        ]
        async with asyncio.timeout(5):
            refused = await sink.deliver(records)
        assert [(r.record.id, r.key, r.payload) for r in refused] == [
            (2, "pg/gw/data/d+/x", b"{}"),
            (3, "pg/gw/data/d1/a", b"{1}"),
        ]
        assert sink.refused == 2
        await sink.close()


async def test_a_cancelled_delivery_leaves_no_unretrieved_error(caplog: pytest.LogCaptureFixture) -> None:
    """Cancelled while its second message waits for the only in-flight slot (the first is never
    acknowledged), then the connection is closed: the batch's MqttLost is nobody's to report."""
    acker = Acker(withhold={"pg/gw/data/d0/a"})
    async with ScriptedBroker(script=acker) as broker:

        def factory(**kw: object) -> MqttClient:
            return MqttClient(
                host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1", max_inflight=1, **kw
            )  # type: ignore[arg-type]

        sink = MqttSink(
            client_factory=factory, topics=Topics("pg", "gw"), status_payload=lambda s: s.encode()
        )
        await sink.open()
        client = sink.client
        assert client is not None
        await until(lambda: client._inflight == 0, what="the status message's PUBACK")
        record = Record(1, "mqtt", "pg/gw/data/d0/", b"a\x00{}\x00b\x00{}", 1, False, 0, parts=2)
        task = asyncio.create_task(sink.deliver([record]))
        await until(lambda: bool(client._slot_waiters), what="the second message to wait for a slot")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.close()
        del task
        gc.collect()
        await asyncio.sleep(0)
        assert "never retrieved" not in caplog.text
