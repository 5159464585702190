"""Modbus RTU master: one request at a time on a byte stream (a serial port, or a TCP socket to a
serial-to-Ethernet converter), and the rules that keep a late reply from being taken for another.

RTU frames carry no transaction id.  A reply is recognised by its unit, function code, byte count
or echo, length and CRC (`_wire.find_rtu_reply`); a late answer of the same unit to an earlier
request of the same shape (same function, same length, other registers) would fit as well.  So:

- Each unit has a count of replies it *owes*: +1 for every request sent to it, -1 for every whole
  frame (CRC right) received from it, whether taken as a reply or discarded.
- When a request times out (or its caller gives up), its unit keeps owing that reply and is
  *quiet* until `deadline + late_reply` (the deadline being when the reply was due).  Until then
  the unit is sent nothing but the very same request again (a retry: an answer to either try
  carries the same registers, or confirms the same write), and every request sent to it while it
  owes a reply extends the window in the same way.  The window ends early once the owed frames
  have arrived (and are discarded), or when it runs out: a reply later than that is the limit of
  the guarantee (docs/modbus.md).
- Before every request the input is discarded (and accounted for: frames of units that owed one
  are late replies; anything else is counted as foreign frames or garbage), and on a serial line
  the master waits until the line has been silent for t3.5 after the last byte received or sent.
- While a request is pending, frames of other units, and frames of its unit that do not fit, are
  skipped: the reply is the first whole frame that fits (`find_rtu_reply`).

On a serial line the reply is due `timeout` after the request has left the wire, plus the time
the reply itself takes on the wire at the line's baud rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass
from typing import Protocol, cast

from picogate.modbus._wire import (
    ExceptionReply,
    Request,
    WireStats,
    check_reply,
    find_rtu_reply,
    frame_gap,
    rtu_frame_length,
    scan_rtu,
    wire_time,
)

Values = list[int] | list[bool] | None

_MAX_BUFFER = 4096  # bytes kept while waiting for a reply (a reply is at most 256)


class Carrier(Protocol):
    """The byte stream under an RTU line: it calls `RtuLine.feed` and `RtuLine.lost`."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SerialTiming:
    baudrate: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    def wire(self, nbytes: int) -> float:
        return wire_time(nbytes, self.baudrate, self.bytesize, self.parity, self.stopbits)

    @property
    def gap(self) -> float:
        return frame_gap(self.baudrate, self.bytesize, self.parity, self.stopbits)


