"""Wall clock and whether it can be trusted.

A gateway without a real-time clock (a Raspberry Pi) may boot with a wrong date and run until NTP
corrects it.  The kernel knows: `adjtimex()` returns TIME_ERROR while the clock is not
synchronised.  Readings taken meanwhile are flagged `uncertain` and the status topic says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("picogate.clock")

_TIME_ERROR = 5
_TIMEX_SIZE = 512  # larger than struct timex on every Linux ABI; modes (the first field) stays 0 = read only


def epoch_ms(ns: int) -> int:
    """Nanoseconds since the Unix epoch (a `Reading.ts`) → milliseconds, as payloads carry time."""
    return ns // 1_000_000


def kernel_clock_synced() -> bool | None:
    """True/False from adjtimex(2); None where it cannot be asked (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        buf = ctypes.create_string_buffer(_TIMEX_SIZE)
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


class Clock:
    """`now_ns()` plus a cached view of whether the clock is synchronised."""

    def __init__(
        self,
        *,
        check_sync: bool = True,
        probe: Callable[[], bool | None] = kernel_clock_synced,
        recheck_s: float = 10.0,
    ) -> None:
        self.check_sync = check_sync
        self._probe = probe
        self._recheck_ns = int(recheck_s * 1e9)
        self._checked_ns = 0
        self._synced = True
        self.listeners: list[Callable[[bool], None]] = []

    @staticmethod
    def now_ns() -> int:
        return time.time_ns()

    @property
    def synced(self) -> bool:
        """False only when checking is on and the kernel says the clock is unsynchronised."""
        if not self.check_sync:
            return True
        mono = time.monotonic_ns()
        if self._checked_ns == 0 or mono - self._checked_ns >= self._recheck_ns:
            self._checked_ns = mono
            probed = self._probe()
            synced = True if probed is None else probed
            if synced != self._synced:
                log.warning("system clock is %s", "synchronised" if synced else "NOT synchronised")
                self._synced = synced
                for listener in list(self.listeners):
                    listener(synced)
        return self._synced
