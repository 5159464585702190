"""Modbus polling through the whole agent, against pymodbus field devices and mosquitto.

Every point type and byte order decodes and encodes; report by exception; request merging; a
device going offline and coming back; a dead device that stalls nobody else; several unit ids on
one TCP connection; RTU framing over TCP; writes served before the rest of a poll.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from _agent import base_config, eventually, recorder, running_gateway, values_on, wait_msgs
from _peers import ModbusTcpPeer
from picogate._registry import DeviceState
from picogate._router import ErrorCode, WriteRequest
from picogate.gateway import Gateway
from picogate.modbus._source import ModbusLine


def _lines(gw: Gateway) -> list[ModbusLine]:
    """The Modbus plug-in's pollers, one per link."""
    return [c for c in gw.components if isinstance(c, ModbusLine)]


ROOT = "picogate/gw1"


def data(device: str, point: str) -> str:
    return f"{ROOT}/data/{device}/{point}"


def tcp_device(name: str, port: int, points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "timeout": "300ms",
        "points": points,
        **extra,
    }


# --------------------------------------------------------------------------- byte orders, by hand

_FMT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}
# The byte order names, independent of the agent's codec: which bytes swap inside a register, and
# whether the registers come least significant first.
_BYTE_SWAP = {"BADC", "DCBA", "BADCFEHG", "HGFEDCBA"}
_WORD_SWAP = {"CDAB", "DCBA", "GHEFCDAB", "HGFEDCBA"}


def wire(type_: str, value: Any, order: str) -> list[int]:
    """The registers a device holding `value` as `type_` in `order` puts on the wire."""
    raw = struct.pack(_FMT[type_], value)  # big endian: A first
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if order in _BYTE_SWAP:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if order in _WORD_SWAP and len(words) > 1:
        words.reverse()
    return words


def test_wire_helper_matches_the_documented_examples() -> None:
    """docs: 0x11223344 is ABCD [1122 3344], CDAB [3344 1122], BADC [2211 4433], DCBA [4433 2211]."""
    v = 0x11223344
    assert wire("uint32", v, "ABCD") == [0x1122, 0x3344]
    assert wire("uint32", v, "CDAB") == [0x3344, 0x1122]
    assert wire("uint32", v, "BADC") == [0x2211, 0x4433]
    assert wire("uint32", v, "DCBA") == [0x4433, 0x2211]
    assert wire("uint64", 0x1122334455667788, "GHEFCDAB") == [0x7788, 0x5566, 0x3344, 0x1122]
    assert wire("uint64", 0x1122334455667788, "BADCFEHG") == [0x2211, 0x4433, 0x6655, 0x8877]


@dataclass(frozen=True)
class Case:
    name: str
    table: str  # holding / input / coil / discrete_input
    point: dict[str, Any]  # the point's config, without name/table/address
    words: list[int] | list[bool]
    expected: Any


