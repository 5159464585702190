"""Sinks and the one wrapper that runs them.

A sink has a tiny interface: open a connection, deliver a batch of outbox records (returning only
once the peer confirmed every one of them), close.  It raises `SinkUnavailable` when it cannot.
`RunningSink` owns everything else, once, for every sink: reading the outbox in order, batching,
keeping several batches in flight, acknowledging delivered records, reconnecting with jittered
exponential backoff, replaying what was unconfirmed, and statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from picogate._errors import PicogateError
from picogate._outbox import Outbox, Record, Refused

log = logging.getLogger("picogate.sink")


class SinkUnavailable(PicogateError):
    """The sink cannot deliver now (not connected, connection lost, peer refused)."""


class Sink(Protocol):
    name: str

    async def open(self) -> None:
        """Connect.  Raise SinkUnavailable (or OSError) when the peer cannot be reached."""

    async def deliver(self, records: Sequence[Record]) -> Sequence[Refused] | None:
        """Send the records in order; return when the peer confirmed or refused each of them.

        The messages the peer refused (and would refuse again: not authorised, too large) are
        returned; they are parked, not re-sent at once.  A refusal must never be reported as a
        lost connection, or the outbox would replay it first after every reconnect."""

    async def close(self) -> None:
        """Disconnect cleanly (flush what is in flight if possible)."""

    # Optional: `def alive(self) -> bool` — False once the connection is known to be lost. While
    # the outbox is empty RunningSink asks it every second, so a lost connection is noticed (and
    # re-made) even when there is nothing to deliver: an idle gateway must still take commands.


@dataclass(slots=True)
class SinkStats:
    delivered: int = 0
    batches: int = 0
    failures: int = 0
    connects: int = 0
    refused: int = 0  # messages the peer refused, parked
    connected: bool = False
    last_error: str = ""
    last_delivery_s: float = 0.0


class RunningSink:
    """Runs one sink against the outbox until cancelled."""

    def __init__(
        self,
        sink: Sink,
        outbox: Outbox,
        *,
        batch_size: int = 500,
        window: int = 4,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self.sink = sink
        self.outbox = outbox
        self.batch_size = batch_size
        self.window = window
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.stats = SinkStats()
        self._drained = asyncio.Event()
        self._was_idle = False  # the last connection had delivered everything at some point
        outbox.register_sink(sink.name)

    @property
    def name(self) -> str:
        return self.sink.name

    async def run(self) -> None:
        # Two backoffs.  `delay` paces connection attempts that fail, and starts again at a
        # successful connect.  `lost` counts connections in a row that ended before anything was
        # delivered: a peer that accepts the connection and drops it at the first message (a
        # message it will never take) must not be reconnected to as fast as it answers, so the
        # wait after such a connection doubles each time, and starts again only after a delivery.
        delay = self.min_delay
        lost = 0
        while True:
            try:
                await self.sink.open()
            except (SinkUnavailable, OSError) as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc) or type(exc).__name__
                log.warning("sink %s: cannot connect (%s); retrying in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # full jitter, never zero
                delay = min(delay * 2, self.max_delay)
                continue
            delay = self.min_delay
            self.stats.connects += 1
            self.stats.connected = True
            log.info("sink %s: connected", self.name)
            delivered = self.stats.delivered
            try:
                await self._pump()
            except (SinkUnavailable, OSError) as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc) or type(exc).__name__
                log.warning(
                    "sink %s: connection lost (%s); unconfirmed records will be re-sent", self.name, exc
                )
            finally:
                self.stats.connected = False
                with contextlib.suppress(Exception):
                    await self.sink.close()
            lost = 0 if self.stats.delivered > delivered or self._was_idle else lost + 1
            wait = min(self.min_delay * (1 << min(lost, 16)), self.max_delay)
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))

    async def _pump(self) -> None:
        """Deliver until the sink fails.  Up to `window` batches are in flight at once."""
        cursor = 0  # highest id handed to the sink on this connection
        inflight: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []

        def done(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failure.append(task.exception())  # type: ignore[arg-type]
            wake.set()

        # One event wakes this loop: the outbox sets it on a commit for this sink, a finished
        # delivery sets it, and so does a heartbeat every second (to notice a connection lost
        # while idle).  It is cleared before each look, so nothing that happens after is missed.
        wake = self.outbox.wakeup(self.name)
        loop = asyncio.get_running_loop()
        heartbeat: asyncio.TimerHandle | None = None

        def beat() -> None:
            nonlocal heartbeat
            wake.set()
            heartbeat = loop.call_later(1.0, beat)

        heartbeat = loop.call_later(1.0, beat)
        alive: Callable[[], bool] | None = getattr(self.sink, "alive", None)
        self._was_idle = False
        try:
            while True:
                if failure:
                    raise failure[0]
                wake.clear()
                if len(inflight) >= self.window:
                    await wake.wait()
                    continue
                batch = await self.outbox.fetch(self.name, cursor, self.batch_size)
                if not batch:
                    if not inflight:
                        self._drained.set()
                        self._was_idle = True
                    if alive is not None and not alive():
                        raise SinkUnavailable("connection lost while idle")
                    await wake.wait()
                    continue
                self._drained.clear()
                cursor = batch[-1].id
                task = asyncio.create_task(self._deliver(batch), name=f"sink-{self.name}-deliver")
                inflight.add(task)
                task.add_done_callback(done)
        finally:
            heartbeat.cancel()
            for task in list(inflight):
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)

    async def _deliver(self, batch: Sequence[Record]) -> None:
        started = time.perf_counter()
        refused = await self.sink.deliver(batch)
        if refused:
            self.stats.refused += len(refused)
            self.outbox.park(self.name, refused)  # committed with the acks below, atomically
        self.outbox.ack(batch)
        self.stats.delivered += sum(r.parts or 1 for r in batch)  # messages, not records
        self.stats.batches += 1
        self.stats.last_delivery_s = time.perf_counter() - started

    async def drained(self, timeout: float) -> bool:
        """Wait until everything in the outbox for this sink was delivered (for a clean shutdown)."""
        if self.outbox.depth(self.name) == 0:
            return True
        try:
            async with asyncio.timeout(timeout):
                while self.outbox.depth(self.name) > 0:
                    self._drained.clear()
                    await self._drained.wait()
                    await self.outbox.flush()  # commit the deletes of what was delivered
        except TimeoutError:
            return False
        return True
