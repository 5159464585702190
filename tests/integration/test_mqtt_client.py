"""picogate's MQTT client (picogate.mqtt._client) against real mosquitto brokers, with paho-mqtt
as the reference client on the other side, and against small scripted brokers (plain asyncio
servers) for what mosquitto will not do on demand: stay silent, stop reading, send QoS 2 or
garbage."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from _mqtt_scripted import ScriptedBroker
from _peers import MosquittoBroker, free_port
from picogate.mqtt._client import (
    IncomingMessage,
    MqttClient,
    MqttLost,
    MqttPublishRefused,
    Will,
    tls_context,
)
from picogate.mqtt._codec import encode_varint

PROTOCOLS = ["3.1.1", "5"]


def new_client(broker: Any, protocol: str = "5", **kw: Any) -> MqttClient:
    kw.setdefault("client_id", f"pg-test-{uuid.uuid4().hex[:8]}")
    return MqttClient(
        host=kw.pop("host", broker.host), port=kw.pop("port", broker.port), protocol=protocol, **kw
    )


async def until(pred: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what or pred}")
        await asyncio.sleep(0.01)


class PahoSubscriber:
    """The reference client, subscribed at QoS 1 in its own thread; records (topic, payload, retain)."""

    def __init__(
        self, port: int, topic: str, *, username: str | None = None, password: str | None = None
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"paho-{uuid.uuid4().hex[:8]}")
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, 1)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self._client.connect("127.0.0.1", port, keepalive=30)
        self._client.loop_start()

    async def ready(self) -> PahoSubscriber:
        if not await asyncio.to_thread(self._subscribed.wait, 10):
            raise AssertionError("paho subscriber not subscribed within 10 s")
        return self

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextlib.asynccontextmanager
async def subscriber(port: int, topic: str, **kw: Any) -> AsyncIterator[PahoSubscriber]:
    sub = PahoSubscriber(port, topic, **kw)
    try:
        yield await sub.ready()
    finally:
        sub.close()


# --------------------------------------------------------------------------------------------------
# brokers with credentials, ACLs and TLS
# --------------------------------------------------------------------------------------------------


class AuthBroker(MosquittoBroker):
    """No anonymous access: users from a password file, optionally an ACL file and TLS."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        *,
        acl: Iterable[str] = (),
        certs: Path | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.passwd = workdir / "passwd"
        self.passwd.write_text("")
        for user, password in users.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(self.passwd), user, password], check=True, timeout=30
            )
        acl = list(acl)
        self.acl = workdir / "acl" if acl else None
        if self.acl is not None:
            self.acl.write_text("\n".join(acl) + "\n")
        self.certs = certs
        super().__init__(workdir)

    def _config(self, extra: list[str]) -> str:
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false", f"password_file {self.passwd}"]
        if self.acl is not None:
            lines.append(f"acl_file {self.acl}")
        if self.certs is not None:
            lines += [
                f"cafile {self.certs / 'ca.crt'}",
                f"certfile {self.certs / 'server.crt'}",
                f"keyfile {self.certs / 'server.key'}",
            ]
        # Not `max_queued_messages 0` here: with it, mosquitto 2.0.11 drops an MQTT 5 client on its
        # next packet after refusing one of its QoS 1 messages by ACL (paho-mqtt too).
        lines += ["persistence false", "log_dest stderr", "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")
        return "\n".join([*lines, *extra, ""])


@pytest.fixture
def auth_broker(tmp_path: Path) -> Any:
    brokers: list[AuthBroker] = []

    def make(users: dict[str, str], **kw: Any) -> AuthBroker:
        broker = AuthBroker(tmp_path / f"auth-{len(brokers)}", users, **kw).start()
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop()


