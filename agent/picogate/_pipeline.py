"""The data path: sources → processors (rules) → report by exception → encoders → outbox.

Sources call `Pipeline.emit(readings)`; it returns once the readings that are to be published are
committed to the outbox (accepted), or with `wait=False` once they are handed over (a poll that
nobody acknowledges must not wait for a commit).  Every value is checked first: one that no sink
could carry (a non-finite float, an integer beyond 64 bits, ...) makes its reading bad, counted.  Processors (the rule engine) see every reading, before the
deadband, and may add derived readings.  Encoders turn what is to be published into each sink's
payloads.  Nothing here knows which protocol produced a reading or which carries it away.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence, ValuesView
from typing import Any, Protocol

from picogate._clock import Clock
from picogate._model import PointInfo, Quality, Reading
from picogate._outbox import Envelope, Outbox, OutboxUnavailable
from picogate._registry import DeviceStatus, PointRegistry, RegistryEvent

log = logging.getLogger("picogate.pipeline")


class Processor(Protocol):
    """Sees every reading in arrival order; returns further readings (derived points) to add."""

    def process(self, readings: Sequence[Reading]) -> Sequence[Reading]: ...


class Encoder(Protocol):
    """Turns readings and device states into one sink's payloads."""

    sink: str

    def readings(self, readings: Sequence[Reading]) -> list[Envelope]: ...

    def device_status(self, status: DeviceStatus) -> list[Envelope]: ...


class _Published:
    """What was last published of a point with a deadband or a maximum silence, and its settings.
    (A point that is published whenever it changed, the common case, keeps the last published
    `Reading` itself: no object of its own, 1.6 MB less for 15,000 points.)"""

    __slots__ = ("info", "quality", "ts", "value")

    def __init__(self, info: PointInfo, r: Reading) -> None:
        self.info = info
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


class Latest(Mapping[tuple[str, str], Reading]):
    """The last reading of every point, published or not, by `(device, point)` (for GETs, status,
    the console and the demo view).  Kept per device, so that the readings' path stores a reading
    with one lookup by point name, without a key tuple per reading."""

    __slots__ = ("_devices",)

    def __init__(self) -> None:
        self._devices: dict[str, dict[str, Reading]] = {}

    def points(self, device: str) -> dict[str, Reading]:
        """The device's last readings by point name (created empty): the pipeline stores into it."""
        points = self._devices.get(device)
        if points is None:
            points = self._devices[device] = {}
        return points

    def __getitem__(self, key: tuple[str, str]) -> Reading:
        return self._devices[key[0]][key[1]]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        points = self._devices.get(key[0])
        return points is not None and key[1] in points

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for device, points in list(self._devices.items()):
            for point in list(points):
                yield device, point

    def __len__(self) -> int:
        return sum(len(points) for points in self._devices.values())

    def values(self) -> ValuesView[Reading]:
        return _LatestValues(self)

    def readings(self) -> Iterator[Reading]:
        for points in list(self._devices.values()):
            yield from list(points.values())

    def __setitem__(self, key: tuple[str, str], reading: Reading) -> None:
        self.points(key[0])[key[1]] = reading


class _LatestValues(ValuesView[Reading]):
    """`Latest.values()` without a lookup per key."""

    _mapping: Latest

    def __iter__(self) -> Iterator[Reading]:
        return self._mapping.readings()


