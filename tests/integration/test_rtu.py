"""Modbus RTU on one RS-485 bus (a socat pty pair): several slaves, a dead one, writes, unplugging."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from _agent import base_config, eventually, recorder, running_gateway, values_on, wait_msgs
from picogate._registry import DeviceState
from picogate._router import ErrorCode, WriteRequest
from picogate.gateway import Gateway
from picogate.modbus._source import ModbusLine


def _lines(gw: Gateway) -> list[ModbusLine]:
    """The Modbus plug-in's pollers, one per link."""
    return [c for c in gw.components if isinstance(c, ModbusLine)]


ROOT = "picogate/gw1"


def rtu_device(name: str, peer: Any, unit: int, points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "modbus_rtu",
        "port": peer.device,
        "baudrate": peer.baudrate,
        "unit_id": unit,
        "poll": "100ms",
        "timeout": "300ms",
        "retries": 0,
        "offline_after": 2,
        "backoff_max": "2s",
        "points": points,
        **extra,
    }


def status_is(device: str, state: str) -> Any:
    topic = f"{ROOT}/devices/{device}/status"
    return lambda ms: [m.json()["state"] for m in ms if m.topic == topic][-1:] == [state]


POINTS = [
    {"name": "temp", "table": "holding", "address": 0, "type": "int16", "scale": 0.1},
    {"name": "sp", "table": "holding", "address": 1, "writable": True, "max": 1000},
    {"name": "flags", "table": "holding", "address": 2, "bit": 4, "type": "bool", "writable": True},
    {"name": "run", "table": "coil", "address": 0, "writable": True},
]


async def test_slaves_share_the_bus_and_a_dead_one_is_backed_off(
    mosquitto: Any, modbus_rtu_server: Any, tmp_path: Path
) -> None:
    """Slaves 1 and 2 answer, 3 is not on the bus.  Once 3 is offline, 1 and 2 are polled nearly
    as often as a reference slave alone on a second bus (a ratio: robust on a loaded machine)."""
    peer = await modbus_rtu_server({1: {"hr": [215, 10, 0]}, 2: {"hr": [(-50) & 0xFFFF, 20, 0]}})
    other_bus = await modbus_rtu_server({1: {"hr": [1, 2, 3]}})
    devices = [rtu_device(f"s{u}", peer, u, POINTS) for u in (1, 2, 3)]
    devices.append(rtu_device("ref", other_bus, 1, POINTS))
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, devices)) as gw:
            assert len(_lines(gw)) == 2  # one poller per bus
            await wait_msgs(rec, status_is("s3", "offline"), 10, "s3 offline")
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/s3/temp" for m in ms), 5, "s3 bad")
            assert values_on(rec, f"{ROOT}/data/s1/temp") == [21.5]
            assert values_on(rec, f"{ROOT}/data/s2/temp") == [-5.0]
            assert {m.json()["q"] for m in rec.on(f"{ROOT}/data/s3/temp")} == {"bad"}
            await asyncio.sleep(1.5)  # past the first, short backoffs (0.1, 0.2, 0.4, 0.8 s)
            r0, ref0 = dict(peer.requests), other_bus.requests[1]
            await asyncio.sleep(3.0)
            r1, ref1 = dict(peer.requests), other_bus.requests[1]
    served = {u: r1.get(u, 0) - r0.get(u, 0) for u in (1, 2, 3)}
    ref = ref1 - ref0
    assert ref >= 2 * 10, ref  # two reads a poll (holding 0..2, coil 0); nominal 30 polls
    # The dead slave costs one 300 ms timeout per backoff period (0.8..2 s here): the others keep
    # about 80 % of the reference's polls.  With a timeout every cycle they would keep 30 %.
    assert min(served[1], served[2]) >= 0.6 * ref, (served, ref)
    assert 1 <= served[3] <= 4, served


