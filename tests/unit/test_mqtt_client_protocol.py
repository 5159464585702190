"""The MQTT client's protocol duties, against the scripted broker (tests/_mqtt_scripted.py): the
packet-id space shared with SUBSCRIBE, Server Keep Alive, Session Present, PUBREL for an unknown
id, Maximum Packet Size both ways, what a failed connect leaves behind, and what a lost
connection says about the messages it took with it."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

import pytest

from _mqtt_scripted import Script, ScriptedBroker, publish_id, read_all
from _peers import free_port
from picogate.mqtt._client import (
    DEFAULT_MAX_PACKET_SIZE,
    IncomingMessage,
    MqttClient,
    MqttLost,
    MqttPublishRefused,
    drop_acks,
)
from picogate.mqtt._codec import encode_varint

CONNACK_311 = b"\x20\x02\x00\x00"
CONNACK_5 = b"\x20\x03\x00\x00\x00"


def connack_5(properties: bytes) -> bytes:
    body = b"\x00\x00" + encode_varint(len(properties)) + properties
    return b"\x20" + encode_varint(len(body)) + body


def client_for(broker: ScriptedBroker, protocol: str = "3.1.1", **kw: object) -> MqttClient:
    return MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol=protocol, **kw)  # type: ignore[arg-type]


async def until(pred: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what or pred}")
        await asyncio.sleep(0.01)


async def discard(broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read and drop everything (fast: no parsing), answer nothing."""
    while await reader.read(1 << 20):
        pass


# --------------------------------------------------------------------------------------------------
# packet ids: publishes and SUBSCRIBEs share 65,535 of them
# --------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)  # the old client froze the event loop here: this ends the test instead
async def test_a_full_window_with_a_subscribe_pending_does_not_freeze_the_loop() -> None:
    """max_inflight 65535, MQTT 3.1.1 (no Receive Maximum), one SUBSCRIBE never answered: every
    packet id but one is taken by publishes, and the next publish must wait for a slot, not
    search for a free id forever."""
    async with ScriptedBroker(script=discard) as broker:
        client = client_for(broker, max_inflight=65535)
        await client.connect()
        client.subscribe("pg/cmd/#")
        futures: list[asyncio.Future[None] | None] = []

        async def publish_all() -> None:
            for _ in range(65535):
                futures.append(await client.publish("t", b"x"))

        task = asyncio.create_task(publish_all())
        await until(lambda: task.done() or client._slot_waiters, 40, "the window to fill")
        assert not task.done(), task.exception() if task.done() else None
        beat = time.monotonic()
        await asyncio.sleep(0.05)  # the loop runs: nothing spins
        assert time.monotonic() - beat < 1.0
        assert len(futures) == client.inflight_limit < 65535
        assert client.connected
        task.cancel()
        await client.disconnect()
        drop_acks([f for f in futures if f is not None])


async def test_a_broker_that_leaves_16_subscribes_unanswered_is_disconnected() -> None:
    async with ScriptedBroker(script=read_all) as broker:
        client = client_for(broker)
        await client.connect()
        for i in range(16):
            client.subscribe(f"pg/{i}")
        with pytest.raises(MqttLost, match="left 16 SUBSCRIBEs unanswered"):
            client.subscribe("pg/16")
        assert not client.connected


# --------------------------------------------------------------------------------------------------
# keepalive and sessions
# --------------------------------------------------------------------------------------------------


