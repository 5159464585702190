"""Board ticks → wall-clock ns (agent/picogate/pico/_time.py)."""

from __future__ import annotations

import pytest

from picogate.pico._time import TICKS_PERIOD, TickClock

MS = 1_000_000


def test_smallest_offset_wins() -> None:
    c = TickClock()
    base = 1_700_000_000_000 * MS
    c.sample(1000, base + 1000 * MS + 7 * MS)  # 7 ms in transit
    c.sample(2000, base + 2000 * MS + 2 * MS)  # 2 ms: the best
    c.sample(3000, base + 3000 * MS + 9 * MS)
    assert c.to_ns(2500) == base + 2500 * MS + 2 * MS


def test_window_forgets_old_samples() -> None:
    c = TickClock(window=3)
    c.sample(0, 0)  # a lucky early sample, then the clocks drift apart by 5 ms
    for t in (1000, 2000, 3000):
        c.sample(t, t * MS + 5 * MS)
    assert c.to_ns(3000) == 3000 * MS + 5 * MS


def test_unwraps_across_two_to_the_thirty() -> None:
    c = TickClock()
    top = TICKS_PERIOD - 500
    c.sample(top, 10_000 * MS)
    c.sample(500, 11_000 * MS)  # 1000 ms later, after the wrap
    assert c.to_ns(700) == 11_200 * MS
    assert c.to_ns(TICKS_PERIOD - 100) == 10_400 * MS  # a reading from just before the wrap


def test_reset_and_not_ready() -> None:
    c = TickClock()
    with pytest.raises(ValueError, match="no time sample"):
        c.to_ns(1)
    c.sample(5, 5 * MS)
    assert c.ready
    c.reset()
    assert not c.ready