async def test_writes_on_the_bus(mosquitto: Any, modbus_rtu_server: Any, tmp_path: Path) -> None:
    peer = await modbus_rtu_server({1: {"hr": [215, 10, 0x0111]}, 2: {"hr": [0, 20, 0x8000]}})
    devices = [
        rtu_device("s1", peer, 1, POINTS),
        rtu_device("s2", peer, 2, POINTS, fc22=True),
        rtu_device("s3", peer, 3, POINTS),
    ]
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, devices)) as gw:
            await wait_msgs(rec, status_is("s2", "online"), 10, "s2 online")
            await wait_msgs(rec, status_is("s1", "online"), 10, "s1 online")
            writes = [
                ("s1", "sp", 700, "c1"),
                ("s2", "sp", 33, "c2"),
                ("s1", "flags", False, "c3"),  # read-modify-write of register 2
                ("s2", "flags", True, "c4"),  # FC 22 mask write
                ("s1", "run", True, "c5"),
                ("s1", "sp", 1001, "c6"),  # above max: refused, never on the wire
            ]
            for dev, point, v, rid in writes:
                rec.publish(f"{ROOT}/cmd/{dev}/{point}/set", {"v": v, "id": rid})
            ms = await wait_msgs(
                rec, lambda ms: sum(m.topic.endswith("/result") for m in ms) >= len(writes), 10
            )
            codes = {m.json()["id"]: m.json()["code"] for m in ms if m.topic.endswith("/result")}
            assert codes == {"c1": "ok", "c2": "ok", "c3": "ok", "c4": "ok", "c5": "ok", "c6": "out_of_range"}
            assert peer.get_holding(1, 1) == [700]
            assert peer.get_holding(2, 1) == [33]
            assert peer.get_holding(1, 2) == [0x0101]
            assert peer.get_holding(2, 2) == [0x8010]
            assert peer.get_coils(1, 0) == [True]
            assert {(w.unit_id, w.function_code) for w in peer.writes} == {(1, 6), (2, 6), (1, 5), (2, 22)}
            # a write to the dead slave: sent, never confirmed (or refused once it is known offline)
            res = await gw.router.write(WriteRequest("s3", "sp", 1, origin="test"))
            assert res.code in (ErrorCode.OUTCOME_UNKNOWN, ErrorCode.DEVICE_OFFLINE), res
            await wait_msgs(
                rec, lambda ms: values_on(rec, f"{ROOT}/data/s1/sp")[-1:] == [700], 5, "read back"
            )


async def test_unplugged_bus_comes_back(mosquitto: Any, modbus_rtu_server: Any, tmp_path: Path) -> None:
    """The serial link disappears (the adapter is pulled: the pty closes) and comes back."""
    peer = await modbus_rtu_server({1: {"hr": [1, 2, 3]}})
    device = rtu_device("s1", peer, 1, POINTS[:2])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, [device])) as gw:
            await wait_msgs(rec, status_is("s1", "online"), 10, "online")
            await peer.stop()
            peer.pty_pair.stop()  # both ends of the pty pair are gone
            await wait_msgs(rec, status_is("s1", "offline"), 10, "offline")
            await asyncio.sleep(0.5)
            peer.pty_pair.start()
            await peer.start()
            peer.set_holding(1, 0, 99)
            await wait_msgs(rec, status_is("s1", "online"), 10, "online again")
            await wait_msgs(
                rec, lambda ms: values_on(rec, f"{ROOT}/data/s1/temp")[-1:] == [9.9], 5, "new value"
            )
            await eventually(lambda: gw.registry.device("s1").state is DeviceState.ONLINE, 1)  # type: ignore[union-attr]


async def test_late_replies_never_land_on_the_wrong_request(
    mosquitto: Any, modbus_rtu_server: Any, tmp_path: Path
) -> None:
    """A slave that answers after the timeout: RTU frames carry no transaction id, so a late reply
    must not be taken for the answer to the next request (same unit, same shape, other registers)."""
    regs = {0: [111, 112], 10: [211, 212], 20: [311, 312]}
    peer = await modbus_rtu_server({1: {"hr": regs, "delay": 0.35}})
    points = [{"name": f"r{a + i}", "table": "holding", "address": a + i} for a in regs for i in range(2)]
    device = rtu_device("slow", peer, 1, points, timeout="300ms", retries=1, offline_after=10)
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, [device])):
            await asyncio.sleep(4.0)
    wrong = {}
    for a, values in regs.items():
        for i, want in enumerate(values):
            got = {m.json()["v"] for m in rec.on(f"{ROOT}/data/slow/r{a + i}")} - {None}
            if got - {want}:
                wrong[f"r{a + i}"] = (want, got)
    assert not wrong, wrong