def decode_cases() -> list[Case]:
    cases: list[Case] = []
    samples = {
        "int16": -1234,
        "uint16": 54321,
        "int32": -123456789,
        "uint32": 3_000_000_000,
        "int64": -1234567890123456789,
        "uint64": 2**64 - 12345,
        "float32": -12.375,
        "float64": 3.141592653589793,
    }
    orders32 = ["ABCD", "CDAB", "BADC", "DCBA"]
    orders64 = {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"}
    for type_, value in samples.items():
        for order in orders32:
            cases.append(
                Case(
                    f"{type_}_{order}".lower(),
                    "holding",
                    {"type": type_, "order": order},
                    wire(type_, value, order),
                    value,
                )
            )
        if type_ in ("int64", "uint64", "float64"):
            for short, long in orders64.items():  # the 8-letter names mean the same
                cases.append(
                    Case(
                        f"{type_}_{long}".lower(),
                        "holding",
                        {"type": type_, "order": long},
                        wire(type_, value, short),
                        value,
                    )
                )
    cases += [
        Case("text", "holding", {"type": "string", "count": 4}, [0x5047, 0x2D31, 0x3220, 0x6F6B], "PG-12 ok"),
        Case(
            "text_badc",
            "holding",
            {"type": "string", "count": 4, "order": "BADC"},
            [0x4750, 0x312D, 0x2032, 0x6B6F],
            "PG-12 ok",
        ),
        Case("text_padded", "holding", {"type": "string", "count": 3}, [0x4142, 0x4300, 0x0000], "ABC"),
        Case("bit0", "holding", {"type": "bool", "bit": 0}, [0b1000_0000_0000_0101], True),
        Case("bit1", "holding", {"type": "bool", "bit": 1}, [0b1000_0000_0000_0101], False),
        Case("bit15", "holding", {"type": "bool", "bit": 15}, [0b1000_0000_0000_0101], True),
        Case("ir_bit2", "input", {"type": "bool", "bit": 2}, [0b0100], True),
        Case("coil_on", "coil", {}, [True], True),
        Case("coil_off", "coil", {}, [False], False),
        Case("di_on", "discrete_input", {}, [True], True),
        Case("di_off", "discrete_input", {}, [False], False),
        Case("ir_int16", "input", {"type": "int16"}, [0xFFFE], -2),
        Case("ir_float32_cdab", "input", {"type": "float32", "order": "CDAB"}, [0x0000, 0x4148], 12.5),
        Case("ir_uint32", "input", {"type": "uint32"}, [0x0001, 0x0002], 65538),
        Case("scaled", "holding", {"type": "int16", "scale": 0.1}, wire("int16", -215, "ABCD"), -21.5),
        Case("scaled_offset", "holding", {"type": "uint16", "scale": 0.5, "offset": -10}, [100], 40.0),
        Case(
            "scaled_u32",
            "holding",
            {"type": "uint32", "scale": 0.01, "order": "CDAB"},
            wire("uint32", 123456, "CDAB"),
            1234.56,
        ),
        Case(
            "float_offset",
            "holding",
            {"type": "float32", "offset": 273.15},
            wire("float32", 20.0, "ABCD"),
            293.15,
        ),
    ]
    return cases


_TABLE_KEY = {"holding": "hr", "input": "ir", "coil": "co", "discrete_input": "di"}


def lay_out(cases: list[Case]) -> tuple[list[dict[str, Any]], dict[str, dict[int, Any]]]:
    """Points at consecutive addresses (one unused word between them), and the tables to serve."""
    points: list[dict[str, Any]] = []
    tables: dict[str, dict[int, Any]] = {k: {} for k in _TABLE_KEY.values()}
    next_free = dict.fromkeys(_TABLE_KEY, 0)
    for c in cases:
        address = next_free[c.table]
        next_free[c.table] = address + len(c.words) + 1
        points.append({"name": c.name, "table": c.table, "address": address, **c.point})
        tables[_TABLE_KEY[c.table]][address] = list(c.words)
    return points, tables


async def test_every_type_and_order_decodes(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    cases = decode_cases()
    points, tables = lay_out(cases)
    dev = await modbus_tcp_server({1: tables})
    cfg = base_config(tmp_path, mosquitto.port, [tcp_device("meter", dev.port, points, max_gap=1)])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg):
            topics = {data("meter", c.name) for c in cases}
            await wait_msgs(rec, lambda ms: topics <= {m.topic for m in ms}, 15, "every point once")
    wrong = []
    for c in cases:
        msg = rec.on(data("meter", c.name))[0].json()
        got = msg["v"]
        ok = (
            got == pytest.approx(c.expected, rel=1e-12)
            if isinstance(c.expected, float)
            else got == c.expected
        )
        if not ok or msg["q"] != "good" or type(got) is not type(c.expected):
            wrong.append((c.name, c.words, c.expected, msg))
    assert not wrong, "\n".join(map(str, wrong))


@dataclass(frozen=True)
class WriteCase:
    name: str
    table: str
    point: dict[str, Any]
    value: Any  # sent as {"v": value}
    words: list[int] | list[bool]  # what the device must hold afterwards
    initial: list[int] | list[bool] | None = None
    readback: Any = None  # the value published afterwards (default: value)


def write_cases() -> list[WriteCase]:
    return [
        WriteCase(
            "w_int16_badc", "holding", {"type": "int16", "order": "BADC"}, -2, wire("int16", -2, "BADC")
        ),
        WriteCase("w_uint16", "holding", {"type": "uint16"}, 65535, [0xFFFF]),
        WriteCase("w_int32_cdab", "holding", {"type": "int32", "order": "CDAB"}, -7, [0xFFF9, 0xFFFF]),
        WriteCase(
            "w_uint32_dcba", "holding", {"type": "uint32", "order": "DCBA"}, 0x11223344, [0x4433, 0x2211]
        ),
        WriteCase(
            "w_int64_ghef", "holding", {"type": "int64", "order": "GHEFCDAB"}, -2, wire("int64", -2, "CDAB")
        ),
        WriteCase(
            "w_uint64_hgfe",
            "holding",
            {"type": "uint64", "order": "HGFEDCBA"},
            0x0102030405060708,
            [0x0807, 0x0605, 0x0403, 0x0201],
        ),
        WriteCase("w_float32_badc", "holding", {"type": "float32", "order": "BADC"}, 1.5, [0xC03F, 0x0000]),
        WriteCase("w_float64", "holding", {"type": "float64"}, -0.25, wire("float64", -0.25, "ABCD")),
        WriteCase(
            "w_float64_dcba",
            "holding",
            {"type": "float64", "order": "DCBA"},
            1e300,
            wire("float64", 1e300, "DCBA"),
        ),
        WriteCase(
            "w_text",
            "holding",
            {"type": "string", "count": 2},
            "AB",
            [0x4142, 0x0000],
            initial=[0x5858, 0x5858],
        ),
        WriteCase(
            "w_text_badc", "holding", {"type": "string", "count": 2, "order": "BADC"}, "ABC", [0x4241, 0x0043]
        ),
        WriteCase("w_bit3", "holding", {"type": "bool", "bit": 3}, True, [0x0109], initial=[0x0101]),
        WriteCase(
            "w_bit0_off", "holding", {"type": "bool", "bit": 0}, 0, [0x8000], initial=[0x8001], readback=False
        ),
        WriteCase("w_coil", "coil", {}, True, [True]),
        WriteCase(
            "w_scaled",
            "holding",
            {"type": "int16", "scale": 0.1, "offset": 5},
            -17.5,
            wire("int16", -225, "ABCD"),
        ),
    ]


async def test_writes_encode_back(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    cases = write_cases()
    points: list[dict[str, Any]] = []
    initial: dict[str, dict[int, Any]] = {"hr": {}, "co": {}}
    address = {"holding": 0, "coil": 0}
    where: dict[str, int] = {}
    for c in cases:
        a = address[c.table]
        address[c.table] += len(c.words) + 1
        where[c.name] = a
        points.append({"name": c.name, "table": c.table, "address": a, "writable": True, **c.point})
        initial[_TABLE_KEY[c.table]][a] = c.initial or ([False] if c.table == "coil" else [0] * len(c.words))
    dev = await modbus_tcp_server({1: initial})
    cfg = base_config(tmp_path, mosquitto.port, [tcp_device("plc", dev.port, points)])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(rec, lambda ms: any(m.topic == data("plc", cases[-1].name) for m in ms), 10)
            for i, c in enumerate(cases):
                rec.publish(f"{ROOT}/cmd/plc/{c.name}/set", {"v": c.value, "id": f"w{i}"})
            results = await wait_msgs(
                rec, lambda ms: sum(m.topic.endswith("/result") for m in ms) >= len(cases), 15, "every result"
            )
            by_id = {m.json()["id"]: m.json() for m in results if m.topic.endswith("/result")}
            for i, c in enumerate(cases):
                assert by_id[f"w{i}"]["code"] == "ok", (c.name, by_id[f"w{i}"])
            for c in cases:
                table = "co" if c.table == "coil" else "hr"
                held = dev.get(1, table, where[c.name], len(c.words))
                assert held == c.words, (c.name, [hex(w) for w in held], [hex(w) for w in c.words])

            # ... and what was written decodes back to the value: it is published after the write.
            def published(c: WriteCase, ms: list[Any]) -> bool:
                want = c.value if c.readback is None else c.readback
                return any(
                    m.topic == data("plc", c.name) and m.json()["v"] == pytest.approx(want) for m in ms
                )

            await wait_msgs(rec, lambda ms: all(published(c, ms) for c in cases), 10, "read back")


# --------------------------------------------------------------------------- report by exception


async def test_deadband_and_max_silence(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    points = [
        {"name": "absolute", "table": "holding", "address": 0, "type": "int16", "deadband": 5},
        {"name": "percent", "table": "holding", "address": 1, "deadband": "10%"},
        {"name": "scaled", "table": "holding", "address": 2, "scale": 0.1, "deadband": 0.25},
        {"name": "any_change", "table": "holding", "address": 3},
        {"name": "steady", "table": "holding", "address": 4},
        {"name": "heartbeat", "table": "holding", "address": 5, "max_silence": "1s"},
    ]
    steps = {
        # register values set one step at a time → the values expected on MQTT
        "absolute": ([100, 103, 106, 104, 112, 111, (-5) & 0xFFFF, 200], [100, 106, 112, -5, 200]),
        "percent": ([100, 109, 111, 121, 123, 112, 500], [100, 111, 123, 500]),
        "scaled": ([100, 102, 103, 104, 106, 200], [10.0, 10.3, 10.6, 20.0]),
        "any_change": ([1, 1, 2, 2, 3, 1, 9], [1, 2, 3, 1, 9]),
    }
    dev = await modbus_tcp_server(
        {1: {"hr": [steps[p][0][0] if p in steps else 7 for p in [x["name"] for x in points]]}}
    )
    cfg = base_config(tmp_path, mosquitto.port, [tcp_device("tank", dev.port, points)])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg) as gw:
            line = _lines(gw)[0]
            await wait_msgs(rec, lambda ms: len({m.topic for m in ms}) == len(points), 10, "first values")
            for i in range(1, max(len(r) for r, _ in steps.values())):
                for name, (regs, _) in steps.items():
                    if i < len(regs):
                        dev.set_holding(1, [p["name"] for p in points].index(name), regs[i])
                polls = line.stats.polls
                await eventually(lambda p=polls: line.stats.polls >= p + 2, 5, "two polls after a step")
            for name, (_, expected) in steps.items():  # the last step is always published: a sentinel
                await wait_msgs(
                    rec,
                    lambda ms, n=name, e=expected: any(
                        m.topic == data("tank", n) and m.json()["v"] == pytest.approx(e[-1]) for m in ms
                    ),
                    5,
                    f"{name} = {expected[-1]}",
                )
            await wait_msgs(rec, lambda ms: sum(m.topic == data("tank", "heartbeat") for m in ms) >= 3, 10)
    for name, (_, expected) in steps.items():
        assert values_on(rec, data("tank", name)) == pytest.approx(expected), name
    assert values_on(rec, data("tank", "steady")) == [7]  # unchanged, no max_silence: once
    beats = [m.json()["ts"] for m in rec.on(data("tank", "heartbeat"))]
    assert len(beats) >= 3, beats
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert all(900 <= g <= 3000 for g in gaps), gaps  # about every second, never every poll


# --------------------------------------------------------------------------- requests


async def test_contiguous_points_are_read_in_one_request(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    many = [{"name": f"r{i}", "table": "holding", "address": i} for i in range(10)]
    many.append({"name": "f", "table": "holding", "address": 10, "type": "float32"})
    many += [{"name": f"c{i}", "table": "coil", "address": i} for i in range(3)]
    dev = await modbus_tcp_server({1: None, 2: None})
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [
            tcp_device("merged", dev.port, many, unit_id=1),
            tcp_device("separate", dev.port, many, unit_id=2, no_merge=True),
        ],
    )
    async with running_gateway(cfg) as gw:
        line = _lines(gw)[0]
        await eventually(lambda: line.stats.polls >= 4, 5, "first polls")
        r0, p0 = dict(dev.requests), line.stats.polls
        await asyncio.sleep(1.5)
        r1, p1 = dict(dev.requests), line.stats.polls
    polls_each = (p1 - p0) / 2  # one line, two devices, one poll each per cycle
    assert polls_each >= 5
    merged, separate = r1[1] - r0[1], r1[2] - r0[2]
    # 11 holding registers → 1 read, 3 coils → 1 read: 2 requests a poll (±1 at the window edges)
    assert abs(merged - 2 * polls_each) <= 2, (merged, polls_each)
    assert abs(separate - 14 * polls_each) <= 14, (separate, polls_each)


# --------------------------------------------------------------------------- offline and back


async def test_device_offline_backoff_and_back(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    points = [
        {"name": "level", "table": "holding", "address": 0},
        {"name": "valve", "table": "holding", "address": 1, "writable": True},
    ]
    dev = await modbus_tcp_server({1: {"hr": [42, 0]}})
    device = tcp_device(
        "flaky", dev.port, points, timeout="200ms", retries=0, offline_after=2, backoff_max="1500ms"
    )
    status = f"{ROOT}/devices/flaky/status"

    def states(ms: list[Any]) -> list[str]:
        return [m.json()["state"] for m in ms if m.topic == status]

    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, [device])) as gw:
            await wait_msgs(rec, lambda ms: "online" in states(ms), 10, "online")
            await wait_msgs(rec, lambda ms: any(m.topic == data("flaky", "level") for m in ms), 5, "level")
            assert values_on(rec, data("flaky", "level")) == [42]
            dev.set_silent(1)
            asked = dev.requests[1]
            flaky = gw.registry.device("flaky")
            assert flaky is not None
            await eventually(lambda: flaky.state is DeviceState.OFFLINE, 5, "offline", interval=0.005)
            # offline_after: 2 failed polls (no retries), and one more request in flight at most
            assert dev.requests[1] - asked in (2, 3), dev.requests[1] - asked
            ms = await wait_msgs(rec, lambda ms: "offline" in states(ms), 5, "offline")
            last = [m for m in ms if m.topic == status][-1]
            assert "no reply" in last.json()["reason"]  # why it went offline
            for p in ("level", "valve"):
                msg = await wait_msgs(
                    rec,
                    lambda ms, p=p: any(m.topic == data("flaky", p) and m.json()["q"] == "bad" for m in ms),
                    5,
                    f"{p} bad",
                )
                bad = [m.json() for m in msg if m.topic == data("flaky", p)][-1]
                assert bad["v"] is None
                assert bad["q"] == "bad"

            # A write to an offline device is refused at once, not after a timeout.
            result = await gw.router.write(WriteRequest("flaky", "valve", 1, origin="test"))
            assert result.code is ErrorCode.DEVICE_OFFLINE

            # Polling backs off: 0.1, 0.2, 0.4, 0.8, 1.5 s between tries, not one try per poll.
            r0 = dev.requests[1]
            await asyncio.sleep(3.0)
            tries = dev.requests[1] - r0
            assert 1 <= tries <= 7, tries  # without backoff: ~15 (a 200 ms timeout per 100 ms poll)
            assert len([m for m in rec.on(data("flaky", "level")) if m.json()["q"] == "bad"]) == 1

            dev.set_holding(1, 0, 43)
            dev.set_silent(1, False)
            await wait_msgs(rec, lambda ms: states(ms)[-1:] == ["online"], 5, "online again")
            await wait_msgs(
                rec,
                lambda ms: any(
                    m.topic == data("flaky", "level") and (m.json()["v"], m.json()["q"]) == (43, "good")
                    for m in ms
                ),
                3,
                "good value again",
            )
            # back to the normal poll rate (still backing off: one request per 1.5 s)
            r0 = dev.requests[1]
            await eventually(lambda: dev.requests[1] >= r0 + 6, 3, "polls at the normal rate")
    assert states(rec.messages)[:1] in (["unknown"], ["online"])


async def test_dead_device_does_not_slow_down_others(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """A dead device (500 ms timeout, 2 retries) next to a healthy one: the healthy one is polled
    as often as a reference device on its own (a ratio, so a loaded machine does not fail it)."""
    healthy = await modbus_tcp_server({1: {"hr": [1]}})
    reference = await modbus_tcp_server({1: {"hr": [1]}})
    dead = await modbus_tcp_server({1: {"hr": [1], "silent": True}})
    point = [{"name": "v", "table": "holding", "address": 0}]
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [
            tcp_device("good", healthy.port, point),
            tcp_device("ref", reference.port, point),
            tcp_device("dead", dead.port, point, timeout="500ms", retries=2),
        ],
    )
    async with running_gateway(cfg) as gw:
        await eventually(lambda: healthy.requests[1] >= 2 and reference.requests[1] >= 2, 5, "first polls")
        h0, r0, d0 = healthy.requests[1], reference.requests[1], dead.requests[1]
        await asyncio.sleep(3.0)
        h1, r1, d1 = healthy.requests[1], reference.requests[1], dead.requests[1]
        assert gw.registry.device("good").state.value == "online"  # type: ignore[union-attr]
    assert d1 - d0 >= 2  # the dead device was being tried meanwhile
    assert r1 - r0 >= 10  # nominal 30 (100 ms polls for 3 s)
    assert h1 - h0 >= 0.8 * (r1 - r0), (h1 - h0, r1 - r0)


async def test_unit_ids_behind_one_tcp_gateway(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """Three unit ids on one host:port share one connection; a silent one costs little: the
    others are polled nearly as often as a reference device on a connection of its own."""
    dev = await modbus_tcp_server({1: {"hr": [11]}, 2: {"hr": [22]}, 3: {"hr": [33], "silent": True}})
    reference = await modbus_tcp_server({1: {"hr": [1]}})
    point = [{"name": "v", "table": "holding", "address": 0}]
    opts = {"poll": "100ms", "timeout": "300ms", "retries": 0, "offline_after": 2, "backoff_max": "2s"}
    devices = [tcp_device(f"u{u}", dev.port, point, unit_id=u, **opts) for u in (1, 2, 3)]
    devices.append(tcp_device("ref", reference.port, point, **opts))

    def connections() -> list[Any]:
        return [
            c
            for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == dev.port and c.status == psutil.CONN_ESTABLISHED
        ]

    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, devices)) as gw:
            assert len(_lines(gw)) == 2  # the gateway's three units, and the reference
            await wait_msgs(
                rec,
                lambda ms: any(
                    m.topic == f"{ROOT}/devices/u3/status" and m.json()["state"] == "offline" for m in ms
                ),
                10,
                "u3 offline",
            )
            assert values_on(rec, data("u1", "v")) == [11]
            assert values_on(rec, data("u2", "v")) == [22]
            first = connections()
            await asyncio.sleep(1.5)  # past the first, short backoffs (0.1, 0.2, 0.4, 0.8 s)
            r0, ref0 = dict(dev.requests), reference.requests[1]
            await asyncio.sleep(3.0)
            r1, ref1 = dict(dev.requests), reference.requests[1]
            last = connections()
    served = {u: r1[u] - r0.get(u, 0) for u in (1, 2, 3)}
    ref = ref1 - ref0
    assert ref >= 10, ref  # nominal 30
    # The silent unit costs one 300 ms timeout per backoff period (0.8..2 s here), so the others
    # keep about 80 % of the reference's polls; with a timeout every cycle they would keep 30 %.
    assert min(served[1], served[2]) >= 0.6 * ref, (served, ref)
    assert served[3] <= 5, served
    assert len(first) == 1, first  # one TCP connection for all three unit ids ...
    assert [c.laddr for c in last] == [c.laddr for c in first]  # ... and the same one throughout


