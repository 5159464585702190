"""The pipeline: report by exception (deadband, percent, max silence, quality, NaN), the clock
flag, processors (rules) and encoders, and that emit() returns once the outbox committed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from picogate._clock import Clock
from picogate._model import PointInfo, PointType, Quality, Reading
from picogate._outbox import Envelope, Outbox, OutboxUnavailable, Record
from picogate._pipeline import Pipeline, ReportFilter
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate.mqtt._sink import MqttEncoder
from picogate.mqtt._topics import Topics

S = 1_000_000_000  # ns


def registry(*points: PointInfo) -> PointRegistry:
    reg = PointRegistry()
    for p in points:
        reg.add(p)
    return reg


def pt(name: str, **kw: Any) -> PointInfo:
    return PointInfo(device="d", name=name, type=kw.pop("type", PointType.FLOAT64), **kw)


def rd(point: str, value: Any, t: float, q: Quality = Quality.GOOD) -> Reading:
    return Reading("d", point, value, int(t * S), q)


def run(filt: ReportFilter, point: str, values: Sequence[Any], *, step: float = 1.0) -> list[Any]:
    """Feed values one per `step` seconds; return those published."""
    out: list[Any] = []
    for i, v in enumerate(values):
        q = Quality.BAD if v is None else Quality.GOOD
        out.extend(r.value for r in filt([rd(point, v, i * step, q)]))
    return out


# --------------------------------------------------------------------------- the report filter


def test_deadband_zero_publishes_every_change_only() -> None:
    f = ReportFilter(registry(pt("p")))
    assert run(f, "p", [1, 1, 2, 2, 2, 3, 1, 1]) == [1, 2, 3, 1]


def test_absolute_deadband() -> None:
    f = ReportFilter(registry(pt("p", deadband=0.5)))
    # compared with the last *published* value, not the last reading: a slow drift is caught
    assert run(f, "p", [10, 10.3, 10.5, 10.6, 10.9, 11.2, 10.5, 10.1]) == [10, 10.6, 11.2, 10.5]


def test_percent_deadband() -> None:
    f = ReportFilter(registry(pt("p", deadband=10, deadband_percent=True)))
    # 10 % of the last published value: 100 → ±10, then 111 → ±11.1
    assert run(f, "p", [100, 105, 110, 111, 120, 122.2, 122.11, 99.8]) == [100, 111, 122.2, 99.8]


def test_percent_deadband_from_zero_publishes_any_move() -> None:
    f = ReportFilter(registry(pt("p", deadband=5, deadband_percent=True)))
    assert run(f, "p", [0, 0, 0.001, 0.001]) == [0, 0.001]


def test_negative_values_and_integers() -> None:
    f = ReportFilter(registry(pt("p", type=PointType.INT32, deadband=2)))
    assert run(f, "p", [-10, -12, -13, -8, -6, -7]) == [-10, -13, -8]


def test_bools_and_strings_publish_on_change() -> None:
    f = ReportFilter(registry(pt("b", type=PointType.BOOL, deadband=5), pt("s", type=PointType.STRING)))
    assert run(f, "b", [False, False, True, True, False]) == [False, True, False]
    assert run(f, "s", ["a", "a", "b", "b"]) == ["a", "b"]


def test_max_silence_republishes_unchanged_values() -> None:
    f = ReportFilter(registry(pt("p", max_silence=3.0)))
    # one reading a second, never changing: published at 0, 3, 6, 9 s
    assert len(run(f, "p", [7] * 10)) == 4
    # a change restarts the silence timer
    f = ReportFilter(registry(pt("q", max_silence=3.0)))
    published = [r.ts // S for i, v in enumerate([1, 1, 2, 2, 2, 2, 2]) for r in f([rd("q", v, i)])]
    assert published == [0, 2, 5]


def test_max_silence_with_deadband() -> None:
    f = ReportFilter(registry(pt("p", deadband=100, max_silence=2.0)))
    got = [(r.ts // S, r.value) for i, v in enumerate([1, 2, 3, 4, 5]) for r in f([rd("p", v, i)])]
    assert got == [(0, 1), (2, 3), (4, 5)]  # small moves show up by the silence timer


def test_quality_transitions_always_publish() -> None:
    f = ReportFilter(registry(pt("p", deadband=1000)))
    seq = [(5.0, Quality.GOOD), (5.0, Quality.UNCERTAIN), (5.0, Quality.UNCERTAIN), (5.0, Quality.GOOD)]
    seq += [
        (None, Quality.BAD),
        (None, Quality.BAD),
        (None, Quality.BAD),
        (5.0, Quality.GOOD),
        (5.0, Quality.GOOD),
    ]
    got = [(r.value, r.quality) for i, (v, q) in enumerate(seq) for r in f([rd("p", v, i, q)])]
    assert got == [
        (5.0, Quality.GOOD),
        (5.0, Quality.UNCERTAIN),
        (5.0, Quality.GOOD),
        (None, Quality.BAD),
        (5.0, Quality.GOOD),  # back from bad, even with the same value
    ]


def test_bad_repeats_once_per_silence_period() -> None:
    f = ReportFilter(registry(pt("p", max_silence=2.0)))
    got = [i for i in range(6) for _ in f([rd("p", None, i, Quality.BAD)])]
    assert got == [0, 2, 4]


@pytest.mark.parametrize("deadband", [0.0, 0.5])
def test_nan_is_a_value_that_moves_only_once(deadband: float) -> None:
    nan = math.nan
    f = ReportFilter(registry(pt("p", deadband=deadband)))
    got = run(f, "p", [1.0, nan, nan, nan, 1.2, 1.2, 3.0])
    assert got[0] == 1.0
    assert math.isnan(got[1])
    assert got[2:] == [1.2, 3.0]


def test_each_point_is_filtered_on_its_own() -> None:
    f = ReportFilter(registry(pt("a", deadband=1), pt("b")))
    out = f([rd("a", 1, 0), rd("b", 1, 0)])
    assert [r.point for r in out] == ["a", "b"]
    out = f([rd("a", 1.5, 1), rd("b", 1.5, 1)])
    assert [r.point for r in out] == ["b"]


def test_unregistered_points_publish_on_change() -> None:
    f = ReportFilter(registry())
    assert run(f, "x", [1, 1, 2]) == [1, 2]


def test_forget_republishes() -> None:
    f = ReportFilter(registry(pt("p")))
    assert run(f, "p", [1, 1]) == [1]
    f.forget("d")
    assert run(f, "p", [1]) == [1]


# --------------------------------------------------------------------------- the pipeline


class FakeOutbox:
    def __init__(self) -> None:
        self.appended: list[Envelope] = []
        self.how: list[str] = []

    async def append(self, envelopes: Sequence[Envelope], *, prompt: bool = False) -> None:
        self.appended.extend(envelopes)
        self.how.append("append")

    def put(self, envelopes: Sequence[Envelope], *, on_lost: object = None) -> None:
        self.appended.extend(envelopes)
        self.how.append("put")

    async def room(self) -> None:
        pass


class Doubler:
    """A processor: sees everything, derives d.double from d.p."""

    def __init__(self) -> None:
        self.seen: list[Reading] = []

    def process(self, readings: Sequence[Reading]) -> Sequence[Reading]:
        self.seen.extend(readings)
        return [
            Reading("d", "double", 2 * r.value, r.ts, r.quality)
            for r in readings
            if r.point == "p" and isinstance(r.value, int | float)
        ]


def make(clock: Clock | None = None) -> tuple[Pipeline, FakeOutbox]:
    outbox = FakeOutbox()
    reg = registry(pt("p"), pt("double"), pt("other", deadband=100))
    pipe = Pipeline(reg, outbox, clock or Clock(check_sync=False))  # type: ignore[arg-type]
    pipe.encoders.append(
        MqttEncoder(Topics("pg", "gw"), per_point=True, per_device=False, qos=1, retain=True)
    )
    return pipe, outbox


def decoded(envs: Sequence[Envelope]) -> list[tuple[str, Any, str]]:
    """(topic, v, q) of every message the envelopes carry (a device's points may share one)."""
    out = []
    for e in envs:
        for topic, payload in Record(0, e.sink, e.key, e.payload, e.qos, e.retain, 0, e.parts).messages():
            body = orjson.loads(payload)
            out.append((topic, body["v"], body["q"]))
    return out


async def test_processors_see_all_readings_and_derived_are_published() -> None:
    pipe, outbox = make()
    doubler = Doubler()
    pipe.processors.append(doubler)
    await pipe.emit([rd("p", 1, 0), rd("other", 5, 0)])
    await pipe.emit([rd("p", 1, 1), rd("other", 6, 1)])  # filtered out: unchanged / within deadband
    await pipe.emit([rd("p", 2, 2)])
    # the processor saw every reading, also those the deadband held back
    assert [(r.point, r.value) for r in doubler.seen] == [
        ("p", 1),
        ("other", 5),
        ("p", 1),
        ("other", 6),
        ("p", 2),
    ]
    assert decoded(outbox.appended) == [
        ("pg/gw/data/d/p", 1, "good"),
        ("pg/gw/data/d/other", 5, "good"),
        ("pg/gw/data/d/double", 2, "good"),
        ("pg/gw/data/d/p", 2, "good"),
        ("pg/gw/data/d/double", 4, "good"),
    ]
    assert all(e.retain and e.qos == 1 for e in outbox.appended)
    assert (pipe.received, pipe.published) == (5, 5)
    assert pipe.latest[("d", "other")].value == 6  # the latest reading, published or not
    assert pipe.latest[("d", "double")].value == 4


async def test_listeners_hear_what_was_published() -> None:
    pipe, _ = make()
    heard: list[list[Any]] = []
    pipe.listeners.append(lambda rs: heard.append([r.value for r in rs]))
    await pipe.emit([rd("p", 1, 0)])
    await pipe.emit([rd("p", 1, 1)])
    await pipe.emit([rd("p", 3, 2)])
    await pipe.emit([])
    assert heard == [[1], [3]]


async def test_emit_without_wait_hands_over_and_does_not_wait_for_the_commit() -> None:
    """A poll (acknowledged to nobody) hands its readings over; a peer waiting for its answer
    (Pico ack, CoAP 2.04) waits for the commit."""
    pipe, outbox = make()
    await pipe.emit([rd("p", 1, 0)])
    await pipe.emit([rd("p", 2, 1)], wait=False)
    assert outbox.how == ["append", "put"]
    assert decoded(outbox.appended) == [("pg/gw/data/d/p", 1, "good"), ("pg/gw/data/d/p", 2, "good")]


async def test_unsynchronised_clock_makes_good_readings_uncertain() -> None:
    synced = [False]
    clock = Clock(check_sync=True, probe=lambda: synced[0], recheck_s=0)
    pipe, outbox = make(clock)
    await pipe.emit([rd("p", 1, 0), rd("other", None, 0, Quality.BAD)])
    synced[0] = True
    await pipe.emit([rd("p", 1, 1)])
    assert decoded(outbox.appended) == [
        ("pg/gw/data/d/p", 1, "uncertain"),
        ("pg/gw/data/d/other", None, "bad"),  # bad stays bad
        ("pg/gw/data/d/p", 1, "good"),  # the clock is fine again: a quality change, published
    ]


async def test_clock_without_kernel_answer_counts_as_synced() -> None:
    pipe, outbox = make(Clock(check_sync=True, probe=lambda: None))
    await pipe.emit([rd("p", 1, 0)])
    assert decoded(outbox.appended) == [("pg/gw/data/d/p", 1, "good")]


async def test_device_status_and_post() -> None:
    pipe, outbox = make()
    await pipe.device_status(DeviceStatus("d", DeviceState.OFFLINE, "no reply", 5 * S))
    await pipe.post([Envelope("mqtt", "pg/gw/alerts", b"{}")])
    status, alert = outbox.appended
    assert status.key == "pg/gw/devices/d/status"
    assert status.retain
    assert orjson.loads(status.payload) == {"state": "offline", "reason": "no reply", "ts": 5000}
    assert alert.key == "pg/gw/alerts"


async def test_emit_returns_once_committed(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.02) as outbox:
        reg = registry(pt("p"))
        pipe = Pipeline(reg, outbox, Clock(check_sync=False))
        pipe.encoders.append(
            MqttEncoder(Topics("pg", "gw"), per_point=True, per_device=True, qos=1, retain=False)
        )
        await pipe.emit([rd("p", 1.5, 0)])
        assert outbox.depth("mqtt") == 2  # committed when emit() returned: one per point, one per device
        recs = await outbox.fetch("mqtt", 0, 10)
        assert [r.key for r in recs] == ["pg/gw/data/d/p", "pg/gw/data/d"]
        assert orjson.loads(recs[1].payload) == {
            "ts": 0,
            "points": {"p": {"v": 1.5, "ts": 0, "unit": "", "q": "good"}},
        }


async def test_nothing_to_publish_commits_nothing() -> None:
    pipe, outbox = make()
    await pipe.emit([rd("other", 1, 0)])
    n = len(outbox.appended)
    await pipe.emit([rd("other", 2, 1)])
    assert len(outbox.appended) == n


class RefusingOutbox(FakeOutbox):
    """Refuses the next `refuse` waiting appends, as an outbox whose commits fail (disk full)."""

    def __init__(self, refuse: int) -> None:
        super().__init__()
        self.refuse = refuse

    async def append(self, envelopes: Sequence[Envelope], *, prompt: bool = False) -> None:
        if self.refuse:
            self.refuse -= 1
            raise OutboxUnavailable(Path("o.sqlite"), "outbox o.sqlite: disk full")
        await super().append(envelopes)


async def test_a_reading_whose_commit_failed_is_published_again() -> None:
    """The report filter marks a value as published before the commit; when the commit fails the
    value was never published, so the next reading of that point (even unchanged) must be."""
    outbox = RefusingOutbox(refuse=1)
    pipe = Pipeline(registry(pt("p")), outbox, Clock(check_sync=False))  # type: ignore[arg-type]
    pipe.encoders.append(
        MqttEncoder(Topics("pg", "gw"), per_point=True, per_device=False, qos=1, retain=False)
    )
    with pytest.raises(OutboxUnavailable):
        await pipe.emit([rd("p", 5, 0)])
    await pipe.emit([rd("p", 5, 1)])  # unchanged, but never published
    assert decoded(outbox.appended) == [("pg/gw/data/d/p", 5, "good")]


async def test_values_no_sink_can_carry_are_bad_readings_and_counted() -> None:
    pipe, outbox = make()
    await pipe.emit([rd("p", math.inf, 0), rd("other", 10**30, 0), rd("double", 1.5, 0)])
    assert decoded(outbox.appended) == [
        ("pg/gw/data/d/p", None, "bad"),
        ("pg/gw/data/d/other", None, "bad"),
        ("pg/gw/data/d/double", 1.5, "good"),
    ]
    assert pipe.unfit == {"not a finite number": 1, "an integer outside 64 bits": 1}


async def test_a_failing_processor_or_encoder_does_not_stop_the_readings() -> None:
    class Broken:
        def process(self, readings: Sequence[Reading]) -> Sequence[Reading]:
            raise RuntimeError("a bug")

    class Picky:
        sink = "picky"

        def readings(self, readings: Sequence[Reading]) -> list[Envelope]:
            if any(r.point == "p" for r in readings):
                raise ValueError("cannot encode p")
            return [Envelope("picky", r.point, b"") for r in readings]

        def device_status(self, status: DeviceStatus) -> list[Envelope]:
            return []

    pipe, outbox = make()
    pipe.processors.append(Broken())
    pipe.encoders.append(Picky())  # type: ignore[arg-type]
    await pipe.emit([rd("p", 1, 0), rd("other", 2, 0)])
    assert ("pg/gw/data/d/p", 1, "good") in decoded([e for e in outbox.appended if e.sink == "mqtt"])
    # encoded one by one: p (even made bad) is not encodable for this sink, counted; other goes on
    assert [e.key for e in outbox.appended if e.sink == "picky"] == ["other"]
    assert pipe.unfit == {"not encodable for picky": 1}
    assert pipe.failures == {"processor:Broken": 1, "encoder:picky": 1}


def test_a_device_topic_is_formatted_once() -> None:
    """Every message of a device carries one topic string (formatted once, hashed once by the
    client's topic cache, shared by the records in flight)."""
    enc = MqttEncoder(Topics("pg", "gw"), per_point=True, per_device=True, qos=1, retain=False)
    first = enc.readings([Reading("d", "p", 1, 0), Reading("d", "q", 2, 0), Reading("e", "p", 3, 0)])
    again = enc.readings([Reading("d", "p", 4, S)])
    assert [e.key for e in first] == ["pg/gw/data/d/", "pg/gw/data/d", "pg/gw/data/e/p", "pg/gw/data/e"]
    assert [e.key for e in again] == ["pg/gw/data/d/p", "pg/gw/data/d"]
    assert first[1].key is again[1].key
    assert orjson.loads(again[1].payload) == {
        "ts": 1000,
        "points": {"p": {"v": 4, "ts": 1000, "unit": "", "q": "good"}},
    }


async def test_latest_holds_every_reading_and_shares_its_keys_with_the_filter() -> None:
    """`latest` has the last reading of every point, published or not; it and the report filter
    keep their points per device, by the readings' own point names (no key tuple per point)."""
    pipe, _ = make()
    await pipe.emit([rd("p", 1, 0), rd("other", 5, 0)])
    await pipe.emit([rd("p", 1, 1), rd("other", 6, 1)])  # neither published (unchanged, deadband)
    assert {k: (r.value, r.ts) for k, r in pipe.latest.items()} == {
        ("d", "p"): (1, 1 * S),
        ("d", "other"): (6, 1 * S),
    }
    assert ("d", "p") in pipe.latest
    assert ("d", "nope") not in pipe.latest
    assert ("e", "p") not in pipe.latest
    assert pipe.latest.get(("e", "p")) is None
    assert len(pipe.latest) == 2
    assert sorted(r.value for r in pipe.latest.values()) == [1, 6]
    filter_keys = {k: k for k in pipe.filter._last["d"]}
    assert all(filter_keys[p] is p for _, p in pipe.latest)


def test_readings_of_several_devices_in_one_batch_are_filtered_per_device() -> None:
    """A batch may mix devices, in any order, and name one device with different string objects:
    each point is compared with its own device's last reading."""
    reg = PointRegistry()
    for dev in ("a", "b"):
        reg.add(PointInfo(dev, "p", PointType.INT32))
    f = ReportFilter(reg)
    b_again = "".join(["b"])  # equal to "b", another object
    first = [Reading("a", "p", 1, 0), Reading("b", "p", 1, 0), Reading("a", "q", 5, 0)]
    assert f(first) == first
    same = [Reading("b", "p", 1, S), Reading("a", "p", 1, S), Reading(b_again, "p", 1, S)]
    assert f(same) == []
    moved = [Reading("a", "p", 1, 2 * S), Reading(b_again, "p", 2, 2 * S), Reading("a", "q", 6, 2 * S)]
    assert f(moved) == moved[1:]
    assert f.published_ts("b", "p") == 2 * S
    assert f.published_ts("a", "p") == 0
    f.unpublish(moved[1:2])
    assert f.published_ts("b", "p") is None
    f.forget("a", "q")
    assert f.published_ts("a", "q") is None
    assert f.published_ts("a", "p") == 0
    f.forget("a")
    assert f.published_ts("a", "p") is None


def test_a_point_published_when_it_changed_keeps_its_last_reading_as_its_state() -> None:
    """No state object per point for the common case (15,000 points: 1.6 MB): the last published
    reading itself; a point with a deadband keeps its own."""
    f = ReportFilter(registry(pt("p"), pt("db", deadband=1.0)))
    first = [rd("p", 1, 0), rd("db", 1.0, 0)]
    assert f(first) == first
    assert f._last["d"]["p"] is first[0]
    assert f._last["d"]["db"] is not first[1]
    assert f([rd("p", 1, 1), rd("db", 1.5, 1)]) == []
    changed = rd("p", 2, 2)
    assert f([changed]) == [changed]
    assert f._last["d"]["p"] is changed
