"""ModbusLink against devices that misbehave on purpose, on loopback TCP and a socat pty pair.

A scripted slave (below) answers each request as a test says: late, twice, for another unit, in
another shape, with garbage or a broken CRC, or not at all.  What is checked is what the agent's
wire path does with it: which reply is taken for which request, what is discarded and counted,
when the next request may go out.  Orders of events are asserted, and lower bounds of silences
(which a loaded machine can only lengthen); never how fast anything is.

The last tests check the two drivers (builtin and pymodbus) against a real pymodbus server on all
three framings: the same values, the same writes, the same exceptions.  Everything runs on both
event loops, asyncio's and uvloop (the agent's): see conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from _fwbus import _open_raw
from _peers import ModbusPeer, ModbusRtuPeer, ModbusTcpPeer, SocatPtyPair
from picogate.modbus._codec import Table
from picogate.modbus._transport import FailKind, ModbusFailure, ModbusLink, SerialParams, TcpParams
from picogate.modbus._wire import crc16, frame_gap

Framing = Literal["mbap", "rtu"]

Send = list[tuple[float, bytes]]  # (delay after the request arrived, bytes)


def rtu(unit: int, pdu: bytes) -> bytes:
    body = bytes((unit,)) + pdu
    c = crc16(body)
    return body + bytes((c & 0xFF, c >> 8))


def regs_pdu(fc: int, values: list[int]) -> bytes:
    return bytes((fc, 2 * len(values))) + struct.pack(f">{len(values)}H", *values)


def value(unit: int, address: int) -> int:
    return (1000 * unit + address) & 0xFFFF


class Request:
    def __init__(self, framing: Framing, frame: bytes, at: float) -> None:
        self.frame = frame
        self.at = at
        if framing == "mbap":
            self.tid, _, _, self.unit = struct.unpack(">HHHB", frame[:7])
            self.pdu = frame[7:]
        else:
            self.tid, self.unit, self.pdu = 0, frame[0], frame[1:-2]
        self.fc = self.pdu[0]
        self.address, self.count = struct.unpack(">HH", self.pdu[1:5])


class ScriptedSlave:
    """Cuts requests off the stream and answers each with `script(request, n)` → [(delay, bytes)]
    (n counts the requests).  The default script answers reads correctly (value(unit, address))
    and echoes writes."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self.requests: list[Request] = []
        self.sent: list[tuple[float, bytes]] = []
        self.script: Callable[[Request, int], Send] = self.answer
        self._buf = bytearray()
        self._write: Callable[[bytes], None] = lambda _: None
        self._handles: list[asyncio.TimerHandle] = []

    def frame(self, req: Request, pdu: bytes, unit: int | None = None, tid: int | None = None) -> bytes:
        u = req.unit if unit is None else unit
        if self.framing == "rtu":
            return rtu(u, pdu)
        return struct.pack(">HHHB", req.tid if tid is None else tid, 0, len(pdu) + 1, u) + pdu

    def reply_pdu(self, req: Request) -> bytes:
        if req.fc in (3, 4):
            return regs_pdu(req.fc, [value(req.unit, req.address + i) for i in range(req.count)])
        return req.pdu[:5] if req.fc in (15, 16) else req.pdu  # writes: the echo

    def answer(self, req: Request, n: int) -> Send:
        return [(0.0, self.frame(req, self.reply_pdu(req)))]

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            size = self._size()
            if size is None or len(self._buf) < size:
                return
            req = Request(self.framing, bytes(self._buf[:size]), time.monotonic())
            del self._buf[:size]
            self.requests.append(req)
            loop = asyncio.get_running_loop()
            for delay, out in self.script(req, len(self.requests) - 1):
                self._handles.append(loop.call_later(delay, self._send, out))

    def _size(self) -> int | None:
        buf = self._buf
        if self.framing == "mbap":
            return 6 + int.from_bytes(buf[4:6], "big") if len(buf) >= 6 else None
        if len(buf) < 2:
            return None
        if buf[1] in (15, 16):
            return 9 + buf[6] if len(buf) >= 7 else None
        return 10 if buf[1] == 22 else 8

    def _send(self, out: bytes) -> None:
        self.sent.append((time.monotonic(), out))
        with contextlib.suppress(OSError, RuntimeError):
            self._write(out)

    def stop(self) -> None:
        for h in self._handles:
            h.cancel()


