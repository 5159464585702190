"""The real-peer fixtures themselves work: mosquitto, socat ptys, pymodbus TCP and RTU servers.

These talk to the peers with reference clients (paho-mqtt, pymodbus) directly, not through picogate.
"""

from __future__ import annotations

import asyncio
import os
import queue
import select
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from _peers import ModbusRtuPeer, ModbusTcpPeer, MosquittoBroker, free_port, port_accepts

TcpFactory = Callable[..., Awaitable[ModbusTcpPeer]]
RtuFactory = Callable[..., Awaitable[ModbusRtuPeer]]

WAIT = 10.0  # every wait in these tests is bounded by this


# --------------------------------------------------------------------------------------------------
# mosquitto
# --------------------------------------------------------------------------------------------------


@contextmanager
def paho_client(
    broker: MosquittoBroker, client_id: str, *, clean_session: bool = True
) -> Iterator[tuple[mqtt.Client, queue.Queue[mqtt.MQTTMessage]]]:
    """A connected paho 2.x client (MQTT 3.1.1) running its own network thread; messages → queue."""
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    connected = queue.Queue[int]()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
    client.on_message = lambda _c, _u, msg: inbox.put(msg)
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason.value)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        assert connected.get(timeout=WAIT) == 0
        yield client, inbox
    finally:
        client.disconnect()
        client.loop_stop()


def subscribe(client: mqtt.Client, topic: str) -> None:
    granted = queue.Queue[list[int]]()
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: granted.put([c.value for c in codes])
    client.subscribe(topic, qos=1)
    assert granted.get(timeout=WAIT) == [1]


