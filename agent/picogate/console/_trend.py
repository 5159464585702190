"""Recent history of every numeric point, for the console's trends and for replaying rules on what
the gateway saw: a fixed ring per point, sampled from the pipeline's last values.

Every `step` seconds (`console.trend.step`, 10 s by default) the console takes the last value of
each point (`pipeline.latest`, no work on the readings' path) and appends it to that point's ring
if it is newer than the sample before.  A ring holds `samples` entries (`console.trend.samples`,
720 by default: 2 hours at 10 s), each 12 bytes (a float64 value and the second as uint32), and at
most `max_points` points are kept (5,000 by default): at most 720 × 12 B × 5,000 ≈ 43 MB, whatever
the gateway's load.  Booleans count as 0/1; text and bad readings are not sampled (a gap).
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Iterator

from picogate._model import Quality, Reading

__all__ = ["Ring", "Trends"]

BYTES_PER_SAMPLE = 12


class Ring:
    """A fixed-size ring of (second, value) samples."""

    __slots__ = ("_n", "_next", "_secs", "_values", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._secs = array.array("I", bytes(4 * size))
        self._values = array.array("d", bytes(8 * size))
        self._next = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, sec: int, value: float) -> None:
        i = self._next
        self._secs[i] = sec
        self._values[i] = value
        self._next = (i + 1) % self.size
        self._n = min(self._n + 1, self.size)

    def last_sec(self) -> int:
        return self._secs[(self._next - 1) % self.size] if self._n else 0

    def __iter__(self) -> Iterator[tuple[int, float]]:
        """Oldest first."""
        start = (self._next - self._n) % self.size
        for k in range(self._n):
            i = (start + k) % self.size
            yield self._secs[i], self._values[i]

    def since(self, sec: int) -> list[tuple[int, float]]:
        return [(s, v) for s, v in self if s >= sec]


class Trends:
    """Rings by point (see the module docstring)."""

    def __init__(self, *, samples: int, max_points: int) -> None:
        self.samples = samples
        self.max_points = max_points
        self.rings: dict[tuple[str, str], Ring] = {}
        self.refused = 0
        """Points not sampled because `max_points` rings exist."""

    @property
    def bound_bytes(self) -> int:
        return self.samples * BYTES_PER_SAMPLE * self.max_points

    def sample(self, latest: Iterable[Reading]) -> int:
        """Append each point's value if it is newer than its ring's last sample; how many taken."""
        taken = 0
        rings = self.rings
        for s in latest:
            value = s.value
            if s.quality is Quality.BAD or value is None or isinstance(value, str):
                continue
            if isinstance(value, bool):
                value = 1.0 if value else 0.0
            if not isinstance(value, int | float):
                continue
            key = (s.device, s.point)
            ring = rings.get(key)
            if ring is None:
                if len(rings) >= self.max_points:
                    self.refused += 1
                    continue
                ring = rings[key] = Ring(self.samples)
            sec = s.ts // 1_000_000_000
            if len(ring) and sec <= ring.last_sec():
                continue
            if not 0 <= sec < 2**32:
                continue
            ring.append(sec, float(value))
            taken += 1
        return taken

    def series(self, device: str, point: str, *, since: int = 0) -> list[tuple[int, float]] | None:
        ring = self.rings.get((device, point))
        if ring is None:
            return None
        return ring.since(since)

    def forget(self, device: str, point: str) -> None:
        self.rings.pop((device, point), None)