def _expire(fut: asyncio.Future[Values]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class Alarm:
    """Wake-ups at a `time.monotonic()` to within microseconds: a timerfd (CLOCK_MONOTONIC, the
    clock of `time.monotonic()` on Linux) watched by the loop.  The loop's own timers do not do
    for t3.5 (1.75 ms at 115200 baud): uvloop counts whole milliseconds from a cached clock and
    fires up to a millisecond early (waiting again for the rest spins the loop), asyncio's fire
    about 0.4 ms late.  Where there is no timerfd, the loop's timers are used, rounded up."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fut: asyncio.Future[None] | None = None
        self._fd = -1
        self._settime: object = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        self._fd = fd
        self._settime = libc.timerfd_settime
        self._loop.add_reader(fd, self._fired)

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except OSError:
            return
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    async def at(self, when: float) -> None:
        """Return at `time.monotonic()` ≥ `when`."""
        if self._fd < 0:  # the caller checks the time again
            await asyncio.sleep(max(when - time.monotonic(), 0.0) + 0.001)
            return
        sec = int(when)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, int((when - sec) * 1e9) + 1))
        self._fut = self._loop.create_future()
        try:
            if self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:  # type: ignore[operator]
                raise OSError(ctypes.get_errno(), "timerfd_settime")
            await self._fut
        finally:
            self._fut = None

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


class RtuLine:
    """The master's side of one RTU line.  `timing` is set for a serial line (t3.5, wire time)."""

    def __init__(self, stats: WireStats, timing: SerialTiming | None = None) -> None:
        self.stats = stats
        self.timing = timing
        self._gap = timing.gap if timing else 0.0
        self.carrier: Carrier | None = None
        self._buf = bytearray()
        self._pending: tuple[Request, asyncio.Future[Values]] | None = None
        self._last_rx = 0.0
        self._tx_end = 0.0
        self._owed: dict[int, int] = {}
        self._quiet: dict[int, float] = {}
        self._timed_out: dict[int, bytes] = {}
        self._paid = asyncio.Event()  # set when a unit's owed count went down
        self._alarm: Alarm | None = None

    # -- the carrier's side

    def attach(self, carrier: Carrier) -> None:
        self.carrier = carrier
        self._buf.clear()

    def feed(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        buf = self._buf
        buf += data
        pending = self._pending
        if pending is None:
            self._account_idle()
            return
        req, fut = pending
        match = find_rtu_reply(req, buf)
        if match is None:
            if len(buf) > _MAX_BUFFER:
                self._discard(len(buf) - _MAX_BUFFER)
            return
        pdu = match.pdu(buf)
        self._discard(match.start)
        del buf[: match.end - match.start]
        self._paid_by(req.unit)
        if fut.done():  # it came just after the timeout, before the request gave up
            self.stats.late += 1
            return
        try:
            fut.set_result(check_reply(req, pdu))
        except Exception as exc:  # ExceptionReply (the match fits, so never Mismatch)
            fut.set_exception(exc)
        if buf:
            self._account_idle()

    def lost(self, exc: Exception) -> None:
        self.carrier = None
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(ConnectionError(str(exc)))

    # -- accounting of what is not a reply

    def _paid_by(self, unit: int) -> bool:
        owed = self._owed.get(unit, 0)
        if owed <= 0:
            return False
        self._owed[unit] = owed - 1
        self._paid.set()
        return True

    def _discard(self, n: int) -> None:
        """Drop buf[:n], counting its frames and garbage."""
        if n <= 0:
            return
        units, garbage = scan_rtu(self._buf[:n])
        del self._buf[:n]
        self.stats.garbage += garbage
        asked = self._pending[0].unit if self._pending is not None else -1
        for unit in units:
            if unit == asked:
                self.stats.mismatched += 1  # the asked unit's frame that does not fit
                self._paid_by(unit)
            elif self._paid_by(unit):
                self.stats.late += 1
            else:
                self.stats.foreign += 1

    def _account_idle(self) -> None:
        """No request pending: whole frames at the front are accounted for at once, so that a
        quiet unit's late reply ends its window as soon as it is in; the rest waits."""
        buf = self._buf
        while buf:
            length = rtu_frame_length(buf)
            if length is None or (length and length > len(buf)):
                return
            self._discard(length if length else 1)

    # -- the master's side

    def quiet_until(self, unit: int) -> float:
        """`time.monotonic()` before which `unit` is sent nothing but a retry (0: it owes nothing)."""
        if self._owed.get(unit, 0) <= 0:
            return 0.0
        until = self._quiet.get(unit, 0.0)
        if time.monotonic() >= until:
            self._owed[unit] = 0  # the window ran out: give up waiting for what it owes
            return 0.0
        return until

    async def _settle(self, unit: int, frame: bytes) -> None:
        while True:
            until = self.quiet_until(unit)
            if not until or self._timed_out.get(unit) == frame:
                return
            self._paid.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - time.monotonic()):
                    await self._paid.wait()

    async def _wait_for_silence(self) -> None:
        gap = self._gap
        while True:
            ready = max(self._last_rx, self._tx_end) + gap
            if ready <= time.monotonic():
                return
            if self._alarm is None:
                self._alarm = Alarm()
            await self._alarm.at(ready)

    def close(self) -> None:
        """Close the carrier and the alarm (both are opened again when needed)."""
        if self.carrier is not None:
            self.carrier.close()
        if self._alarm is not None:
            self._alarm.close()
            self._alarm = None

    async def request(self, req: Request, frame: bytes, timeout: float, late_reply: float) -> Values:
        """Send `frame` (the RTU frame of `req`) and return its reply's values.  Raises
        TimeoutError, ConnectionError, ExceptionReply."""
        unit = req.unit
        await self._settle(unit, frame)
        if self._gap:
            await self._wait_for_silence()
        if self._buf:
            self._discard(len(self._buf))
        carrier = self.carrier
        if carrier is None:
            raise ConnectionError("not connected")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Values] = loop.create_future()
        self._pending = (req, fut)
        now = time.monotonic()
        timing = self.timing
        if timing is not None:
            self._tx_end = now + timing.wire(len(frame))
            deadline = self._tx_end + timeout + timing.wire(req.reply_len + 3)
        else:
            deadline = now + timeout
        owed = self._owed.get(unit, 0)
        self._owed[unit] = owed + 1
        if owed:  # a retry while the first try is owed: its answer may come as late
            self._quiet[unit] = max(self._quiet.get(unit, 0.0), deadline + late_reply)
        stats = self.stats
        before = (stats.mismatched, stats.foreign, stats.late, stats.garbage)
        answered = False
        try:
            carrier.write(frame)
            timer = loop.call_later(deadline - now, _expire, fut)
            try:
                result = await fut
                answered = True
                return result
            finally:
                timer.cancel()
        except ExceptionReply:
            answered = True  # an exception reply is an answer too
            raise
        except TimeoutError:
            if self._buf:
                self._discard(len(self._buf))
            raise TimeoutError(_skipped(before, stats)) from None
        finally:
            if not answered:  # timed out, line lost, or the caller gave up: the reply is owed
                self._quiet[unit] = max(self._quiet.get(unit, 0.0), deadline + late_reply)
                self._timed_out[unit] = frame
                if self._buf:
                    self._discard(len(self._buf))
            elif self._timed_out.get(unit) == frame and self._owed.get(unit, 0) <= 0:
                del self._timed_out[unit]
            self._pending = None


