"""OSCORE: a node with a security context must protect its reports; writes need OSCORE too.
A real aiocoap client with the matching context, over loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.numbers.codes import Code

from _agent import base_config, running_gateway
from _peers import free_port
from picogate.coap import CoapServer

pytest.importorskip("aiocoap.oscore_sitewrapper", reason="needs aiocoap[oscore]")


def context(path: Path, sender: str, recipient: str) -> Path:
    path.mkdir(parents=True)
    settings = {
        "sender-id_hex": sender,
        "recipient-id_hex": recipient,
        "secret_ascii": "picogate-test-secret",
    }
    (path / "settings.json").write_text(json.dumps(settings))
    return path


async def test_oscore_reports_and_writes(mosquitto: Any, tmp_path: Path) -> None:
    port = free_port()
    coap = {
        "bind": "127.0.0.1",
        "port": port,
        "nodes": [
            {"name": "node1", "points": {"temp": {"type": "float32"}}},
            {"name": "node2", "points": {"temp": {"type": "float32"}}},
        ],
        "oscore": [{"node": "node1", "context": str(context(tmp_path / "gw-node1", "01", "02"))}],
    }
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap)
    base = f"coap://127.0.0.1:{port}"
    plain = await aiocoap.Context.create_client_context(transports=["udp6"])
    secure = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
    secure.client_credentials.load_from_dict(
        {f"{base}/*": {"oscore": {"basedir": str(context(tmp_path / "node1", "02", "01")) + "/"}}}
    )

    async def send(ctx: aiocoap.Context, code: Code, path: str, payload: bytes) -> aiocoap.Message:
        msg = aiocoap.Message(code=code, uri=f"{base}{path}", payload=payload, content_format=50)
        async with asyncio.timeout(10):
            return await ctx.request(msg).response

    try:
        async with running_gateway(cfg) as gw:
            server = next(c for c in gw.parts.components if isinstance(c, CoapServer))
            async with asyncio.timeout(5):
                await server.ready.wait()
            r = await send(secure, Code.POST, "/r/node1", b'{"temp": 1.5}')
            assert r.code == Code.CHANGED, r.payload
            assert gw.pipeline.latest[("node1", "temp")].value == 1.5
            r = await send(plain, Code.POST, "/r/node1", b'{"temp": 2.5}')
            assert r.code == Code.UNAUTHORIZED
            assert b"reports of node1 must be protected with OSCORE" in r.payload
            assert gw.pipeline.latest[("node1", "temp")].value == 1.5
            r = await send(plain, Code.POST, "/r/node2", b'{"temp": 3.5}')  # no context: open
            assert r.code == Code.CHANGED
            r = await send(plain, Code.PUT, "/p/node1/temp", b"1")
            assert r.code == Code.UNAUTHORIZED
            r = await send(secure, Code.PUT, "/p/node1/temp", b"1")
            assert r.code == Code.METHOD_NOT_ALLOWED  # past the check: the point is read-only
    finally:
        await plain.shutdown()
        await secure.shutdown()


async def test_unusable_context_is_a_start_up_error(mosquitto: Any, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    coap = {
        "port": free_port(),
        "nodes": [{"name": "node1", "points": {"temp": {}}}],
        "oscore": [{"node": "node1", "context": str(tmp_path / "empty")}],
    }
    with pytest.raises(ValueError, match=r"coap.oscore\[0\] \(node1\): cannot load the OSCORE context"):
        async with running_gateway(base_config(tmp_path, mosquitto.port, [], coap=coap)):
            pass
