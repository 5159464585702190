"""The Sparkplug Edge Node's pure parts as data: what each outbox record becomes in a session (seq,
aliases, births, deaths, is_historical, quality), values in and out of metrics, STATE, bdSeq."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from _mqtt_scripted import ScriptedBroker, publish_id
from picogate import PointInfo, PointType, Quality, Reading
from picogate._registry import DeviceState, DeviceStatus
from picogate._router import ErrorCode, WriteRequest, WriteResult
from picogate._sink import SinkUnavailable
from picogate.config import ConfigError
from picogate.gateway import parse_config
from picogate.mqtt import IncomingMessage, MqttClient
from picogate.sparkplug import (
    BdSeqStore,
    EdgeSession,
    NodeMetric,
    SparkplugEncoder,
    SparkplugPayloadError,
    SparkplugSink,
)
from picogate.sparkplug._payload import (
    INT16,
    INT32,
    INT64,
    Payload,
    Topics,
    get_value,
    ndeath,
    parse_state,
    set_value,
)
from picogate.sparkplug._sink import Server

NOW = 1_700_000_000_000_000_000
POINTS = {
    "boiler": [
        PointInfo("boiler", "temp", PointType.FLOAT64, unit="°C", min=0, max=120),
        PointInfo("boiler", "setpoint", PointType.UINT16, writable=True),
        PointInfo("boiler", "offset", PointType.INT16),
        PointInfo("boiler", "burner", PointType.BOOL, writable=True),
    ],
    "pump": [PointInfo("pump", "speed", PointType.INT32, unit="rpm")],
}


class World:
    def __init__(self) -> None:
        self.points = {d: list(p) for d, p in POINTS.items()}
        self.latest: dict[tuple[str, str], Reading] = {}
        self.now = NOW

    def session(self, bdseq: int = 0) -> EdgeSession:
        return EdgeSession(
            Topics("plant", "gw1"),
            bdseq,
            points_of=lambda d: self.points.get(d, []),
            latest=lambda d, p: self.latest.get((d, p)),
            now_ns=lambda: self.now,
        )


def decode(data: bytes) -> Any:
    p = Payload()
    p.ParseFromString(data)
    return p


def records(readings: list[Reading]) -> list[tuple[str, bytes]]:
    return [(e.key, e.payload) for e in SparkplugEncoder().readings(readings)]


def test_births_carry_every_point_with_name_alias_datatype_and_value() -> None:
    w = World()
    w.latest[("boiler", "temp")] = Reading("boiler", "temp", 21.5, NOW - 10**9, unit="°C")
    w.latest[("boiler", "offset")] = Reading("boiler", "offset", -7, NOW - 10**9)
    s = w.session(bdseq=3)
    msgs = s.births(["boiler", "pump"], [NodeMetric("Gateway/Version", 12, "0.1.0")])
    assert [t for t, _ in msgs] == [
        "spBv1.0/plant/NBIRTH/gw1",
        "spBv1.0/plant/DBIRTH/gw1/boiler",
        "spBv1.0/plant/DBIRTH/gw1/pump",
    ]
    nbirth, boiler, pump = (decode(b) for _, b in msgs)
    assert [nbirth.seq, boiler.seq, pump.seq] == [0, 1, 2]
    assert nbirth.timestamp == NOW // 1_000_000
    names = [m.name for m in nbirth.metrics]
    assert names == ["bdSeq", "Node Control/Rebirth", "Node Control/Next Server", "Gateway/Version"]
    bd = nbirth.metrics[0]
    assert (bd.datatype, bd.long_value) == (INT64, 3)
    rebirth = nbirth.metrics[1]
    assert (rebirth.datatype, rebirth.boolean_value, rebirth.HasField("alias")) == (11, False, False)
    by = {m.name: m for m in boiler.metrics}
    assert {n: m.datatype for n, m in by.items()} == {"temp": 10, "setpoint": 6, "offset": 2, "burner": 11}
    assert by["temp"].double_value == 21.5
    assert get_value(by["offset"], INT16) == -7
    props = dict(zip(by["temp"].properties.keys, by["temp"].properties.values, strict=True))
    assert props["engUnit"].string_value == "°C"
    assert (props["engLow"].double_value, props["engHigh"].double_value) == (0, 120)
    assert "Quality" not in props  # good: no Quality property
    # a point with no reading yet: null, quality bad (0)
    assert by["setpoint"].is_null
    assert not by["setpoint"].HasField("int_value")
    sp = dict(zip(by["setpoint"].properties.keys, by["setpoint"].properties.values, strict=True))
    assert (sp["Quality"].type, sp["Quality"].int_value) == (INT32, 0)
    aliases = [m.alias for p in (nbirth, boiler, pump) for m in p.metrics if m.HasField("alias")]
    assert len(aliases) == len(set(aliases)) == 3 + 4 + 1
    assert all(m.HasField("timestamp") for p in (nbirth, boiler, pump) for m in p.metrics)


def test_ddata_uses_aliases_only_and_seq_runs_over_all_messages_and_wraps() -> None:
    w = World()
    s = w.session()
    s.births(["boiler"], [])
    aliases = {m.name: m.alias for m in decode(s.device_birth("boiler")[1]).metrics}  # type: ignore[index]
    w.now += 10**9
    seqs = []
    for i in range(300):
        key, payload = records([Reading("boiler", "temp", float(i), w.now + i)])[0]
        ((topic, body),) = s.record(key, payload, w.now + 1)
        assert topic == "spBv1.0/plant/DDATA/gw1/boiler"
        p = decode(body)
        seqs.append(p.seq)
        m = p.metrics[0]
        assert not m.HasField("name")
        assert not m.HasField("datatype")
        assert m.alias == aliases["temp"]
        assert m.double_value == float(i)
        assert not m.is_historical
    assert seqs[:3] == [3, 4, 5]  # NBIRTH 0, DBIRTH 1, DBIRTH again 2
    assert all(b == (a + 1) % 256 for a, b in itertools.pairwise(seqs))
    assert 255 in seqs
    assert seqs[seqs.index(255) + 1] == 0


def test_records_from_before_the_births_are_historical_and_in_time_order() -> None:
    w = World()
    s = w.session()
    s.births(["boiler"], [])
    rows = [Reading("boiler", "temp", 2.0, NOW - 10), Reading("boiler", "temp", 1.0, NOW - 20)]
    key, payload = records(rows)[0]
    ((_, body),) = s.record(key, payload, NOW - 5)  # committed before the births
    ms = decode(body).metrics
    assert [m.double_value for m in ms] == [1.0, 2.0]  # chronological
    assert all(m.is_historical for m in ms)


def test_bad_quality_is_null_with_quality_0_and_good_again_says_192() -> None:
    w = World()
    s = w.session()
    s.births(["boiler"], [])
    w.now += 10
    bad = Reading("boiler", "temp", None, w.now, Quality.BAD)
    ((_, body),) = s.record(*records([bad])[0], w.now)
    m = decode(body).metrics[0]
    assert m.is_null
    assert m.WhichOneof("value") is None
    assert list(m.properties.keys) == ["Quality"]
    assert m.properties.values[0].int_value == 0
    good = Reading("boiler", "temp", 5.0, w.now + 1)
    ((_, body),) = s.record(*records([good])[0], w.now)
    m = decode(body).metrics[0]
    assert m.double_value == 5.0
    assert m.properties.values[0].int_value == 192
    again = Reading("boiler", "temp", 6.0, w.now + 2)
    ((_, body),) = s.record(*records([again])[0], w.now)
    assert not decode(body).metrics[0].HasField("properties")
    unsure = Reading("boiler", "temp", 7.0, w.now + 3, Quality.UNCERTAIN)
    ((_, body),) = s.record(*records([unsure])[0], w.now)
    assert decode(body).metrics[0].properties.values[0].int_value == 500


def status_record(name: str, state: DeviceState) -> tuple[str, bytes]:
    (env,) = SparkplugEncoder().device_status(DeviceStatus(name, state, "", NOW))
    return env.key, env.payload


def test_device_offline_gives_ddeath_and_back_online_a_new_dbirth() -> None:
    w = World()
    s = w.session()
    s.births(["boiler", "pump"], [])
    ((topic, body),) = s.record(*status_record("pump", DeviceState.OFFLINE), NOW)
    assert topic == "spBv1.0/plant/DDEATH/gw1/pump"
    assert decode(body).seq == 3
    assert not decode(body).metrics
    assert s.record(*status_record("pump", DeviceState.OFFLINE), NOW) == []  # dead already
    # bad readings of a dead device: left out, counted (the DDEATH marked them stale)
    assert s.record(*records([Reading("pump", "speed", None, NOW, Quality.BAD)])[0], NOW) == []
    assert s.skipped == 1
    ((topic, body),) = s.record(*status_record("pump", DeviceState.ONLINE), NOW)
    assert topic == "spBv1.0/plant/DBIRTH/gw1/pump"
    assert s.record(*status_record("pump", DeviceState.ONLINE), NOW) == []  # born already


def test_a_good_reading_of_an_unborn_device_or_a_new_point_brings_a_dbirth_first() -> None:
    w = World()
    s = w.session()
    s.births(["boiler"], [])
    msgs = s.record(*records([Reading("pump", "speed", 1200, NOW)])[0], NOW + 1)
    assert [t.split("/")[2] for t, _ in msgs] == ["DBIRTH", "DDATA"]
    w.points["pump"].append(PointInfo("pump", "current", PointType.FLOAT32, unit="A"))
    msgs = s.record(*records([Reading("pump", "current", 3.5, NOW)])[0], NOW + 1)
    assert [t.split("/")[2] for t, _ in msgs] == ["DBIRTH", "DDATA"]
    rebirth = decode(msgs[0][1])
    speed = next(m for m in rebirth.metrics if m.name == "speed")
    assert speed.alias == decode(s.device_birth("pump")[1]).metrics[0].alias  # type: ignore[index]
    # a device nobody knows: nothing to birth, left out
    assert s.record(*records([Reading("ghost", "x", 1, NOW)])[0], NOW) == []


def test_rebirth_restarts_seq_at_0_with_the_same_bdseq_and_aliases() -> None:
    w = World()
    s = w.session(bdseq=7)
    first = s.births(["boiler"], [])
    s.record(*records([Reading("boiler", "temp", 1.0, NOW)])[0], NOW + 1)
    again = s.births(["boiler"], [])
    assert decode(again[0][1]).seq == 0
    assert decode(again[1][1]).seq == 1
    assert decode(again[0][1]).metrics[0].long_value == 7
    assert [m.alias for m in decode(first[1][1]).metrics] == [m.alias for m in decode(again[1][1]).metrics]


def test_node_data_sends_changed_health_by_alias() -> None:
    s = World().session()
    s.births([], [NodeMetric("Gateway/Devices Online", 7, 1)])
    topic, body = s.node_data([NodeMetric("Gateway/Devices Online", 7, 2)])  # type: ignore[misc]
    assert topic == "spBv1.0/plant/NDATA/gw1"
    m = decode(body).metrics[0]
    assert (m.HasField("name"), m.int_value) == (False, 2)
    assert s.node_data([NodeMetric("unknown", 7, 2)]) is None


@pytest.mark.parametrize(
    ("datatype", "value"),
    [(1, -128), (2, -7), (2, 32767), (3, -(2**31)), (4, -(2**63)), (6, 65535), (8, 2**64 - 1), (11, True)],
)
def test_values_round_trip_through_their_metric_field(datatype: int, value: int) -> None:
    m = Payload.Metric()
    set_value(m, datatype, value)
    assert get_value(m, datatype) == value


def test_a_narrow_signed_value_is_read_sign_extended_or_at_its_own_width() -> None:
    m = Payload.Metric()
    m.int_value = 0xFFF9  # -7 at 16 bits (pysparkplug's encoding)
    assert get_value(m, INT16) == -7
    m.int_value = 0xFFFFFFF9  # -7 sign-extended to 32 bits (Tahu's, ours)
    assert get_value(m, INT16) == -7


def test_ndeath_has_only_bdseq_and_no_seq() -> None:
    p = decode(ndeath(42, 1000))
    assert not p.HasField("seq")
    assert [(m.name, m.datatype, m.long_value) for m in p.metrics] == [("bdSeq", INT64, 42)]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "must be"),
        (b'{"online": "yes", "timestamp": 1}', 'boolean "online"'),
        (b'{"online": true}', 'numeric "timestamp"'),
    ],
)
def test_bad_state_payloads_are_named(payload: bytes, why: str) -> None:
    with pytest.raises(SparkplugPayloadError, match=why) as err:
        parse_state(payload, "spBv1.0/STATE/scada")
    assert err.value.where == "spBv1.0/STATE/scada"
    assert parse_state(b'{"online": true, "timestamp": 5}', "t").online


def test_bdseq_counts_connects_across_restarts_and_wraps(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sparkplug-bdseq"
    assert [BdSeqStore(path).next() for _ in range(3)] == [0, 1, 2]
    path.write_text("255\n")
    assert BdSeqStore(path).next() == 0
    path.write_text("garbage")
    assert BdSeqStore(path).next() == 0
    store = BdSeqStore(path)
    assert store.next() == 1
    store.undo()
    assert store.last() == 0


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("sparkplug:\n  group_id: a/b\n  servers: []\n  protocol: 4\n")
    text = str(err.value)
    assert "sparkplug.group_id" in text
    assert "sparkplug.servers" in text
    assert "sparkplug.protocol" in text
    with pytest.raises(ConfigError, match="group_id"):
        parse_config("sparkplug: {}\n")
    cfg = parse_config("gateway: {id: gw7}\nsparkplug:\n  group_id: plant\n")
    section = cfg.section("sparkplug")
    assert section.node_id("gw7") == "gw7"
    assert section.servers[0].port == 1883


# --------------------------------------------------------------------------- the sink's connection


class _Router:
    class policy:
        max_pending = 4

    def refuse(self, *a: Any) -> None:
        pass


def make_sink(
    tmp_path: Path,
    servers: list[Server],
    protocol: str,
    primary_host: str | None = None,
    host_wait: float = 30.0,
) -> SparkplugSink:
    w = World()

    def factory(server: Server, **kwargs: Any) -> MqttClient:
        return MqttClient(host=server.host, port=server.port, client_id="spb", protocol=protocol, **kwargs)

    return SparkplugSink(
        client_factory=factory,
        servers=servers,
        topics=Topics("plant", "gw1"),
        bdseq=BdSeqStore(tmp_path / "bdseq"),
        router=_Router(),  # type: ignore[arg-type]
        points_of=lambda d: w.points.get(d, []),
        find=lambda d, p: None,
        latest=lambda d, p: None,
        devices=lambda: ["boiler"],
        node_metrics=lambda: [],
        v5=protocol == "5",
        primary_host=primary_host,
        host_wait=host_wait,
    )


async def _pong(broker: ScriptedBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        first, body = await broker.read_packet(reader)
        broker.received.append((first, body))
        if first == 0xC0:  # PINGREQ
            writer.write(b"\xd0\x00")
        elif first >> 4 == 3 and (first >> 1) & 3 == 1:  # PUBLISH QoS 1: PUBACK (MQTT 3.1.1 form)
            writer.write(b"\x40\x02" + publish_id(body))


def _utf8(body: bytes, at: int) -> tuple[str, int]:
    n = int.from_bytes(body[at : at + 2], "big")
    return body[at + 2 : at + 2 + n].decode(), at + 2 + n


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_connect_packet(tmp_path: Path, protocol: str) -> None:
    """CONNECT: clean, the NDEATH will (QoS 1, not retained, bdSeq); NCMD and DCMD subscribed at
    QoS 1 before the births; an intentional disconnect gives the NDEATH (3.1.1: published before
    DISCONNECT; 5: DISCONNECT 0x04)."""
    connack = b"\x20\x02\x00\x00" if protocol == "3.1.1" else b"\x20\x03\x00\x00\x00"
    async with ScriptedBroker(connack=connack, script=_pong) as broker:
        sink = make_sink(tmp_path, [Server("127.0.0.1", broker.port)], protocol)
        await sink.open()
        await sink.close()
        await asyncio.sleep(0.1)
    connect = broker.packets(1)[0]
    name, at = _utf8(connect, 0)
    level, flags = connect[at], connect[at + 1]
    assert (name, level) == ("MQTT", 4 if protocol == "3.1.1" else 5)
    assert flags & 0x02, "clean session / clean start"
    assert flags & 0x04, "a will"
    assert (flags >> 3) & 0x03 == 1, "will QoS 1"
    assert not flags & 0x20, "will not retained"
    if protocol == "5":
        props_len = connect[at + 4]
        props = connect[at + 5 : at + 5 + props_len]
        assert b"\x11\x00\x00\x00\x00" in props or 0x11 not in props  # Session Expiry 0 (or absent: 0)
    types = broker.types()
    first_publish = types.index(3)
    subscribes = [i for i, t in enumerate(types) if t == 8]
    assert len(subscribes) == 2
    assert all(i < first_publish for i in subscribes)
    topics = [_utf8(body, 2 if protocol == "3.1.1" else 3)[0] for body in broker.packets(8)]
    assert topics == ["spBv1.0/plant/NCMD/gw1", "spBv1.0/plant/DCMD/gw1/+"]
    for body in broker.packets(8):
        assert body[-1] & 0x03 == 1  # QoS 1
    assert types[-1] == 14  # DISCONNECT
    if protocol == "5":
        assert broker.received[-1] == (0xE0, b"\x04")
    else:
        first, body = [(f, b) for f, b in broker.received if f >> 4 == 3][-1]
        assert _utf8(body, 0)[0] == "spBv1.0/plant/NDEATH/gw1"
        assert (first >> 1) & 3 == 1  # QoS 1, as the will
        assert not first & 1  # not retained


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_servers_are_walked(tmp_path: Path) -> None:
    a, b = Server("127.0.0.1", _refused_port()), Server("127.0.0.1", _refused_port())
    sink = make_sink(tmp_path, [a, b], "5")
    tried = []
    for _ in range(3):
        with pytest.raises(SinkUnavailable, match=r"127\.0\.0\.1"):
            await sink.open()
        tried.append(sink.server)
    assert tried == [a, b, a]
    # no CONNECT reached a server: bdSeq counts CONNECT packets, not attempts
    assert BdSeqStore(tmp_path / "bdseq").last() is None


def test_stale_state_is_ignored(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, [Server("127.0.0.1", 1)], "5", primary_host="scada")
    sink.server = sink.servers[0]
    sink.session = World().session()
    sink.session.births([], [])
    topic = "spBv1.0/STATE/scada"

    def state(online: bool, ts: int) -> None:
        sink._on_message(
            IncomingMessage(
                topic, f'{{"online": {str(online).lower()}, "timestamp": {ts}}}'.encode(), 1, False
            )
        )

    state(True, 100)
    state(False, 99)  # older than the online one: ignored
    assert not sink._ending
    state(True, 200)
    sink._on_message(IncomingMessage(topic, b"garbage", 1, False))  # counted, ignored
    assert sink.stats.bad_messages == 1
    assert not sink._ending
    state(False, 200)  # not older: the node leaves the server
    assert sink._ending
    assert sink.stats.host_offline == 1


# --------------------------------------------------------------------------- docs/sparkplug.md

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "sparkplug.md").read_text(encoding="utf-8")
ASSERTIONS = ROOT.parent / "shared" / "specs" / "sparkplug" / "assertions.tsv"


def test_the_doc_example_loads() -> None:
    blocks = re.findall(r"^```yaml\n(.*?)^```$", DOC, re.S | re.M)
    assert blocks
    for block in blocks:
        cfg = parse_config(block, filename="docs/sparkplug.md")
        assert cfg.section("sparkplug").primary_host_id == "scada"
        assert not cfg.section("mqtt").enabled


def test_the_conformance_table_lists_every_tck_id_with_a_test_that_exists() -> None:
    if not ASSERTIONS.exists():
        pytest.skip(f"{ASSERTIONS} is not beside the checkout")
    ids = [line.split("\t", 1)[0] for line in ASSERTIONS.read_text(encoding="utf-8").splitlines()[1:]]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (.*) \|$", DOC, re.M))
    missing = [i for i in ids if i.removeprefix("tck-id-") not in rows]
    assert not missing, f"docs/sparkplug.md's conformance table lacks {missing}"
    assert len(ids) == 283
    tck_src = (ROOT / "tests" / "integration" / "test_sparkplug_tck.py").read_text(encoding="utf-8")
    unit_src = Path(__file__).read_text(encoding="utf-8")
    for tid, row in rows.items():
        if "test_tck_on_the_wire" in row:
            assert f'"tck-id-{tid}"' in tck_src, (
                f"{tid}: the doc names the wire test, which has no row for it"
            )
        for name in re.findall(r"unit/test_sparkplug_session\.py::(\w+)", row):
            assert f"def {name}(" in unit_src, name
    wired = re.findall(r'"tck-id-([a-z0-9-]+)":', tck_src)
    assert all("test_tck_on_the_wire" in rows[t] for t in wired)


def test_a_value_the_dbirth_already_carried_is_not_sent_again_live() -> None:
    w = World()
    w.latest[("boiler", "temp")] = Reading("boiler", "temp", 23.0, NOW)
    s = w.session()
    s.births(["boiler"], [])
    # the same reading arrives as a live record after the births: nothing new for the host
    assert s.record(*records([Reading("boiler", "temp", 23.0, NOW)])[0], NOW + 10) == []
    ((_, body),) = s.record(*records([Reading("boiler", "temp", 23.5, NOW + 1)])[0], NOW + 10)
    assert decode(body).metrics[0].double_value == 23.5
    # as history (committed before the births) it is sent, marked historical
    ((_, body),) = s.record(*records([Reading("boiler", "temp", 23.0, NOW)])[0], NOW - 1)
    assert decode(body).metrics[0].is_historical


# --------------------------------------------------------------------------- commands (NCMD, DCMD)


class RecordingRouter:
    class policy:
        max_pending = 2

    def __init__(self) -> None:
        self.refused: list[tuple[WriteRequest, ErrorCode, str]] = []
        self.writes: list[WriteRequest] = []
        self.release = asyncio.Event()

    def refuse(self, request: WriteRequest, code: ErrorCode, error: str) -> WriteResult:
        self.refused.append((request, code, error))
        return WriteResult(False, code, error)

    async def write(self, request: WriteRequest) -> WriteResult:
        self.writes.append(request)
        await self.release.wait()
        return WriteResult(True, ErrorCode.OK)


def dcmd_sink(tmp_path: Path) -> tuple[SparkplugSink, RecordingRouter, dict[str, int]]:
    w = World()
    router = RecordingRouter()
    sink = make_sink(tmp_path, [Server("127.0.0.1", 1)], "5")
    sink.router = router  # type: ignore[assignment]
    sink._find = lambda d, p: next((i for i in w.points.get(d, []) if i.name == p), None)
    sink.session = w.session()
    births = sink.session.births(["boiler"], [])
    aliases = {m.name: m.alias for m in decode(births[1][1]).metrics}
    return sink, router, aliases


def dcmd(sink: SparkplugSink, device: str, *metrics: Any) -> None:
    p = Payload()
    p.timestamp = 1
    for fill in metrics:
        fill(p.metrics.add())
    sink._on_message(IncomingMessage(f"spBv1.0/plant/DCMD/gw1/{device}", p.SerializeToString(), 0, False))


async def test_dcmd_metrics_become_writes_through_the_router(tmp_path: Path) -> None:
    sink, router, aliases = dcmd_sink(tmp_path)

    def setpoint(m: Any) -> None:
        m.alias = aliases["setpoint"]
        m.int_value = 650

    def offset_by_name(m: Any) -> None:  # by name, Int16 at its own width
        m.name = "offset"
        m.datatype = INT16
        m.int_value = 0xFFF9

    dcmd(sink, "boiler", setpoint, offset_by_name)
    await asyncio.sleep(0)
    assert [(w.device, w.point, w.value, w.origin) for w in router.writes] == [
        ("boiler", "setpoint", 650, "sparkplug"),
        ("boiler", "offset", -7, "sparkplug"),
    ]
    # a third while two are in progress: busy (commands.max_pending), audited through refuse()
    dcmd(sink, "boiler", setpoint)
    assert router.refused[-1][1] is ErrorCode.BUSY
    router.release.set()
    await asyncio.sleep(0.01)
    assert sink._pending == 0


async def test_bad_dcmds_are_refused_with_a_reason_and_the_node_goes_on(tmp_path: Path) -> None:
    sink, router, aliases = dcmd_sink(tmp_path)

    def unknown_alias(m: Any) -> None:
        m.alias = 9999
        m.int_value = 1

    def no_value(m: Any) -> None:
        m.alias = aliases["setpoint"]

    def bytes_value(m: Any) -> None:
        m.alias = aliases["setpoint"]
        m.bytes_value = b"\x01"

    def other_device(m: Any) -> None:  # an alias of boiler's, sent to pump
        m.alias = aliases["setpoint"]
        m.int_value = 1

    dcmd(sink, "boiler", unknown_alias, no_value, bytes_value)
    dcmd(sink, "pump", other_device)
    codes = [code for _, code, _ in router.refused]
    assert codes == [
        ErrorCode.UNKNOWN_POINT,
        ErrorCode.BAD_REQUEST,
        ErrorCode.BAD_TYPE,
        ErrorCode.UNKNOWN_POINT,
    ]
    assert "alias 9999" in router.refused[0][2]
    assert not router.writes
    sink._on_message(IncomingMessage("spBv1.0/plant/DCMD/gw1/boiler", b"\xff\xff\x01", 0, False))
    sink._on_message(IncomingMessage("spBv1.0/plant/NCMD/gw1", b"\xff\xff\x01", 0, False))
    assert sink.stats.bad_messages == 2


async def test_ncmd_rebirth_and_next_server(tmp_path: Path) -> None:
    sink, _, _ = dcmd_sink(tmp_path)

    def ncmd(name: str, value: bool = True) -> None:
        p = Payload()
        m = p.metrics.add()
        m.name, m.datatype, m.boolean_value = name, 11, value
        sink._on_message(IncomingMessage("spBv1.0/plant/NCMD/gw1", p.SerializeToString(), 0, False))

    ncmd("Node Control/Rebirth", False)  # false: nothing to do
    ncmd("Node Control/Reboot")  # not offered: logged, counted
    assert (sink.stats.rebirths, sink.stats.bad_messages) == (0, 1)
    ncmd("Node Control/Rebirth")
    assert sink.stats.rebirths == 1
    ncmd("Node Control/Next Server")
    assert sink._ending == "Node Control/Next Server asked for"
    await asyncio.sleep(0)


async def test_no_primary_host_on_a_server_leaves_it_cleanly(tmp_path: Path) -> None:
    """With two servers and no online STATE within primary_host_wait: no births, the connection
    is ended (MQTT 5: DISCONNECT 0x04, so the server publishes the NDEATH), the next server is
    next."""
    async with ScriptedBroker(connack=b"\x20\x03\x00\x00\x00", script=_pong) as broker:
        servers = [Server("127.0.0.1", broker.port), Server("127.0.0.1", _refused_port())]
        sink = make_sink(tmp_path, servers, "5", primary_host="scada", host_wait=0.2)
        with pytest.raises(SinkUnavailable, match="primary host scada is not online"):
            await sink.open()
        await asyncio.sleep(0.1)
    assert 3 not in broker.types()  # nothing published
    assert broker.received[-1] == (0xE0, b"\x04")
    assert sink.client is None
    assert sink.servers[sink._attempt % 2] == servers[1]


def test_a_gateway_without_sparkplug_does_not_import_protobuf() -> None:
    import subprocess
    import sys

    code = "import sys, picogate._plugins; print('google.protobuf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_a_record_of_a_point_removed_since_does_not_rebirth_its_device() -> None:
    w = World()
    w.points["boiler"] = [i for i in w.points["boiler"] if i.name != "burner"]
    s = w.session()
    s.births(["boiler"], [])  # without burner; a record from before still carries it
    for i in range(1, 4):
        rows = [Reading("boiler", "burner", True, NOW + i), Reading("boiler", "temp", 1.5 + i, NOW + i)]
        msgs = s.record(*records(rows)[0], NOW + 10)
        assert [t.split("/")[2] for t, _ in msgs] == ["DDATA"]
        assert len(decode(msgs[0][1]).metrics) == 1  # temp; burner left out
