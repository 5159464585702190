"""The local API (docs/api.md) on a running gateway with real peers (a pymodbus device, mosquitto,
rule files): devices and points with their last values, rules and their states, active alerts,
last writes, a write through the command router; bad requests get a clear JSON answer; another
module adds a middleware, routes and TLS to the same server; `picogate write` and `picogate watch`
attached to the running gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from _agent import base_config, eventually
from _peers import free_port
from picogate._gateway import Gateway
from picogate.gateway import GatewayConfig

API = "/api/v1"


def boiler(port: int) -> dict[str, Any]:
    return {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "timeout": "500ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "unit": "°C"},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "min": 0, "max": 90},
            {"name": "burner", "table": "coil", "address": 0, "writable": True},
        ],
    }


RULES = (
    "RULE overheat\n"
    "  ON boiler.temp > 85\n"
    "  CLEAR boiler.temp < 80\n"
    '  THEN alert("Boiler at {boiler.temp} °C", severity="critical"); set(boiler.burner, false)\n'
    '  ELSE alert("Boiler back to normal", severity="info")\n'
    "END\n"
    "\n"
    "# a one-line rule: no name\n"
    'ON boiler.temp > 88 THEN alert("very hot")\n'
)


def config(tmp_path: Path, broker_port: int, device_port: int, http_port: int) -> dict[str, Any]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "boiler.rules").write_text(RULES, encoding="utf-8")
    return base_config(
        tmp_path,
        broker_port,
        [boiler(device_port)],
        metrics={"enabled": True, "host": "127.0.0.1", "port": http_port},
        rules={"dir": str(rules_dir), "debounce": "50ms", "status_interval": "200ms"},
    )


@contextlib.asynccontextmanager
async def gateway(
    cfg: dict[str, Any], before_run: Callable[[Gateway], None] = lambda gw: None
) -> AsyncIterator[Gateway]:
    """The gateway in this loop; `before_run` may add routes, middleware or TLS to `gw.http`."""
    gw = Gateway(GatewayConfig.model_validate(cfg), drain_timeout=5)
    async with gw:
        before_run(gw)
        task = asyncio.create_task(gw.run(install_signals=False))
        async with asyncio.timeout(10):
            await gw.ready.wait()
        try:
            yield gw
        finally:
            gw.stop()
            async with asyncio.timeout(15):
                await task


@pytest.fixture
async def plant(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> AsyncIterator[tuple[Any, Gateway, str]]:
    dev = await modbus_tcp_server({1: {"hr": [20, 50], "co": [True]}})
    port = free_port()
    async with gateway(config(tmp_path, mosquitto.port, dev.port, port)) as gw:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await until_json(http, f"{url}{API}/points/boiler.temp", lambda p: p["value"] == 20)
        yield dev, gw, url


async def until_json(
    http: aiohttp.ClientSession, url: str, pred: Callable[[Any], bool], within: float = 10.0
) -> Any:
    deadline = time.monotonic() + within
    while True:
        async with http.get(url) as r:
            body = await r.json()
        if r.status == 200 and pred(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: still {body}")
        await asyncio.sleep(0.05)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


async def post(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kw.pop("headers", {"Content-Type": "application/json"})
    async with http.post(url + f"{API}/writes", data=data, headers=headers, **kw) as r:
        return r.status, await r.json()


# --------------------------------------------------------------------------- reads


async def test_devices_and_points_with_their_last_values(plant: tuple[Any, Gateway, str]) -> None:
    dev, _gw, url = plant
    async with aiohttp.ClientSession() as http:
        status, body = await get(http, f"{url}{API}/devices")
        assert status == 200
        [boiler_json] = body["devices"]
        assert boiler_json["name"] == "boiler"
        assert boiler_json["state"] == "online"
        assert boiler_json["origin"] == "modbus"
        points = {p["point"]: p for p in boiler_json["points"]}
        assert set(points) == {"temp", "setpoint", "burner"}
        temp = points["temp"]
        assert (temp["key"], temp["value"], temp["unit"], temp["quality"], temp["type"]) == (
            "boiler.temp",
            20,
            "°C",
            "good",
            "int16",
        )
        assert abs(temp["ts"] - time.time() * 1000) < 10_000
        assert temp["published"] is not None
        assert temp["published"] <= temp["ts"]
        assert points["setpoint"]["writable"] is True
        assert (points["setpoint"]["min"], points["setpoint"]["max"]) == (0, 90)
        assert points["burner"]["value"] is True

        dev.set_holding(1, 0, 42)
        point = await until_json(http, f"{url}{API}/points/boiler.temp", lambda p: p["value"] == 42)
        assert point["device"] == "boiler"
        assert (await get(http, f"{url}{API}/devices/boiler"))[1]["name"] == "boiler"
        status, body = await get(http, f"{url}{API}/points?device=boiler")
        assert status == 200
        assert len(body["points"]) == 3

        # What is not there: a JSON answer that says what is.
        status, body = await get(http, f"{url}{API}/devices/kettle")
        assert (status, body["code"]) == (404, "unknown_device")
        assert "boiler" in body["error"]
        status, body = await get(http, f"{url}{API}/points?device=kettle")
        assert (status, body["code"]) == (404, "unknown_device")
        for key in ("boiler.tmp", "boiler", "a.b.c"):
            status, body = await get(http, f"{url}{API}/points/{key}")
            assert (status, body["code"]) == (404, "unknown_point"), key
            assert "device.point" in body["error"]

        status, body = await get(http, f"{url}{API}")
        assert body["gateway"]["id"] == "gw1"
        assert f"{API}/writes" in body["endpoints"]
        status, body = await get(http, f"{url}{API}/status")
        assert body["devices"] == {"online": 1, "offline": 0}
        assert body["health"]["status"] in ("ok", "degraded")
        # /metrics and /healthz are still served by the same server.
        async with http.get(f"{url}/metrics") as r:
            assert r.status == 200
            assert "picogate_readings_received" in await r.text()


async def test_rules_their_states_and_active_alerts(plant: tuple[Any, Gateway, str]) -> None:
    dev, _gw, url = plant
    async with aiohttp.ClientSession() as http:
        body = await until_json(http, f"{url}{API}/rules", lambda b: b["version"] is not None)
        assert body["enabled"] is True
        assert body["ok"] is True
        rules = {r["id"]: r for r in body["rules"]}
        overheat = rules["overheat"]
        assert (overheat["name"], overheat["state"], overheat["file"], overheat["line"]) == (
            "overheat",
            "idle",
            "boiler.rules",
            1,
        )
        assert overheat["text"].startswith("RULE overheat\n  ON boiler.temp > 85")
        assert overheat["text"].endswith("END")
        [anon] = [r for r in body["rules"] if r["id"].startswith("anon-")]
        assert anon["name"] is None
        assert (anon["file"], anon["line"]) == ("boiler.rules", 9)
        assert anon["text"] == 'ON boiler.temp > 88 THEN alert("very hot")'
        assert (await get(http, f"{url}{API}/alerts"))[1]["active"] == []

        dev.set_holding(1, 0, 90)
        alerts = await until_json(http, f"{url}{API}/alerts", lambda b: len(b["active"]) == 2)
        by_rule = {a["rule"]: a for a in alerts["active"]}
        hot = by_rule["overheat"]
        assert (hot["severity"], hot["message"], hot["state"]) == ("critical", "Boiler at 90 °C", "active")
        assert (hot["file"], hot["line"]) == ("boiler.rules", 1)
        very = by_rule[anon["id"]]
        assert (very["message"], very["file"], very["line"]) == ("very hot", "boiler.rules", 9)
        assert very["text"] == anon["text"]
        rules_now = {r["id"]: r for r in (await get(http, f"{url}{API}/rules"))[1]["rules"]}
        assert rules_now["overheat"]["state"] == "active"
        assert rules_now["overheat"]["fired"] == 1
        assert rules_now["overheat"]["last_fired"] is not None

        # The rule's set() went through the router: it is among the last writes.
        writes = await until_json(http, f"{url}{API}/writes", lambda b: len(b["writes"]) >= 1)
        [w] = writes["writes"]
        assert (w["key"], w["value"], w["origin"], w["code"], w["ok"]) == (
            "boiler.burner",
            False,
            "rule:overheat",
            "ok",
            True,
        )

        dev.set_holding(1, 0, 70)
        alerts = await until_json(http, f"{url}{API}/alerts", lambda b: b["active"] == [])
        events = [(a["rule"], a["state"], a["message"]) for a in alerts["recent"]]
        assert ("overheat", "cleared", "Boiler back to normal") in events
        assert (anon["id"], "cleared", "very hot") in events
        assert ("overheat", "active", "Boiler at 90 °C") in events


# --------------------------------------------------------------------------- the write


async def test_a_write_goes_through_the_router(
    plant: tuple[Any, Gateway, str], caplog: pytest.LogCaptureFixture
) -> None:
    dev, gw, url = plant
    caplog.set_level(logging.INFO, logger="picogate.audit")
    async with aiohttp.ClientSession() as http:
        status, body = await post(
            http, url, {"device": "boiler", "point": "setpoint", "value": 70, "id": "t1"}
        )
        assert status == 200, body
        assert (body["ok"], body["code"], body["written"], body["id"]) == (True, "ok", 70, "t1")
        assert body["origin"] == "api:127.0.0.1"
        assert dev.get_holding(1, 1) == [70]
        audit = [r for r in caplog.records if r.name == "picogate.audit"]
        assert audit[-1].audit["origin"] == "api:127.0.0.1"  # type: ignore[attr-defined]
        assert audit[-1].audit["code"] == "ok"  # type: ignore[attr-defined]
        # The same id again: answered, not written again.
        dev.set_holding(1, 1, 50)
        status, body = await post(
            http, url, {"device": "boiler", "point": "setpoint", "value": 70, "id": "t1"}
        )
        assert (status, body["code"]) == (200, "ok")
        assert dev.get_holding(1, 1) == [50]

        refused = {
            "out of range": ({"device": "boiler", "point": "setpoint", "value": 700}, 422, "out_of_range"),
            "not a number": ({"device": "boiler", "point": "setpoint", "value": "85,5"}, 422, "bad_type"),
            "read-only": ({"device": "boiler", "point": "temp", "value": 1}, 422, "read_only"),
            "unknown point": ({"device": "boiler", "point": "tmp", "value": 1}, 404, "unknown_point"),
            "no value": ({"device": "boiler", "point": "setpoint"}, 400, "bad_request"),
            "unknown field": ({"device": "boiler", "point": "setpoint", "v": 1}, 400, "bad_request"),
            "point not text": ({"device": "boiler", "point": 3, "value": 1}, 400, "bad_request"),
            "bad id": ({"device": "boiler", "point": "setpoint", "value": 1, "id": [1]}, 400, "bad_request"),
            "a list": ([1, 2], 400, "bad_request"),
            "not JSON": (b"{nope", 400, "bad_request"),
        }
        for case, (request, want_status, want_code) in refused.items():
            status, body = await post(http, url, request)
            assert (status, body["code"], body["ok"]) == (want_status, want_code, False), (case, body)
            assert body["error"], case
        assert dev.get_holding(1, 1) == [50]  # nothing written
        assert (
            "setpoint: 700 is above the maximum 90"
            in (await post(http, url, {"device": "boiler", "point": "setpoint", "value": 700}))[1]["error"]
        )

        # Not JSON by its type: refused before anything is read (a browser form cannot write).
        status, body = await post(http, url, b"device=boiler", headers={"Content-Type": "text/plain"})
        assert (status, body["code"]) == (415, "unsupported_media_type")

        writes = (await get(http, f"{url}{API}/writes"))[1]["writes"]
        assert writes[0]["key"] == "boiler.setpoint"
        assert writes[0]["code"] == "ok"
        assert {w["code"] for w in writes} >= {"ok", "out_of_range", "bad_type", "read_only", "bad_request"}

        # Who may write is the API's to decide (the console's authentication sets it).
        gw.api.may_write = lambda request: "only operators may write"
        status, body = await post(http, url, {"device": "boiler", "point": "setpoint", "value": 60})
        assert (status, body) == (403, {"error": "only operators may write", "code": "forbidden"})
        assert dev.get_holding(1, 1) == [50]


async def test_a_write_to_an_offline_device_says_so(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50], "co": [True]}})
    port = free_port()
    async with gateway(config(tmp_path, mosquitto.port, dev.port, port)):
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await until_json(http, f"{url}{API}/devices/boiler", lambda d: d["state"] == "online")
            dev.set_silent(1)
            device = await until_json(http, f"{url}{API}/devices/boiler", lambda d: d["state"] == "offline")
            assert device["reason"]
            assert device["since"] is not None
            status, body = await post(http, url, {"device": "boiler", "point": "setpoint", "value": 60})
            assert (status, body["code"]) == (503, "device_offline")


# --------------------------------------------------------------------------- the seams


async def test_another_module_adds_middleware_routes_and_tls(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, certs: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50], "co": [True]}})
    port = free_port()

    @web.middleware
    async def token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/console") or request.headers.get("Authorization") == "Bearer t0ken":
            return await handler(request)
        return web.json_response({"error": "log in first", "code": "unauthorized"}, status=401)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="console")

    def add_console(gw: Gateway) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs / "server.crt", certs / "server.key")
        gw.http.ssl = context
        gw.http.add_middleware(token)
        gw.http.add_routes([web.get("/console", page)])

    async with gateway(config(tmp_path, mosquitto.port, dev.port, port), add_console) as gw:
        assert gw.http.url == f"https://127.0.0.1:{port}"
        client_context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        url = f"https://127.0.0.1:{port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context)) as http:
            async with http.get(f"{url}/console") as r:
                assert (r.status, await r.text()) == (200, "console")
            status, body = await get(http, f"{url}{API}/devices")
            assert (status, body["code"]) == (401, "unauthorized")
            status, body = await post(
                http,
                url,
                {"device": "boiler", "point": "setpoint", "value": 65},
                headers={"Content-Type": "application/json", "Authorization": "Bearer t0ken"},
            )
            assert (status, body["code"]) == (200, "ok")
        assert dev.get_holding(1, 1) == [65]


# --------------------------------------------------------------------------- the commands


async def picogate(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "picogate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "120", "LINES": "40", "PATH": "/usr/bin:/bin"},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_picogate_write_and_watch_attach_to_the_running_gateway(
    plant: tuple[Any, Gateway, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dev, gw, url = plant
    caplog.set_level(logging.INFO, logger="picogate.audit")
    code, out, err = await picogate("write", "boiler.setpoint", "72", "--url", url)
    assert (code, out, err) == (0, "boiler.setpoint = 72: ok (" + out.split("(", 1)[1], "")
    assert dev.get_holding(1, 1) == [72]
    assert [r for r in caplog.records if r.name == "picogate.audit"][-1].audit["origin"] == "api:127.0.0.1"  # type: ignore[attr-defined]

    code, out, err = await picogate("write", "boiler.setpoint", "85,5", "--url", url)
    assert code == 1
    assert "bad_type" in err
    assert "write 85.5" in err
    code, out, err = await picogate("write", "boiler.setpoint", "700", "--url", url)
    assert code == 1
    assert "out_of_range: boiler.setpoint: 700 is above the maximum 90" in err
    code, out, err = await picogate("write", "setpoint", "70", "--url", url)
    assert code == 2
    assert "device.point" in err
    assert dev.get_holding(1, 1) == [72]

    # The address from the gateway's own configuration file.
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text(
        json.dumps(gw.config.model_dump(mode="json", exclude_defaults=True)), encoding="utf-8"
    )
    code, out, err = await picogate("write", "boiler.burner", "true", "-c", str(cfg_file))
    assert (code, err) == (0, ""), err
    assert dev.get_coils(1, 0) == [True]

    dev.set_holding(1, 0, 90)
    await eventually(lambda: len(gw.api.snapshot_json()["alerts"]["active"]) == 2)
    code, out, err = await picogate("watch", "--once", "--url", url)
    assert (code, err) == (0, "")
    assert "gateway gw1" in out
    assert "2 active alerts" in out
    assert "Boiler at 90 °C" in out
    assert re.search(r"^ boiler +temp ", out, re.M)
    assert "● online" in out
    assert "setpoint ✎" in out
    # an unnamed rule by its place and its text
    assert 'boiler.rules:9 ON boiler.temp > 88 THEN alert("very hot")' in out
    assert "boiler.setpoint = 72 by api:127.0.0.1" in out


async def test_picogate_write_and_watch_without_a_gateway(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["write", "boiler.setpoint", "70"], ["watch", "--once"]):
        code, _out, err = await picogate(*command, "--url", url)
        assert code == 3, (command, err)
        assert f"no gateway answers at {url} (connection refused)" in err
        assert "Traceback" not in err
    cfg_file = tmp_path / "gateway.yaml"
    cfg_file.write_text("metrics:\n  enabled: false\n", encoding="utf-8")
    code, _out, err = await picogate("write", "boiler.setpoint", "70", "-c", str(cfg_file))
    assert code == 2
    assert "metrics.enabled: false" in err


# --------------------------------------------------------------------------- the docs


def doc_examples() -> list[Any]:
    """The JSON examples of docs/api.md, in order: a device, the rules, the alerts, a write, its answer."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def same_fields(doc: Any, real: Any, where: str) -> None:
    """The example has exactly the fields the API gives, at every level."""
    if isinstance(doc, dict):
        assert isinstance(real, dict), where
        assert set(doc) == set(real), f"{where}: the doc has {sorted(doc)}, the API {sorted(real)}"
        for key in doc:
            if key not in ("address",):
                same_fields(doc[key], real[key], f"{where}.{key}")
    elif isinstance(doc, list) and doc and real:
        same_fields(doc[0], real[0], f"{where}[0]")


