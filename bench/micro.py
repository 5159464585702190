"""Building-block micro-benchmarks, each run as its own process so that its CPU is its own.

    python bench/micro.py mqtt --client gmqtt|paho --port P [--count N]   QoS 1 publish rate
    python bench/micro.py modbus-client --port P [--seconds S]            pymodbus round trips/s
    python bench/micro.py pymodbus-server --devices N                     pymodbus 3.16.1 as a simulator
    python bench/micro.py json                                            orjson vs json for an event

Each prints one JSON line with its figures (pymodbus-server speaks the same stdin control
protocol as bench/sim.py: `stats`, `quit`).  CPU is the process's own user + system time
(`os.times()`), wall time from `time.perf_counter()`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time
import timeit
from typing import Any


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
# MQTT: QoS 1 publish rate, every message acknowledged (PUBACK) before the clock stops
# --------------------------------------------------------------------------------------------------


def _payload(size: int) -> bytes:
    body = b'{"v":12345,"ts":1700000000000,"unit":"","q":"good"}'
    return (body + b" " * max(0, size - len(body)))[: max(size, len(body))]


def _topics(n: int) -> list[str]:
    return [f"picogate/bench_e/data/dev{i // 30:04d}/r{i % 30:02d}" for i in range(n)]


class _PubackTracker:
    """gmqtt's in-flight storage interface: gmqtt calls push on publish and remove on PUBACK."""

    def __init__(self, on_ack: Any) -> None:
        self.on_ack = on_ack
        self.last_mid = 0

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        self.on_ack(mid)

    @property
    def is_empty(self) -> bool:
        return True

    def get_all(self) -> list[Any]:
        return []

    def clear(self) -> None:
        pass

    async def wait_empty(self) -> None:
        return None


async def _gmqtt(port: int, count: int, window: int, payload: bytes) -> dict[str, Any]:
    # gmqtt itself, with a window of `window` unacknowledged messages (as the agent's sink keeps).
    from gmqtt import Client
    from gmqtt.mqtt.constants import MQTTv50

    sem: asyncio.Semaphore
    acked = 0
    all_acked = asyncio.Event()

    def on_ack(mid: int) -> None:
        nonlocal acked
        acked += 1
        sem.release()
        if acked >= count:
            all_acked.set()

    client = Client("bench-gmqtt", clean_session=True, persistent_storage=_PubackTracker(on_ack))
    await client.connect("127.0.0.1", port, keepalive=30, version=MQTTv50)
    # MQTT 5: the broker's Receive Maximum (mosquitto: max_inflight_messages) caps the window;
    # gmqtt refuses to allocate a packet id beyond it.
    broker_max = int(client._connection._handler.id_generator._max) - 1
    window = min(window, broker_max)
    sem = asyncio.Semaphore(window)
    topics = _topics(1500)
    c0, t0 = _cpu(), time.perf_counter()
    for i in range(count):
        await sem.acquire()
        client.publish(topics[i % len(topics)], payload, qos=1)
    try:
        async with asyncio.timeout(120):
            await all_acked.wait()
    except TimeoutError:
        raise SystemExit(f"gmqtt: only {acked} of {count} acknowledged within 120 s") from None
    t1, c1 = time.perf_counter(), _cpu()
    await client.disconnect()
    return {"seconds": t1 - t0, "cpu_s": c1 - c0, "window": window}


def _paho(port: int, count: int, window: int, payload: bytes, mode: str) -> dict[str, Any]:
    """paho-mqtt two ways: `thread` (its network thread via loop_start(), the caller publishing;
    paho queues what exceeds max_inflight) and `loop` (one thread: publish up to the window, then
    loop(); paho's fastest pattern here)."""
    import paho.mqtt.client as paho

    acked = 0
    all_acked = threading.Event()

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any = None, props: Any = None) -> None:
        nonlocal acked
        acked += 1
        if acked >= count:
            all_acked.set()

    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{mode}", protocol=paho.MQTTv5
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port, keepalive=30)
    topics = _topics(1500)
    deadline = time.monotonic() + 120
    if mode == "thread":
        client.loop_start()
        if not connected.wait(10):
            raise SystemExit("paho: no CONNACK within 10 s")
        c0, t0 = _cpu(), time.perf_counter()
        for i in range(count):
            client.publish(topics[i % len(topics)], payload, qos=1)
        all_acked.wait(120)
    else:
        while not connected.is_set() and time.monotonic() < deadline:
            client.loop(0.1)
        c0, t0 = _cpu(), time.perf_counter()
        i = 0
        while not all_acked.is_set() and time.monotonic() < deadline:
            while i < count and i - acked < window:
                client.publish(topics[i % len(topics)], payload, qos=1)
                i += 1
            client.loop(0.01)
    if not all_acked.is_set():
        raise SystemExit(f"paho: only {acked} of {count} acknowledged within 120 s")
    t1, c1 = time.perf_counter(), _cpu()
    client.disconnect()
    if mode == "thread":
        client.loop_stop()
    return {"seconds": t1 - t0, "cpu_s": c1 - c0}


