"""The broker matrix: picogate's MQTT client, and the gateway around it, against every broker it is
tested with (tests/_brokers.py; docs/mqtt.md's conformance table names them and their versions):

| case                  | broker                          | MQTT  | notes                                  |
|-----------------------|---------------------------------|-------|----------------------------------------|
| mosquitto-5           | mosquitto 2.0 (Debian)          | 5     | Receive Maximum 20 (its default)       |
| mosquitto-3.1.1       | mosquitto 2.0                   | 3.1.1 |                                        |
| mosquitto-tight-3.1.1 | mosquitto 2.0                   | 3.1.1 | max_inflight_messages 3, max_packet_size 300: ours set to match |
| mosquitto-tight-5     | mosquitto 2.0                   | 5     | announces Receive Maximum 2, Maximum Packet Size 256, Topic Alias Maximum 2 |
| rabbitmq-3.1.1        | RabbitMQ 3.10 (Debian), MQTT plugin | 3.1.1 | MQTT 5 refused                     |
| amqtt-3.1.1           | amqtt (PyPI)                    | 3.1.1 |                                        |
| aedes-3.1.1           | aedes (npm, Node.js)            | 3.1.1 | MQTT 5 refused                         |

Each case: connect (a wrong password refused, the limits taken), 300 concurrent QoS 1 publishes
with the in-flight peak tracked and every message delivered in order, a will on abort,
keepalive through idle, TLS where the broker offers it (and a client certificate as the login on
mosquitto and RabbitMQ), and the whole gateway: commands in and results out, and a cut connection
with the records accepted meanwhile replayed from the outbox.  Username and password everywhere.

Marked `brokers`: `make test` runs them (RabbitMQ takes ~10 s to start, once per session).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _agent import base_config, eventually, running_gateway
from _brokers import (
    CERT_USER,
    PASSWORD,
    USER,
    AedesBroker,
    AmqttBroker,
    RabbitNode,
    SecureMosquitto,
    aedes_version,
    amqtt_version,
    make_client_cert,
    mosquitto_version,
    rabbitmq_available,
    rabbitmq_version,
)
from _peers import PeerError
from picogate.mqtt._client import IncomingMessage, MqttClient, MqttLost, MqttPublishRefused, Will, tls_context

pytestmark = pytest.mark.brokers

ROOT = "picogate/gw1"


@dataclass(frozen=True)
class Case:
    id: str
    broker: str  # fixture name
    protocol: str
    client: dict[str, Any] = field(default_factory=dict)  # MqttClient / mqtt: options for this case
    inflight_limit: int = 1000  # what the client must settle on
    refuses_over: int | None = None  # the packet size the client must refuse locally above
    limit_text: str = ""  # whose limit the refusal names


CASES = [
    Case("mosquitto-5", "mosquitto", "5", inflight_limit=20),
    Case("mosquitto-3.1.1", "mosquitto", "3.1.1"),
    Case(
        "mosquitto-tight-3.1.1",
        "mosquitto_tight_311",
        "3.1.1",
        client={"max_inflight": 3, "max_packet_size": 300},
        inflight_limit=3,
        refuses_over=300,
        limit_text="max_packet_size of 300",
    ),
    Case(
        "mosquitto-tight-5",
        "mosquitto_tight_5",
        "5",
        inflight_limit=2,
        refuses_over=256,
        limit_text="the broker's Maximum Packet Size of 256",
    ),
    Case("rabbitmq-3.1.1", "rabbitmq", "3.1.1"),
    Case("amqtt-3.1.1", "amqtt", "3.1.1"),
    Case("aedes-3.1.1", "aedes", "3.1.1"),
]


@dataclass
class Running:
    """A started broker, as the tests see it."""

    port: int
    tls_port: int | None = None
    cert_port: int | None = None  # TLS port where the client certificate is the login
    handle: Any = None


def _start(what: str, start: Callable[[], Any]) -> Any:
    if os.environ.get("PICOGATE_SKIP_BROKERS") == "1":
        pytest.skip(f"{what}: PICOGATE_SKIP_BROKERS=1")
    try:
        return start()
    except (PeerError, OSError, ImportError) as exc:
        pytest.fail(f"{what} did not start (tools/bootstrap.sh installs it): {exc}", pytrace=False)


@pytest.fixture(scope="module")
def matrix_certs(certs: Path) -> Path:
    return make_client_cert(certs)


def _mosquitto(tmp: Path, certs: Path, extra: list[str]) -> Iterator[Running]:
    broker = _start("mosquitto", lambda: SecureMosquitto(tmp, certs, extra).start())
    try:
        yield Running(broker.port, broker.tls_port, broker.cert_port, broker)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory, matrix_certs: Path) -> Iterator[Running]:
    yield from _mosquitto(tmp_path_factory.mktemp("mosq"), matrix_certs, [])


@pytest.fixture(scope="module")
def mosquitto_tight_311(tmp_path_factory: pytest.TempPathFactory, matrix_certs: Path) -> Iterator[Running]:
    extra = ["max_inflight_messages 3", "max_packet_size 300"]
    yield from _mosquitto(tmp_path_factory.mktemp("mosq-tight311"), matrix_certs, extra)


@pytest.fixture(scope="module")
def mosquitto_tight_5(tmp_path_factory: pytest.TempPathFactory, matrix_certs: Path) -> Iterator[Running]:
    extra = ["max_inflight_messages 2", "max_packet_size 256", "max_topic_alias 2"]
    yield from _mosquitto(tmp_path_factory.mktemp("mosq-tight5"), matrix_certs, extra)


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Running]:
    if not rabbitmq_available() and os.environ.get("PICOGATE_SKIP_BROKERS") != "1":
        pytest.fail("rabbitmq-server is not installed: run tools/bootstrap.sh", pytrace=False)
    node = _start(
        "RabbitMQ", lambda: RabbitNode(tmp_path_factory.mktemp("rabbit"), make_client_cert(certs)).start()
    )
    try:
        yield Running(node.port, node.tls_port, node.tls_port, node)
    finally:
        node.stop()


@pytest.fixture(scope="module")
def amqtt(tmp_path_factory: pytest.TempPathFactory, matrix_certs: Path) -> Iterator[Running]:
    if amqtt_version() is None and os.environ.get("PICOGATE_SKIP_BROKERS") != "1":
        pytest.fail("amqtt is not installed in .venv: run tools/bootstrap.sh", pytrace=False)
    broker = _start("amqtt", lambda: AmqttBroker(tmp_path_factory.mktemp("amqtt"), matrix_certs).start())
    try:
        yield Running(broker.port, broker.tls_port, None, broker)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def aedes(tmp_path_factory: pytest.TempPathFactory, matrix_certs: Path) -> Iterator[Running]:
    if aedes_version() is None and os.environ.get("PICOGATE_SKIP_BROKERS") != "1":
        pytest.fail("aedes is not installed (.brokers/aedes): run tools/bootstrap.sh", pytrace=False)
    broker = _start("aedes", lambda: AedesBroker(tmp_path_factory.mktemp("aedes"), matrix_certs).start())
    try:
        yield Running(broker.port, broker.tls_port, None, broker)
    finally:
        broker.stop()


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> tuple[Case, Running]:
    c: Case = request.param
    return c, request.getfixturevalue(c.broker)


def client_for(c: Case, broker: Running, **kw: Any) -> MqttClient:
    options: dict[str, Any] = {"username": USER, "password": PASSWORD, **c.client, **kw}
    options.setdefault("client_id", f"pg-{uuid.uuid4().hex[:12]}")  # aedes: at most 23 characters
    return MqttClient(host="127.0.0.1", port=options.pop("port", broker.port), protocol=c.protocol, **options)


@contextlib.asynccontextmanager
async def connected(client: MqttClient) -> AsyncIterator[MqttClient]:
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


async def until(pred: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what or pred}")
        await asyncio.sleep(0.01)


def topic(c: Case, name: str) -> str:
    return f"pg/{c.id.replace('.', '')}/{name}/{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------


async def test_connect_and_limits(case: tuple[Case, Running]) -> None:
    c, broker = case
    with pytest.raises(
        MqttLost, match=r"refused the connection: (bad user name or password|not authori[sz]ed)"
    ):
        await client_for(c, broker, password="wrong").connect()
    async with connected(client_for(c, broker)) as client:
        assert client.inflight_limit == c.inflight_limit
        t = topic(c, "limits")
        if c.refuses_over is not None:  # refused before it is sent: the connection stays
            with pytest.raises(MqttPublishRefused, match=c.limit_text) as err:
                await client.publish(t, b"x" * c.refuses_over)
            assert err.value.local
        fut = await client.publish(t, b"x" * 100)
        assert fut is not None
        await asyncio.wait_for(fut, 10)
        assert client.connected


async def test_300_concurrent_publishes_in_order(case: tuple[Case, Running]) -> None:
    c, broker = case
    got: list[bytes] = []
    t = topic(c, "order")
    async with (
        connected(client_for(c, broker, on_message=lambda m: got.append(m.payload))) as sub,
        connected(client_for(c, broker)) as pub,
    ):
        sub.subscribe(t, qos=1)
        await asyncio.sleep(0.3)  # the SUBACK
        peak = 0

        async def one(i: int) -> asyncio.Future[None] | None:
            nonlocal peak
            fut = await pub.publish(t, b"%d" % i)
            peak = max(peak, pub._inflight)
            return fut

        futures = await asyncio.gather(*(one(i) for i in range(300)))
        await asyncio.wait_for(asyncio.gather(*[f for f in futures if f is not None]), 30)
        assert 1 <= peak <= c.inflight_limit
        if c.inflight_limit < 300:
            assert peak == c.inflight_limit  # the window was used to its end
        await until(lambda: len(got) >= 300, 20, "300 messages at the subscriber")
    assert [int(p) for p in got] == list(range(300))


async def test_will_on_abort(case: tuple[Case, Running]) -> None:
    c, broker = case
    got: list[IncomingMessage] = []
    t = topic(c, "will")
    async with connected(client_for(c, broker, on_message=got.append)) as sub:
        sub.subscribe(t, qos=1)
        await asyncio.sleep(0.3)
        dying = client_for(c, broker, will=Will(t, b"offline", qos=1, retain=False), keepalive=5)
        await dying.connect()
        assert dying._transport is not None
        dying._transport.abort()  # no DISCONNECT: as when the gateway dies
        await until(lambda: len(got) >= 1, 15, "the will")
        await dying.disconnect()
    assert (got[0].topic, got[0].payload) == (t, b"offline")


async def test_keepalive_through_idle(case: tuple[Case, Running]) -> None:
    c, broker = case
    async with connected(client_for(c, broker, keepalive=1)) as client:
        await asyncio.sleep(2.6)  # brokers drop a client silent for 1.5 keepalives
        assert client.connected
        fut = await client.publish(topic(c, "ka"), b"x")
        assert fut is not None
        await asyncio.wait_for(fut, 10)


async def test_tls(case: tuple[Case, Running], matrix_certs: Path) -> None:
    c, broker = case
    if broker.tls_port is None:
        pytest.skip(f"{c.id}: no TLS listener")
    ctx = tls_context(ca_file=str(matrix_certs / "ca.crt"), cert_file=None, key_file=None)
    async with connected(client_for(c, broker, port=broker.tls_port, tls=ctx)) as client:
        futures = [await client.publish(topic(c, "tls"), b"%d" % i) for i in range(100)]
        await asyncio.wait_for(asyncio.gather(*[f for f in futures if f is not None]), 20)
    if broker.cert_port is None:
        return
    # the client certificate is the login: its CN is the user, no password
    cert = tls_context(
        ca_file=str(matrix_certs / "ca.crt"),
        cert_file=str(matrix_certs / "client.crt"),
        key_file=str(matrix_certs / "client.key"),
    )
    async with connected(
        client_for(c, broker, port=broker.cert_port, tls=cert, username=None, password=None)
    ) as client:
        fut = await client.publish(topic(c, CERT_USER), b"x")
        assert fut is not None
        await asyncio.wait_for(fut, 10)


@pytest.mark.parametrize("name", ["rabbitmq", "aedes"])
async def test_mqtt5_refused_cleanly_by_brokers_without_it(name: str, request: pytest.FixtureRequest) -> None:
    broker: Running = request.getfixturevalue(name)
    client = MqttClient(
        host="127.0.0.1", port=broker.port, client_id="pg-v5", protocol="5", username=USER, password=PASSWORD
    )
    with pytest.raises(MqttLost) as err:
        await client.connect(timeout=10)
    # aedes answers in 3.1.1 form, RabbitMQ 3.10 closes the connection: either way, say what to do
    assert "unsupported protocol version" in str(err.value) or "try protocol 3.1.1" in str(err.value)
    assert not client.connected


# --------------------------------------------------------------------------------------------------
# the gateway
# --------------------------------------------------------------------------------------------------


def boiler(port: int) -> dict[str, Any]:
    return {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "max": 900},
        ],
    }


async def test_gateway_commands_results_and_replay(
    case: tuple[Case, Running], modbus_tcp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, broker = case
    monkeypatch.setenv("PG_MATRIX_PASSWORD", PASSWORD)
    device = await modbus_tcp_server({1: {"hr": [100, 0]}})
    gw_id = f"gw{uuid.uuid4().hex[:6]}"
    root = f"picogate/{gw_id}"
    mqtt = {"protocol": c.protocol, "username": USER, "password_env": "PG_MATRIX_PASSWORD", **c.client}
    cfg = base_config(tmp_path, broker.port, [boiler(device.port)], mqtt=mqtt)
    cfg["gateway"]["id"] = gw_id
    got: list[IncomingMessage] = []
    async with connected(client_for(c, broker, on_message=got.append)) as peer:
        peer.subscribe(f"{root}/#", qos=1)
        await asyncio.sleep(0.3)

        def values() -> list[int]:
            return [int(m.payload.split(b'"v":')[1].split(b",")[0]) for m in got if m.topic.endswith("/temp")]

        async with running_gateway(cfg) as gw:
            await until(lambda: 100 in values(), 15, "the first reading")
            # a command in, its result out, the register written
            await peer.publish(f"{root}/cmd/boiler/setpoint/set", b'{"v": 650, "id": "m1"}')
            await until(lambda: any(m.topic.endswith("/setpoint/result") for m in got), 15, "the result")
            result = next(m for m in got if m.topic.endswith("/setpoint/result"))
            assert b'"ok":true' in result.payload.replace(b" ", b""), result.payload
            assert device.get_holding(1, 1) == [650]
            # the connection cut: what is accepted meanwhile waits in the outbox, then goes out
            sink = gw.parts.sinks[0]
            connects = sink.stats.connects
            client = sink.sink.client  # the MqttSink's live connection
            assert client is not None
            assert client._transport is not None
            client._transport.abort()
            for v in range(101, 106):
                device.set_holding(1, 0, [v])
                await asyncio.sleep(0.15)
            await eventually(lambda: sink.stats.connects > connects, 15, "a new connection")
            await until(lambda: set(range(101, 106)) <= set(values()), 15, "the values read while cut off")
            await eventually(lambda: gw.parts.outbox.depth("mqtt") == 0, 15, "an empty outbox")
    seen = values()
    firsts = [seen.index(v) for v in range(100, 106)]
    assert firsts == sorted(firsts), seen  # in order (repeats allowed: at least once)


async def test_rabbitmq_311_refusal_closes_the_connection_and_the_outbox_retries(
    rabbitmq: Running, modbus_tcp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RabbitMQ closes an MQTT 3.1.1 connection on a PUBLISH to a topic its user may not write.
    The gateway cannot tell that from a network failure: the record stays first in the outbox
    and is sent again on each reconnect, with the reconnect delay growing (nothing is delivered,
    so it is not reset); the log names the topic. Once the permission is granted, it all goes."""
    node: RabbitNode = rabbitmq.handle
    user = f"pg-limited-{uuid.uuid4().hex[:6]}"
    node.ctl("add_user", user, PASSWORD)
    node.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    gw_id = f"gw{uuid.uuid4().hex[:6]}"
    # MQTT topics are AMQP routing keys on amq.topic, "/" written as "."
    node.ctl(
        "set_topic_permissions", "-p", "/", user, "amq.topic", rf"^picogate\.{gw_id}\.(status|devices)", ".*"
    )
    monkeypatch.setenv("PG_MATRIX_PASSWORD", PASSWORD)
    device = await modbus_tcp_server({1: {"hr": [7, 0]}})
    mqtt = {"protocol": "3.1.1", "username": user, "password_env": "PG_MATRIX_PASSWORD"}
    cfg = base_config(tmp_path, rabbitmq.port, [boiler(device.port)], mqtt=mqtt)
    cfg["gateway"]["id"] = gw_id
    async with running_gateway(cfg) as gw:
        sink, outbox = gw.parts.sinks[0], gw.parts.outbox
        await eventually(lambda: sink.stats.failures >= 3, 20, "three lost connections")
        assert outbox.depth("mqtt") >= 1
        assert outbox.parked("mqtt") == 0
        assert f"'picogate/{gw_id}/data/boiler/" in sink.stats.last_error.split("the oldest on")[1]
        node.ctl("set_topic_permissions", "-p", "/", user, "amq.topic", ".*", ".*")
        await eventually(lambda: outbox.depth("mqtt") == 0, 30, "everything delivered once allowed")


def test_the_conformance_table_names_the_versions_tested() -> None:
    """docs/mqtt.md names each broker's version: the one installed here, that these tests ran."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().split()[0]: line.split("|")[2].strip() for line in doc.splitlines()
            if line.startswith(("| mosquitto", "| RabbitMQ", "| amqtt", "| aedes"))}  # fmt: skip
    installed = {
        "mosquitto": mosquitto_version(),
        "RabbitMQ": rabbitmq_version(),
        "amqtt": amqtt_version(),
        "aedes": aedes_version(),
    }
    assert rows == installed
