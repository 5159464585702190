"""The Modbus wire path: client CPU per request (pymodbus against ours), and an RTU bus's utilisation.

    python bench/modbus_wire.py cpu [--seconds 3] [--rounds 3] [--json]
    python bench/modbus_wire.py rtu [--seconds 5] [--json]

`cpu` (scenario w of bench/run.py): one Modbus TCP connection, reads of 10 and 30 holding
registers back to back, one request in flight.  The client runs in a process of its own (pinned to
the agent's CPU when there are two or more) and counts its own CPU (`time.process_time()`); the
server runs in another process, on the other CPUs.  Clients:

    pymodbus        pymodbus 3.16.1's AsyncModbusTcpClient.read_holding_registers, nothing else
    link-pymodbus   the agent's ModbusLink with `driver: pymodbus` (the same, behind our wrapper)
    link-builtin    the agent's ModbusLink with `driver: builtin` (the default)

on uvloop (what the agent runs on) against two servers, pymodbus's (about 200 µs of CPU per
request: it bounds the round trips) and bench/sim.py (about 40 µs), and on asyncio's own loop
against pymodbus's.  Each combination runs `--rounds` times, the clients alternating, so that a
change in the machine's load shows as a spread rather than as a difference between clients.

`rtu` (scenario rtu): an RS-485 bus simulated over a socat pty pair.  The slave (a process of its
own) answers every read request for units 1..4 after the time the request and the reply take on a
real line at the configured baud rate, plus the t3.5 silence it needs to see the request's end:
`wire(8) + t3.5 + wire(5 + 2n)` after the request was written.  The master polls 10 registers
from the four units in turn, back to back.  A transaction cannot take less than
`wire(8) + t3.5 + wire(5 + 2n) + t3.5` on a real line (the master's own t3.5 before the next
request): the bus utilisation is transactions/s × that limit.  Masters: a reference (blocking
reads and a sleep of exactly t3.5, nothing else: the ceiling of the set-up itself, with its pty,
socat and the machine's load), the agent's ModbusLink (builtin and pymodbus drivers), and the
agent's poller (ModbusLine: scheduling, decoding, readings handed to a counting stub instead of
the outbox) over the builtin driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))

PY = sys.executable
UNITS = 4


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _run_loop(loop_name: str, coro: Any) -> Any:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# --------------------------------------------------------------------------------------------------
# child: one client measuring its own CPU per request


async def _client(impl: str, port: int, registers: int, seconds: float) -> dict[str, Any]:
    from picogate.modbus._codec import Table
    from picogate.modbus._transport import ModbusLink, TcpParams

    if impl == "pymodbus":
        from pymodbus.client import AsyncModbusTcpClient

        # 5 s: a server stalled by a loaded machine must not end the measurement
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0, reconnect_delay=0)
        if not await client.connect():
            raise SystemExit(f"cannot connect to 127.0.0.1:{port}")

        async def one() -> None:
            reply = await client.read_holding_registers(0, count=registers, device_id=1)
            if reply.isError():
                raise SystemExit(f"exception reply: {reply}")

        close = client.close
    else:
        link = ModbusLink(
            TcpParams("127.0.0.1", port),
            timeout=5.0,
            driver="pymodbus" if impl == "link-pymodbus" else "builtin",
        )

        async def one() -> None:
            await link.read(1, Table.HOLDING, 0, registers)

        close = link.close
    for _ in range(200):  # warm-up
        await one()
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(20):
            await one()
        n += 20
        if time.perf_counter() >= deadline:
            break
    t1, c1 = time.perf_counter(), time.process_time()
    close()
    return {
        "impl": impl,
        "registers": registers,
        "requests": n,
        "round_trips_per_s": n / (t1 - t0),
        "cpu_us_per_request": 1e6 * (c1 - c0) / n,
        "client_cpu_pct": 100 * (c1 - c0) / (t1 - t0),
    }


def cmd_client(args: argparse.Namespace) -> None:
    _emit(_run_loop(args.loop, _client(args.impl, args.port, args.registers, args.seconds)))


# --------------------------------------------------------------------------------------------------
# runner: cpu


COMBOS = (("pymodbus", "uvloop"), ("sim", "uvloop"), ("pymodbus", "asyncio"))
"""(server, client loop) pairs measured by `cpu`."""


def run_cpu(
    seconds: float, rounds: int, place: Any, combos: tuple[tuple[str, str], ...] = COMBOS
) -> dict[str, Any]:
    import _bench as B

    impls = ["pymodbus", "link-pymodbus", "link-builtin"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for server in dict.fromkeys(s for s, _ in combos):
            sim, ports = B.start_sim(workdir, 1, place.peers, impl="bench" if server == "sim" else "pymodbus")
            try:
                for loop_name in (lp for s, lp in combos if s == server):
                    for registers in (10, 30):
                        for _ in range(rounds):
                            for impl in impls:
                                child = B.Child(
                                    f"client-{impl}",
                                    [PY, str(BENCH / "modbus_wire.py"), "client", "--impl", impl, "--port",
                                     str(ports[0]), "--registers", str(registers), "--seconds", str(seconds),
                                     "--loop", loop_name],
                                    workdir / "client.log",
                                    cpus=place.agent,
                                    control=True,
                                )  # fmt: skip
                                child.start()
                                try:
                                    r = child.line(seconds + 60)
                                finally:
                                    child.stop(timeout=5)
                                r.update(server=server, loop=loop_name, load=os.getloadavg()[0])
                                rows.append(r)
            finally:
                sim.stop()
    return {"rows": rows, "summary": summarise(rows), "cores": os.cpu_count()}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["server"], r["loop"], r["registers"], r["impl"]), []).append(r)
    out = []
    for (server, loop_name, registers, impl), rs in groups.items():
        cpu = [r["cpu_us_per_request"] for r in rs]
        rate = [r["round_trips_per_s"] for r in rs]
        out.append({
            "server": server, "loop": loop_name, "registers": registers, "impl": impl,
            "cpu_us_min": min(cpu), "cpu_us_max": max(cpu), "cpu_us_median": statistics.median(cpu),
            "rate_min": min(rate), "rate_max": max(rate),
            "load_min": min(r["load"] for r in rs), "load_max": max(r["load"] for r in rs),
        })  # fmt: skip
    return out


def report_cpu(result: dict[str, Any]) -> None:
    print(
        f"   Modbus TCP client, one connection, one request in flight; client CPU per request (range over runs), cores: {result['cores']}"
    )
    print("     server    loop     regs  client          µs CPU/request   round trips/s   load")
    base: dict[tuple[str, str, int], float] = {}
    for s in result["summary"]:
        if s["impl"] == "pymodbus":
            base[(s["server"], s["loop"], s["registers"])] = s["cpu_us_median"]
    for s in result["summary"]:
        ratio = (
            base.get((s["server"], s["loop"], s["registers"]), 0) / s["cpu_us_median"]
            if s["cpu_us_median"]
            else 0
        )
        print(
            f"     {s['server']:<9} {s['loop']:<8} {s['registers']:>4}  {s['impl']:<14} {s['cpu_us_min']:6.0f}–{s['cpu_us_max']:<6.0f}"
            f" ({ratio:3.1f}× less)  {s['rate_min']:7,.0f}–{s['rate_max']:<7,.0f} {s['load_min']:.1f}–{s['load_max']:.1f}"
        )


# --------------------------------------------------------------------------------------------------
# RTU bus: the slave (a plain blocking process: its timing is the wire's, not an event loop's)


def _crc(data: bytes) -> bytes:
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return bytes((c & 0xFF, c >> 8))


def _open_raw(path: str) -> int:
    import termios
    import tty

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def cmd_slave(args: argparse.Namespace) -> None:
    from picogate.modbus._wire import frame_gap, wire_time

    fd = _open_raw(args.pty)
    gap = frame_gap(args.baud)
    buf = bytearray()
    served = 0
    replies: dict[tuple[int, int, int], bytes] = {}
    _emit({"ready": True})
    while True:
        r, _, _ = select.select([fd, sys.stdin], [], [], 1.0)
        if sys.stdin in r:
            line = sys.stdin.readline().strip()
            if line in ("", "quit"):
                break
            _emit({"served": served})
            continue
        if fd not in r:
            continue
        arrived = time.perf_counter()
        try:
            buf += os.read(fd, 4096)
        except BlockingIOError:
            continue
        while len(buf) >= 8:
            frame = bytes(buf[:8])
            if frame[1] != 3 or _crc(frame[:6]) != frame[6:8] or not 1 <= frame[0] <= UNITS:
                del buf[:1]
                continue
            del buf[:8]
            unit, start, count = frame[0], *struct.unpack(">HH", frame[2:6])
            reply = replies.get((unit, start, count))
            if reply is None:
                body = bytes((unit, 3, 2 * count)) + b"".join(
                    ((1000 * unit + start + i) & 0xFFFF).to_bytes(2, "big") for i in range(count)
                )
                reply = replies[(unit, start, count)] = body + _crc(body)
            answer_at = arrived + wire_time(8, args.baud) + gap + wire_time(len(reply), args.baud)
            while (left := answer_at - time.perf_counter()) > 0:
                time.sleep(left)
            os.write(fd, reply)
            served += 1


# --------------------------------------------------------------------------------------------------
# RTU bus: the master


async def _master(kind: str, pty: str, baud: int, registers: int, seconds: float) -> dict[str, Any]:
    from picogate._registry import PointRegistry
    from picogate.modbus import ModbusRtuDevice
    from picogate.modbus._codec import Table
    from picogate.modbus._source import ModbusLine
    from picogate.modbus._transport import ModbusLink, SerialParams

    done = 0
    readings = 0
    c0 = t0 = 0.0
    if kind.startswith("link"):
        link = ModbusLink(
            SerialParams(pty, baud), timeout=0.5, driver="pymodbus" if kind == "link-pymodbus" else "builtin"
        )
        for i in range(20):
            await link.read(1 + i % UNITS, Table.HOLDING, 0, registers)
        c0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            values = await link.read(1 + done % UNITS, Table.HOLDING, 0, registers)
            assert values[0] == 1000 * (1 + done % UNITS)
            done += 1
        t1, c1 = time.perf_counter(), time.process_time()
        link.close()
        stats = link.stats
    else:
        devices = [
            ModbusRtuDevice.model_validate(
                {
                    "name": f"s{u}",
                    "type": "modbus_rtu",
                    "port": pty,
                    "baudrate": baud,
                    "unit_id": u,
                    "poll": "1ms",
                    "timeout": "500ms",
                    "points": [{"name": f"r{i}", "table": "holding", "address": i} for i in range(registers)],
                }
            )
            for u in range(1, UNITS + 1)
        ]

        async def emit(batch: Any) -> None:
            nonlocal readings
            readings += len(batch)

        async def status(_: Any) -> None:
            return None

        line = ModbusLine(devices, registry=PointRegistry(), emit=emit, status_changed=status)
        task = asyncio.create_task(line.run())
        await asyncio.sleep(1.0)
        r0, c0, t0 = line.stats.requests, time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        t1, c1 = time.perf_counter(), time.process_time()
        done = line.stats.requests - r0
        line.stop()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        stats = line.link.stats
    from picogate.modbus._wire import frame_gap, wire_time

    limit = wire_time(8, baud) + 2 * frame_gap(baud) + wire_time(5 + 2 * registers, baud)
    rate = done / (t1 - t0)
    return {
        "master": kind,
        "baud": baud,
        "registers": registers,
        "transactions": done,
        "per_s": rate,
        "limit_per_s": 1 / limit,
        "utilisation_pct": 100 * rate * limit,
        "cpu_us_per_tx": 1e6 * (c1 - c0) / max(done, 1),
        "discarded": {k: getattr(stats, k) for k in ("late", "foreign", "mismatched", "garbage")},
    }


def _reference_master(pty: str, baud: int, registers: int, seconds: float) -> dict[str, Any]:
    """The least a master can do on this pty: blocking reads, a sleep of exactly t3.5 after each
    reply, nothing else.  What it reaches is the ceiling of the set-up (pty, socat, the slave's
    timing, the machine's load), against which the agent's masters are compared."""
    from picogate.modbus._wire import frame_gap, read_request, rtu_frame, wire_time

    fd = _open_raw(pty)
    frames = [rtu_frame(read_request(u, 3, 0, registers)) for u in range(1, UNITS + 1)]
    size, gap = 5 + 2 * registers, frame_gap(baud)
    done = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        os.write(fd, frames[done % UNITS])
        got = b""
        while len(got) < size:
            if not select.select([fd], [], [], 1.0)[0]:
                raise SystemExit("reference master: no reply within 1 s")
            got += os.read(fd, 4096)
        ready = time.perf_counter() + gap
        while (left := ready - time.perf_counter()) > 0:
            time.sleep(left)
        done += 1
    t1, c1 = time.perf_counter(), time.process_time()
    os.close(fd)
    limit = wire_time(8, baud) + 2 * gap + wire_time(size, baud)
    rate = done / (t1 - t0)
    return {
        "master": "reference",
        "baud": baud,
        "registers": registers,
        "transactions": done,
        "per_s": rate,
        "limit_per_s": 1 / limit,
        "utilisation_pct": 100 * rate * limit,
        "cpu_us_per_tx": 1e6 * (c1 - c0) / max(done, 1),
        "discarded": {},
    }


def cmd_master(args: argparse.Namespace) -> None:
    if args.kind == "reference":
        _emit(_reference_master(args.pty, args.baud, args.registers, args.seconds))
        return
    _emit(_run_loop("uvloop", _master(args.kind, args.pty, args.baud, args.registers, args.seconds)))


def run_rtu(seconds: float, place: Any, registers: int = 10) -> dict[str, Any]:
    import _bench as B
    from _peers import SocatPtyPair

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for baud in (115200, 9600):
            for kind in ("reference", "link-builtin", "line-builtin", "link-pymodbus"):
                pair = SocatPtyPair(workdir / f"pty-{baud}-{kind}").start()
                slave = master = None
                try:
                    slave = B.Child("rtu-slave", [PY, str(BENCH / "modbus_wire.py"), "slave", "--pty", pair.path_a,
                                                  "--baud", str(baud)], workdir / "slave.log", cpus=place.peers,
                                    control=True).start()  # fmt: skip
                    slave.line(30)
                    span = seconds * (3 if baud < 19200 else 1)
                    master = B.Child("rtu-master", [PY, str(BENCH / "modbus_wire.py"), "master", "--kind", kind,
                                                    "--pty", pair.path_b, "--baud", str(baud), "--registers",
                                                    str(registers), "--seconds", str(span)],
                                     workdir / "master.log", cpus=place.agent, control=True).start()  # fmt: skip
                    r = master.line(span + 60)
                    r["load"] = os.getloadavg()[0]
                    rows.append(r)
                finally:
                    for child in (master, slave):
                        if child is not None:
                            child.stop(timeout=5)
                    pair.stop()
    return {"rows": rows, "cores": os.cpu_count()}


def report_rtu(result: dict[str, Any]) -> None:
    print(
        f"   RTU bus over a socat pty, slave answering after the real wire time, 4 units, 10 registers; cores: {result['cores']}"
    )
    print(
        "     baud    master          tx/s   wire limit   utilisation   of reference   µs CPU/tx   load   discarded"
    )
    ref = {r["baud"]: r["utilisation_pct"] for r in result["rows"] if r["master"] == "reference"}
    for r in result["rows"]:
        of_ref = 100 * r["utilisation_pct"] / ref[r["baud"]] if ref.get(r["baud"]) else 0.0
        print(
            f"     {r['baud']:>6}  {r['master']:<14} {r['per_s']:6.1f}   {r['limit_per_s']:6.1f}/s    {r['utilisation_pct']:5.1f} %"
            f"       {of_ref:5.1f} %   {r['cpu_us_per_tx']:9.0f}   {r['load']:.1f}   {sum(r['discarded'].values())}"
        )


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cpu", help="client CPU per request, pymodbus against ours")
    c.add_argument("--seconds", type=float, default=2.0)
    c.add_argument("--rounds", type=int, default=2)
    c.add_argument("--no-pin", dest="pin", action="store_false")
    c.add_argument("--json", action="store_true")
    r = sub.add_parser("rtu", help="an RTU bus's utilisation")
    r.add_argument("--seconds", type=float, default=5.0)
    r.add_argument("--no-pin", dest="pin", action="store_false")
    r.add_argument("--json", action="store_true")
    cl = sub.add_parser("client")
    cl.add_argument("--impl", required=True)
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--registers", type=int, default=30)
    cl.add_argument("--seconds", type=float, default=3.0)
    cl.add_argument("--loop", default="uvloop")
    sl = sub.add_parser("slave")
    sl.add_argument("--pty", required=True)
    sl.add_argument("--baud", type=int, required=True)
    ma = sub.add_parser("master")
    ma.add_argument("--kind", required=True)
    ma.add_argument("--pty", required=True)
    ma.add_argument("--baud", type=int, required=True)
    ma.add_argument("--registers", type=int, default=10)
    ma.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    if args.cmd == "client":
        cmd_client(args)
    elif args.cmd == "slave":
        cmd_slave(args)
    elif args.cmd == "master":
        cmd_master(args)
    else:
        import _bench as B

        place = B.placement(args.pin)
        print(f"cores: {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; {place.describe()}")
        try:
            if args.cmd == "cpu":
                result = run_cpu(args.seconds, args.rounds, place)
                report_cpu(result)
            else:
                result = run_rtu(args.seconds, place)
                report_rtu(result)
        finally:
            B.stop_all()
        if args.json:
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