# --------------------------------------------------------------------------------------------------
# against mosquitto
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_connect_publish_disconnect(mosquitto: Any, protocol: str) -> None:
    client = new_client(mosquitto, protocol)
    assert not client.connected
    with pytest.raises(MqttLost, match="not connected"):
        await client.publish("t", b"x")
    await client.connect()
    assert client.connected
    assert client.lost is not None
    assert not client.lost.done()
    # mosquitto's default max_inflight_messages (20) is its MQTT 5 Receive Maximum
    assert client.inflight_limit == (20 if protocol == "5" else 1000)
    fut = await client.publish("pg/test", b"hello")
    assert fut is not None
    await asyncio.wait_for(fut, 5)
    assert await client.publish("pg/test", b"qos0", qos=0) is None
    await client.disconnect()
    assert not client.connected
    assert client.lost.done()
    with pytest.raises(MqttLost, match="disconnected"):
        await client.publish("t", b"x")
    await client.disconnect()  # twice is fine


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_20000_messages_arrive_in_order(mosquitto: Any, protocol: str) -> None:
    count = 20_000
    async with subscriber(mosquitto.port, "pg/order") as sub:
        client = new_client(mosquitto, protocol)
        await client.connect()
        futures = []
        for i in range(count):
            fut = await client.publish("pg/order", b"%d" % i)
            assert fut is not None
            futures.append(fut)
            assert client._inflight <= client.inflight_limit
        await asyncio.wait_for(asyncio.gather(*futures), 60)
        await until(lambda: len(sub.messages) >= count, 60, f"{count} messages at the subscriber")
        await client.disconnect()
    assert [int(payload) for _t, payload, _r in sub.messages] == list(range(count))


