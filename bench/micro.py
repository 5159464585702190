"""Building-block micro-benchmarks, each run as its own process so that its CPU is its own.
(The MQTT clients are compared by bench/mqtt_clients.py.)

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