async def test_rtu_framing_over_tcp(mosquitto: Any, tmp_path: Path) -> None:
    peer = ModbusTcpPeer({5: {"hr": [0x4148, 0x0000, 7]}}, framer="rtu")
    await peer.start()
    try:
        points = [
            {"name": "flow", "table": "holding", "address": 0, "type": "float32"},
            {"name": "sp", "table": "holding", "address": 2, "writable": True},
        ]
        device = tcp_device("conv", peer.port, points, unit_id=5, framing="rtu")
        with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
            async with running_gateway(base_config(tmp_path, mosquitto.port, [device])) as gw:
                await wait_msgs(rec, lambda ms: any(m.topic == data("conv", "sp") for m in ms), 10, "values")
                assert values_on(rec, data("conv", "flow")) == [12.5]
                assert values_on(rec, data("conv", "sp")) == [7]
                result = await gw.router.write(WriteRequest("conv", "sp", 1234, origin="test"))
                assert result.ok, result
                assert peer.get_holding(5, 2) == [1234]
                assert peer.writes[-1].unit_id == 5
                await wait_msgs(
                    rec, lambda ms: values_on(rec, data("conv", "sp"))[-1:] == [1234], 5, "read back"
                )
    finally:
        await peer.stop()


@pytest.mark.parametrize("framing", ["socket", "rtu"])
async def test_late_replies_never_land_on_the_wrong_request(
    mosquitto: Any, tmp_path: Path, framing: str
) -> None:
    """A unit that answers after the timeout.  MBAP frames carry a transaction id; RTU frames on a
    TCP socket do not, so there only the link's quiet time after a timeout keeps a late reply from
    being taken for the answer to the next request (same unit, same shape, other registers)."""
    regs = {0: [111, 112], 10: [211, 212], 20: [311, 312]}
    peer = ModbusTcpPeer({1: {"hr": regs, "delay": 0.4}}, framer=framing)  # type: ignore[arg-type]
    await peer.start()
    try:
        points = [{"name": f"r{a + i}", "table": "holding", "address": a + i} for a in regs for i in range(2)]
        device = tcp_device("slow", peer.port, points, framing=framing, retries=1, offline_after=10)
        with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
            async with running_gateway(base_config(tmp_path, mosquitto.port, [device])):
                await asyncio.sleep(3.0)
    finally:
        await peer.stop()
    wrong = {}
    for a, values in regs.items():
        for i, want in enumerate(values):
            got = {m.json()["v"] for m in rec.on(data("slow", f"r{a + i}"))} - {None}
            if got - {want}:
                wrong[f"r{a + i}"] = (want, got)
    assert not wrong, wrong
    assert peer.requests[1] >= 5  # the device was asked


