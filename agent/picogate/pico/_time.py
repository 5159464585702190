"""Board ticks → wall-clock nanoseconds (docs/link-protocol.md, "Time").  Pure, no I/O.

Every `hello` and `hb` gives a sample: the board's `ticks_ms` (modulo 2^30) and the host's time of
arrival.  `offset = arrival_ns − ticks × 10^6`; the estimate is the smallest offset of the last 30
samples: the sample that waited least in transit.  Ticks are unwrapped across the 2^30 wrap
relative to the newest sample, so a reading's ticks may be a little older or newer than it.
"""

from __future__ import annotations

from collections import deque

__all__ = ["TICKS_PERIOD", "TickClock"]

TICKS_PERIOD = 1 << 30
_HALF = TICKS_PERIOD >> 1


class TickClock:
    def __init__(self, window: int = 30) -> None:
        self._offsets: deque[int] = deque(maxlen=window)
        self._raw = 0  # newest sample's ticks as sent (mod 2^30)
        self._unwrapped = 0  # the same, unwrapped
        self._offset = 0

    @property
    def ready(self) -> bool:
        return bool(self._offsets)

    def reset(self) -> None:
        """The board restarted: its ticks begin again."""
        self._offsets.clear()
        self._raw = self._unwrapped = 0

    def _unwrap(self, ticks: int) -> int:
        delta = (ticks - self._raw) % TICKS_PERIOD
        if delta >= _HALF:
            delta -= TICKS_PERIOD
        return self._unwrapped + delta

    def sample(self, ticks: int, arrival_ns: int) -> None:
        ticks %= TICKS_PERIOD
        if self._offsets:
            self._unwrapped = self._unwrap(ticks)
        else:
            self._unwrapped = ticks
        self._raw = ticks
        self._offsets.append(arrival_ns - self._unwrapped * 1_000_000)
        self._offset = min(self._offsets)

    def to_ns(self, ticks: int) -> int:
        """Wall-clock ns of a board tick value; ValueError before the first sample."""
        if not self._offsets:
            raise ValueError("no time sample from the board yet")
        return self._offset + self._unwrap(ticks % TICKS_PERIOD) * 1_000_000
