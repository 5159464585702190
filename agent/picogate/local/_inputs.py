"""Digital inputs read by polling: debouncing and edge counting, and the backoff of a sensor that
stopped answering.  Pure: time is passed in (seconds, monotonic), so the tests feed them as data.

Blinka has no counter and no debounce: the source reads every input each `sample` and feeds the
levels here.  A level counts once it was read unchanged for `debounce`; a counter counts the
edges of that debounced level, so a bouncing contact counts once.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Backoff", "Debouncer", "EdgeCounter"]


class Debouncer:
    """The debounced level of one input: `update(level, now)` returns the new level when it
    changed, else None.  The first level read is taken at once."""

    __slots__ = ("_candidate", "_since", "debounce", "value")

    def __init__(self, debounce: float) -> None:
        self.debounce = debounce
        self.value: bool | None = None
        self._candidate: bool | None = None
        self._since = 0.0

    def update(self, level: bool, now: float) -> bool | None:
        if self.value is None:
            self.value = level
            return level
        if level == self.value:
            self._candidate = None
            return None
        if self._candidate != level:
            self._candidate = level
            self._since = now
        if now - self._since >= self.debounce:
            self.value = level
            self._candidate = None
            return level
        return None

    def reset(self) -> None:
        """Forget the level (after the pin could not be read)."""
        self.value = None
        self._candidate = None


class EdgeCounter:
    """Counts the edges of a debounced level: `rise` (false → true), `fall`, or `both`."""

    __slots__ = ("_last", "count", "edge")

    def __init__(self, edge: Literal["rise", "fall", "both"]) -> None:
        self.edge = edge
        self.count = 0
        self._last: bool | None = None

    def level(self, value: bool) -> None:
        last, self._last = self._last, value
        if last is None or last == value:
            return
        if self.edge == "both" or (self.edge == "rise") == value:
            self.count += 1

    def lost(self) -> None:
        """The pin could not be read: the next level read starts afresh (no edge is made up)."""
        self._last = None


class Backoff:
    """When to try a failing thing again: `every` after the first failure, doubling up to `most`;
    `ok()` resets it."""

    __slots__ = ("delay", "every", "failures", "most")

    def __init__(self, every: float, most: float) -> None:
        self.every = every
        self.most = max(most, every)
        self.failures = 0
        self.delay = every

    def failed(self) -> float:
        """Count a failure; the delay before the next try."""
        self.failures += 1
        self.delay = self.every if self.failures == 1 else min(self.delay * 2, self.most)
        return self.delay

    def ok(self) -> None:
        self.failures = 0
        self.delay = self.every
