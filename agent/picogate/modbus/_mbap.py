"""Modbus TCP (MBAP framing) on an asyncio Protocol: replies matched to requests by transaction id.

Each request gets the next transaction id and a future in `_pending`, keyed by that id and
removed in `finally`; the reply with that id (and the request's unit) resolves it.  A reply whose
id is not pending is a late answer to a request that gave up: discarded and counted, so a slave
that answers after the timeout never has its answer taken for the next request's.  A header that
cannot be Modbus (protocol id, length) means the stream is lost: pending requests fail and the
connection is closed, to be opened again by the next request.

The link (`_transport.ModbusLink`) sends one request at a time per connection; the id matching does
not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from picogate.modbus._wire import (
    Desync,
    Mismatch,
    Request,
    WireStats,
    check_reply,
    mbap_frame,
    mbap_one,
    mbap_split,
)

Values = list[int] | list[bool] | None


class MbapConnection(asyncio.Protocol):
    def __init__(self, stats: WireStats) -> None:
        self.stats = stats
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: dict[int, tuple[Request, asyncio.Future[Values], float]] = {}
        self._tid = 0
        self._loop = asyncio.get_running_loop()
        # One timer for the connection rather than one per request: it fires at the earliest
        # deadline it knows of, fails what is due, and sets itself again for what is not.
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = 0.0

    @classmethod
    async def open(cls, host: str, port: int, timeout: float, stats: WireStats) -> MbapConnection:
        """Connect (raises OSError, TimeoutError)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(lambda: cls(stats), host, port)
        return conn

    @property
    def connected(self) -> bool:
        return self._transport is not None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._buf:
            one = mbap_one(data)
            if one is not None:
                self._deliver(*one)
                return
        buf = self._buf
        buf += data
        try:
            frames = mbap_split(buf)
        except Desync as exc:
            self.stats.desync += 1
            self._fail_all(exc)
            self.close()
            return
        for tid, unit, pdu in frames:
            self._deliver(tid, unit, pdu)

    def _deliver(self, tid: int, unit: int, pdu: bytes) -> None:
        entry = self._pending.get(tid)
        if entry is None:
            self.stats.late += 1
            return
        req, fut, _ = entry
        if unit != req.unit:
            self.stats.foreign += 1
            return
        if fut.done():
            return
        try:
            fut.set_result(check_reply(req, pdu))
        except Mismatch as exc:
            self.stats.mismatched += 1
            fut.set_exception(exc)
        except Exception as exc:  # ExceptionReply
            fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail_all(ConnectionError(str(exc) if exc else "closed by the peer"))

    def _fail_all(self, exc: Exception) -> None:
        for _, fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def _watch(self) -> None:
        self._watchdog = None
        now = self._loop.time()
        earliest = 0.0
        for _, fut, deadline in self._pending.values():
            if deadline <= now:
                if not fut.done():
                    fut.set_exception(TimeoutError())
            elif not earliest or deadline < earliest:
                earliest = deadline
        if earliest:
            self._arm(earliest)

    def _arm(self, when: float) -> None:
        if self._watchdog is not None:
            if self._watch_at <= when:
                return
            self._watchdog.cancel()
        self._watch_at = when
        self._watchdog = self._loop.call_at(when, self._watch)

    # -- requests

    async def request(self, req: Request, timeout: float) -> Values:
        """The values of the reply (None for a write).  Raises TimeoutError, ConnectionError,
        ExceptionReply, Mismatch, Desync."""
        transport = self._transport
        if transport is None:
            raise ConnectionError("not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        fut: asyncio.Future[Values] = self._loop.create_future()
        deadline = self._loop.time() + timeout
        self._pending[tid] = (req, fut, deadline)
        try:
            transport.write(mbap_frame(tid, req))
            self._arm(deadline)
            return await fut
        finally:
            del self._pending[tid]

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort()
        self._fail_all(ConnectionError("closed"))
