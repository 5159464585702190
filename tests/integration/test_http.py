"""The gateway's local HTTP server: bounded requests, clear 4xx answers, nothing unhandled in the
log, and the server stays up; routes added by the parts that own them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from _agent import base_config, running_gateway
from _peers import free_port
from picogate._http import MAX_BODY, MAX_HEADERS, MAX_REQUEST_LINE, HttpServer
from picogate._metrics import Metrics


async def exchange(port: int, data: bytes, *, timeout: float = 5) -> tuple[int, bytes]:
    """Send `data` on a new connection; (status, body) of the answer (0 if none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError, StopIteration):
        return 0, b""
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), body


def get(path: str, *headers: bytes) -> bytes:
    return b"".join([f"GET {path} HTTP/1.1\r\nHost: gw\r\n".encode(), *headers, b"Connection: close\r\n\r\n"])


HOSTILE = {
    "64 KB request line": (get("/metrics?" + "a" * 65536), 414),
    "request line over the limit": (get("/" + "a" * MAX_REQUEST_LINE), 414),
    "100 KB header": (get("/metrics", b"X-Big: " + b"b" * 100_000 + b"\r\n"), 431),
    "too many headers": (get("/metrics", *[b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 10)]), 431),
    "TLS on the HTTP port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400),
    "not HTTP": (b"HELLO\r\n\r\n", 400),
    "bad header": (b"GET / HTTP/1.1\r\nHost gw\r\n\r\n", 400),
    "body too large": (
        f"PUT /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: {MAX_BODY + 1}\r\nConnection: close\r\n\r\n".encode(),
        413,
    ),
}


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    http = HttpServer(host="127.0.0.1", port=0)
    metrics = Metrics()
    http.app.add_routes(metrics.routes())

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a route")

    # Parts register their own routes before the server starts.
    http.app.router.add_put("/echo", echo)
    http.app.router.add_get("/broken", broken)
    await http.start()
    try:
        yield http
    finally:
        await http.close()


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_requests_get_a_clear_4xx_and_the_server_stays_up(
    case: str, server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    data, expected = HOSTILE[case]
    caplog.set_level(logging.DEBUG)
    status, body = await exchange(server.port, data)
    assert status == expected, body
    assert body.startswith(f"{expected} ".encode())
    # Nothing above debug level, and no traceback, in the log.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text
    status, body = await exchange(server.port, get("/healthz"))
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


async def test_routes_errors_and_bounds(server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    status, body = await exchange(server.port, get("/nope"))
    assert status == 404
    assert b"/healthz, /metrics" in body
    payload = b"x" * MAX_BODY
    put = b"PUT /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(payload)
    assert await exchange(server.port, put + payload) == (200, payload)
    status, _ = await exchange(
        server.port, b"POST /metrics HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"
    )
    assert status == 405
    # A route that raises: 500, one error line with its traceback, and the server goes on.
    status, body = await exchange(server.port, get("/broken"))
    assert status == 500
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert (await exchange(server.port, get("/metrics")))[0] == 200
    assert server.refused == {}


async def test_the_gateways_metrics_and_health_on_its_http_server(mosquitto: Any, tmp_path: Path) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], metrics={"enabled": True, "port": port})
    async with running_gateway(cfg) as gw:
        assert gw.http.running
        assert gw.http.host == "127.0.0.1"  # the default: loopback only
        status, _ = await exchange(port, HOSTILE["64 KB request line"][0])
        assert status == 414
        status, _ = await exchange(port, HOSTILE["100 KB header"][0])
        assert status == 431
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/metrics"))
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        head, _, text = answer.partition(b"\r\n\r\n")
        assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
        assert b'picogate_http_refused_total{code="414"} 1.0' in text
        assert b'picogate_http_refused_total{code="431"} 1.0' in text
        assert b"picogate_readings_received_total" in text
        status, body = await exchange(port, get("/healthz"))
        assert status == 200
        assert json.loads(body)["sinks"]["mqtt"]["connected"] in (True, False)


async def test_the_edgex_device_service_api_is_bounded_the_same_way() -> None:
    from picogate.edgex._commands import EdgexNames
    from picogate.edgex._server import DeviceServiceApi

    commands: Any = SimpleNamespace(
        names=EdgexNames("picogate", "picogate-", "Readings"),
        router=SimpleNamespace(policy=SimpleNamespace(max_payload=64 * 1024)),
    )
    api = DeviceServiceApi(commands, host="127.0.0.1", port=0)
    await api.start()
    try:
        assert (await exchange(api.port, HOSTILE["64 KB request line"][0]))[0] == 414
        assert (await exchange(api.port, HOSTILE["100 KB header"][0]))[0] == 431
        assert (await exchange(api.port, get("/api/v3/version")))[0] == 200
    finally:
        await api.close()
