"""MqttSink.deliver with a fake client: refused messages are counted and do not block the outbox;
a lost connection makes the whole batch unavailable (to be re-sent)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from picogate._outbox import Record
from picogate._sink import SinkUnavailable
from picogate.mqtt._client import MqttLost, MqttPublishRefused
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
