"""One Sparkplug session of the Edge Node (no I/O): what each outbox record becomes on the wire.

`seq`, aliases, which devices are born and whether a value is historical exist only within one MQTT
session, so the outbox keeps readings (see `SparkplugEncoder`) and this class turns each record
into Sparkplug messages when it is delivered:

- `births()`: NBIRTH (seq 0, bdSeq, Node Control, the node's health), then a DBIRTH for every
  device that is not offline, each point a metric with name, alias, datatype, properties and its
  current value (or `is_null`);
- `record()`: a data record → DDATA (aliases only; `is_historical` when the record was committed
  before this session's births; a value no newer than the one its DBIRTH carried is left out); a device status record → DDEATH (offline) or DBIRTH (back online);
  a data record of a device that has no DBIRTH in this session first gets one (a point added at run
  time gives its device a new DBIRTH), unless every reading in it is bad (then it is left out,
  counted: the DDEATH already marked the device's metrics stale);
- `node_data()`: NDATA for the node's health metrics that changed.

Every message but NDEATH carries the next `seq` (0–255, then 0 again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from picogate._model import PointInfo, Quality, Reading, Value
from picogate.sparkplug._payload import (
    BOOLEAN,
    DATATYPE,
    DOUBLE,
    INT32,
    INT64,
    QUALITY_CODE,
    QUALITY_GOOD,
    STRING,
    Payload,
    Topics,
    add_property,
    set_value,
)

log = logging.getLogger("picogate.sparkplug")

DATA_PREFIX = "d/"
STATUS_PREFIX = "s/"
REBIRTH = "Node Control/Rebirth"
NEXT_SERVER = "Node Control/Next Server"
BDSEQ = "bdSeq"

_QUALITY_OF = {"good": Quality.GOOD, "bad": Quality.BAD, "uncertain": Quality.UNCERTAIN}


@dataclass(frozen=True, slots=True)
class NodeMetric:
    """A metric of the Edge Node itself (its health): name, Sparkplug datatype, value."""

    name: str
    datatype: int
    value: Value


@dataclass(slots=True)
class _Born:
    alias: int
    datatype: int
    quality: Quality
    ts: int = 0  # ns of the newest value sent live (the birth's, then each DDATA's)


Message = tuple[str, bytes]
"""(topic, payload): published at QoS 0, not retained, as Sparkplug requires of an Edge Node."""


def encode_readings(readings: Sequence[Reading]) -> bytes:
    """An outbox record's payload for one device: `[[point, value, ts_ns, quality], …]`."""
    return orjson.dumps([[r.point, r.value, r.ts, r.quality.value] for r in readings])


def encode_status(state: str, ts_ns: int) -> bytes:
    return orjson.dumps({"state": state, "ts": ts_ns})


