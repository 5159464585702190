"""Field simulator for the benchmarks: N Modbus TCP devices on 127.0.0.1, one listening port each.

A deliberately minimal asyncio Modbus TCP server written for the bench (MBAP header + FC 3 read
holding registers, FC 6 write single register, FC 16 write multiple registers; anything else
answers exception 1).  pymodbus's server does far more per request than a simulator needs:
scenario e of bench/run.py measures about 165 µs of CPU per request for pymodbus 3.16.1's server
and about 40 µs for this one, so 500 devices polled every 200 ms cost a tenth of a core instead
of almost half.

Every device has `--registers` holding registers (default 100).  A register's value is
`(base[i] + reads) & 0xFFFF`, where `reads` counts the FC 3 reads the device answered: every read
returns new values for every register, so with 1 s polls every value changes every second and the
agent publishes every point at every poll (report by exception with deadband 0 lets nothing
through unchanged).  A write sets `base[i]` so that the next read returns the written value.

Control, one command per line on stdin, one JSON line on stdout per command:

    stats     {"reads": FC 3 requests answered, "regs": registers served by them,
               "writes": FC 6/16 writes, "conns": open connections, "cpu_s": process CPU seconds}
    pause     stop answering (requests are read and dropped, as a dead device would)
    resume    answer again
    quit      exit

At start it prints `{"ready": true, "ports": [...]}` once every port listens (ports are chosen by
the kernel, so no two runs collide).  It exits when stdin closes (the runner died).

With `--units`, the devices sit behind one port as unit ids 1..N (a Modbus TCP to RS-485 bridge):
`ports` then holds that one port.

    python bench/sim.py --devices 500
    python bench/sim.py --devices 100 --units
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import struct
import sys
import time

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length (unit id + PDU), unit id
_FC3_REQ = struct.Struct(">HH")  # start address, quantity
_FC6_REQ = struct.Struct(">HH")  # address, value
_FC16_HDR = struct.Struct(">HHB")  # start address, quantity, byte count

_ILLEGAL_FUNCTION = 1
_ILLEGAL_ADDRESS = 2
_ILLEGAL_VALUE = 3


class Stats:
    __slots__ = ("conns", "reads", "regs", "writes")

    def __init__(self) -> None:
        self.reads = 0
        self.regs = 0
        self.writes = 0
        self.conns = 0


class Device:
    """One device's holding registers."""

    __slots__ = ("base", "reads", "stats")

    def __init__(self, index: int, size: int, stats: Stats) -> None:
        # Distinct start values per device and register, so that no two points look alike.
        self.base = [(index * 977 + i * 131) & 0xFFFF for i in range(size)]
        self.reads = 0
        self.stats = stats

    def read(self, start: int, count: int) -> bytes | int:
        base = self.base
        if count < 1 or count > 125 or start + count > len(base):
            return _ILLEGAL_ADDRESS if count <= 125 else _ILLEGAL_VALUE
        self.reads += 1
        g = self.reads
        stats = self.stats
        stats.reads += 1
        stats.regs += count
        values = [(b + g) & 0xFFFF for b in base[start : start + count]]
        return struct.pack(f">BB{count}H", 3, 2 * count, *values)

    def write(self, start: int, values: tuple[int, ...]) -> int:
        base = self.base
        if not values or start + len(values) > len(base):
            return _ILLEGAL_ADDRESS
        nxt = self.reads + 1  # the next read returns exactly the value written
        for i, v in enumerate(values):
            base[start + i] = (v - nxt) & 0xFFFF
        self.stats.writes += 1
        return 0