async def test_the_docs_examples_are_what_the_api_answers(plant: tuple[Any, Gateway, str]) -> None:
    dev, _gw, url = plant
    device, rules, alerts, write, answer = doc_examples()
    async with aiohttp.ClientSession() as http:
        dev.set_holding(1, 0, 90)
        real_alerts = await until_json(http, f"{url}{API}/alerts", lambda b: len(b["active"]) == 2)
        same_fields(alerts, real_alerts, "alerts")
        same_fields(device, (await get(http, f"{url}{API}/devices/boiler"))[1], "device")
        same_fields(rules, (await get(http, f"{url}{API}/rules"))[1], "rules")
        status, real_answer = await post(http, url, {**write, "id": "doc"})
        assert status == 200, real_answer
        same_fields(answer, real_answer, "write")


# --------------------------------------------------------------------------- live updates


async def next_event(stream: aiohttp.ClientResponse, within: float = 10.0) -> tuple[str, Any]:
    """The next server-sent event (name, JSON data); keep-alive comments are skipped."""
    name, data = "", b""
    async with asyncio.timeout(within):
        while True:
            line = await stream.content.readline()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip(b"\n")
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
            elif not line and name:
                return name, json.loads(data)


async def event_where(
    stream: aiohttp.ClientResponse, name: str, pred: Callable[[Any], bool], within: float = 10.0
) -> Any:
    deadline = time.monotonic() + within
    while True:
        got, data = await next_event(stream, max(0.1, deadline - time.monotonic()))
        if got == name and pred(data):
            return data


