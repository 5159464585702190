"""MqttSink.deliver with a fake client: refused messages are counted and do not block the outbox;
a lost connection makes the whole batch unavailable (to be re-sent)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterable
from typing import Any

import pytest

from picogate._outbox import Record
from picogate._sink import SinkUnavailable
from picogate.mqtt._client import MqttLost, MqttPublishRefused, PublishBatch
from picogate.mqtt._sink import MqttSink
from picogate.mqtt._topics import Topics


class FakeClient:
    def __init__(self, outcome: dict[str, BaseException | None]) -> None:
        self.outcome = outcome
        self.sent: list[str] = []
        self.connected = True

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        self.sent.append(topic)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        exc = self.outcome.get(topic)
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)
        return fut

    def batch(self) -> PublishBatch:
        return PublishBatch(asyncio.get_running_loop().create_future())

    async def publish_many(
        self,
        messages: Iterable[tuple[str, bytes]],
        batch: PublishBatch,
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        """Every message is acknowledged at once, or refused, or the connection is lost."""
        for topic, _ in messages:
            ordinal = len(self.sent)
            self.sent.append(topic)
            exc = self.outcome.get(topic)
            if isinstance(exc, MqttLost):
                raise exc
            if isinstance(exc, MqttPublishRefused):
                batch.refused.append((ordinal, exc))


def sink_with(client: FakeClient) -> MqttSink:
    sink = MqttSink(
        client_factory=lambda **_: client, topics=Topics("pg", "gw"), status_payload=lambda s: b"{}"
    )  # type: ignore[arg-type,return-value]
    sink.client = client  # type: ignore[assignment]
    return sink


def bundle(rid: int) -> Record:
    return Record(rid, "mqtt", "pg/gw/data/d/", b"a\x00{}\x00b\x00{}", 1, False, 0, parts=2)


async def test_refused_message_is_counted_and_the_rest_delivered() -> None:
    client = FakeClient({"pg/gw/data/d/a": MqttPublishRefused("pg/gw/data/d/a", 0x87)})
    sink = sink_with(client)
    await sink.deliver([bundle(1), Record(2, "mqtt", "pg/gw/x", b"{}", 1, False, 0)])
    assert client.sent == ["pg/gw/data/d/a", "pg/gw/data/d/b", "pg/gw/x"]
    assert sink.refused == 1


async def test_lost_connection_makes_the_batch_unavailable() -> None:
    client = FakeClient({"pg/gw/data/d/b": MqttLost("gone")})
    sink = sink_with(client)
    with pytest.raises(SinkUnavailable, match="gone"):
        await sink.deliver([bundle(1)])
    assert sink.refused == 0


async def test_direct_publishes_leave_no_unretrieved_future_and_say_why_they_were_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """publish_now (status, command results) awaits no PUBACK: a failure must not be left for
    asyncio to report as "Future exception was never retrieved", and a refusal is a warning."""
    gc.collect()
    caplog.clear()
    acks: list[asyncio.Future[None]] = []

    class Client(FakeClient):
        async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            acks.append(fut)
            return fut

    sink = sink_with(Client({}))
    assert sink.publish_now("pg/gw/status", b"{}", retain=True)
    assert sink.publish_now("pg/gw/big", b"{}")
    await asyncio.sleep(0.01)
    acks[0].set_exception(MqttLost("gone"))
    acks[1].set_exception(
        MqttPublishRefused("pg/gw/big", 0x95, "1000 bytes exceed max_packet_size of 300", local=True)
    )
    await asyncio.sleep(0.01)
    del acks[:]
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
    assert "'pg/gw/big' refused by the client before sending: packet too large (0x95)" in caplog.text