async def test_receive_maximum_bounds_the_window(make_mosquitto: Any) -> None:
    broker = make_mosquitto(extra_config=["max_inflight_messages 5"])
    client = new_client(broker, "5", max_inflight=1000)
    await client.connect()
    assert client.inflight_limit == 5
    futures = []
    most = 0
    for i in range(2000):
        fut = await client.publish(f"pg/window/{i % 7}", b"%d" % i)
        assert fut is not None
        futures.append(fut)
        most = max(most, client._inflight)
    await asyncio.wait_for(asyncio.gather(*futures), 30)
    assert most == 5
    await client.disconnect()
    # and ours, when it is the smaller: MQTT 3.1.1 has no Receive Maximum
    small = new_client(broker, "3.1.1", max_inflight=3)
    await small.connect()
    assert small.inflight_limit == 3
    futures = [f for f in [await small.publish("pg/w", b"%d" % i) for i in range(100)] if f is not None]
    await asyncio.wait_for(asyncio.gather(*futures), 30)
    await small.disconnect()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_will_is_published_when_the_connection_is_cut(mosquitto: Any, protocol: str) -> None:
    async with subscriber(mosquitto.port, "pg/will/#") as sub:
        client = new_client(mosquitto, protocol, will=Will("pg/will/status", b"offline", qos=1, retain=False))
        await client.connect()
        fut = await client.publish("pg/will/status", b"online")
        assert fut is not None
        await fut
        assert client._transport is not None
        client._transport.abort()  # the socket closes without DISCONNECT, as when the gateway dies
        assert client.lost is not None
        await asyncio.wait_for(asyncio.shield(client.lost), 2)
        assert not client.connected
        await until(lambda: len(sub.messages) >= 2, 5, "the will")
    assert sub.messages == [("pg/will/status", b"online", False), ("pg/will/status", b"offline", False)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_clean_disconnect_suppresses_the_will(mosquitto: Any, protocol: str) -> None:
    async with subscriber(mosquitto.port, "pg/will2/#") as sub:
        client = new_client(mosquitto, protocol, will=Will("pg/will2/status", b"offline"))
        await client.connect()
        await client.disconnect()
        await asyncio.sleep(0.5)
    assert sub.messages == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscribe_and_receive_with_retain_flag(mosquitto: Any, protocol: str) -> None:
    got: list[IncomingMessage] = []
    async with subscriber(mosquitto.port, "unused/topic") as other:
        await asyncio.to_thread(other.publish, "pg/cmd/retained", b"old", retain=True)
        client = new_client(mosquitto, protocol, on_message=got.append)
        await client.connect()
        client.subscribe("pg/cmd/#", qos=1)
        await until(lambda: len(got) >= 1, 5, "the retained message")
        # 50 live QoS 1 messages: more than mosquitto's 20 in flight, so each was acknowledged
        for i in range(50):
            await asyncio.to_thread(other.publish, "pg/cmd/live", b"%d" % i)
        await until(lambda: len(got) >= 51, 10, "51 messages")
        await client.disconnect()
        await asyncio.to_thread(other.publish, "pg/cmd/retained", b"", retain=True)  # clear it
    assert got[0] == IncomingMessage("pg/cmd/retained", b"old", 1, True)
    assert got[1:] == [IncomingMessage("pg/cmd/live", b"%d" % i, 1, False) for i in range(50)]


async def test_on_message_errors_do_not_break_the_connection(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []

    def handler(msg: IncomingMessage) -> None:
        if msg.payload == b"boom":
            raise RuntimeError("handler bug")
        got.append(msg.payload)

    async with subscriber(mosquitto.port, "unused/topic") as other:
        client = new_client(mosquitto, "5", on_message=handler)
        await client.connect()
        client.subscribe("pg/err/#")
        await asyncio.sleep(0.2)
        for payload in (b"boom", b"after"):
            await asyncio.to_thread(other.publish, "pg/err/x", payload)
        await until(lambda: got == [b"after"], 5, "the message after the failing one")
        assert client.connected
        await client.disconnect()
    assert "handler bug" in caplog.text


async def test_broker_stop_ends_the_connection_at_once(mosquitto: Any) -> None:
    client = new_client(mosquitto, "5")
    await client.connect()
    assert mosquitto.pid is not None
    os.kill(mosquitto.pid, signal.SIGSTOP)  # frozen: our messages wait for their PUBACK
    try:
        futures = [await client.publish("pg/stop", b"%d" % i) for i in range(10)]
        await asyncio.sleep(0.1)
        assert all(f is not None and not f.done() for f in futures)
    finally:
        started = time.monotonic()
        await asyncio.to_thread(mosquitto.kill)  # SIGKILL ends it, stopped or not
    assert client.lost is not None
    await asyncio.wait_for(asyncio.shield(client.lost), 1.0)
    for fut in futures:
        assert fut is not None
        with pytest.raises(MqttLost, match=r"lost|closed"):
            await asyncio.wait_for(fut, 0.1)
    assert time.monotonic() - started < 1.5
    assert not client.connected
    with pytest.raises(MqttLost):
        await client.publish("pg/stop", b"late")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_broker_shutdown_resolves_lost(mosquitto: Any, protocol: str) -> None:
    client = new_client(mosquitto, protocol)
    await client.connect()
    started = time.monotonic()
    await asyncio.to_thread(mosquitto.stop)
    assert client.lost is not None
    await asyncio.wait_for(asyncio.shield(client.lost), 1.5)
    assert time.monotonic() - started < 1.5
    with pytest.raises(MqttLost) as err:
        await client.publish("t", b"x")
    if protocol == "5":  # mosquitto says why (DISCONNECT 0x8B) to MQTT 5 clients
        assert "shutting down" in str(err.value) or "lost" in str(err.value)


async def test_session_taken_over(mosquitto: Any) -> None:
    first = new_client(mosquitto, "5", client_id="pg-same-id")
    await first.connect()
    second = new_client(mosquitto, "5", client_id="pg-same-id")
    await second.connect()
    assert first.lost is not None
    await asyncio.wait_for(asyncio.shield(first.lost), 2)
    # mosquitto 2.0.11 closes the old connection without a DISCONNECT (0x8E) first
    with pytest.raises(MqttLost, match=r"session taken over|lost"):
        await first.publish("t", b"x")
    assert second.connected
    await second.disconnect()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_refused_login_says_why(auth_broker: Any, protocol: str) -> None:
    broker = auth_broker({"gateway": "right"})
    for username, password in ((None, None), ("gateway", "wrong"), ("nobody", "right")):
        client = new_client(broker, protocol, username=username, password=password)
        with pytest.raises(MqttLost, match=r"refused the connection: not authori[sz]ed"):
            await client.connect()
        assert not client.connected
        assert client.lost is not None
        assert client.lost.done()
    client = new_client(broker, protocol, username="gateway", password="right")
    await client.connect()
    fut = await client.publish("pg/auth", b"x")
    assert fut is not None
    await asyncio.wait_for(fut, 5)
    await client.disconnect()


async def test_publish_refused_by_acl_is_not_a_lost_connection(auth_broker: Any) -> None:
    broker = auth_broker({"gateway": "pw"}, acl=["user gateway", "topic readwrite pg/ok/#"])
    client = new_client(broker, "5", username="gateway", password="pw")
    await client.connect()
    refused = await client.publish("pg/secret", b"x")
    accepted = await client.publish("pg/ok/1", b"x")
    assert refused is not None
    assert accepted is not None
    with pytest.raises(MqttPublishRefused, match="not authorized") as err:
        await asyncio.wait_for(refused, 5)
    assert err.value.reason_code == 0x87
    assert err.value.topic == "pg/secret"
    assert not err.value.local
    await asyncio.wait_for(accepted, 5)
    assert client.connected
    await client.disconnect()


async def test_tls(auth_broker: Any, certs: Path) -> None:
    broker = auth_broker({"gateway": "pw"}, certs=certs)
    ctx = tls_context(ca_file=str(certs / "ca.crt"), cert_file=None, key_file=None)
    for host in ("localhost", "127.0.0.1"):
        client = new_client(broker, "5", host=host, tls=ctx, username="gateway", password="pw")
        await client.connect()
        futures = [await client.publish("pg/tls", b"%d" % i) for i in range(500)]
        await asyncio.wait_for(asyncio.gather(*[f for f in futures if f is not None]), 10)
        await client.disconnect()
    # a server certificate we cannot verify
    untrusted = new_client(broker, "5", tls=ssl.create_default_context(), username="gateway", password="pw")
    with pytest.raises(MqttLost, match=r"TLS with broker .* failed: .*certificate"):
        await untrusted.connect()
    # TLS to a plain listener
    plain = MosquittoBroker(broker.workdir / "plain").start()
    try:
        client = new_client(plain, "5", tls=ctx)
        with pytest.raises(MqttLost, match=r"over TLS: Connection reset|TLS with broker"):
            await client.connect(timeout=5)
    finally:
        plain.stop()


async def test_nothing_listening() -> None:
    client = MqttClient(host="127.0.0.1", port=free_port(), client_id="x")
    with pytest.raises(MqttLost, match=r"cannot connect to broker 127\.0\.0\.1:\d+: Connection refused"):
        await client.connect()
    with pytest.raises(RuntimeError, match="connects once"):
        await client.connect()


async def test_broker_limits_refuse_messages_locally(make_mosquitto: Any) -> None:
    broker = make_mosquitto(extra_config=["max_packet_size 1000"])
    client = new_client(broker, "5")
    await client.connect()
    with pytest.raises(MqttPublishRefused, match="Maximum Packet Size of 1000") as err:
        await client.publish("pg/big", b"x" * 2000)
    assert err.value.local
    assert err.value.reason_code == 0x95
    with pytest.raises(MqttPublishRefused, match="wildcard"):
        await client.publish("pg/+/bad", b"x")
    fut = await client.publish("pg/small", b"x" * 100)  # the connection is fine
    assert fut is not None
    await asyncio.wait_for(fut, 5)
    await client.disconnect()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_keepalive_against_the_broker(mosquitto: Any, protocol: str) -> None:
    """mosquitto drops a client silent for 1.5 × its keepalive: ours pings when idle."""
    client = new_client(mosquitto, protocol, keepalive=1)
    await client.connect()
    await asyncio.sleep(3.2)
    assert client.connected
    fut = await client.publish("pg/ka", b"x")
    assert fut is not None
    await asyncio.wait_for(fut, 5)
    await client.disconnect()


def test_runs_on_uvloop(mosquitto: Any) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        got: list[IncomingMessage] = []
        client = new_client(mosquitto, "5", on_message=got.append)
        await client.connect()
        client.subscribe("pg/uv/#")
        await asyncio.sleep(0.1)
        futures = [await client.publish("pg/uv/x", b"%d" % i) for i in range(3000)]
        await asyncio.wait_for(asyncio.gather(*[f for f in futures if f is not None]), 20)
        await until(lambda: len(got) == 3000, 10, "our own messages back")
        await client.disconnect()

    uvloop.run(main())


# --------------------------------------------------------------------------------------------------
# against scripted brokers
# --------------------------------------------------------------------------------------------------


async def test_connect_timeout() -> None:
    async with ScriptedBroker(connack=None) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x")
        started = time.monotonic()
        with pytest.raises(MqttLost, match=r"did not answer within 0\.5 s"):
            await client.connect(timeout=0.5)
        assert time.monotonic() - started < 2
        assert client.lost is not None
        assert client.lost.done()


async def test_closed_before_connack() -> None:
    async def close(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.close()

    async with ScriptedBroker(connack=None, script=close) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x")
        with pytest.raises(MqttLost, match="closed the connection before CONNACK"):
            await client.connect(timeout=5)


async def test_silent_broker_is_detected_by_keepalive() -> None:
    async def silent(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:  # reads everything, answers nothing (PINGREQ included)
            broker.received.append(await broker.read_packet(reader))

    async with ScriptedBroker(script=silent) as broker:
        client = MqttClient(
            host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1", keepalive=0.4
        )
        await client.connect()
        fut = await client.publish("t", b"never acknowledged")
        started = time.monotonic()
        assert client.lost is not None
        await asyncio.wait_for(asyncio.shield(client.lost), 3)
        assert 0.5 < time.monotonic() - started < 1.5  # 1.5 × keepalive, give or take a tick
        assert fut is not None
        with pytest.raises(MqttLost, match="no answer from broker"):
            await fut
    assert 12 in broker.types()  # it did send PINGREQ


async def test_pings_when_idle() -> None:
    async def pong(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            first, body = await broker.read_packet(reader)
            broker.received.append((first, body))
            if first == 0xC0:
                writer.write(b"\xd0\x00")

    async with ScriptedBroker(script=pong) as broker:
        client = MqttClient(
            host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1", keepalive=0.3
        )
        await client.connect()
        await asyncio.sleep(1.5)
        assert client.connected
        assert 3 <= broker.types().count(12) <= 7
        await client.disconnect()
    assert broker.types()[-1] == 14  # DISCONNECT


async def test_server_keep_alive_replaces_ours() -> None:
    async def pong(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            first, body = await broker.read_packet(reader)
            broker.received.append((first, body))
            if first == 0xC0:
                writer.write(b"\xd0\x00")

    connack = b"\x20\x06\x00\x00\x03\x13\x00\x01"  # MQTT 5, Server Keep Alive 1 s
    async with ScriptedBroker(connack=connack, script=pong) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="5", keepalive=60)
        await client.connect()
        assert broker.received[0][1][8:10] == b"\x00\x3c"  # we asked for 60 s in CONNECT
        await asyncio.sleep(2.6)
        assert 2 <= broker.types().count(12) <= 4  # PINGREQ every second or so, not every minute
        assert client.connected
        await client.disconnect()


async def test_flow_control_pauses_publishers() -> None:
    """A broker that stops reading: the socket buffers fill, the transport pauses, and publish()
    waits instead of queuing without bound; it proceeds once the broker reads again."""
    reading = asyncio.Event()

    async def slow(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reading.wait()
        while True:
            await reader.read(1 << 20)

    async with ScriptedBroker(script=slow) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1")
        await client.connect()
        payload = b"x" * 60_000
        for _ in range(2000):  # up to 120 MB: far more than the socket buffers hold
            publish = asyncio.ensure_future(client.publish("t/big", payload, qos=0))
            await asyncio.sleep(0)
            if not publish.done():
                break
            await publish
        else:
            pytest.fail("publish() never waited for the transport to drain")
        assert client._paused
        await asyncio.sleep(0.2)
        assert not publish.done()  # still waiting
        reading.set()
        assert await asyncio.wait_for(publish, 10) is None
        await client.disconnect()


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    """Receive Maximum 1: the second publish waits; cancelling it must not lose the slot."""
    acks: asyncio.Queue[int] = asyncio.Queue()

    async def acker(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            first, body = await broker.read_packet(reader)
            broker.received.append((first, body))
            if first >> 4 == 3:
                topic_len = int.from_bytes(body[:2], "big")
                packet_id = body[2 + topic_len : 4 + topic_len]
                await acks.get()  # the test says when
                writer.write(b"\x40\x02" + packet_id)

    connack = b"\x20\x06\x00\x00\x03\x21\x00\x01"  # MQTT 5, Receive Maximum 1
    async with ScriptedBroker(connack=connack, script=acker) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="5")
        await client.connect()
        assert client.inflight_limit == 1
        first = await client.publish("t", b"1")
        second = asyncio.ensure_future(client.publish("t", b"2"))
        third = asyncio.ensure_future(client.publish("t", b"3"))
        await asyncio.sleep(0.05)
        assert not second.done()
        assert not third.done()
        second.cancel()
        acks.put_nowait(1)
        assert first is not None
        await asyncio.wait_for(first, 2)
        third_ack = await asyncio.wait_for(third, 2)  # the slot went to the third
        acks.put_nowait(1)
        assert third_ack is not None
        await asyncio.wait_for(third_ack, 2)
        assert second.cancelled()
        assert client._inflight == 0
        await client.disconnect()


async def test_incoming_qos2_is_answered_and_delivered_once() -> None:
    got: list[IncomingMessage] = []

    async def qos2(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        publish = b"\x34\x07\x00\x01q\x00\x09hi"  # QoS 2, packet id 9
        writer.write(publish + b"\x3c\x07\x00\x01q\x00\x09hi")  # and again with DUP
        for _ in range(2):
            broker.received.append(await broker.read_packet(reader))  # PUBREC, PUBREC
        writer.write(b"\x62\x02\x00\x09")  # PUBREL
        broker.received.append(await broker.read_packet(reader))  # PUBCOMP
        writer.write(b"\x32\x07\x00\x01q\x00\x0aok")  # a QoS 1 message after it
        while True:
            broker.received.append(await broker.read_packet(reader))

    async with ScriptedBroker(script=qos2) as broker:
        client = MqttClient(
            host="127.0.0.1", port=broker.port, client_id="x", protocol="3.1.1", on_message=got.append
        )
        await client.connect()
        await until(lambda: len(broker.received) >= 5, 3, "PUBREC, PUBREC, PUBCOMP, PUBACK")
        assert client.connected
        await client.disconnect()
    assert got == [IncomingMessage("q", b"hi", 2, False), IncomingMessage("q", b"ok", 1, False)]
    assert broker.received[1:5] == [
        (0x50, b"\x00\x09"),
        (0x50, b"\x00\x09"),
        (0x70, b"\x00\x09"),
        (0x40, b"\x00\x0a"),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_garbage_from_the_broker_closes_the_connection(protocol: str) -> None:
    async def garbage(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        broker.received.append(await broker.read_packet(reader))  # the PUBLISH
        writer.write(b"\x40\x02\x00\x00")  # PUBACK with packet id 0
        while True:
            broker.received.append(await broker.read_packet(reader))

    connack = b"\x20\x02\x00\x00" if protocol == "3.1.1" else b"\x20\x03\x00\x00\x00"
    async with ScriptedBroker(connack=connack, script=garbage) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol=protocol)
        await client.connect()
        fut = await client.publish("t", b"x")
        assert client.lost is not None
        await asyncio.wait_for(asyncio.shield(client.lost), 2)
        assert fut is not None
        with pytest.raises(MqttLost, match=r"protocol error from broker .*packet identifier 0"):
            await fut
        await asyncio.sleep(0.1)
    if protocol == "5":  # told the broker why: DISCONNECT, malformed packet
        assert (0xE0, b"\x81") in broker.received


async def test_v5_refusal_and_disconnect_reasons() -> None:
    async def refuse(
        broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for _ in range(2):
            first, body = await broker.read_packet(reader)
            broker.received.append((first, body))
        reason = b"\x1f" + (b"\x00\x05quota")
        writer.write(
            b"\x40" + encode_varint(4 + len(reason)) + b"\x00\x01\x97" + bytes([len(reason)]) + reason
        )
        writer.write(b"\x40\x03\x00\x02\x10")  # success, no matching subscribers
        await asyncio.sleep(0.1)
        writer.write(b"\xe0\x02\x98\x00")  # DISCONNECT: administrative action
        await asyncio.sleep(1)

    async with ScriptedBroker(connack=b"\x20\x03\x00\x00\x00", script=refuse) as broker:
        client = MqttClient(host="127.0.0.1", port=broker.port, client_id="x", protocol="5")
        await client.connect()
        refused = await client.publish("pg/q", b"x")
        accepted = await client.publish("pg/r", b"y")
        assert refused is not None
        assert accepted is not None
        with pytest.raises(
            MqttPublishRefused, match=r"'pg/q' refused by the broker: quota exceeded \(0x97\): quota"
        ):
            await asyncio.wait_for(refused, 2)
        await asyncio.wait_for(accepted, 2)
        assert client.lost is not None
        await asyncio.wait_for(asyncio.shield(client.lost), 2)
        with pytest.raises(MqttLost, match=r"closed the connection: administrative action \(0x98\)"):
            await client.publish("pg/r", b"z")


async def test_context_manager(mosquitto: Any) -> None:
    async with new_client(mosquitto, "3.1.1") as client:
        assert client.connected
        fut = await client.publish("pg/cm", b"x")
        assert fut is not None
        await fut
    assert not client.connected