def _skipped(before: tuple[int, int, int, int], stats: WireStats) -> str:
    """What arrived while a request waited in vain, for the timeout's message."""
    counts = (
        stats.mismatched - before[0],
        stats.foreign - before[1],
        stats.late - before[2],
        stats.garbage - before[3],
    )
    words = (
        "frame(s) of the unit that did not fit the request",
        "frame(s) of other units",
        "late reply(ies)",
        "byte(s) of garbage",
    )
    return ", ".join(f"{n} {w}" for n, w in zip(counts, words, strict=True) if n)


# --------------------------------------------------------------------------------------------------
# carriers


class TcpCarrier(asyncio.Protocol):
    """RTU frames on a TCP socket (a serial-to-Ethernet converter in transparent mode)."""

    def __init__(self, line: RtuLine) -> None:
        self._line = line
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, host: str, port: int, timeout: float, line: RtuLine) -> TcpCarrier:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, carrier = await loop.create_connection(lambda: cls(line), host, port)
        line.attach(carrier)
        return carrier

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._line.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._line.carrier is self:
            self._line.lost(ConnectionError(str(exc) if exc else "closed by the peer"))

    def write(self, data: bytes) -> None:
        if self._transport is None:
            raise ConnectionError("not connected")
        self._transport.write(data)

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if self._line.carrier is self:
            self._line.lost(ConnectionError("closed"))
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort()


class SerialCarrier:
    """A serial port opened by pyserial (exclusive, raw) and read with `loop.add_reader`, as the
    Pico link does (pico/_transport.py): each chunk is one non-blocking `os.read` on the loop."""

    def __init__(self, port: str, timing: SerialTiming, line: RtuLine) -> None:
        import serial

        self.port = port
        self._ser = serial.Serial(
            port,
            baudrate=timing.baudrate,
            bytesize=timing.bytesize,
            parity=timing.parity,
            stopbits=timing.stopbits,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )
        self._fd = self._ser.fileno()
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._line = line
        self._out = bytearray()
        self._writing = False
        self._open = True
        with contextlib.suppress(Exception):
            self._ser.reset_input_buffer()
        self._loop.add_reader(self._fd, self._on_readable)
        line.attach(self)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._gone(f"{self.port}: {exc.strerror or exc}")
            return
        if not chunk:
            self._gone(f"{self.port}: the device went away")
            return
        self._line.feed(chunk)

    def _gone(self, why: str) -> None:
        self._stop()
        if self._line.carrier is self:
            self._line.lost(ConnectionError(why))

    def write(self, data: bytes) -> None:
        if not self._open:
            raise ConnectionError(f"{self.port}: closed")
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._fd, self._out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._gone(f"{self.port}: {exc.strerror or exc}")
                return
            del self._out[:n]
        if self._out and not self._writing:
            self._loop.add_writer(self._fd, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _stop(self) -> None:
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
            self._writing = False
        with contextlib.suppress(Exception):
            self._ser.close()

    def close(self) -> None:
        self._stop()
        if self._line.carrier is self:
            self._line.lost(ConnectionError(f"{self.port}: closed"))
