"""The data path: sources → processors (rules) → report by exception → encoders → outbox.

Sources call `Pipeline.emit(readings)`; it returns once the readings that are to be published are
committed to the outbox (accepted).  Processors (the rule engine) see every reading, before the
deadband, and may add derived readings.  Encoders turn what is to be published into each sink's
payloads.  Nothing here knows which protocol produced a reading or which carries it away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from picogate._clock import Clock
from picogate._model import PointInfo, Quality, Reading
from picogate._outbox import Envelope, Outbox
from picogate._registry import DeviceStatus, PointRegistry, RegistryEvent


class Processor(Protocol):
    """Sees every reading in arrival order; returns further readings (derived points) to add."""

    def process(self, readings: Sequence[Reading]) -> Sequence[Reading]: ...


class Encoder(Protocol):
    """Turns readings and device states into one sink's payloads."""

    sink: str

    def readings(self, readings: Sequence[Reading]) -> list[Envelope]: ...

    def device_status(self, status: DeviceStatus) -> list[Envelope]: ...


class _Published:
    """What was last published of one point, and the point's reporting settings."""

    __slots__ = ("info", "quality", "simple", "ts", "value")

    def __init__(self, info: PointInfo | None, r: Reading) -> None:
        self.info = info
        # deadband 0 and no max silence: "publish when it changed", the common fast path
        self.simple = info is None or (info.deadband <= 0 and info.max_silence <= 0)
        self.value: object = r.value
        self.quality = r.quality
        self.ts = r.ts


def _moved(info: PointInfo, last: object, value: object) -> bool:
    """Has `value` moved beyond the point's deadband since `last` was published?"""
    if isinstance(value, bool) or isinstance(last, bool) or not isinstance(value, int | float):
        return value != last
    if not isinstance(last, int | float):
        return True
    if math.isnan(value) or math.isnan(last):
        return not (math.isnan(value) and math.isnan(last))
    diff = abs(value - last)
    if info.deadband <= 0:
        return diff > 0
    threshold = abs(last) * info.deadband / 100.0 if info.deadband_percent else info.deadband
    return diff > threshold


class ReportFilter:
    """Report by exception: publish on a move beyond the deadband, a quality change, or when the
    point's maximum silence expired; remember what was last published per point."""

    def __init__(self, registry: PointRegistry) -> None:
        self._registry = registry
        self._last: dict[tuple[str, str], _Published] = {}
        registry.subscribe(self._on_registry)

    def _on_registry(self, event: RegistryEvent) -> None:
        if event.kind in ("point_added", "point_removed"):
            self._last.pop((event.device, event.point), None)  # settings may have changed

    def __call__(self, readings: Sequence[Reading]) -> list[Reading]:
        out: list[Reading] = []
        last_map = self._last
        for r in readings:
            key = (r.device, r.point)
            last = last_map.get(key)
            if last is None:
                last_map[key] = _Published(self._registry.find(r.device, r.point), r)
                out.append(r)
                continue
            if r.quality is last.quality:
                if last.simple:
                    value, prev = r.value, last.value
                    # NaN != NaN: a NaN that stays NaN has not changed either
                    if type(value) is type(prev) and (value == prev or (value != value and prev != prev)):
                        continue
                    if r.quality is Quality.BAD:
                        continue
                else:
                    info = last.info
                    assert info is not None
                    silence_due = info.max_silence > 0 and r.ts - last.ts >= info.max_silence * 1e9
                    if not silence_due and (
                        r.quality is Quality.BAD or not _moved(info, last.value, r.value)
                    ):
                        continue
            last.value, last.quality, last.ts = r.value, r.quality, r.ts
            out.append(r)
        return out

    def forget(self, device: str, point: str | None = None) -> None:
        for key in [k for k in self._last if k[0] == device and (point is None or k[1] == point)]:
            del self._last[key]


PublishedListener = Callable[[Sequence[Reading]], None]


class Pipeline:
    def __init__(self, registry: PointRegistry, outbox: Outbox, clock: Clock) -> None:
        self.registry = registry
        self.outbox = outbox
        self.clock = clock
        self.processors: list[Processor] = []
        self.encoders: list[Encoder] = []
        self.filter = ReportFilter(registry)
        self.latest: dict[tuple[str, str], Reading] = {}
        """The last reading of every point, published or not (for GETs, status, the demo view)."""
        self.listeners: list[PublishedListener] = []
        self.received = 0
        self.published = 0

    async def emit(self, readings: Sequence[Reading], *, prompt: bool = False) -> None:
        """Take readings from a source; return once those to publish are accepted (committed).

        `prompt=True` when a peer waits on the answer (CoAP's 2.04): the outbox commits at once
        rather than on its next `commit_interval` tick (see `Outbox.append`).
        """
        if not readings:
            return
        if not self.clock.synced:
            readings = [
                Reading(r.device, r.point, r.value, r.ts, Quality.UNCERTAIN, r.unit)
                if r.quality is Quality.GOOD
                else r
                for r in readings
            ]
        self.received += len(readings)
        all_readings = list(readings)
        for processor in self.processors:
            derived = processor.process(all_readings)
            if derived:
                all_readings.extend(derived)
        latest = self.latest
        for r in all_readings:
            latest[(r.device, r.point)] = r
        to_publish = self.filter(all_readings)
        if not to_publish:
            return
        envelopes: list[Envelope] = []
        for encoder in self.encoders:
            envelopes.extend(encoder.readings(to_publish))
        await self.outbox.append(envelopes, prompt=prompt)
        self.published += len(to_publish)
        for listener in self.listeners:
            listener(to_publish)

    async def device_status(self, *statuses: DeviceStatus, prompt: bool = False) -> None:
        envelopes: list[Envelope] = []
        for status in statuses:
            for encoder in self.encoders:
                envelopes.extend(encoder.device_status(status))
        await self.outbox.append(envelopes, prompt=prompt)

    async def post(self, envelopes: Sequence[Envelope]) -> None:
        """Hand ready-made payloads (alerts, rule status, publish()) to the outbox."""
        await self.outbox.append(envelopes)