def cmd_mqtt(args: argparse.Namespace) -> None:
    payload = _payload(args.payload)
    if args.client == "gmqtt":
        r = asyncio.run(_gmqtt(args.port, args.count, args.window, payload))
    else:
        r = _paho(args.port, args.count, args.window, payload, args.paho_mode)
    r = {"window": args.window} | r
    r |= {
        "client": args.client if args.client == "gmqtt" else f"paho ({args.paho_mode})",
        "count": args.count,
        "payload_bytes": len(payload),
        "msgs_per_s": args.count / r["seconds"],
        "cpu_pct": 100.0 * r["cpu_s"] / r["seconds"],
        "cpu_us_per_msg": 1e6 * r["cpu_s"] / args.count,
    }
    _emit(r)


# --------------------------------------------------------------------------------------------------
# Modbus: pymodbus client round trips on one connection
# --------------------------------------------------------------------------------------------------


async def _modbus_client(port: int, seconds: float, count: int) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise SystemExit(f"cannot connect to 127.0.0.1:{port}")
    for _ in range(50):  # warm-up
        await client.read_holding_registers(0, count=count, device_id=1)
    n = 0
    c0, t0 = _cpu(), time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        reply = await client.read_holding_registers(0, count=count, device_id=1)
        if reply.isError():
            raise SystemExit(f"exception reply: {reply}")
        n += 1
    t1, c1 = time.perf_counter(), _cpu()
    client.close()
    return {
        "requests": n,
        "seconds": t1 - t0,
        "round_trips_per_s": n / (t1 - t0),
        "latency_us": 1e6 * (t1 - t0) / n,
        "cpu_s": c1 - c0,
        "cpu_us_per_request": 1e6 * (c1 - c0) / n,
        "registers": count,
    }


def cmd_modbus_client(args: argparse.Namespace) -> None:
    _emit(asyncio.run(_modbus_client(args.port, args.seconds, args.registers)))


# --------------------------------------------------------------------------------------------------
# pymodbus 3.16.1 as the field simulator (for the comparison with bench/sim.py)
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pymodbus_server(devices: int, registers: int) -> None:
    import logging

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    servers = []
    ports = []
    for i in range(devices):
        port = _free_port()
        device = SimDevice(
            1,
            simdata=[
                SimData(
                    0,
                    values=[(i * 977 + r * 131) & 0xFFFF for r in range(registers)],
                    datatype=DataType.REGISTERS,
                )
            ],
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        servers.append(server)
        ports.append(port)
    _emit({"ready": True, "ports": ports})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
        if line == "stats":
            _emit({"cpu_s": _cpu(), "t": time.time()})
        else:
            _emit({"error": f"unknown command {line!r}"})
    for server in servers:
        await server.shutdown()


def cmd_pymodbus_server(args: argparse.Namespace) -> None:
    asyncio.run(_pymodbus_server(args.devices, args.registers))


# --------------------------------------------------------------------------------------------------
# JSON: orjson vs the standard library for the agent's payloads
# --------------------------------------------------------------------------------------------------


def cmd_json(args: argparse.Namespace) -> None:
    import orjson

    ts = 1_700_000_000_123
    point = {"v": 23.5, "ts": ts, "unit": "°C", "q": "good"}
    device = {
        "ts": ts,
        "points": {f"r{i:02d}": {"v": 1000 + i, "ts": ts, "unit": "", "q": "good"} for i in range(30)},
    }
    command = b'{"v": 42, "id": "c-000123", "ts": 1700000000123}'
    cases: list[tuple[str, Any, Any]] = [
        (
            "encode point event",
            lambda: orjson.dumps(point),
            lambda: json.dumps(point, separators=(",", ":")).encode(),
        ),
        (
            "encode device event (30 points)",
            lambda: orjson.dumps(device),
            lambda: json.dumps(device, separators=(",", ":")).encode(),
        ),
        ("decode command", lambda: orjson.loads(command), lambda: json.loads(command)),
    ]
    out = []
    for name, fast, slow in cases:
        n = args.number
        t_or = min(timeit.repeat(fast, number=n, repeat=5)) / n
        t_js = min(timeit.repeat(slow, number=n, repeat=5)) / n
        out.append({"case": name, "orjson_us": 1e6 * t_or, "json_us": 1e6 * t_js, "speedup": t_js / t_or})
    _emit({"json": out})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mqtt")
    m.add_argument("--client", choices=["gmqtt", "paho"], required=True)
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--count", type=int, default=30_000)
    m.add_argument("--window", type=int, default=1000, help="QoS 1 messages in flight at most")
    m.add_argument("--paho-mode", choices=["thread", "loop"], default="loop")
    m.add_argument("--payload", type=int, default=60, help="payload bytes")
    m.set_defaults(fn=cmd_mqtt)
    c = sub.add_parser("modbus-client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--registers", type=int, default=30)
    c.set_defaults(fn=cmd_modbus_client)
    s = sub.add_parser("pymodbus-server")
    s.add_argument("--devices", type=int, default=1)
    s.add_argument("--registers", type=int, default=100)
    s.set_defaults(fn=cmd_pymodbus_server)
    j = sub.add_parser("json")
    j.add_argument("--number", type=int, default=20_000)
    j.set_defaults(fn=cmd_json)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
