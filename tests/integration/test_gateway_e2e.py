"""The data path end to end: pymodbus devices → agent → mosquitto, and commands back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from _agent import base_config, recorder, running_gateway

ROOT = "picogate/gw1"


def boiler(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "timeout": "300ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "scale": 0.1, "unit": "°C"},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "min": 0, "max": 900},
            {"name": "flow", "table": "holding", "address": 2, "type": "float32", "order": "CDAB"},
            {"name": "burner", "table": "coil", "address": 0, "writable": True},
            {
                "name": "alarm_bit",
                "table": "holding",
                "address": 4,
                "bit": 3,
                "type": "bool",
                "writable": True,
            },
            {"name": "serial", "table": "input", "address": 10, "type": "string", "count": 4},
        ],
        **extra,
    }


async def test_values_reach_mqtt_and_commands_reach_device(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server(
        {1: {"hr": {0: [215, 40, 0x0000, 0x4148, 0]}, "ir": {10: [0x5047, 0x2D31, 0x3200, 0]}}}
    )
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, [boiler(dev.port)])):
            msgs = await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/boiler/temp")
            first = msgs[0].json()
            assert first["v"] == 21.5
            assert first["unit"] == "°C"
            assert first["q"] == "good"
            assert abs(first["ts"] - time.time() * 1000) < 10_000
            flow = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/boiler/flow"))[0].json()
            assert flow["v"] == 12.5  # 0x41480000 with words swapped (CDAB)
            serial = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/boiler/serial"))[0].json()
            assert serial["v"] == "PG-12"
            with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/status") as late:  # retained for newcomers
                status = (await asyncio.to_thread(late.wait_topic, f"{ROOT}/status"))[-1]
            assert status.json()["state"] == "online"
            assert status.retain

            # The device state goes online and is retained.
            dstat = await asyncio.to_thread(
                rec.wait_for,
                lambda ms: any(
                    m.topic == f"{ROOT}/devices/boiler/status" and m.json()["state"] == "online" for m in ms
                ),
            )
            assert dstat

            # Commands: a holding register, a coil, a bit of a register.
            rec.publish(f"{ROOT}/cmd/boiler/setpoint/set", {"v": 650, "id": "c1"})
            rec.publish(f"{ROOT}/cmd/boiler/burner/set", {"v": True, "id": "c2"})
            rec.publish(f"{ROOT}/cmd/boiler/alarm_bit/set", {"v": 1, "id": "c3"})
            for point, rid in (("setpoint", "c1"), ("burner", "c2"), ("alarm_bit", "c3")):
                res = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/cmd/boiler/{point}/result"))[
                    -1
                ].json()
                assert res == {"id": rid, "ok": True, "code": "ok", "error": ""}
            assert dev.get_holding(1, 1) == [650]
            assert dev.get_coils(1, 0) == [True]
            assert dev.get_holding(1, 4) == [0b1000]

            # The new setpoint is published after the write.
            await asyncio.to_thread(
                rec.wait_for,
                lambda ms: any(
                    m.topic == f"{ROOT}/data/boiler/setpoint" and m.json()["v"] == 650 for m in ms
                ),
            )


async def test_bad_commands_get_clear_errors(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, [boiler(dev.port)])):
            await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/boiler/temp")
            cases = [
                ("temp", {"v": 1, "id": "r1"}, "read_only"),
                ("nosuch", {"v": 1, "id": "r2"}, "unknown_point"),
                ("setpoint", {"v": 5000, "id": "r3"}, "out_of_range"),
                ("setpoint", {"v": "hot", "id": "r4"}, "bad_type"),
                ("setpoint", {"v": 1.5, "id": "r5"}, "bad_type"),
                ("setpoint", {"id": "r6"}, "bad_request"),
                ("setpoint", {"v": 1, "id": "r7", "ts": int(time.time() * 1000) - 3_600_000}, "stale"),
                ("burner", {"v": 7, "id": "r8"}, "bad_type"),
            ]
            for point, body, _ in cases:
                rec.publish(f"{ROOT}/cmd/boiler/{point}/set", body)
            rec.publish(f"{ROOT}/cmd/boiler/setpoint/set", b"{not json")
            rec.publish(f"{ROOT}/cmd/boiler/setpoint/set", b"[1, 2]")

            def results(ms: list[Any]) -> list[dict[str, Any]]:
                return [m.json() for m in ms if m.topic.endswith("/result")]

            got = await asyncio.to_thread(rec.wait_for, lambda ms: len(results(ms)) >= len(cases) + 2, 15)
            by_id = {r["id"]: r for r in results(got) if r["id"]}
            for _, body, code in cases:
                r = by_id[body["id"]]
                assert (r["ok"], r["code"]) == (False, code), r
                assert r["error"]
            anonymous = [r for r in results(got) if not r["id"]]
            assert [r["code"] for r in anonymous] == ["bad_request", "bad_request"]
            assert dev.get_holding(1, 1) == [40]  # nothing was written
            assert not dev.writes


async def test_retained_command_is_refused(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        # A retained set command left on the broker must not move anything when the agent starts.
        rec.publish(f"{ROOT}/cmd/boiler/setpoint/set", {"v": 99, "id": "old"}, retain=True)
        async with running_gateway(base_config(tmp_path, mosquitto.port, [boiler(dev.port)])):
            res = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/cmd/boiler/setpoint/result"))[-1].json()
            assert res["code"] == "bad_request"
            assert "retained" in res["error"]
            assert dev.get_holding(1, 1) == [40]
        rec.publish(f"{ROOT}/cmd/boiler/setpoint/set", b"", retain=True)  # clear it
