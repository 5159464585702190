"""The CoAP client source against a real aiocoap server (a device that serves CoAP) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiocoap
import orjson
import pytest
from aiocoap import resource
from aiocoap.numbers.codes import Code

from _agent import base_config, eventually, recorder, running_gateway, values_on, wait_msgs
from _peers import free_port
from picogate._router import WriteRequest

ROOT = "picogate/gw1"


class Value(resource.ObservableResource):
    """A resource holding one value: GET (JSON, or text), PUT (JSON), Observe."""

    def __init__(self, value: Any, *, text: bool = False) -> None:
        super().__init__()
        self.value = value
        self.text = text
        self.puts: list[Any] = []

    def set(self, value: Any) -> None:
        self.value = value
        self.updated_state()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        if self.text:
            return aiocoap.Message(payload=str(self.value).encode(), content_format=0)
        return aiocoap.Message(payload=orjson.dumps(self.value), content_format=50)

    async def render_put(self, request: aiocoap.Message) -> aiocoap.Message:
        value = orjson.loads(request.payload)
        if value == 13:
            return aiocoap.Message(code=Code.BAD_REQUEST, payload=b"unlucky")
        self.puts.append(value)
        self.set(value)
        return aiocoap.Message(code=Code.CHANGED)


@pytest.fixture
async def device() -> AsyncIterator[tuple[int, dict[str, Value]]]:
    port = free_port()
    res = {"temp": Value(20.5, text=True), "level": Value(3), "setpoint": Value(50)}
    site = resource.Site()
    site.add_resource(("sensors", "temp"), res["temp"])
    site.add_resource(("level",), res["level"])
    site.add_resource(("setpoint",), res["setpoint"])
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port), transports=["udp6"])
    try:
        yield port, res
    finally:
        await ctx.shutdown()


async def test_poll_observe_and_write(
    mosquitto: Any, tmp_path: Path, device: tuple[int, dict[str, Value]]
) -> None:
    port, res = device
    coap = {
        "server": False,
        "clients": [
            {
                "name": "sensor",
                "host": "127.0.0.1",
                "port": port,
                "timeout": "2s",
                "resources": [
                    {"point": "temp", "path": "/sensors/temp", "unit": "Cel", "interval": "100ms"},
                    {"point": "level", "path": "/level", "type": "int32", "observe": True},
                    {
                        "point": "setpoint",
                        "path": "/setpoint",
                        "type": "uint16",
                        "writable": True,
                        "interval": "5s",
                    },
                ],
            }
        ],
    }
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap)
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg) as gw:
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/sensor/level" for m in ms))
            res["temp"].value = 21.0
            res["level"].set(4)
            res["level"].set(5)
            await wait_msgs(
                rec,
                lambda ms: (
                    5 in values_on(rec, f"{ROOT}/data/sensor/level")
                    and 21.0 in values_on(rec, f"{ROOT}/data/sensor/temp")
                ),
                what="polled and observed values",
            )
            result = await gw.router.write(WriteRequest("sensor", "setpoint", 75, origin="test"))
            assert result.ok, result
            assert res["setpoint"].puts == [75]
            bad = await gw.router.write(WriteRequest("sensor", "setpoint", 13, origin="test"))
            assert not bad.ok
            assert bad.code.value == "device_error"
            assert "unlucky" in bad.error
    assert values_on(rec, f"{ROOT}/data/sensor/temp")[:2] == [20.5, 21.0]
    assert rec.on(f"{ROOT}/data/sensor/temp")[0].json()["unit"] == "Cel"
    levels = values_on(rec, f"{ROOT}/data/sensor/level")
    assert levels[0] == 3
    assert levels[-1] == 5


async def test_unreachable_device_goes_offline(mosquitto: Any, tmp_path: Path) -> None:
    coap = {
        "server": False,
        "clients": [
            {
                "name": "gone",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout": "300ms",
                "resources": [{"point": "temp", "path": "/t", "interval": "100ms"}],
            }
        ],
    }
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap)
    async with running_gateway(cfg) as gw:
        await eventually(
            lambda: (s := gw.registry.device("gone")) is not None and s.state.value == "offline",
            what="device offline",
        )
        assert gw.pipeline.latest.get(("gone", "temp")) is None