class EdgeSession:
    """seq, aliases and births of one MQTT session of one Edge Node."""

    def __init__(
        self,
        topics: Topics,
        bdseq: int,
        *,
        points_of: Callable[[str], list[PointInfo]],
        latest: Callable[[str, str], Reading | None],
        now_ns: Callable[[], int],
    ) -> None:
        self.topics = topics
        self.bdseq = bdseq
        self._points_of = points_of
        self._latest = latest
        self._now_ns = now_ns
        self.seq = -1  # the last seq sent
        self.born_ns = 0  # when this session's first births were made (0: not yet)
        self._aliases: dict[tuple[str, str], int] = {}  # ("" for the node, metric) → alias
        self._by_alias: dict[int, tuple[str, str]] = {}
        self._born: dict[str, dict[str, _Born]] = {}  # device → point → alias, datatype, quality
        self._node: dict[str, _Born] = {}
        self.skipped = 0  # readings of devices without a DBIRTH, left out
        self.unencodable = 0  # values that did not fit their metric's datatype (sent as null)

    # ------------------------------------------------------------------ aliases and seq

    def _alias(self, device: str, name: str) -> int:
        key = (device, name)
        alias = self._aliases.get(key)
        if alias is None:
            alias = self._aliases[key] = len(self._aliases) + 1
            self._by_alias[alias] = key
        return alias

    def resolve(self, device: str, metric: Any) -> str | None:
        """The point a command's metric names (by alias, else by name), None when unknown."""
        if metric.HasField("alias"):
            key = self._by_alias.get(metric.alias)
            return key[1] if key is not None and key[0] == device else None
        return metric.name if metric.HasField("name") else None

    def is_born(self, device: str) -> bool:
        return device in self._born

    def born_devices(self) -> list[str]:
        return list(self._born)

    def _finish(self, payload: Any, ts_ms: int) -> bytes:
        self.seq = (self.seq + 1) % 256
        payload.seq = self.seq
        payload.timestamp = ts_ms
        data: bytes = payload.SerializeToString()
        return data

    # ------------------------------------------------------------------ births and deaths

    def births(self, devices: Iterable[str], node_metrics: Sequence[NodeMetric]) -> list[Message]:
        """NBIRTH (seq 0) and a DBIRTH for each of `devices` that has points."""
        now = self._now_ns()
        if not self.born_ns:
            self.born_ns = now
        self.seq = -1
        self._born.clear()
        ts_ms = now // 1_000_000
        p = Payload()
        self._node_metric(p, NodeMetric(BDSEQ, INT64, self.bdseq), ts_ms)
        rebirth = p.metrics.add()  # never with an alias (tck-id-...-rebirth-name-aliases)
        rebirth.name = REBIRTH
        rebirth.datatype = BOOLEAN
        rebirth.timestamp = ts_ms
        rebirth.boolean_value = False
        self._node_metric(p, NodeMetric(NEXT_SERVER, BOOLEAN, False), ts_ms)
        for m in node_metrics:
            self._node_metric(p, m, ts_ms)
        out: list[Message] = [(self.topics.node_topic("NBIRTH"), self._finish(p, ts_ms))]
        for device in devices:
            msg = self.device_birth(device)
            if msg is not None:
                out.append(msg)
        return out

    def _node_metric(self, p: Any, m: NodeMetric, ts_ms: int) -> None:
        metric = p.metrics.add()
        metric.name = m.name
        metric.alias = self._alias("", m.name)
        metric.datatype = m.datatype
        metric.timestamp = ts_ms
        set_value(metric, m.datatype, m.value)
        self._node[m.name] = _Born(metric.alias, m.datatype, Quality.GOOD)

    def device_birth(self, device: str) -> Message | None:
        """DBIRTH of `device` with every point it has now; None when it has none."""
        points = self._points_of(device)
        if not points:
            return None
        now_ms = self._now_ns() // 1_000_000
        p = Payload()
        born: dict[str, _Born] = {}
        for info in points:
            datatype = DATATYPE[info.type]
            r = self._latest(device, info.name)
            metric = p.metrics.add()
            metric.name = info.name
            metric.alias = self._alias(device, info.name)
            metric.datatype = datatype
            metric.timestamp = r.ts // 1_000_000 if r is not None else now_ms
            quality = r.quality if r is not None else Quality.BAD
            props = metric.properties
            if info.unit:
                add_property(props, "engUnit", STRING, info.unit)
            if info.min is not None:
                add_property(props, "engLow", DOUBLE, info.min)
            if info.max is not None:
                add_property(props, "engHigh", DOUBLE, info.max)
            if info.description:
                add_property(props, "Documentation", STRING, info.description)
            add_property(props, "writable", BOOLEAN, info.writable)
            quality = self._value(metric, datatype, r.value if r is not None else None, quality)
            if quality is not Quality.GOOD:
                add_property(props, "Quality", INT32, QUALITY_CODE[quality])
            born[info.name] = _Born(metric.alias, datatype, quality, r.ts if r is not None else 0)
        self._born[device] = born
        return self.topics.device_topic("DBIRTH", device), self._finish(p, now_ms)

    def device_death(self, device: str) -> Message | None:
        """DDEATH of a born device (None when it has no DBIRTH in this session)."""
        if self._born.pop(device, None) is None:
            return None
        now_ms = self._now_ns() // 1_000_000
        return self.topics.device_topic("DDEATH", device), self._finish(Payload(), now_ms)

    def _value(self, metric: Any, datatype: int, value: Value | None, quality: Quality) -> Quality:
        """Set the metric's value (or is_null); the quality it is sent with."""
        if value is None or quality is Quality.BAD:
            metric.is_null = True
            return Quality.BAD
        try:
            set_value(metric, datatype, value)
        except (ValueError, TypeError, OverflowError):
            self.unencodable += 1
            if self.unencodable <= 10:
                log.warning("%r does not fit datatype %d; sent as null", value, datatype)
            field = metric.WhichOneof("value")
            if field is not None:
                metric.ClearField(field)
            metric.is_null = True
            return Quality.BAD
        return quality

    # ------------------------------------------------------------------ records

    def record(self, key: str, payload: bytes, created_ns: int) -> list[Message]:
        """The Sparkplug messages of one outbox record (see the module docstring)."""
        if key.startswith(DATA_PREFIX):
            return self._data(key[len(DATA_PREFIX) :], payload, created_ns)
        if key.startswith(STATUS_PREFIX):
            device = key[len(STATUS_PREFIX) :]
            state = orjson.loads(payload).get("state")
            if state == "offline":
                death = self.device_death(device)
                return [death] if death is not None else []
            if state == "online" and device not in self._born:
                birth = self.device_birth(device)
                return [birth] if birth is not None else []
            return []
        log.warning("outbox record with unknown key %r left out", key[:80])
        return []

    def _data(self, device: str, payload: bytes, created_ns: int) -> list[Message]:
        rows = orjson.loads(payload)
        out: list[Message] = []
        born = self._born.get(device)
        names = {row[0] for row in rows}
        new_points = False
        if born is not None and not names <= born.keys():
            missing = names - born.keys()  # added since the DBIRTH, or removed since the record
            new_points = any(info.name in missing for info in self._points_of(device))
        if born is None or new_points:
            if born is None and all(row[3] == "bad" for row in rows):
                self.skipped += len(rows)
                return out
            birth = self.device_birth(device)
            if birth is None:
                self.skipped += len(rows)
                return out
            out.append(birth)
            born = self._born[device]
        historical = created_ns < self.born_ns
        p = Payload()
        rows.sort(key=lambda row: row[2])  # chronological (stable)
        for point, value, ts, q in rows:
            b = born.get(point)
            if b is None:  # not a point of the device any more
                self.skipped += 1
                continue
            if not historical and ts <= b.ts:  # the DBIRTH already carried this value or a newer one
                continue
            quality = _QUALITY_OF.get(q, Quality.BAD)
            metric = p.metrics.add()
            metric.alias = b.alias
            metric.timestamp = ts // 1_000_000
            if historical:
                metric.is_historical = True
            quality = self._value(metric, b.datatype, value, quality)
            if quality is not Quality.GOOD or b.quality is not Quality.GOOD:
                add_property(
                    metric.properties,
                    "Quality",
                    INT32,
                    QUALITY_CODE[quality] if quality is not Quality.GOOD else QUALITY_GOOD,
                )
            if not historical:
                b.quality, b.ts = quality, ts
        if len(p.metrics):
            now_ms = self._now_ns() // 1_000_000
            out.append((self.topics.device_topic("DDATA", device), self._finish(p, now_ms)))
        return out

    def node_data(self, metrics: Sequence[NodeMetric]) -> Message | None:
        """NDATA with these node metrics (by alias), None when none of them is known."""
        p = Payload()
        now_ms = self._now_ns() // 1_000_000
        for m in metrics:
            b = self._node.get(m.name)
            if b is None:
                continue
            metric = p.metrics.add()
            metric.alias = b.alias
            metric.timestamp = now_ms
            set_value(metric, b.datatype, m.value)
        if not len(p.metrics):
            return None
        return self.topics.node_topic("NDATA"), self._finish(p, now_ms)