@contextlib.asynccontextmanager
async def tcp_slave(framing: Framing) -> AsyncIterator[tuple[ScriptedSlave, TcpParams]]:
    slave = ScriptedSlave(framing)
    writers: list[asyncio.StreamWriter] = []
    done: list[asyncio.Future[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        finished = asyncio.get_running_loop().create_future()
        done.append(finished)
        slave._write = writer.write
        try:
            while data := await reader.read(4096):
                slave.feed(data)
        except ConnectionError:
            pass
        finally:
            finished.set_result(None)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield slave, TcpParams("127.0.0.1", port, "rtu" if framing == "rtu" else "socket")
    finally:
        slave.stop()
        server.close()
        for w in writers:
            w.close()
        async with asyncio.timeout(5):
            await asyncio.gather(*done)


@contextlib.asynccontextmanager
async def serial_slave(
    tmp_path: Path, baudrate: int = 19200
) -> AsyncIterator[tuple[ScriptedSlave, SerialParams]]:
    pair = SocatPtyPair(tmp_path / "pty").start()
    slave = ScriptedSlave("rtu")
    fd = _open_raw(pair.path_a)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            slave.feed(os.read(fd, 4096))

    loop.add_reader(fd, readable)
    slave._write = lambda b: os.write(fd, b) and None
    try:
        yield slave, SerialParams(pair.path_b, baudrate)
    finally:
        slave.stop()
        loop.remove_reader(fd)
        os.close(fd)
        pair.stop()


Carrier = Literal["tcp", "rtu_over_tcp", "serial"]


@contextlib.asynccontextmanager
async def slave_for(carrier: Carrier, tmp_path: Path) -> AsyncIterator[tuple[ScriptedSlave, Any]]:
    if carrier == "serial":
        async with serial_slave(tmp_path) as s:
            yield s
    else:
        async with tcp_slave("mbap" if carrier == "tcp" else "rtu") as s:
            yield s


HR = Table.HOLDING
RTU_CARRIERS: list[Carrier] = ["rtu_over_tcp", "serial"]
ALL_CARRIERS: list[Carrier] = ["tcp", "rtu_over_tcp", "serial"]


async def failure(coro: Any) -> ModbusFailure:
    with pytest.raises(ModbusFailure) as exc:
        await coro
    return exc.value


# -- Modbus TCP: transaction ids ---------------------------------------------------------------------


async def test_tcp_late_reply_carries_an_old_transaction_id_and_is_discarded(tmp_path: Path) -> None:
    async with tcp_slave("mbap") as (slave, params):
        # The first request is answered after its timeout, just before the second's own answer.
        def script(req: Request, n: int) -> Send:
            return [(0.5 if n == 0 else 0.3, slave.frame(req, slave.reply_pdu(req)))]

        slave.script = script
        link = ModbusLink(params, timeout=0.4)
        f = await failure(link.read(1, HR, 0, 2))
        assert f.kind is FailKind.TIMEOUT
        assert await link.read(1, HR, 10, 2) == [value(1, 10), value(1, 11)]
        assert link.stats.late == 1  # the first answer came while the second request waited
        assert link.quiet_until(1) == 0.0  # transaction ids: nothing to wait for
        link.close()


async def test_tcp_other_unit_is_skipped_and_misfit_is_refused(tmp_path: Path) -> None:
    async with tcp_slave("mbap") as (slave, params):

        def script(req: Request, n: int) -> Send:
            good = slave.frame(req, slave.reply_pdu(req))
            if n == 0:  # same transaction id, another unit first
                return [(0.0, slave.frame(req, slave.reply_pdu(req), unit=req.unit + 1)), (0.01, good)]
            if n == 1:  # the right id and unit, the wrong byte count
                return [(0.0, slave.frame(req, regs_pdu(3, [1])))]
            if n == 2:
                return [(0.0, slave.frame(req, b"\x83\x02"))]
            return [(0.0, good)]

        slave.script = script
        link = ModbusLink(params, timeout=1.0)
        assert await link.read(7, HR, 3, 2) == [value(7, 3), value(7, 4)]
        assert link.stats.foreign == 1
        f = await failure(link.read(7, HR, 3, 2))
        assert f.kind is FailKind.PROTOCOL
        assert "byte count 2 (4 expected for 2 registers)" in str(f)
        assert link.stats.mismatched == 1
        f = await failure(link.read(7, HR, 3, 2))
        assert (f.kind, f.exception_code) == (FailKind.EXCEPTION, 2)
        assert "exception 2 (illegal data address)" in str(f)
        assert await link.read(7, HR, 3, 1) == [value(7, 3)]
        link.close()


async def test_tcp_bad_header_drops_the_connection_and_the_next_request_reconnects() -> None:
    async with tcp_slave("mbap") as (slave, params):
        slave.script = lambda req, n: (
            [(0.0, b"\x00\x01\x00\x07\x00\x06\x01\x03\x02\x00\x01")] if n == 0 else slave.answer(req, n)
        )
        link = ModbusLink(params, timeout=1.0)
        f = await failure(link.read(1, HR, 0, 1))
        assert f.kind is FailKind.PROTOCOL
        assert "protocol id 7" in str(f)
        assert not link.connected
        assert link.stats.desync == 1
        assert await link.read(1, HR, 0, 1) == [value(1, 0)]
        link.close()


async def test_one_request_in_flight_whatever_the_callers_do() -> None:
    async with tcp_slave("mbap") as (slave, params):
        slave.script = lambda req, n: [(0.02, slave.frame(req, slave.reply_pdu(req)))]
        link = ModbusLink(params, timeout=1.0)
        got = await asyncio.gather(*(link.read(1, HR, a, 1) for a in range(8)))
        assert got == [[value(1, a)] for a in range(8)]
        # each request arrived after the previous reply was sent
        for i in range(1, 8):
            assert slave.requests[i].at >= slave.sent[i - 1][0]
        link.close()


async def test_connection_refused_and_lost() -> None:
    async with tcp_slave("mbap") as (_, params):
        pass
    link = ModbusLink(params, timeout=0.5)
    f = await failure(link.read(1, HR, 0, 1))
    assert f.kind is FailKind.DISCONNECTED
    assert f"cannot connect to 127.0.0.1:{params.port}" in str(f)
    async with tcp_slave("mbap") as (_, params):
        link = ModbusLink(params, timeout=0.5)
        assert await link.read(1, HR, 0, 1) == [value(1, 0)]
    f = await failure(link.read(1, HR, 0, 1))  # the server is gone
    assert f.kind is FailKind.DISCONNECTED
    assert not link.connected


# -- RTU: quiet windows, skipping, accounting ------------------------------------------------------


@pytest.mark.parametrize("carrier", RTU_CARRIERS)
async def test_rtu_late_reply_is_discarded_and_ends_the_window(carrier: Carrier, tmp_path: Path) -> None:
    """A reply 2.5 × the timeout late: the unit is asked nothing else until it has arrived; then
    the next request goes out (before the window would have run out) and gets its own answer."""
    async with slave_for(carrier, tmp_path) as (slave, params):
        late = 0.5

        def script(req: Request, n: int) -> Send:
            return [(late, slave.frame(req, slave.reply_pdu(req)))] if n == 0 else slave.answer(req, n)

        slave.script = script
        link = ModbusLink(params, timeout=0.2, late_reply={1: 5.0})
        f = await failure(link.read(1, HR, 0, 2))
        assert f.kind is FailKind.TIMEOUT
        until = link.quiet_until(1)
        assert until > time.monotonic() + 4.0  # the window is there ...
        assert await link.read(1, HR, 10, 2) == [value(1, 10), value(1, 11)]
        assert len(slave.requests) == 2
        assert slave.requests[1].at >= slave.sent[0][0]  # ... the next request waited for the late reply
        assert link.quiet_until(1) == 0.0  # ... which ended it
        assert link.stats.late == 1
        link.close()


@pytest.mark.parametrize("carrier", RTU_CARRIERS)
async def test_rtu_a_retry_goes_at_once_and_its_late_answer_is_the_same_registers(
    carrier: Carrier, tmp_path: Path
) -> None:
    async with slave_for(carrier, tmp_path) as (slave, params):

        def script(req: Request, n: int) -> Send:
            return [(0.35, slave.frame(req, slave.reply_pdu(req)))] if n < 2 else slave.answer(req, n)

        slave.script = script
        link = ModbusLink(params, timeout=0.25, late_reply={1: 3.0})
        assert (await failure(link.read(1, HR, 0, 2))).kind is FailKind.TIMEOUT
        # the very same request again: sent at once, answered by the first try's late reply
        assert await link.read(1, HR, 0, 2) == [value(1, 0), value(1, 1)]
        assert slave.requests[1].at < slave.sent[0][0]
        # the retry's own answer is still owed: another request waits for it
        assert link.quiet_until(1) > 0
        assert await link.read(1, HR, 20, 2) == [value(1, 20), value(1, 21)]
        assert slave.requests[2].at >= slave.sent[1][0]
        assert link.stats.late == 1
        link.close()


@pytest.mark.parametrize("carrier", RTU_CARRIERS)
async def test_rtu_window_runs_out(carrier: Carrier, tmp_path: Path) -> None:
    async with slave_for(carrier, tmp_path) as (slave, params):
        slave.script = lambda req, n: [] if n == 0 else slave.answer(req, n)
        link = ModbusLink(params, timeout=0.1)  # late_reply: 3 × timeout
        t0 = time.monotonic()
        assert (await failure(link.read(1, HR, 0, 2))).kind is FailKind.TIMEOUT
        until = link.quiet_until(1)
        assert until - t0 >= 0.1 + 0.3  # timeout + 3 × timeout after the request
        # other units are not held up
        assert await link.read(2, HR, 0, 1) == [value(2, 0)]
        assert slave.requests[1].at < until
        assert await link.read(1, HR, 10, 1) == [value(1, 10)]
        assert slave.requests[2].at >= until
        link.close()


@pytest.mark.parametrize("carrier", RTU_CARRIERS)
async def test_rtu_frames_that_are_not_the_reply_are_skipped_and_counted(
    carrier: Carrier, tmp_path: Path
) -> None:
    async with slave_for(carrier, tmp_path) as (slave, params):

        def script(req: Request, n: int) -> Send:
            good = slave.frame(req, slave.reply_pdu(req))
            noise = [
                rtu(req.unit + 1, regs_pdu(3, [1, 2])),  # another unit
                rtu(req.unit, regs_pdu(3, [1])),  # this unit, another shape
                rtu(req.unit, regs_pdu(4, [1, 2])),  # this unit, another function
                b"\xff\x00\xfe",  # garbage
            ]
            return [(0.0, b"".join(noise) + good)]

        slave.script = script
        link = ModbusLink(params, timeout=1.0)
        assert await link.read(1, HR, 5, 2) == [value(1, 5), value(1, 6)]
        assert (link.stats.foreign, link.stats.mismatched, link.stats.garbage) == (1, 2, 3)
        assert link.quiet_until(1) == 0.0
        link.close()


@pytest.mark.parametrize("carrier", RTU_CARRIERS)
async def test_rtu_broken_crc_is_no_reply(carrier: Carrier, tmp_path: Path) -> None:
    async with slave_for(carrier, tmp_path) as (slave, params):

        def script(req: Request, n: int) -> Send:
            good = bytearray(slave.frame(req, slave.reply_pdu(req)))
            if n == 0:
                good[4] ^= 0x10
            return [(0.0, bytes(good))]

        slave.script = script
        link = ModbusLink(params, timeout=0.2, late_reply={1: 0.2})
        f = await failure(link.read(1, HR, 0, 2))
        assert f.kind is FailKind.TIMEOUT
        assert str(f) == "read holding 0+2 from unit 1: no reply within 0.2 s (received 9 byte(s) of garbage)"
        assert link.stats.garbage == 9
        assert await link.read(1, HR, 0, 2) == [value(1, 0), value(1, 1)]  # a retry
        assert await link.read(1, HR, 7, 1) == [value(1, 7)]
        link.close()


@pytest.mark.parametrize("carrier", ALL_CARRIERS)
async def test_exception_replies_and_writes(carrier: Carrier, tmp_path: Path) -> None:
    async with slave_for(carrier, tmp_path) as (slave, params):

        def script(req: Request, n: int) -> Send:
            if req.address == 99:
                return [(0.0, slave.frame(req, bytes((req.fc | 0x80, 2))))]
            return slave.answer(req, n)

        slave.script = script
        link = ModbusLink(params, timeout=1.0)
        f = await failure(link.read(3, HR, 99, 1))
        assert (f.kind, f.exception_code) == (FailKind.EXCEPTION, 2)
        assert link.quiet_until(3) == 0.0  # an exception reply is an answer
        await link.write(3, HR, 4, [1234])
        await link.write(3, HR, 4, [1, 2, 3])
        await link.write(3, Table.COIL, 4, [True])
        await link.write(3, Table.COIL, 4, [True, False, True])
        await link.mask_write(3, 4, 0xFFEF, 0x0010)
        assert [r.fc for r in slave.requests[1:]] == [6, 16, 5, 15, 22]
        f = await failure(link.write(3, HR, 99, [1]))
        assert (f.kind, f.exception_code) == (FailKind.EXCEPTION, 2)
        f = await failure(link.write(3, Table.INPUT, 4, [1]))
        assert f.kind is FailKind.PROTOCOL
        f = await failure(link.write(3, HR, 4, [70000]))
        assert f.kind is FailKind.PROTOCOL
        assert "70000 is not a register value" in str(f)
        link.close()


# -- serial line: t3.5, the port going away ----------------------------------------------------------


async def test_serial_line_keeps_t35_of_silence_before_each_request(tmp_path: Path) -> None:
    """At 1200 baud t3.5 is 29 ms: each request reaches the slave at least that long after the
    previous reply left it (the pty only adds delay)."""
    async with serial_slave(tmp_path, baudrate=1200) as (slave, params):
        link = ModbusLink(params, timeout=1.0)
        for a in range(6):
            assert await link.read(1 + a % 2, HR, a, 1) == [value(1 + a % 2, a)]
        gap = frame_gap(1200)
        assert gap == pytest.approx(0.0292, abs=1e-4)
        for i in range(1, 6):
            assert slave.requests[i].at - slave.sent[i - 1][0] >= gap
        link.close()


async def test_serial_port_missing_and_unplugged(tmp_path: Path) -> None:
    link = ModbusLink(SerialParams(str(tmp_path / "nope")), timeout=0.2)
    f = await failure(link.read(1, HR, 0, 1))
    assert f.kind is FailKind.DISCONNECTED
    assert f"cannot connect to {tmp_path / 'nope'}" in str(f)
    pair = SocatPtyPair(tmp_path / "pty").start()
    peer = ModbusRtuPeer(pair, {1: {"hr": [5, 6]}})
    await peer.start()
    link = ModbusLink(SerialParams(pair.path_b), timeout=0.5)
    try:
        assert await link.read(1, HR, 0, 2) == [5, 6]
        await peer.stop()
        pair.stop()
        f = await failure(link.read(1, HR, 0, 2))
        assert f.kind in (FailKind.DISCONNECTED, FailKind.TIMEOUT)
        pair.start()
        await peer.start()
        for _ in range(20):  # bounded: reconnects on the next request
            with contextlib.suppress(ModbusFailure):
                if await link.read(1, HR, 0, 2) == [5, 6]:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("no reconnect")
    finally:
        link.close()
        await peer.stop()
        pair.stop()


# -- both drivers against pymodbus's own server ----------------------------------------------------


@pytest.mark.parametrize("driver", ["builtin", "pymodbus"])
@pytest.mark.parametrize("carrier", ALL_CARRIERS)
async def test_drivers_agree_against_a_pymodbus_server(driver: str, carrier: Carrier, tmp_path: Path) -> None:
    units = {
        9: {
            "hr": [1, 2, 0xFFFF, 0x1234],
            "ir": [7, 8],
            "co": [True, False, True],
            "di": [False, True],
            "invalid": {"hr": {50}},
        }
    }
    peer: ModbusPeer
    pair = None
    if carrier == "serial":
        pair = SocatPtyPair(tmp_path / "pty").start()
        peer = ModbusRtuPeer(pair, units)
        params: Any = SerialParams(pair.path_b)
    else:
        tcp = ModbusTcpPeer(units, framer="socket" if carrier == "tcp" else "rtu")
        peer = tcp
        params = TcpParams(tcp.host, tcp.port, "socket" if carrier == "tcp" else "rtu")
    await peer.start()
    link = ModbusLink(params, timeout=1.0, driver=driver)  # type: ignore[arg-type]
    try:
        assert await link.read(9, HR, 0, 4) == [1, 2, 0xFFFF, 0x1234]
        assert await link.read(9, Table.INPUT, 0, 2) == [7, 8]
        assert await link.read(9, Table.COIL, 0, 3) == [True, False, True]
        assert await link.read(9, Table.DISCRETE_INPUT, 0, 2) == [False, True]
        await link.write(9, HR, 10, [42])
        await link.write(9, HR, 11, [43, 44])
        await link.write(9, Table.COIL, 5, [True])
        await link.write(9, Table.COIL, 6, [True, True])
        await link.mask_write(9, 0, 0x00FF, 0x0100)
        assert peer.get_holding(9, 10, 2) == [42, 43]
        assert peer.get_holding(9, 12) == [44]
        assert peer.get_coils(9, 5, 3) == [True, True, True]
        assert peer.get_holding(9, 0) == [0x0101]
        f = await failure(link.read(9, HR, 49, 3))
        assert (f.kind, f.exception_code) == (FailKind.EXCEPTION, 2)
    finally:
        link.close()
        await peer.stop()
        if pair is not None:
            pair.stop()
