"""`picogate poll --once` against real peers: pymodbus devices on Modbus TCP and on RTU over a socat
pty pair, an aiocoap device, the command run as the operator runs it (a process of its own)."""

from __future__ import annotations

import asyncio
import struct
import sys
from pathlib import Path
from typing import Any

import aiocoap
import orjson
import pytest
import yaml
from aiocoap import resource

from _peers import free_port

pytestmark = pytest.mark.integration


async def _picogate(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run `picogate ARGS` while this loop goes on serving the peers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "picogate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    f = tmp_path / "gateway.yaml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return f


def _f32(x: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


BOILER_POINTS = [
    {"name": "temperature", "table": "input", "address": 0, "type": "int16", "scale": 0.1, "unit": "°C"},
    {"name": "pressure", "table": "input", "address": 1, "type": "float32", "unit": "bar"},
    {"name": "flame", "table": "input", "address": 5, "bit": 0, "type": "bool"},
    {"name": "setpoint", "table": "holding", "address": 0, "scale": 0.1, "unit": "°C", "poll": "1h"},
    {"name": "burner", "table": "coil", "address": 3},
    {"name": "missing", "table": "holding", "address": 50},  # a hole in the device's map
]


@pytest.fixture
async def plant(modbus_tcp_server: Any, modbus_rtu_server: Any, tmp_path: Path) -> dict[str, Any]:
    tcp = await modbus_tcp_server(
        {
            1: {
                "ir": {0: 0xFFF6, 1: _f32(1.5), 5: 0b101},  # -1.0 °C; 1.5 bar; flame on
                "hr": {0: 655},
                "co": {3: True},
                "invalid": {"hr": {50}},
            },
            7: {"silent": True},  # a device that never answers
        }
    )
    rtu = await modbus_rtu_server({3: {"ir": {0: 421}, "di": {1: True}}})
    cfg = {
        "devices": [
            {
                "name": "boiler",
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": tcp.port,
                "unit_id": 1,
                "timeout": "500ms",
                "points": BOILER_POINTS,
            },
            {
                "name": "dead",
                "type": "modbus_tcp",
                "host": "127.0.0.1",
                "port": tcp.port,
                "unit_id": 7,
                "timeout": "200ms",
                "retries": 0,
                "points": [{"name": "x", "ref": 40001}, {"name": "y", "ref": 30010}],
            },
            {
                "name": "tank",
                "type": "modbus_rtu",
                "port": rtu.device,
                "unit_id": 3,
                "timeout": "500ms",
                "points": [
                    {"name": "level", "table": "input", "address": 0, "scale": 0.1, "unit": "%"},
                    {"name": "low", "table": "discrete_input", "address": 1},
                ],
            },
        ],
        "coap": {"nodes": [{"name": "yard", "points": {"t": {"unit": "Cel"}}}]},
    }
    return {"tcp": tcp, "rtu": rtu, "file": _write(tmp_path, cfg)}


async def test_poll_once_json(plant: dict[str, Any]) -> None:
    rc, out, err = await _picogate("poll", "--once", "--json", "-c", str(plant["file"]))
    assert rc == 1, err  # a hole and a dead device: not every point is good
    doc = orjson.loads(out)
    by_name = {d["device"]: d for d in doc["devices"]}
    assert list(by_name) == ["boiler", "dead", "tank"]

    boiler = {p["point"]: p for p in by_name["boiler"]["points"]}
    assert list(boiler) == [p["name"] for p in BOILER_POINTS]  # the order of the file
    t = boiler["temperature"]
    assert (t["value"], t["unit"], t["quality"], t["raw"]) == (-1.0, "°C", "good", [0xFFF6])
    assert (t["table"], t["address"], t["width"]) == ("input", 0, 1)
    p = boiler["pressure"]
    assert (p["value"], p["quality"], p["raw"], p["width"]) == (1.5, "good", _f32(1.5), 2)
    f = boiler["flame"]
    assert (f["value"], f["bit"], f["raw"]) == (True, 0, [0b101])
    assert boiler["setpoint"]["value"] == 65.5  # read although its own poll is 1 h
    assert boiler["setpoint"]["raw"] == [655]
    assert (boiler["burner"]["value"], boiler["burner"]["raw"]) == (True, [True])
    missing = boiler["missing"]
    assert (missing["value"], missing["quality"], missing["raw"]) == (None, "bad", [])
    assert "illegal data address" in missing["error"].lower()
    assert by_name["boiler"]["error"] == ""

    dead = by_name["dead"]
    assert dead["ok"] is False
    assert "no reply within 0.2 s" in dead["error"]
    assert [p["quality"] for p in dead["points"]] == ["bad", "bad"]
    assert dead["requests"] == 1  # no answer: the rest of the device is not asked

    tank = {p["point"]: p for p in by_name["tank"]["points"]}
    assert (tank["level"]["value"], tank["level"]["raw"]) == (42.1, [421])
    assert tank["low"]["value"] is True
    assert by_name["tank"]["ok"] is True

    assert doc["not_read"] == [
        {"device": "yard", "kind": "coap node", "reason": doc["not_read"][0]["reason"]}
    ]
    assert "reports to the gateway" in doc["not_read"][0]["reason"]
    assert plant["tcp"].writes == []  # reading only


async def test_poll_once_text_and_device_filter(plant: dict[str, Any]) -> None:
    rc, out, err = await _picogate("poll", "--once", "-c", str(plant["file"]), "--device", "tank")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"tank  (unit 3 on {plant['rtu'].device}): 2 requests")
    assert "boiler" not in out
    level = next(line for line in lines if line.strip().startswith("level"))
    assert level.split() == ["level", "42.1", "%", "good", "input", "0", "0x01A5"]

    rc, out, err = await _picogate("poll", "--once", "-c", str(plant["file"]), "-d", "boiler")
    assert rc == 1
    pressure = next(line for line in out.splitlines() if line.strip().startswith("pressure"))
    assert pressure.split() == ["pressure", "1.5", "bar", "good", "input", "1+2", "0x3FC0", "0x0000"]
    missing = next(line for line in out.splitlines() if line.strip().startswith("missing"))
    assert "bad" in missing
    assert "illegal data address" in missing.lower()


async def test_poll_once_unknown_device_names_the_devices(plant: dict[str, Any]) -> None:
    rc, out, err = await _picogate("poll", "--once", "-c", str(plant["file"]), "-d", "boilr")
    assert rc == 2
    assert out == ""
    assert "no device named 'boilr'" in err
    assert "boiler, dead, tank, yard" in err


async def test_poll_needs_once_and_a_good_file(tmp_path: Path) -> None:
    rc, _, err = await _picogate("poll", "-c", str(tmp_path / "gateway.yaml"))
    assert rc == 2
    assert "--once" in err
    bad = _write(tmp_path, {"devices": [{"name": "b", "type": "modbus_tcp"}]})
    rc, out, err = await _picogate("poll", "--once", "-c", str(bad))
    assert rc == 1
    assert out == ""
    assert "missing required key 'host'" in err
    assert "Traceback" not in err


class _Value(resource.Resource):
    """A resource holding one value, served as text or JSON."""

    def __init__(self, value: Any, *, text: bool = False) -> None:
        super().__init__()
        self.value = value
        self.text = text
        self.gets = 0

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        self.gets += 1
        if self.text:
            return aiocoap.Message(payload=str(self.value).encode(), content_format=0)
        return aiocoap.Message(payload=orjson.dumps(self.value), content_format=50)


async def test_poll_once_asks_coap_devices(tmp_path: Path) -> None:
    port = free_port()
    res = {"temp": _Value(20.5, text=True), "level": _Value(3)}
    site = resource.Site()
    site.add_resource(("sensors", "temp"), res["temp"])
    site.add_resource(("level",), res["level"])
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port), transports=["udp6"])
    try:
        coap = {
            "server": False,
            "clients": [
                {
                    "name": "sensor",
                    "host": "127.0.0.1",
                    "port": port,
                    "timeout": "2s",
                    "resources": [
                        {"point": "temp", "path": "/sensors/temp", "unit": "Cel", "interval": "1h"},
                        {"point": "level", "path": "/level", "type": "int32", "observe": True},
                        {"point": "gone", "path": "/nope"},
                    ],
                }
            ],
        }
        f = _write(tmp_path, {"coap": coap})
        rc, out, err = await _picogate("poll", "--once", "--json", "-c", str(f))
        assert rc == 1, err  # /nope is not there
        (device,) = orjson.loads(out)["devices"]
        assert (device["device"], device["kind"], device["link"]) == (
            "sensor",
            "coap",
            f"coap://127.0.0.1:{port}",
        )
        points = {p["point"]: p for p in device["points"]}
        temp = points["temp"]
        assert (temp["value"], temp["unit"], temp["quality"], temp["payload"], temp["content_format"]) == (
            20.5,
            "Cel",
            "good",
            "20.5",
            0,
        )
        assert (points["level"]["value"], points["level"]["payload"]) == (3, "3")  # observed: asked once
        assert points["gone"]["quality"] == "bad"
        assert "4.04" in points["gone"]["error"]
        assert res["temp"].gets == 1
        assert res["level"].gets == 1

        rc, out, err = await _picogate("poll", "--once", "-c", str(f))
        lines = out.splitlines()
        assert lines[0] == f"sensor  (coap://127.0.0.1:{port}): 3 resources asked"
        assert lines[1].split() == [
            "temp",
            "20.5",
            "Cel",
            "good",
            "GET",
            "/sensors/temp",
            "'20.5'",
            "(cf",
            "0)",
        ]
    finally:
        await ctx.shutdown()