async def test_socket_client_against_rtu_device_fails_cleanly(mosquitto: Any, tmp_path: Path) -> None:
    """The framing option matters: a MBAP client gets no valid reply from an RTU-over-TCP device."""
    peer = ModbusTcpPeer({1: {"hr": [1]}}, framer="rtu")
    await peer.start()
    try:
        device = tcp_device(
            "conv", peer.port, [{"name": "v", "table": "holding", "address": 0}], offline_after=1
        )
        with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
            async with running_gateway(base_config(tmp_path, mosquitto.port, [device])):
                await wait_msgs(
                    rec,
                    lambda ms: any(
                        m.topic == f"{ROOT}/devices/conv/status" and m.json()["state"] == "offline"
                        for m in ms
                    ),
                    10,
                    "offline",
                )
        assert all(m.json()["q"] == "bad" for m in rec.on(data("conv", "v")))
    finally:
        await peer.stop()


# --------------------------------------------------------------------------- writes before polls


async def test_write_is_served_before_the_rest_of_the_poll(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """A slow device with 20 separate reads a poll (2 s a cycle): a write waits for the read on the
    wire, not for the other reads of the poll.  Counted in requests seen by the device, not timed."""
    n = 20
    points = [{"name": f"r{i}", "table": "holding", "address": i} for i in range(n)]
    points.append({"name": "sp", "table": "holding", "address": 100, "writable": True})
    dev = await modbus_tcp_server({1: {"delay": 0.1}})
    device = tcp_device("slow", dev.port, points, poll="100ms", timeout="1s", no_merge=True)
    async with running_gateway(base_config(tmp_path, mosquitto.port, [device])) as gw:
        line = _lines(gw)[0]
        await eventually(lambda: line.stats.polls >= 1 and dev.requests[1] >= 3, 10, "polling")
        between: list[int] = []
        for i, pause in enumerate((0.35, 0.75, 0.5)):
            await asyncio.sleep(pause)  # somewhere in the middle of a 2 s poll
            before = dev.requests[1]
            result = await gw.router.write(WriteRequest("slow", "sp", i + 1, origin="test"))
            assert result.ok, result
            assert dev.get_holding(1, 100) == [i + 1]
            between.append(dev.requests[1] - before)
    # the write itself, plus the read that was on the wire (and at most one more at the edge);
    # served after the poll it would be up to 21 (on average 11) requests
    assert all(k <= 3 for k in between), between
