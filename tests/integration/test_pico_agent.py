"""The agent's Pico source against the real firmware on MicroPython's unix port (picogate.simboard),
with a real mosquitto and, behind the board, a pymodbus RTU server across a socat pty pair."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _agent import base_config, eventually, recorder, running_gateway, values_on
from picogate._registry import DeviceState
from picogate.pico._session import PicoBoard
from picogate.simboard import SimBoard, install_firmware

ROOT = "picogate/gw1"
UID = "E6614103E7000042"

SCENARIO = {
    "pins": {"2": 0, "3": {"pulse_ms": 20}},
    "adc": {"26": 1.25},
    "temp": 31.0,
}

IO = [
    {"name": "door", "kind": "di", "pin": "GP2", "pull": "down"},
    {"name": "parts", "kind": "cnt", "pin": "GP3", "every": "200ms"},
    {"name": "valve", "kind": "do", "pin": "GP15", "safe": False},
    {"name": "fan", "kind": "pwm", "pin": "GP16", "init": 0.25},
    {"name": "level", "kind": "adc", "pin": "GP26", "scale": 40, "unit": "%", "every": "200ms"},
    {"name": "cpu", "kind": "temp", "every": "500ms"},
]


@pytest.fixture
def simboard(tmp_path: Path) -> Iterator[Any]:
    boards: list[SimBoard] = []

    def start(scenario: dict[str, Any] = SCENARIO, **kw: Any) -> SimBoard:
        d = tmp_path / f"board{len(boards)}"
        install_firmware(d, scenario=json.dumps(scenario))
        b = SimBoard(d, uid=UID, **kw).start()
        boards.append(b)
        return b

    yield start
    for b in boards:
        b.stop()


def board_section(port: str, io: list[dict[str, Any]] = IO, **extra: Any) -> dict[str, Any]:
    return {"name": "line1", "port": port, "heartbeat": "300ms", "safe_timeout": "3s", "io": io, **extra}


def pico_of(gw: Any) -> PicoBoard:
    (board,) = [c for c in gw.parts.components if isinstance(c, PicoBoard)]
    return board


def state(gw: Any, device: str = "line1") -> DeviceState | None:
    s = gw.registry.device(device)
    return None if s is None else s.state


async def test_readings_reach_mqtt_and_a_set_lands_on_the_board(
    mosquitto: Any, simboard: Any, tmp_path: Path
) -> None:
    board = simboard()
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[board_section(board.port)])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            level = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/line1/level", 30))[0].json()
            assert level["v"] == 50.0  # 1.25 V × 40
            assert level["unit"] == "%"
            assert level["q"] == "good"
            door = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/line1/door"))[0].json()
            assert door["v"] is False
            cpu = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/line1/cpu"))[0].json()
            assert abs(cpu["v"] - 31.0) < 0.5
            fan = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/line1/fan"))[0].json()
            assert fan["v"] == 0.25
            await eventually(lambda: len(values_on(rec, f"{ROOT}/data/line1/parts")) >= 3, 15, "counts")
            counts = values_on(rec, f"{ROOT}/data/line1/parts")
            assert counts == sorted(counts)
            assert counts[-1] > counts[0]
            await eventually(lambda: state(gw) is DeviceState.ONLINE)

            rec.publish(f"{ROOT}/cmd/line1/valve/set", {"v": True, "id": "c1"})
            res = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/cmd/line1/valve/result"))[-1].json()
            assert res["ok"], res
            await eventually(lambda: True in values_on(rec, f"{ROOT}/data/line1/valve"), 10, "valve on")

            rec.publish(f"{ROOT}/cmd/line1/fan/set", {"v": 1.5, "id": "c2"})  # the router refuses it
            res = [m.json() for m in rec.on(f"{ROOT}/cmd/line1/fan/result")]
            await eventually(lambda: bool(rec.on(f"{ROOT}/cmd/line1/fan/result")), 10)
            res = rec.on(f"{ROOT}/cmd/line1/fan/result")[-1].json()
            assert (res["ok"], res["code"]) == (False, "out_of_range")

            rec.publish(f"{ROOT}/cmd/line1/fan/set", {"v": 0.75, "id": "c3"})
            await eventually(lambda: 0.75 in values_on(rec, f"{ROOT}/data/line1/fan"), 10, "fan 0.75")

            await eventually(lambda: "mem" in pico_of(gw).stats.board, 10, "a heartbeat from the board")
            metrics = gw.parts.metrics.render().decode()
            readings = re.search(r'^picogate_pico_readings_total\{board="line1"\} (\S+)$', metrics, re.M)
            assert readings is not None
            assert float(readings.group(1)) > 0
            assert 'picogate_pico_board_heap_free_bytes{board="line1"}' in metrics


async def test_firmware_killed_and_restarted_mid_stream_resyncs(
    mosquitto: Any, simboard: Any, tmp_path: Path
) -> None:
    board = simboard()
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[board_section(board.port)])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online")
            pico = pico_of(gw)
            sessions = pico.stats.sessions
            # Every state the device goes through (the registry's events): offline and online again
            # can follow each other faster than a test polls the state.
            seen: list[DeviceState | None] = []
            gw.registry.subscribe(
                lambda ev: (
                    seen.append(state(gw)) if ev.kind == "device_state" and ev.device == "line1" else None
                )
            )
            board.kill()
            await eventually(lambda: DeviceState.OFFLINE in seen, 15, "offline after the crash")
            bad = [m.json() for m in rec.on(f"{ROOT}/data/line1/level")]
            await eventually(
                lambda: any(m.json()["q"] == "bad" for m in rec.on(f"{ROOT}/data/line1/level")), 10, "bad"
            )
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online again")
            assert pico.stats.sessions > sessions
            n = len(rec.on(f"{ROOT}/data/line1/level"))
            await eventually(
                lambda: any(m.json()["q"] == "good" for m in rec.on(f"{ROOT}/data/line1/level")[n - 1 :]),
                15,
                "good readings after the restart",
            )
            assert bad is not None


async def test_unplug_and_replug(mosquitto: Any, simboard: Any, tmp_path: Path) -> None:
    board = simboard()
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[board_section(board.port)])
    async with running_gateway(cfg) as gw:
        await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online")
        board.unplug()
        await eventually(lambda: state(gw) is DeviceState.OFFLINE, 15, "offline when unplugged")
        await asyncio.sleep(0.5)
        board.replug()
        await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online after replug")


async def test_random_bytes_both_ways_are_dropped_and_counted(
    mosquitto: Any, simboard: Any, tmp_path: Path
) -> None:
    board = simboard()
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[board_section(board.port)])
    rng = random.Random(4)
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online")
            pico = pico_of(gw)
            for _ in range(20):
                noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
                board.inject(noise + b"\x03", to="board")
                board.inject(noise + b"\n", to="host")
                await asyncio.sleep(0.05)
            board.inject(b"\x03\x03\x03\n", to="board")
            await eventually(lambda: pico.stats.garbage + pico.stats.bad_crc > 0, 10, "garbage counted")
            # Still running: a set goes through and readings go on.
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online")
            rec.publish(f"{ROOT}/cmd/line1/valve/set", {"v": True, "id": "n1"})
            await eventually(lambda: bool(rec.on(f"{ROOT}/cmd/line1/valve/result")), 15, "result")
            res = rec.on(f"{ROOT}/cmd/line1/valve/result")[-1].json()
            assert res["ok"], (res, pico.stats)
            assert board.restarts == 0  # 0x03 did not interrupt the firmware


async def test_a_board_at_its_repl_is_reset_into_the_application(
    mosquitto: Any, simboard: Any, tmp_path: Path
) -> None:
    board = simboard()
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[board_section(board.port)])
    async with running_gateway(cfg) as gw:
        await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online")
        pico = pico_of(gw)
        # Safe mode: the boot counter says 3 failed boots; the next boot stays at the REPL.
        (board.directory / "pg_boots").write_text("3")
        board.kill()
        await eventually(lambda: pico.stats.repl_resets >= 1, 30, "REPL noticed and reset")
        status = gw.registry.device("line1")
        assert status.state is DeviceState.OFFLINE
        assert "REPL" in status.reason
        # Out of safe mode (as after a fix): the agent's next soft reset starts the application.
        os.remove(board.directory / "pg_boots")
        await eventually(lambda: state(gw) is DeviceState.ONLINE, 60, "online after the soft reset")


async def test_modbus_device_behind_the_board(
    mosquitto: Any, simboard: Any, modbus_rtu_server: Any, tmp_path: Path
) -> None:
    peer = await modbus_rtu_server(
        {
            3: {"hr": [250, 0x3FC0, 0x0000, 7], "co": [True, False, True], "invalid": {"hr": {20}}},
            4: {"silent": True},
        },
        baudrate=115200,
    )
    board = simboard({**SCENARIO, "uart": {"0": peer.device}})
    section = board_section(
        board.port,
        io=IO[:1],
        modbus=[
            {
                "uart": 0,
                "tx": "GP0",
                "rx": "GP1",
                "baudrate": 115200,
                "timeout": "150ms",
                "backoff": "1s",
                "devices": [
                    {
                        "name": "meter",
                        "unit_id": 3,
                        "poll": "200ms",
                        "points": [
                            {"name": "volts", "ref": 40001, "scale": 0.1, "unit": "V"},
                            {"name": "amps", "ref": 40002, "type": "float32"},
                            {"name": "setp", "ref": 40004, "writable": True},
                            {"name": "run", "table": "coil", "address": 0, "writable": True},
                            {"name": "hole", "ref": 40021},  # the device answers ILLEGAL ADDRESS
                        ],
                    },
                    {
                        "name": "dead",
                        "unit_id": 4,
                        "offline_after": 1,
                        "points": [{"name": "x", "ref": 40001}],
                    },
                ],
            }
        ],
    )
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[section])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            volts = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/meter/volts", 30))[0].json()
            assert volts["v"] == 25.0
            assert volts["unit"] == "V"
            amps = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/meter/amps"))[0].json()
            assert amps["v"] == 1.5
            run = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/meter/run"))[0].json()
            assert run["v"] is True
            await eventually(lambda: state(gw, "dead") is DeviceState.OFFLINE, 20, "silent slave offline")
            assert state(gw, "meter") is DeviceState.ONLINE
            hole = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/meter/hole"))[0].json()
            assert hole["q"] == "bad"  # an exception reply: bad points, the device stays online
            assert state(gw, "meter") is DeviceState.ONLINE

            rec.publish(f"{ROOT}/cmd/meter/setp/set", {"v": 1234, "id": "w1"})
            await eventually(lambda: bool(rec.on(f"{ROOT}/cmd/meter/setp/result")), 15, "write result")
            assert rec.on(f"{ROOT}/cmd/meter/setp/result")[-1].json()["ok"]
            assert any(w.unit_id == 3 and w.address == 3 and w.values == (1234,) for w in peer.writes)
            await eventually(lambda: 1234 in values_on(rec, f"{ROOT}/data/meter/setp"), 15, "new value read")
            rec.publish(f"{ROOT}/cmd/meter/run/set", {"v": False, "id": "w2"})
            await eventually(lambda: False in values_on(rec, f"{ROOT}/data/meter/run"), 15, "coil off")


async def test_a_board_of_another_type_is_not_configured(simboard: Any, tmp_path: Path) -> None:
    board = simboard(board="pico_w")
    cfg = base_config(tmp_path, 1, [], boards=[board_section(board.port)], mqtt={"enabled": False})
    async with running_gateway(cfg) as gw:
        await eventually(
            lambda: "pico_w" in getattr(gw.registry.device("line1"), "reason", ""),
            30,
            "type mismatch reported",
        )
        assert state(gw) is DeviceState.OFFLINE
        assert pico_of(gw).stats.sessions >= 1


async def test_readings_taken_while_the_agent_was_down_arrive_after_it_restarts(
    mosquitto: Any, simboard: Any, tmp_path: Path
) -> None:
    board = simboard()
    io = [{"name": "parts", "kind": "cnt", "pin": "GP3", "every": "200ms"}]
    cfg = base_config(
        tmp_path, mosquitto.port, [], boards=[board_section(board.port, io=io, safe_timeout="10s")]
    )
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/line1/parts") as rec:
        async with running_gateway(cfg) as gw:
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online")
            await eventually(lambda: len(rec.on(f"{ROOT}/data/line1/parts")) >= 2, 10, "counts")
        down_from = time.time() * 1000
        await asyncio.sleep(1.5)  # the board goes on counting and queues what is not acknowledged
        down_to = time.time() * 1000
        async with running_gateway(cfg) as gw:
            await eventually(
                lambda: any(
                    down_from + 100 < m.json()["ts"] < down_to - 100
                    for m in rec.on(f"{ROOT}/data/line1/parts")
                ),
                20,
                "a count taken while the agent was down",
            )
    counts = [m.json()["v"] for m in rec.on(f"{ROOT}/data/line1/parts") if m.json()["q"] == "good"]
    assert counts == sorted(counts)


async def test_maintenance_from_the_link_then_back_to_the_application(simboard: Any, tmp_path: Path) -> None:
    board = simboard()
    cfg = base_config(tmp_path, 1, [], boards=[board_section(board.port)], mqtt={"enabled": False})
    async with running_gateway(cfg) as gw:
        await eventually(lambda: state(gw) is DeviceState.ONLINE, 30, "online")
        pico = pico_of(gw)
        await pico.command("maint")
        await eventually(lambda: board.mode == "repl", 20, "the board at its plain REPL")
        await asyncio.sleep(1.5)
        assert board.mode == "repl"  # the agent left it alone (no soft reset into the app)
        assert pico.stats.repl_resets == 0
        assert "maintenance" in gw.registry.device("line1").reason
        pico.resume()  # flashing done: the agent finds the REPL and resets the board into the app
        await eventually(lambda: state(gw) is DeviceState.ONLINE, 40, "online after maintenance")
        assert pico.stats.repl_resets >= 1


async def test_sensors_report_through_the_agent_and_a_failing_one_is_bad(
    mosquitto: Any, simboard: Any, tmp_path: Path
) -> None:
    scenario = {
        "onewire": {"16": {"28FF4A6B12160301": 21.5}},
        "dht22": {"17": {"t": 22.0, "h": 45.0}, "18": "fail"},
        "i2c": {"0": {"68": {"kind": "sht3x", "t": 23.5, "h": 40.0}}},
    }
    board = simboard(scenario)
    io = [
        {"name": "tank", "kind": "ds18b20", "pin": "GP16", "rom": "28ff4a6b12160301", "every": "500ms"},
        {"name": "room", "kind": "dht22", "pin": "GP17", "every": "2s"},
        {"name": "attic", "kind": "dht22", "pin": "GP18", "every": "2s"},
        {"name": "air", "kind": "sht3x", "sda": "GP8", "scl": "GP9", "every": "500ms"},
    ]
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[board_section(board.port, io=io)])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/line1/#") as rec:
        async with running_gateway(cfg):

            async def first(point: str) -> dict[str, Any]:
                """The first good value (before its first read a sensor reports bad)."""
                topic = f"{ROOT}/data/line1/{point}"
                await eventually(lambda: any(m.json()["q"] == "good" for m in rec.on(topic)), 30, topic)
                return dict(next(m.json() for m in rec.on(topic) if m.json()["q"] == "good"))

            tank = await first("tank")
            assert (tank["v"], tank["unit"], tank["q"]) == (21.5, "°C", "good")
            assert (await first("room_t"))["v"] == 22.0
            room_h = await first("room_h")
            assert (room_h["v"], room_h["unit"]) == (45.0, "%RH")
            assert (await first("air_t"))["v"] == 23.5
            assert (await first("air_h"))["v"] == 40.0
            await eventually(
                lambda: any(m.json()["q"] == "bad" for m in rec.on(f"{ROOT}/data/line1/attic_t")),
                20,
                "attic bad",
            )