async def pong(broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        first, body = await broker.read_packet(reader)
        broker.received.append((first, body))
        if first == 0xC0:
            writer.write(b"\xd0\x00")


async def test_a_longer_server_keep_alive_replaces_ours() -> None:
    """MQTT 5 §3.2.2.3.14: the client uses the broker's value, not the smaller of the two."""
    connack = connack_5(b"\x13\x00\x02")  # Server Keep Alive 2 s
    async with ScriptedBroker(connack=connack, script=pong) as broker:
        client = client_for(broker, "5", keepalive=0.3)
        await client.connect()
        await asyncio.sleep(1.2)  # 4 of our own keepalive periods, 0.6 of the broker's
        assert broker.types().count(12) == 0  # no PINGREQ
        assert client.connected
        await client.disconnect()


async def test_server_keep_alive_0_turns_keepalive_off() -> None:
    connack = connack_5(b"\x13\x00\x00")
    async with ScriptedBroker(connack=connack, script=read_all) as broker:  # answers no PINGREQ
        client = client_for(broker, "5", keepalive=0.2)
        await client.connect()
        await asyncio.sleep(0.8)  # 4 keepalive periods: the old client pinged, then gave up
        assert broker.types().count(12) == 0
        assert client.connected
        await client.disconnect()


@pytest.mark.parametrize(
    ("protocol", "connack"), [("3.1.1", b"\x20\x02\x01\x00"), ("5", b"\x20\x03\x01\x00\x00")]
)
async def test_session_present_after_a_clean_start_closes_the_connection(
    protocol: str, connack: bytes
) -> None:
    async with ScriptedBroker(connack=connack, script=read_all) as broker:
        client = client_for(broker, protocol)
        with pytest.raises(MqttLost, match="Session Present 1 in answer to a clean start"):
            await client.connect()
        assert not client.connected
        assert client.lost is not None
        assert client.lost.done()
        await asyncio.sleep(0.1)
    if protocol == "5":  # told the broker why: DISCONNECT, protocol error
        assert (0xE0, b"\x82") in broker.received
    assert broker.received[0][0] == 0x10  # CONNECT: clean start / clean session
    assert broker.received[0][1][7] & 0x02


# --------------------------------------------------------------------------------------------------
# PUBREL
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "pubcomp"), [("3.1.1", b"\x00\x07"), ("5", b"\x00\x07\x92")])
async def test_pubrel_for_an_unknown_packet_id(protocol: str, pubcomp: bytes) -> None:
    async def pubrel(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"\x62\x02\x00\x07")  # PUBREL 7: we never sent a PUBREC for 7
        await read_all(broker, reader, writer)

    connack = CONNACK_311 if protocol == "3.1.1" else CONNACK_5
    async with ScriptedBroker(connack=connack, script=pubrel) as broker:
        client = client_for(broker, protocol)
        await client.connect()
        await until(lambda: 7 in broker.types(), 3, "PUBCOMP")
        assert client.connected
        await client.disconnect()
    # MQTT 5: reason code 0x92, packet identifier not found; 3.1.1 has no reason codes
    assert broker.packets(7) == [pubcomp]


# --------------------------------------------------------------------------------------------------
# Maximum Packet Size
# --------------------------------------------------------------------------------------------------


async def test_our_maximum_packet_size_is_announced() -> None:
    async with ScriptedBroker(connack=CONNACK_5, script=read_all) as broker:
        client = client_for(broker, "5", max_packet_size=4096)
        await client.connect()
        await client.disconnect()
    connect = broker.received[0][1]
    assert b"\x27\x00\x00\x10\x00" in connect  # property 0x27, 4096
    async with ScriptedBroker(connack=CONNACK_5, script=read_all) as broker:
        client = client_for(broker, "5")
        await client.connect()
        await client.disconnect()
    assert b"\x27" + DEFAULT_MAX_PACKET_SIZE.to_bytes(4, "big") in broker.received[0][1]


async def test_mqtt5_broker_over_our_limit_is_a_protocol_error() -> None:
    async def big(broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)  # after the CONNACK was handled
        writer.write(b"\x30\xff\xff\xff\x7f")  # the header of a 256 MB PUBLISH
        await read_all(broker, reader, writer)

    async with ScriptedBroker(connack=CONNACK_5, script=big) as broker:
        client = client_for(broker, "5", max_packet_size=1000)
        await client.connect()
        assert client.lost is not None
        await asyncio.wait_for(asyncio.shield(client.lost), 2)
        with pytest.raises(MqttLost, match="exceeds the maximum packet size of 1000"):
            await client.publish("t", b"x")
        await asyncio.sleep(0.1)
    assert (0xE0, b"\x95") in broker.received  # DISCONNECT: packet too large