async def test_live_updates_send_what_changed(plant: tuple[Any, Gateway, str]) -> None:
    dev, gw, url = plant
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}{API}/events?interval=0.25") as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"] == "text/event-stream"
            name, snapshot = await next_event(stream)
            assert name == "snapshot"
            assert set(snapshot) == {"gateway", "status", "devices", "rules", "alerts", "writes"}
            assert snapshot["devices"][0]["name"] == "boiler"

            dev.set_holding(1, 0, 55)
            points = await event_where(stream, "points", lambda b: any(p["value"] == 55 for p in b["points"]))
            assert [p["key"] for p in points["points"]] == ["boiler.temp"]  # only what changed
            assert gw.api.streams.open == 1

            dev.set_holding(1, 0, 90)
            seen: dict[str, Any] = {}
            wanted = {
                "alerts": lambda b: len(b["active"]) == 2,
                "rules": lambda b: any(r["state"] == "active" for r in b["rules"]),
                "writes": lambda b: bool(b["writes"]),
            }
            while set(seen) != set(wanted):
                name, data = await next_event(stream)
                if name in wanted and wanted[name](data):
                    seen[name] = data
            assert seen["writes"]["writes"][0]["origin"] == "rule:overheat"

            dev.set_silent(1)
            devices = await event_where(stream, "devices", lambda b: b["devices"][0]["state"] == "offline")
            assert devices["devices"][0]["name"] == "boiler"

        # Bad requests get a clear answer.
        status, body = await get(http, f"{url}{API}/events?interval=soon")
        assert (status, body["code"]) == (400, "bad_request")
        status, body = await get(http, f"{url}{API}/events?devices=boiler,kettle")
        assert (status, body["code"]) == (404, "unknown_device")
        assert "kettle" in body["error"]