def publish_qos1(client: mqtt.Client, topic: str, payloads: list[bytes]) -> None:
    infos = [client.publish(topic, payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()


def drain(inbox: queue.Queue[mqtt.MQTTMessage], count: int) -> list[bytes]:
    deadline = time.monotonic() + WAIT
    got: list[bytes] = []
    while len(got) < count:
        got.append(bytes(inbox.get(timeout=max(0.01, deadline - time.monotonic())).payload))
    return got


def test_mosquitto_qos1_roundtrip_survives_restart_on_same_port(mosquitto: MosquittoBroker) -> None:
    topic = f"picogate/test/{uuid.uuid4().hex}"
    port = mosquitto.port

    with paho_client(mosquitto, "sub-1") as (sub, inbox), paho_client(mosquitto, "pub-1") as (pub, _):
        subscribe(sub, topic)
        publish_qos1(pub, topic, [b"one", b"two"])
        assert drain(inbox, 2) == [b"one", b"two"]

    mosquitto.stop()
    assert not mosquitto.running
    assert not port_accepts(mosquitto.host, port)
    mosquitto.start()
    assert mosquitto.port == port

    with paho_client(mosquitto, "sub-2") as (sub, inbox), paho_client(mosquitto, "pub-2") as (pub, _):
        subscribe(sub, topic)
        publish_qos1(pub, topic, [b"three"])
        assert drain(inbox, 1) == [b"three"]


def test_mosquitto_keeps_more_than_1000_queued_qos1_messages(mosquitto: MosquittoBroker) -> None:
    """The default max_queued_messages (1000) would drop these for the offline subscriber."""
    topic = f"picogate/test/{uuid.uuid4().hex}"
    client_id = f"slow-{uuid.uuid4().hex[:8]}"
    with paho_client(mosquitto, client_id, clean_session=False) as (sub, _):
        subscribe(sub, topic)
    payloads = [str(i).encode() for i in range(1500)]
    with paho_client(mosquitto, "pub") as (pub, _):
        publish_qos1(pub, topic, payloads)
    with paho_client(mosquitto, client_id, clean_session=False) as (_, inbox):
        assert sorted(drain(inbox, len(payloads)), key=int) == payloads


def test_mosquitto_with_persistence_keeps_queued_messages_across_restart(
    make_mosquitto: Callable[..., MosquittoBroker],
) -> None:
    broker = make_mosquitto(persistence=True)
    topic = f"picogate/test/{uuid.uuid4().hex}"
    with paho_client(broker, "durable", clean_session=False) as (sub, _):
        subscribe(sub, topic)
    with paho_client(broker, "pub") as (pub, _):
        publish_qos1(pub, topic, [b"a", b"b", b"c"])
    broker.stop()  # clean shutdown writes the persistence file
    broker.start()
    with paho_client(broker, "durable", clean_session=False) as (_, inbox):
        assert drain(inbox, 3) == [b"a", b"b", b"c"]


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --------------------------------------------------------------------------------------------------
# socat
# --------------------------------------------------------------------------------------------------


def _read_exactly(fd: int, count: int) -> bytes:
    deadline = time.monotonic() + WAIT
    data = b""
    while len(data) < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"got {data!r}, wanted {count} bytes")
        data += os.read(fd, count - len(data))
    return data


def test_socat_pty_pair_is_a_raw_null_modem(socat_pty_pair: tuple[str, str]) -> None:
    path_a, path_b = socat_pty_pair
    fd_a = os.open(path_a, os.O_RDWR | os.O_NOCTTY)
    fd_b = os.open(path_b, os.O_RDWR | os.O_NOCTTY)
    try:
        frame = bytes(range(256))  # includes \r, \n, 0x03 (^C) and 0x04 (^D): raw, no translation
        os.write(fd_a, frame)
        assert _read_exactly(fd_b, len(frame)) == frame
        os.write(fd_b, b"\x01\x03\r\n")
        assert _read_exactly(fd_a, 4) == b"\x01\x03\r\n"
    finally:
        os.close(fd_a)
        os.close(fd_b)


# --------------------------------------------------------------------------------------------------
# Modbus TCP
# --------------------------------------------------------------------------------------------------


async def test_modbus_tcp_reads_what_the_fixture_set_at_address_0(modbus_tcp_server: TcpFactory) -> None:
    peer = await modbus_tcp_server(
        {
            1: {"hr": {0: 1234, 1: 5678}, "ir": [7, 8, 9], "co": [True, False, True], "di": {0: True}},
            2: {"hr": [42]},
        }
    )
    client = AsyncModbusTcpClient(peer.host, port=peer.port, timeout=2, retries=0)
    async with asyncio.timeout(WAIT):
        assert await client.connect()
    try:
        assert (await client.read_holding_registers(0, count=2, device_id=1)).registers == [1234, 5678]
        assert (await client.read_input_registers(0, count=3, device_id=1)).registers == [7, 8, 9]
        assert (await client.read_coils(0, count=3, device_id=1)).bits[:3] == [True, False, True]
        assert (await client.read_discrete_inputs(0, count=2, device_id=1)).bits[:2] == [True, False]
        assert (await client.read_holding_registers(0, device_id=2)).registers == [42]

        peer.set_holding(1, 0, 99)
        peer.set_input(1, 10, [1, 2])
        assert (await client.read_holding_registers(0, device_id=1)).registers == [99]
        assert (await client.read_input_registers(10, count=2, device_id=1)).registers == [1, 2]

        assert not (await client.write_register(5, 555, device_id=1)).isError()
        assert not (await client.write_coil(7, True, device_id=1)).isError()
        assert peer.get_holding(1, 5) == [555]
        assert peer.get_coils(1, 7) == [True]
        assert [(w.unit_id, w.table, w.address, w.values) for w in peer.writes] == [
            (1, "hr", 5, (555,)),
            (1, "co", 7, (True,)),
        ]

        beyond = await client.read_holding_registers(peer.size - 1, count=2, device_id=1)
        assert beyond.isError()
        assert beyond.exception_code == 2  # ILLEGAL DATA ADDRESS
    finally:
        client.close()


async def test_modbus_tcp_silent_and_slow_units(modbus_tcp_server: TcpFactory) -> None:
    peer = await modbus_tcp_server({1: {"hr": [11]}, 2: {"hr": [22], "silent": True}, 3: {"hr": [33]}})
    peer.set_delay(3, 0.6)
    impatient = AsyncModbusTcpClient(peer.host, port=peer.port, timeout=0.3, retries=0)
    patient = AsyncModbusTcpClient(peer.host, port=peer.port, timeout=3, retries=0)
    async with asyncio.timeout(WAIT):
        assert await impatient.connect()
        assert await patient.connect()
    try:
        with pytest.raises(ModbusIOException):
            await impatient.read_holding_registers(0, device_id=2)  # silent
        with pytest.raises(ModbusIOException):
            await impatient.read_holding_registers(0, device_id=9)  # not configured: silent too
        assert peer.requests[2] == 1
        assert peer.requests[9] == 1

        started = time.monotonic()
        slow = await patient.read_holding_registers(0, device_id=3)
        assert slow.registers == [33]
        assert time.monotonic() - started >= 0.6  # behaviour, not speed: the reply waited the delay

        with pytest.raises(ModbusIOException):
            await impatient.read_holding_registers(0, device_id=3)  # slower than this client waits
        await asyncio.sleep(0.8)  # let the late reply arrive and be discarded

        assert (await patient.read_holding_registers(0, device_id=1)).registers == [11]
        peer.set_silent(2, False)
        assert (await patient.read_holding_registers(0, device_id=2)).registers == [22]
    finally:
        impatient.close()
        patient.close()


async def test_modbus_tcp_server_stops_and_restarts_on_same_port(modbus_tcp_server: TcpFactory) -> None:
    peer = await modbus_tcp_server({1: {"hr": [7]}})
    port = peer.port
    await peer.stop()
    assert not port_accepts(peer.host, port)
    peer.set_holding(1, 0, 8)  # tables survive a power cycle
    await peer.start()
    client = AsyncModbusTcpClient(peer.host, port=port, timeout=2, retries=0)
    async with asyncio.timeout(WAIT):
        assert await client.connect()
    try:
        assert (await client.read_holding_registers(0, device_id=1)).registers == [8]
    finally:
        client.close()


# --------------------------------------------------------------------------------------------------
# Modbus RTU over a socat pty pair
# --------------------------------------------------------------------------------------------------


async def test_modbus_rtu_over_pty_pair(modbus_rtu_server: RtuFactory) -> None:
    peer = await modbus_rtu_server(
        {1: {"hr": {0: 4321, 1: 1}}, 5: {"co": [False, True]}, 6: {"silent": True}},
    )
    client = AsyncModbusSerialClient(
        peer.device, framer=FramerType.RTU, baudrate=peer.baudrate, timeout=2, retries=0
    )
    async with asyncio.timeout(WAIT):
        assert await client.connect()
    try:
        assert (await client.read_holding_registers(0, count=2, device_id=1)).registers == [4321, 1]
        assert (await client.read_coils(0, count=2, device_id=5)).bits[:2] == [False, True]
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, device_id=6)  # a dead slave on the line
        peer.set_holding(1, 0, 65535)
        assert (await client.read_holding_registers(0, device_id=1)).registers == [65535]  # bus not stalled
        assert not (await client.write_registers(2, [3, 4], device_id=1)).isError()
        assert peer.get_holding(1, 2, 2) == [3, 4]
    finally:
        client.close()
