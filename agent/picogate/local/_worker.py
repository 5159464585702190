"""Blocking driver calls off the event loop, bounded.

Blinka and the CircuitPython drivers are synchronous: a sensor read sleeps for its conversion, a
hung I²C bus or a driver waiting on a status bit may not return at all.  Each bus gets one
`Worker`, a daemon thread that runs its calls one at a time (a bus carries one transfer at a time
anyway).  A call is awaited at most `timeout`; when it takes longer the caller gets
`DriverTimeout` (the call may have done its work: a write's outcome is unknown) and the worker is
*stuck* until that call returns: calls made meanwhile are refused at once with `DriverBusy` (they
never run: a write is certainly not applied) instead of queueing behind it, so a hung call costs
one thread for good, never one more per poll.  The thread is a daemon: a call that never returns
does not keep the agent from exiting.  What a driver raises goes to the caller; a SystemExit or
KeyboardInterrupt raised inside a driver becomes a RuntimeError there, so that it ends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from picogate._errors import PicogateError

__all__ = ["DriverBusy", "DriverTimeout", "Worker"]

T = TypeVar("T")


class DriverTimeout(PicogateError, TimeoutError):
    """A driver call did not return within the timeout: it may have done its work or not."""


class DriverBusy(DriverTimeout):
    """A driver call that never started (a call before it hangs, or did not end in time): it did
    nothing, and never will."""


class _Call:
    __slots__ = ("abandoned", "args", "fn", "fut", "lock", "loop", "started")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.fn, self.args, self.loop = fn, args, loop
        self.fut: asyncio.Future[Any] = loop.create_future()
        self.abandoned = False
        self.started = False
        self.lock = threading.Lock()  # `started` and `abandoned` are decided once, under it


class Worker:
    """One thread running blocking calls in order; see the module docstring."""

    def __init__(self, name: str, *, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0  # monotonic start of the call running now (0: idle)
        self._stuck = False
        self.timeouts = 0

    @property
    def stuck(self) -> bool:
        """A call is still running past its timeout."""
        return self._stuck and self._started_at != 0.0

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the worker's thread; its result or its exception.  DriverTimeout when it
        started and did not return in time; DriverBusy when it never started (and never will)."""
        if self.stuck:
            raise DriverBusy(
                f"{self.name}: a call is still running after {time.monotonic() - self._started_at:.1f}s",
                where=self.name,
            )
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"picogate-{self.name}", daemon=True)
            self._thread.start()
        item = _Call(fn, args, asyncio.get_running_loop())
        self._queue.put(item)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(item.fut)
        except TimeoutError:
            with item.lock:
                item.abandoned = True
                started = item.started
            self._stuck = True
            self.timeouts += 1
            if not started:
                raise DriverBusy(
                    f"{self.name}: not started within {self.timeout:g}s (a call before it hangs)",
                    where=self.name,
                ) from None
            raise DriverTimeout(f"{self.name}: no answer within {self.timeout:g}s", where=self.name) from None
        except asyncio.CancelledError:
            with item.lock:
                item.abandoned = True
            raise

    def close(self) -> None:
        """End the thread once the calls queued before have run (a stuck one: when it returns)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            with item.lock:
                if item.abandoned:
                    continue
                item.started = True
            self._started_at = time.monotonic()
            self._stuck = False
            try:
                result: Any = item.fn(*item.args)
                error: BaseException | None = None
            except Exception as exc:  # handed to the caller
                result, error = None, exc
            except BaseException as exc:  # SystemExit, KeyboardInterrupt from a driver: not the caller's own
                result, error = None, RuntimeError(f"the driver raised {type(exc).__name__}: {exc}")
            finally:
                self._started_at = 0.0
                self._stuck = False
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                item.loop.call_soon_threadsafe(_settle, item, result, error)


def _settle(item: _Call, result: Any, error: BaseException | None) -> None:
    fut = item.fut
    if fut.done():
        return
    if item.abandoned:  # the caller gave up (timeout, cancelled): nobody reads the outcome
        fut.cancel()
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