async def test_a_stream_ends_when_the_gateway_stops(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50], "co": [True]}})
    port = free_port()
    async with aiohttp.ClientSession() as http:
        async with gateway(config(tmp_path, mosquitto.port, dev.port, port)) as gw:
            stream = await http.get(f"http://127.0.0.1:{port}{API}/events?devices=boiler")
            assert (await next_event(stream))[0] == "snapshot"
            assert gw.api.streams.open == 1
        # The gateway stopped and closed its server: the stream ended (not cut after a grace time).
        assert gw.api.streams.open == 0
        with pytest.raises((EOFError, aiohttp.ClientPayloadError)):
            await event_where(stream, "never", lambda b: False, within=5)
        stream.release()


async def test_whatever_is_posted_gets_a_json_answer_and_writes_nothing_it_should_not(
    plant: tuple[Any, Gateway, str], caplog: pytest.LogCaptureFixture
) -> None:
    dev, _gw, url = plant
    rng = random.Random(17)
    leaves: list[Any] = [
        None,
        True,
        0,
        -1,
        2**70,
        1e308,
        "",
        "boiler",
        "setpoint",
        "x" * 300,
        "é\u0000",
        [],
        {},
    ]
    keys = ["device", "point", "value", "id", "v", ""]

    def anything(depth: int = 0) -> Any:
        pick = rng.random()
        if depth > 3 or pick < 0.5:
            return rng.choice(leaves)
        if pick < 0.75:
            return [anything(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(keys): anything(depth + 1) for _ in range(rng.randint(0, 4))}

    bodies: list[Any] = [anything() for _ in range(150)]
    bodies += [b"", b"\xff\xfe", b"[" * 5000, b'{"device": "boiler", "point": "setpoint", "value": NaN}']
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            status, answer = await post(http, url, body)
            assert 400 <= status < 500, (body, answer)
            assert isinstance(answer, dict), answer
            assert answer["code"] in {"bad_request", "unknown_point", "bad_type", "out_of_range", "read_only"}
            assert answer["ok"] is False
            assert answer["error"]
    assert dev.get_holding(1, 1) == [50]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_picogate_write_never_says_not_written_when_the_request_may_have_arrived(
    tmp_path: Path,
) -> None:
    """A gateway that takes the request and closes the connection without an answer (it died, it
    was restarted): the write may have been applied, so `picogate write` must not say that no
    gateway answered (exit 3, "nothing happened")."""

    async def take_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(take_and_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        code, _out, err = await picogate(
            "write", "boiler.setpoint", "70", "--url", f"http://127.0.0.1:{port}"
        )
    assert code == 1, err
    assert "the write may or may not have been applied" in err
    assert "no gateway answers" not in err


async def test_a_write_to_a_name_no_point_can_have_is_unknown_point_with_the_name_cut_short(
    plant: tuple[Any, Gateway, str], caplog: pytest.LogCaptureFixture
) -> None:
    _dev, _gw, url = plant
    caplog.set_level(logging.INFO, logger="picogate.audit")
    async with aiohttp.ClientSession() as http:
        for device, point in (("Boiler", "setpoint"), ("boiler", "set point"), ("b" * 5000, "x\ny")):
            status, body = await post(http, url, {"device": device, "point": point, "value": 1})
            assert (status, body["code"]) == (404, "unknown_point"), body
            assert len(body["error"]) < 400
            assert "lower-case letters" in body["error"]
    audit = [r for r in caplog.records if r.name == "picogate.audit"]
    assert all(len(r.getMessage()) < 1000 for r in audit)