async def test_mqtt311_broker_over_our_limit_is_skipped_not_buffered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 3.1.1 broker cannot know our limit: a larger message is acknowledged and dropped as it
    streams in, never held in memory, and the connection goes on."""
    got: list[IncomingMessage] = []
    size = 5_000_000
    most_buffered = 0
    client: MqttClient | None = None

    async def big(broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal most_buffered
        writer.write(b"\x32\x06\x00\x01a\x00\x01z")  # a small one first: QoS 1, id 1
        body = b"\x00\x03big\x00\x02" + b"x" * size
        packet = b"\x32" + encode_varint(len(body)) + body
        for i in range(0, len(packet), 65536):
            writer.write(packet[i : i + 65536])
            await writer.drain()
            await asyncio.sleep(0)
            if client is not None:
                most_buffered = max(most_buffered, client._decoder.buffered)
        writer.write(b"\x32\x07\x00\x01b\x00\x03ok")  # and one after it
        await read_all(broker, reader, writer)

    async with ScriptedBroker(script=big) as broker:
        client = client_for(broker, "3.1.1", max_packet_size=64_000, on_message=got.append)
        await client.connect()
        await until(lambda: len(got) >= 2, 10, "the message after the big one")
        assert client.connected
        assert client.dropped == 1
        await until(lambda: len(broker.packets(4)) >= 3, 3, "three PUBACKs")
        await client.disconnect()
    assert [m.payload for m in got] == [b"z", b"ok"]
    assert broker.packets(4) == [b"\x00\x01", b"\x00\x02", b"\x00\x03"]  # the big one acknowledged too
    assert most_buffered < 64_000
    assert "dropped a message of 5000012 bytes on big" in caplog.text
    assert "max_packet_size (64000)" in caplog.text


async def test_our_limit_refuses_larger_messages_locally() -> None:
    """Under 3.1.1 the broker cannot announce a limit: ours keeps a message it would refuse by
    closing the connection from ever being sent."""
    async with ScriptedBroker(script=read_all) as broker:
        client = client_for(broker, "3.1.1", max_packet_size=300)
        await client.connect()
        with pytest.raises(MqttPublishRefused, match="bytes exceed max_packet_size of 300") as err:
            await client.publish("pg/big", b"x" * 300)
        assert err.value.local
        assert err.value.reason_code == 0x95
        fut = await client.publish("pg/small", b"x" * 200)
        assert fut is not None
        await client.disconnect()
        drop_acks([fut])
    assert [body[2:8] for body in broker.packets(3)] == [b"pg/sma"]


async def test_the_smaller_of_the_two_limits_wins() -> None:
    async with ScriptedBroker(connack=connack_5(b"\x27\x00\x00\x01\x00"), script=read_all) as broker:
        client = client_for(broker, "5", max_packet_size=1000)  # the broker's 256 is smaller
        await client.connect()
        with pytest.raises(MqttPublishRefused, match="the broker's Maximum Packet Size of 256"):
            await client.publish("t", b"x" * 300)
        await client.disconnect()
    async with ScriptedBroker(connack=connack_5(b"\x27\x00\x01\x00\x00"), script=read_all) as broker:
        client = client_for(broker, "5", max_packet_size=1000)  # ours is smaller than 65536
        await client.connect()
        with pytest.raises(MqttPublishRefused, match="exceed max_packet_size of 1000"):
            await client.publish("t", b"x" * 2000)
        await client.disconnect()


def test_max_packet_size_is_checked() -> None:
    with pytest.raises(ValueError, match="max_packet_size must be 128"):
        MqttClient(host="h", port=1, client_id="x", max_packet_size=50)


# --------------------------------------------------------------------------------------------------
# what a failed or lost connection leaves behind
# --------------------------------------------------------------------------------------------------


async def test_a_failed_connect_leaves_no_unretrieved_future(caplog: pytest.LogCaptureFixture) -> None:
    gc.collect()  # what earlier tests left behind is not ours to judge
    caplog.clear()
    caplog.set_level(logging.ERROR, logger="asyncio")
    client = MqttClient(host="127.0.0.1", port=free_port(), client_id="x")
    with pytest.raises(MqttLost, match="Connection refused"):
        await client.connect()
    del client
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_a_lost_connection_names_the_oldest_unacknowledged_message() -> None:
    """An MQTT 3.1.1 broker that refuses a message cannot say so; RabbitMQ closes the connection
    instead: the error names the message it took with it."""

    async def close_on_publish(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        first, body = await broker.read_packet(reader)
        broker.received.append((first, body))
        writer.write(b"\x40\x02" + publish_id(body))  # the first is fine
        while True:
            first, body = await broker.read_packet(reader)
            if body.startswith(b"\x00\x09pg/secret"):
                writer.close()
                return

    async with ScriptedBroker(script=close_on_publish) as broker:
        client = client_for(broker)
        await client.connect()
        ok = await client.publish("pg/fine", b"1")
        assert ok is not None
        await asyncio.wait_for(ok, 2)
        futures = [await client.publish(topic, b"2") for topic in ("pg/secret", "pg/next")]
        assert client.lost is not None
        await asyncio.wait_for(asyncio.shield(client.lost), 2)
        for fut in futures:
            assert fut is not None
            with pytest.raises(
                MqttLost, match=r"2 message\(s\) unacknowledged, the oldest on 'pg/secret', 'pg/next'$"
            ):
                await fut


async def test_acknowledged_messages_leave_no_topic_behind() -> None:
    """The topic of a message in flight is kept (for a refusal's message), and no longer: with
    65,535 packet ids, topics of messages long delivered would otherwise stay, ~6 MB of them."""

    def ack_all(puback: Callable[[bytes], bytes]) -> Script:
        async def script(
            broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while True:
                first, body = await broker.read_packet(reader)
                if first >> 4 == 3:
                    writer.write(puback(publish_id(body)))

        return script

    plain = ack_all(lambda pid: b"\x40\x02" + pid)
    with_reason = ack_all(lambda pid: b"\x40\x04" + pid + b"\x10\x00")  # 0x10: no subscribers
    for protocol, connack, script in (("3.1.1", CONNACK_311, plain), ("5", CONNACK_5, with_reason)):
        async with ScriptedBroker(connack=connack, script=script) as broker:
            client = client_for(broker, protocol)
            await client.connect()
            futures = [await client.publish(f"pg/data/dev{i}", b"1") for i in range(50)]
            for fut in futures:
                assert fut is not None
                await asyncio.wait_for(fut, 5)
            assert [t for t in client._pending_topic if t] == []
            await client.disconnect()


async def test_ping_returns_on_its_own_pingresp_and_fails_when_the_connection_ends() -> None:
    """`ping()` (the Sparkplug sink's delivery barrier): PINGRESPs answer PINGREQs in order, so a
    ping waits for the answer to its own PINGREQ, not to an earlier one (a keepalive's)."""
    answer = asyncio.Event()

    async def one_pong_at_a_time(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            first, body = await broker.read_packet(reader)
            broker.received.append((first, body))
            if first == 0xC0:
                await answer.wait()
                answer.clear()
                writer.write(b"\xd0\x00")

    async with ScriptedBroker(script=one_pong_at_a_time) as broker:
        client = client_for(broker, "3.1.1")
        await client.connect()
        first = asyncio.ensure_future(client.ping())
        second = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.05)
        answer.set()  # the first PINGRESP
        await asyncio.wait_for(first, 2)
        await asyncio.sleep(0.05)
        assert not second.done()
        await client.disconnect()
        with pytest.raises(MqttLost):
            await asyncio.wait_for(second, 2)
        with pytest.raises(MqttLost):
            await client.ping()


async def test_connect_sent_tells_whether_connect_left() -> None:
    unreachable = MqttClient(host="127.0.0.1", port=free_port(), client_id="x")
    with pytest.raises(MqttLost):
        await unreachable.connect()
    assert not unreachable.connect_sent
    async with ScriptedBroker(connack=b"\x20\x03\x00\x87\x00", script=read_all) as broker:  # not authorized
        refused = client_for(broker, "5")
        with pytest.raises(MqttLost):
            await refused.connect()
        assert refused.connect_sent
