"""The agent's Pico source against the flashed firmware on the emulated RP2040, end to end to
mosquitto: inputs driven and outputs read on the emulator's control socket, an SHT3x answered by the
runner's I2C model, a pymodbus RTU server on UART0 (through a socat pty bridged to the UART socket)
read by the firmware's Modbus master; then the link under real conditions: the cable pulled and
plugged in again, a reset while the agent is connected, line noise both ways.

The boards run with `realtime` (board time never ahead of the wall clock): the agent's heartbeat and
silence checks compare the two clocks. Everything the firmware counts (debounce, safe timeout) is in
board time; the waits here are generous wall-clock bounds for an emulator several times slower than
a real Pico."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _rp2 import UartPty

from _agent import base_config, eventually, recorder, running_gateway, values_on
from _peers import ModbusRtuPeer
from picogate._registry import DeviceState
from picogate.pico._session import PicoBoard

ROOT = "picogate/gw1"
UID = "E6614103E7000042"

IO = [
    {"name": "door", "kind": "di", "pin": "GP2", "pull": "up", "debounce": "50ms", "invert": True},
    {"name": "parts", "kind": "cnt", "pin": "GP3", "pull": "up", "edge": "fall", "every": "200ms"},
    {"name": "valve", "kind": "do", "pin": "GP15", "safe": False},
    {"name": "fan", "kind": "pwm", "pin": "GP16", "init": 0.25, "safe": 0.0},
    {
        "name": "level",
        "kind": "adc",
        "pin": "GP26",
        "oversample": 16,
        "scale": 40,
        "unit": "%",
        "every": "200ms",
    },
    {"name": "cpu", "kind": "temp", "every": "500ms"},
    {"name": "air", "kind": "sht3x", "i2c": 0, "sda": "GP4", "scl": "GP5", "every": "500ms"},
]

MODBUS = {
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
            "poll": "300ms",
            "points": [
                {"name": "volts", "ref": 40001, "scale": 0.1, "unit": "V"},
                {"name": "amps", "ref": 40002, "type": "float32"},
                {"name": "setp", "ref": 40004, "writable": True},
                {"name": "run", "table": "coil", "address": 0, "writable": True},
                {"name": "hole", "ref": 40021},  # the device answers ILLEGAL ADDRESS
            ],
        },
        {"name": "dead", "unit_id": 4, "offline_after": 1, "points": [{"name": "x", "ref": 40001}]},
    ],
}


def section(port: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "line1",
        "port": port,
        "heartbeat": "500ms",
        "safe_timeout": "3s",
        # the emulator runs the firmware several times slower than a Pico: its acks take longer
        # (a configuration: about 0.2 s of board time, up to 2 s of wall time on a loaded host)
        "resend_after": "2s",
        "io": IO,
        **extra,
    }


def pico_of(gw: Any) -> PicoBoard:
    (board,) = [c for c in gw.parts.components if isinstance(c, PicoBoard)]
    return board


def state(gw: Any, device: str = "line1") -> DeviceState | None:
    s = gw.registry.device(device)
    return None if s is None else s.state


def last(rec: Any, point: str, device: str = "line1") -> Any:
    vals = values_on(rec, f"{ROOT}/data/{device}/{point}")
    return vals[-1] if vals else None


@pytest.fixture
async def rig(pico: Any, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A flashed board (realtime, UART0 and I2C0 sockets), an SHT3x on I2C0, a pymodbus RTU server
    with units 3 (registers, coils) and 4 (silent) on UART0."""
    import rp2emu

    src = rp2emu.find_source()
    assert src is not None
    import sys

    sys.path.insert(0, str(src))
    from i2c_models import I2CBus, SHT3x

    board = pico(realtime=True, uart0=True, i2c0=True, uid=UID)
    board.ctl(adc=0, v=1.25)
    board.ctl(temp=31.0)
    sensor = SHT3x(0x44, temperature=21.5, humidity=40.0)
    bus = I2CBus(board.i2c_paths[0], sensor).start()
    uart = UartPty(board.uart0_path, tmp_path).start()
    peer = ModbusRtuPeer(
        uart,  # type: ignore[arg-type]
        {
            3: {"hr": [250, 0x3FC0, 0x0000, 7], "co": [True, False, True], "invalid": {"hr": {20}}},
            4: {"silent": True},
        },
        baudrate=115200,
    )
    await peer.start()
    try:
        yield {"board": board, "sensor": sensor, "bus": bus, "peer": peer}
    finally:
        await peer.stop()
        uart.stop()
        bus.close()
    assert bus.errors == []


