"""EdgeX over a real mosquitto as the message bus: events on the right topics, registration with
the device validation round trip, commands from a client that behaves like core-command (GET and
SET; a SET lands in a pymodbus device), and the device service's own REST API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from _agent import base_config, eventually, recorder, running_gateway
from _edgex import BusPeer, FakeEdgex, check, check_envelope, decode_payload, request_schema, response_schema
from _peers import free_port

EVENT_PATH = "/event/{serviceName}/{profileName}/{deviceName}/{sourceName}"
CMD_PATH = "/device/name/{name}/{command}"
TOPIC = "edgex/events/device/picogate/picogate-boiler/boiler/Readings"


def boiler(port: int) -> dict[str, Any]:
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
            {"name": "burner", "table": "coil", "address": 0, "writable": True},
        ],
    }


def edgex_section(broker_port: int, fake: FakeEdgex, api_port: int, **extra: Any) -> dict[str, Any]:
    return {
        "bus": {"host": "127.0.0.1", "port": broker_port},
        "core_metadata": fake.url,
        "core_data": fake.url,
        "device_service": {"port": api_port},
        **extra,
    }


@pytest.mark.parametrize("version", [3, 4])
async def test_events_registration_and_commands_on_the_bus(
    version: int, mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    peer = await asyncio.to_thread(BusPeer, mosquitto.host, mosquitto.port, version=version)
    fake = await FakeEdgex(validate_device=lambda d: asyncio.to_thread(peer.validate, d)).start()
    api_port = free_port()
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [boiler(dev.port)],
        edgex=edgex_section(mosquitto.port, fake, api_port, version=version),
    )
    try:
        with recorder(mosquitto.host, mosquitto.port, "edgex/events/#") as rec:
            async with running_gateway(cfg):
                # events: the right topic, a MessageEnvelope, an AddEventRequest inside
                msg = (await asyncio.to_thread(rec.wait_topic, TOPIC))[0]
                env = msg.json()
                check_envelope(env, version=version)
                req = decode_payload(env)
                check("core-data", request_schema("core-data", "post", EVENT_PATH), req)
                values = {r["resourceName"]: (r["valueType"], r["value"]) for r in req["event"]["readings"]}
                assert values == {
                    "temp": ("Float64", "21.5"),
                    "setpoint": ("Uint16", "40"),
                    "burner": ("Bool", "false"),
                }

                # registration, with core-metadata's validation request answered on the bus
                await eventually(lambda: "boiler" in fake.devices, what="device registered")
                assert fake.bad_requests == []
                assert set(fake.profiles) == {"picogate-boiler"}
                assert set(fake.services) == {"picogate"}
                assert fake.services["picogate"]["baseAddress"] == f"http://127.0.0.1:{api_port}"
                ghost = {**fake.devices["boiler"], "name": "ghost"}
                assert "not defined in picogate" in await asyncio.to_thread(peer.validate, ghost)

                # GET over the bus: an EventResponse
                reply = await asyncio.to_thread(
                    peer.command,
                    "boiler",
                    "temp",
                    "get",
                    query={"ds-pushevent": "false", "ds-returnevent": "true"},
                )
                assert reply["errorCode"] == 0, reply["decoded"]
                check("device-sdk", response_schema("device-sdk", "get", CMD_PATH, 200), reply["decoded"])
                assert [r["value"] for r in reply["decoded"]["event"]["readings"]] == ["21.5"]
                whole = await asyncio.to_thread(peer.command, "boiler", "Readings", "GET")
                assert len(whole["decoded"]["event"]["readings"]) == 3
                quiet = await asyncio.to_thread(
                    peer.command, "boiler", "temp", "get", query={"ds-returnevent": "false"}
                )
                assert (quiet["errorCode"], quiet["payload"]) == (0, None)

                # SET over the bus lands in the Modbus device
                reply = await asyncio.to_thread(
                    peer.command, "boiler", "setpoint", "set", {"setpoint": "650"}
                )
                assert (reply["errorCode"], reply["payload"]) == (0, None)
                assert dev.get_holding(1, 1) == [650]
                reply = await asyncio.to_thread(peer.command, "boiler", "Readings", "set", {"burner": "true"})
                assert reply["errorCode"] == 0, reply["decoded"]
                assert dev.get_coils(1, 0) == [True]

                # bad requests get an error reply, not silence
                for args, text in [
                    (("boiler", "setpoint", "set", {"setpoint": "9999"}), "out_of_range"),
                    (("boiler", "setpoint", "set", {"setpoint": "hot"}), "is not an integer"),
                    (("boiler", "temp", "set", {"temp": "1"}), "read-only"),
                    (("boiler", "nozzle", "get"), "nozzle not found"),
                    (("ghost", "temp", "get"), "device ghost not found"),
                    (("boiler", "temp", "delete"), "get or set"),
                    (("boiler", "setpoint", "set", None), "SET needs a JSON object"),
                ]:
                    reply = await asyncio.to_thread(peer.command, *args)
                    assert reply["errorCode"] == 1, args
                    assert reply["contentType"] == "text/plain", args
                    assert text in reply["decoded"], (args, reply["decoded"])
                assert dev.get_holding(1, 1) == [650]
                reply = await asyncio.to_thread(
                    peer.command, "boiler", "setpoint", "set", {"setpoint": "1"}, patch={"payload": "%%%"}
                )
                assert reply["errorCode"] == 1
                assert "neither base64" in reply["decoded"]

                # the device service's REST API, as core-command's REST path calls it
                base = f"http://127.0.0.1:{api_port}/api/v3"
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{base}/ping") as resp:
                        assert resp.status == 200
                        check(
                            "device-sdk",
                            response_schema("device-sdk", "get", "/ping", 200),
                            await resp.json(),
                        )
                    async with http.get(f"{base}/device/name/boiler/temp") as resp:
                        body = await resp.json()
                        assert resp.status == 200, body
                        check("device-sdk", response_schema("device-sdk", "get", CMD_PATH, 200), body)
                    put = {"setpoint": "700"}
                    check("device-sdk", request_schema("device-sdk", "put", CMD_PATH), put)
                    async with http.put(f"{base}/device/name/boiler/setpoint", json=put) as resp:
                        assert resp.status == 200, await resp.text()
                        check(
                            "device-sdk",
                            response_schema("device-sdk", "put", CMD_PATH, 200),
                            await resp.json(),
                        )
                    assert dev.get_holding(1, 1) == [700]
                    for method, url, body, status in [
                        ("GET", "device/name/ghost/temp", None, 404),
                        ("GET", "device/name/boiler/nozzle", None, 404),
                        ("PUT", "device/name/boiler/temp", {"temp": "1"}, 405),
                        ("PUT", "device/name/boiler/setpoint", {"setpoint": "-1"}, 400),
                    ]:
                        async with http.request(method, f"{base}/{url}", json=body) as resp:
                            err = await resp.json()
                            assert resp.status == status == err["statusCode"], (url, err)
                            # 400 is what the SDK answers to a bad value; the spec lists only 404/405/423/500
                            check("device-sdk", "ErrorResponse", err)
                    async with http.put(f"{base}/device/name/boiler/setpoint", data=b"{") as resp:
                        assert resp.status == 400
                        assert "not JSON" in (await resp.json())["message"]
                    big = b'{"setpoint": "' + b"1" * 70_000 + b'"}'  # above commands.max_payload
                    async with http.put(f"{base}/device/name/boiler/setpoint", data=big) as resp:
                        err = await resp.json()
                        assert resp.status == 413 == err["statusCode"], err
                        assert "commands.max_payload" in err["message"]
                    assert dev.get_holding(1, 1) == [700]
    finally:
        peer.close()
        await fake.stop()


async def test_bus_outage_delays_events_and_loses_none(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """The bus broker goes away: events wait in the outbox and are published (and acknowledged
    by the broker) once it is back; a subscriber then sees the replayed events."""
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    fake = await FakeEdgex().start()
    device = boiler(dev.port) | {"max_silence": "100ms"}  # an event every poll
    cfg = base_config(
        tmp_path,
        mosquitto.port,
        [device],
        edgex=edgex_section(
            mosquitto.port,
            fake,
            free_port(),
            register_on_start=False,
            bus={
                "host": "127.0.0.1",
                "port": mosquitto.port,
                "reconnect": {"min_delay": "100ms", "max_delay": "500ms"},
            },
        ),
    )
    cfg["mqtt"]["enabled"] = False
    try:
        async with running_gateway(cfg) as gw:
            bus = next(s for s in gw.parts.sinks if s.name == "edgex")
            await eventually(lambda: bus.stats.delivered >= 2, what="events acknowledged")
            await asyncio.to_thread(mosquitto.stop)
            await eventually(lambda: gw.parts.outbox.depth("edgex") >= 5, what="events waiting in the outbox")
            waiting = gw.parts.outbox.depth("edgex")
            before = bus.stats.delivered
            await asyncio.to_thread(mosquitto.start)
            with recorder(mosquitto.host, mosquitto.port, "edgex/events/#") as rec:
                await eventually(
                    lambda: bus.stats.delivered >= before + waiting, what="the backlog acknowledged"
                )
                assert bus.stats.connects >= 2
                msgs = await asyncio.to_thread(rec.wait_topic, TOPIC)
                req = decode_payload(msgs[0].json())
                check("core-data", request_schema("core-data", "post", EVENT_PATH), req)
    finally:
        await fake.stop()