class ReportFilter:
    """Report by exception: publish on a move beyond the deadband, a quality change, or when the
    point's maximum silence expired; remember what was last published per point.

    Kept per device, like `Latest`: readings come in batches of one device (a poll), which cost
    one lookup of the device per batch and one by point name per reading."""

    def __init__(self, registry: PointRegistry) -> None:
        self._registry = registry
        self._last: dict[str, dict[str, Reading | _Published]] = {}
        registry.subscribe(self._on_registry)

    def _on_registry(self, event: RegistryEvent) -> None:
        if event.kind in ("point_added", "point_removed"):
            points = self._last.get(event.device)
            if points is not None:
                points.pop(event.point, None)  # settings may have changed

    def __call__(self, readings: Sequence[Reading], latest: Latest | None = None) -> list[Reading]:
        """The readings to publish.  `latest` (the pipeline's) is updated with every reading on
        the way (one pass)."""
        out: list[Reading] = []
        last_by_device = self._last
        device: str | None = None
        last_map: dict[str, Reading | _Published] = {}
        latest_map: dict[str, Reading] | None = None
        for r in readings:
            if r.device is not device:  # (the same string object for a whole poll)
                device = r.device
                found = last_by_device.get(device)
                if found is None:
                    found = last_by_device[device] = {}
                last_map = found
                if latest is not None:
                    latest_map = latest.points(device)
            point = r.point
            if latest_map is not None:
                latest_map[point] = r
            last = last_map.get(point)
            if last is None:
                info = self._registry.find(device, point)
                # deadband 0 and no max silence: "publish when it changed", the common fast path
                simple = info is None or (info.deadband <= 0 and info.max_silence <= 0)
                last_map[point] = r if simple or info is None else _Published(info, r)
                out.append(r)
                continue
            if last.__class__ is _Published:
                assert isinstance(last, _Published)
                if r.quality is last.quality:
                    info = last.info
                    silence_due = info.max_silence > 0 and r.ts - last.ts >= info.max_silence * 1e9
                    if not silence_due and (
                        r.quality is Quality.BAD or not _moved(info, last.value, r.value)
                    ):
                        continue
                last.value, last.quality, last.ts = r.value, r.quality, r.ts
                out.append(r)
                continue
            # published when it changed: `last` is the reading last published
            if r.quality is last.quality:
                value, prev = r.value, last.value
                # NaN != NaN: a NaN that stays NaN has not changed either
                if type(value) is type(prev) and (value == prev or (value != value and prev != prev)):
                    continue
                if r.quality is Quality.BAD:
                    continue
            last_map[point] = r
            out.append(r)
        return out

    def unpublish(self, readings: Sequence[Reading]) -> None:
        """These readings were passed but never committed (the outbox could not take them): forget
        that they were published, so that the next reading of each point is published again."""
        for r in readings:
            points = self._last.get(r.device)
            last = None if points is None else points.get(r.point)
            if points is not None and last is not None and last.ts == r.ts and last.value == r.value:
                del points[r.point]

    def published_ts(self, device: str, point: str) -> int | None:
        """The ts of the point's last published reading (None before the first)."""
        points = self._last.get(device)
        last = None if points is None else points.get(point)
        return None if last is None else last.ts

    def forget(self, device: str, point: str | None = None) -> None:
        if point is None:
            self._last.pop(device, None)
        elif (points := self._last.get(device)) is not None:
            points.pop(point, None)


PublishedListener = Callable[[Sequence[Reading]], None]

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1  # what every sink's encoding carries (JSON int64/uint64)
MAX_STRING = 65_536
"""The longest string value a point may carry (characters)."""
_LOG_FIRST = 10  # failures of one kind logged with their details; then one line in 1,000


def _unfit(value: object, quality: Quality) -> str:
    """Why `value` cannot be published as a reading of that quality ("" when it can)."""
    t = value.__class__
    if t is float:
        return "" if value - value == 0.0 else "not a finite number"  # type: ignore[operator]
    if t is int:
        return "" if _INT_MIN <= value <= _INT_MAX else "an integer outside 64 bits"  # type: ignore[operator]
    if t is bool:
        return ""
    if t is str:
        assert isinstance(value, str)
        if len(value) > MAX_STRING:
            return f"a string longer than {MAX_STRING} characters"
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return "a string that is not valid Unicode"
        return ""
    if value is None:
        return "" if quality is Quality.BAD else "no value"
    return f"a value of type {t.__name__}"