async def test_points_and_modbus_end_to_end(rig: dict[str, Any], mosquitto: Any, tmp_path: Path) -> None:
    board, sensor, peer = rig["board"], rig["sensor"], rig["peer"]
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[section(board.port, modbus=[MODBUS])])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 60, "the board online")

            def good(point: str, device: str = "line1") -> list[Any]:
                return [
                    m.json()["v"] for m in rec.on(f"{ROOT}/data/{device}/{point}") if m.json()["q"] == "good"
                ]

            await eventually(lambda: bool(good("level") and good("cpu") and good("air_t")), 60, "readings")
            assert good("level")[-1] == pytest.approx(50.0, abs=0.1)  # 1.25 V × 40, mean of 16 samples
            assert good("cpu")[-1] == pytest.approx(31.0, abs=0.6)  # the die temperature sensor
            assert (good("air_t")[-1], good("air_h")[-1]) == (
                pytest.approx(21.5, abs=0.01),
                pytest.approx(40.0, abs=0.01),
            )
            assert good("fan")[-1] == 0.25
            assert good("door")[-1] is False  # released: the pull-up reads 1, inverted

            # a 1 ms glitch is shorter than the 50 ms debounce; a press held 0.4 s is reported
            board.ctl(pin=2, v=0)
            board.ctl(pin=2, v=None)
            await asyncio.sleep(0.5)
            assert True not in good("door")
            board.ctl(pin=2, v=0)
            await eventually(lambda: True in good("door"), 20, "the door pressed")
            board.ctl(pin=2, v=None)
            await eventually(lambda: good("door")[-1] is False, 20, "the door released")

            # ten falling edges, counted by the pin IRQ
            await eventually(lambda: bool(good("parts")), 20, "a count")
            before = good("parts")[-1]
            for _ in range(10):
                board.ctl(pin=3, v=0)
                board.ctl(pin=3, v=1)
            await eventually(lambda: good("parts")[-1] == before + 10, 20, "ten more counts")

            # outputs: the pins the chip drives
            rec.publish(f"{ROOT}/cmd/line1/valve/set", {"v": True, "id": "c1"})
            await eventually(lambda: bool(rec.on(f"{ROOT}/cmd/line1/valve/result")), 20, "valve result")
            res = rec.on(f"{ROOT}/cmd/line1/valve/result")[-1].json()
            assert res["ok"], res
            assert board.ctl()["outputs"].get("15") == 1
            rec.publish(f"{ROOT}/cmd/line1/fan/set", {"v": 1.0, "id": "c2"})
            await eventually(lambda: 1.0 in good("fan"), 20, "fan 1.0")
            assert all(board.ctl()["outputs"].get("16") == 1 for _ in range(5))  # 100 % duty: always high

            # the sensor's new value, measured again
            sensor.temperature = 30.0
            await eventually(lambda: good("air_t")[-1] == pytest.approx(30.0, abs=0.01), 20, "air_t 30")

            # Modbus behind the board
            await eventually(lambda: bool(good("volts", "meter")), 30, "meter volts")
            assert good("volts", "meter")[-1] == 25.0
            assert good("amps", "meter")[-1] == 1.5
            assert good("run", "meter")[-1] is True
            await eventually(lambda: state(gw, "dead") is DeviceState.OFFLINE, 30, "silent slave offline")
            assert state(gw, "meter") is DeviceState.ONLINE
            hole = rec.on(f"{ROOT}/data/meter/hole")
            assert hole
            assert hole[-1].json()["q"] == "bad"  # an exception reply: bad points, the device stays online
            rec.publish(f"{ROOT}/cmd/meter/setp/set", {"v": 1234, "id": "w1"})
            await eventually(lambda: bool(rec.on(f"{ROOT}/cmd/meter/setp/result")), 20, "write result")
            assert rec.on(f"{ROOT}/cmd/meter/setp/result")[-1].json()["ok"]
            assert any(w.unit_id == 3 and w.address == 3 and w.values == (1234,) for w in peer.writes)
            await eventually(lambda: 1234 in good("setp", "meter"), 20, "the new value read back")
    assert board.ctl()["boots"] == 1  # no reset: the watchdog was fed all along


async def test_link_lost_safe_state_reset_and_noise(
    rig: dict[str, Any], mosquitto: Any, tmp_path: Path
) -> None:
    board = rig["board"]
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[section(board.port)])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 60, "the board online")
            pico = pico_of(gw)
            rec.publish(f"{ROOT}/cmd/line1/valve/set", {"v": True, "id": "c1"})
            rec.publish(f"{ROOT}/cmd/line1/fan/set", {"v": 1.0, "id": "c2"})
            await eventually(lambda: board.ctl()["outputs"].get("15") == 1, 20, "valve on")
            await eventually(lambda: 1.0 in values_on(rec, f"{ROOT}/data/line1/fan"), 20, "fan 1.0")

            # the cable pulled: the agent sees the port go, the board (powered) goes on alone and
            # puts its outputs in their safe state after safe_timeout of board time
            board.unplug()
            await eventually(lambda: state(gw) is DeviceState.OFFLINE, 20, "offline when unplugged")
            t0 = board.board_ms()
            await eventually(lambda: board.ctl()["outputs"].get("15") == 0, 60, "valve in its safe state")
            assert (
                board.board_ms() - t0 >= 2000
            )  # not before the 3 s of silence (less the unplug's detection)
            assert all(board.ctl()["outputs"].get("16") == 0 for _ in range(5))  # fan at 0.0: always low
            board.replug()
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 60, "online after replug")
            assert board.ctl()["outputs"].get("15") == 0  # safe until a command sets it again
            await eventually(lambda: last(rec, "valve") is False, 20, "the safe value reported")

            # a reset (the RUN pin) while the agent is connected: a new board session
            restarts = pico.stats.board_restarts
            board.reset()
            await eventually(lambda: pico.stats.board_restarts > restarts, 60, "the restart noticed")
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 60, "online after the reset")

            # noise both ways, 0x03 included: dropped and counted, nothing interrupted
            rng = random.Random(4)
            for _ in range(20):
                noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
                board.write(noise + b"\x03")
                board.inject_host(noise + b"\n")
                await asyncio.sleep(0.05)
            await eventually(lambda: pico.stats.garbage + pico.stats.bad_crc > 0, 20, "garbage counted")
            await eventually(lambda: state(gw) is DeviceState.ONLINE, 60, "online")
            rec.publish(f"{ROOT}/cmd/line1/valve/set", {"v": True, "id": "n1"})
            await eventually(lambda: bool(rec.on(f"{ROOT}/cmd/line1/valve/result")), 30, "result")
            assert rec.on(f"{ROOT}/cmd/line1/valve/result")[-1].json()["ok"]
            await eventually(lambda: board.ctl()["outputs"].get("15") == 1, 20, "valve on again")
    assert board.ctl()["boots"] == 2  # our reset only: 0x03 did not interrupt the firmware
