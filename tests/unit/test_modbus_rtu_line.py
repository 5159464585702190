"""The RTU master's rules (modbus/_rtu.py RtuLine) on a recording carrier, without a wire: which
reply is taken, what a unit owes after a timeout, when the next request may go out."""

from __future__ import annotations

import asyncio
import struct

import pytest

from picogate.modbus._rtu import RtuLine
from picogate.modbus._wire import ExceptionReply, WireStats, crc16, read_request, rtu_frame


class Recorder:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        self.wrote.set()

    def close(self) -> None:
        pass


def reply(unit: int, values: list[int], fc: int = 3) -> bytes:
    body = bytes((unit, fc, 2 * len(values))) + struct.pack(f">{len(values)}H", *values)
    c = crc16(body)
    return body + bytes((c & 0xFF, c >> 8))


def exception(unit: int, fc: int, code: int) -> bytes:
    body = bytes((unit, fc | 0x80, code))
    c = crc16(body)
    return body + bytes((c & 0xFF, c >> 8))


def line() -> tuple[RtuLine, Recorder]:
    ln = RtuLine(WireStats())  # no timing: a TCP carrier
    rec = Recorder()
    ln.attach(rec)
    return ln, rec


async def ask(
    ln: RtuLine, unit: int, address: int, count: int, timeout: float = 5.0, late: float = 10.0
) -> asyncio.Task[object]:
    req = read_request(unit, 3, address, count)
    task = asyncio.ensure_future(ln.request(req, rtu_frame(req), timeout, late))
    await asyncio.sleep(0)  # let it send
    return task


async def test_the_reply_that_fits_is_taken_and_the_rest_counted() -> None:
    ln, rec = line()
    task = await ask(ln, 1, 0, 2)
    assert rec.sent == [rtu_frame(read_request(1, 3, 0, 2))]
    ln.feed(reply(2, [9, 9]) + reply(1, [9]) + b"\x00")  # another unit, a misfit, garbage
    assert not task.done()
    ln.feed(reply(1, [5, 6]))
    assert await task == [5, 6]
    assert (ln.stats.foreign, ln.stats.mismatched, ln.stats.garbage) == (1, 1, 1)


async def test_exception_reply() -> None:
    ln, _ = line()
    task = await ask(ln, 4, 0, 1)
    ln.feed(exception(4, 3, 2))
    with pytest.raises(ExceptionReply):
        await task
    assert ln.quiet_until(4) == 0.0


async def test_after_a_timeout_the_unit_owes_its_reply_until_it_comes() -> None:
    ln, rec = line()
    task = await ask(ln, 1, 0, 2, timeout=0.01)
    with pytest.raises(TimeoutError):
        await task
    assert ln.quiet_until(1) > 0
    # another unit is asked at once; the owing unit's other request waits
    other = await ask(ln, 2, 0, 1)
    assert len(rec.sent) == 2
    ln.feed(reply(2, [7]))
    assert await other == [7]
    waiting = await ask(ln, 1, 10, 2)
    assert len(rec.sent) == 2  # not sent
    # ... but the very same request again (a retry) goes at once, and so does its answer
    retry = await ask(ln, 1, 0, 2)
    assert rec.sent[-1] == rtu_frame(read_request(1, 3, 0, 2))
    ln.feed(reply(1, [1, 2]))  # the first try's late answer: the same registers
    assert await retry == [1, 2]
    assert not waiting.done()  # the retry's own answer is still owed
    ln.feed(reply(1, [1, 2]))  # there it is: discarded, and the window ends
    assert ln.stats.late == 1
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert rec.sent[-1] == rtu_frame(read_request(1, 3, 10, 2))
    ln.feed(reply(1, [3, 4]))
    assert await waiting == [3, 4]
    assert ln.quiet_until(1) == 0.0


async def test_the_window_runs_out() -> None:
    ln, rec = line()
    task = await ask(ln, 1, 0, 2, timeout=0.01, late=0.05)
    with pytest.raises(TimeoutError):
        await task
    waiting = await ask(ln, 1, 10, 2)
    assert len(rec.sent) == 1
    rec.wrote.clear()
    async with asyncio.timeout(5):
        await rec.wrote.wait()
    ln.feed(reply(1, [3, 4]))
    assert await waiting == [3, 4]


async def test_a_caller_that_gives_up_leaves_the_reply_owed() -> None:
    ln, _ = line()
    task = await ask(ln, 5, 0, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ln.quiet_until(5) > 0
    ln.feed(reply(5, [1]))  # its answer, late: discarded
    assert ln.quiet_until(5) == 0.0
    assert ln.stats.late == 1


async def test_timeout_says_what_came_instead() -> None:
    ln, _ = line()
    task = await ask(ln, 1, 0, 2, timeout=0.05)
    ln.feed(reply(1, [1]) + b"\xff\xff")
    with pytest.raises(TimeoutError) as exc:
        await task
    assert str(exc.value) == "1 frame(s) of the unit that did not fit the request, 2 byte(s) of garbage"