class Pipeline:
    def __init__(self, registry: PointRegistry, outbox: Outbox, clock: Clock) -> None:
        self.registry = registry
        self.outbox = outbox
        self.clock = clock
        self.processors: list[Processor] = []
        self.encoders: list[Encoder] = []
        self.filter = ReportFilter(registry)
        self.latest = Latest()
        """The last reading of every point, published or not (for GETs, status, the demo view)."""
        self.listeners: list[PublishedListener] = []
        self.received = 0
        self.published = 0
        self.unfit: Counter[str] = Counter()
        """Readings made bad because their value could not be published, by reason."""
        self.failures: Counter[str] = Counter()
        """Processor and encoder failures, by "processor:<name>" / "encoder:<sink>"."""

    async def emit(self, readings: Sequence[Reading], *, prompt: bool = False, wait: bool = True) -> None:
        """Take readings from a source.

        `wait=True` (the default): return once those to publish are committed to the outbox, i.e.
        accepted; raise `OutboxUnavailable` if the commit failed (the caller tells its peer that
        nothing was accepted).  `wait=False`: hand them over and return at once (a poll, which
        nobody acknowledges): only while the outbox is behind on its commits does this wait
        (backpressure).  `prompt` is accepted for compatibility (every commit starts as soon as
        the previous one ended).
        """
        del prompt
        if not readings:
            return
        # Processing is synchronous, before any await: processors see readings in call order.
        to_publish, envelopes = self._process(readings)
        if envelopes:
            if wait:
                try:
                    await self.outbox.append(envelopes)
                except OutboxUnavailable:
                    self.filter.unpublish(to_publish)
                    raise
            else:
                self.outbox.put(envelopes, on_lost=lambda: self.filter.unpublish(to_publish))
            self.published += len(to_publish)
            for listener in self.listeners:
                listener(to_publish)
        if not wait:
            await self.outbox.room()

    def _process(self, readings: Sequence[Reading]) -> tuple[list[Reading], list[Envelope]]:
        """Readings → (those to publish, their envelopes): checks, processors, report filter,
        encoders.  Never raises for what a reading carries: a value that cannot be published
        becomes a bad reading (counted in `unfit`); a failing processor or encoder is counted
        and logged, and the readings go on."""
        all_readings = self._fit(readings)
        if not self.clock.synced:
            all_readings = [
                Reading(r.device, r.point, r.value, r.ts, Quality.UNCERTAIN, r.unit)
                if r.quality is Quality.GOOD
                else r
                for r in all_readings
            ]
        self.received += len(all_readings)
        for processor in self.processors:
            try:
                derived = processor.process(all_readings)
            except Exception as exc:
                self._failed(f"processor:{type(processor).__name__}", exc)
                continue
            if derived:
                all_readings.extend(self._fit(derived))
        to_publish = self.filter(all_readings, self.latest)  # also the last reading of each point
        if not to_publish:
            return to_publish, []
        envelopes: list[Envelope] = []
        for encoder in self.encoders:
            try:
                envelopes.extend(encoder.readings(to_publish))
            except Exception as exc:
                self._failed(f"encoder:{encoder.sink}", exc)
                envelopes.extend(self._encode_one_by_one(encoder, to_publish))
        return to_publish, envelopes

    def _fit(self, readings: Sequence[Reading]) -> list[Reading]:
        """The readings, with every value that no sink could carry made bad (and counted)."""
        out = list(readings)
        bad = Quality.BAD
        for i, r in enumerate(out):
            v: Any = r.value
            c = v.__class__
            # the common case inline: a finite float or a 64-bit integer of a good reading
            if (
                (c is float and v - v == 0.0) or (c is int and _INT_MIN <= v <= _INT_MAX)
            ) and r.quality is not bad:
                continue
            why = _unfit(v, r.quality)
            if why:
                self.unfit[why] += 1
                n = self.unfit[why]
                if n <= _LOG_FIRST or n % 1000 == 0:
                    log.warning(
                        "%s.%s: %s (%.60r) cannot be published: the reading is bad (%d so far)",
                        r.device,
                        r.point,
                        why,
                        r.value,
                        n,
                    )
                out[i] = Reading(r.device, r.point, None, r.ts, Quality.BAD, r.unit)
            elif r.quality is Quality.BAD and r.value is not None:
                out[i] = Reading(r.device, r.point, None, r.ts, Quality.BAD, r.unit)
        return out

    def _encode_one_by_one(self, encoder: Encoder, readings: Sequence[Reading]) -> list[Envelope]:
        out: list[Envelope] = []
        for r in readings:
            try:
                out.extend(encoder.readings([r]))
                continue
            except Exception:
                pass
            self.unfit[f"not encodable for {encoder.sink}"] += 1
            bad = Reading(r.device, r.point, None, r.ts, Quality.BAD, r.unit)
            with contextlib.suppress(Exception):
                out.extend(encoder.readings([bad]))
        return out

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures[what] += 1
        n = self.failures[what]
        if n <= _LOG_FIRST or n % 1000 == 0:
            log.error("%s failed (%d so far); the readings go on", what, n, exc_info=exc)

    async def device_status(self, *statuses: DeviceStatus, prompt: bool = False, wait: bool = True) -> None:
        """Publish device states (same `wait` as `emit`)."""
        del prompt
        envelopes: list[Envelope] = []
        for status in statuses:
            for encoder in self.encoders:
                try:
                    envelopes.extend(encoder.device_status(status))
                except Exception as exc:
                    self._failed(f"encoder:{encoder.sink}", exc)
        if wait:
            await self.outbox.append(envelopes)
        else:
            self.outbox.put(envelopes)
            await self.outbox.room()

    async def post(self, envelopes: Sequence[Envelope], *, wait: bool = True) -> None:
        """Hand ready-made payloads (alerts, rule status, publish()) to the outbox."""
        if wait:
            await self.outbox.append(envelopes)
        else:
            self.outbox.put(envelopes)