class ModbusTcpDevice(asyncio.Protocol):
    """One connection to one device: parse MBAP frames, answer in order, never await."""

    def __init__(self, device: Device | None, sim: Simulator) -> None:
        self.device = device  # None: behind a bridge, the unit id chooses the device
        self.sim = sim
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        self.sim.stats.conns += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim.stats.conns -= 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out: list[bytes] = []
        while len(buf) >= 8:
            tid, proto, length, unit = _MBAP.unpack_from(buf, 0)
            if proto != 0 or length < 2 or length > 254:  # not Modbus TCP: drop the connection
                if self.transport is not None:
                    self.transport.close()
                buf.clear()
                return
            end = 6 + length
            if len(buf) < end:
                break
            pdu = bytes(buf[7:end])
            del buf[:end]
            if self.sim.paused:
                continue
            dev = self.device
            if dev is None:
                units = self.sim.devices
                if not 1 <= unit <= len(units):
                    continue  # nobody on the bus answers: the bridge times out
                dev = units[unit - 1]
            reply = self.answer(dev, pdu)
            out.append(_MBAP.pack(tid, 0, len(reply) + 1, unit) + reply)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def answer(self, dev: Device, pdu: bytes) -> bytes:
        fc = pdu[0]
        try:
            if fc == 3:
                start, count = _FC3_REQ.unpack_from(pdu, 1)
                result = dev.read(start, count)
                if isinstance(result, bytes):
                    return result
                return bytes((fc | 0x80, result))
            if fc == 6:
                address, value = _FC6_REQ.unpack_from(pdu, 1)
                code = dev.write(address, (value,))
                return pdu[:5] if code == 0 else bytes((fc | 0x80, code))
            if fc == 16:
                start, count, nbytes = _FC16_HDR.unpack_from(pdu, 1)
                if count < 1 or count > 123 or nbytes != 2 * count or len(pdu) < 6 + nbytes:
                    return bytes((fc | 0x80, _ILLEGAL_VALUE))
                values = struct.unpack_from(f">{count}H", pdu, 6)
                code = dev.write(start, values)
                return pdu[:5] if code == 0 else bytes((fc | 0x80, code))
        except struct.error:
            return bytes((fc | 0x80, _ILLEGAL_VALUE))
        return bytes((fc | 0x80, _ILLEGAL_FUNCTION))


class Simulator:
    def __init__(self, devices: int, registers: int, *, units: bool = False) -> None:
        self.stats = Stats()
        self.devices = [Device(i, registers, self.stats) for i in range(devices)]
        self.units = units
        self.paused = False
        self.servers: list[asyncio.Server] = []

    async def start(self, host: str) -> list[int]:
        loop = asyncio.get_running_loop()
        ports = []
        if self.units:
            server = await loop.create_server(
                lambda: ModbusTcpDevice(None, self), host, 0, backlog=16, reuse_address=True
            )
            self.servers.append(server)
            return [server.sockets[0].getsockname()[1]]
        for dev in self.devices:
            server = await loop.create_server(
                lambda dev=dev: ModbusTcpDevice(dev, self), host, 0, backlog=16, reuse_address=True
            )
            self.servers.append(server)
            ports.append(server.sockets[0].getsockname()[1])
        return ports

    def stats_json(self) -> dict[str, object]:
        t = os.times()
        s = self.stats
        return {
            "reads": s.reads,
            "regs": s.regs,
            "writes": s.writes,
            "conns": s.conns,
            "paused": self.paused,
            "cpu_s": round(t.user + t.system, 4),
            "t": time.time(),
        }


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _control(sim: Simulator) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:  # the runner is gone
            return
        cmd = line.decode().strip()
        if cmd == "stats":
            _emit(sim.stats_json())
        elif cmd == "pause":
            sim.paused = True
            _emit(sim.stats_json())
        elif cmd == "resume":
            sim.paused = False
            _emit(sim.stats_json())
        elif cmd == "quit":
            return
        elif cmd:
            _emit({"error": f"unknown command {cmd!r}"})


async def _main(args: argparse.Namespace) -> None:
    _raise_nofile()
    sim = Simulator(args.devices, args.registers, units=args.units)
    ports = await sim.start(args.host)
    _emit({"ready": True, "ports": ports})
    try:
        await _control(sim)
    finally:
        for server in sim.servers:
            server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--registers", type=int, default=100, help="holding registers per device")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--units", action="store_true", help="all devices behind one port, unit ids 1..N")
    args = p.parse_args()
    if args.units and not 1 <= args.devices <= 247:
        p.error("--units takes 1 to 247 devices (Modbus unit ids)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the simulator only listens on the loopback interface")
    try:
        import uvloop  # the agent's own event loop when installed: cheaper per request
    except ImportError:
        asyncio.run(_main(args))
    else:
        uvloop.run(_main(args))


if __name__ == "__main__":
    main()
