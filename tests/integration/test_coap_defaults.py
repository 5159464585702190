"""CoAP's safe defaults on a running gateway: the server listens on loopback only unless told
otherwise, and `coap.writes` is checked before a PUT reaches the command router."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.numbers.codes import Code

from _agent import base_config, running_gateway
from _peers import free_port
from picogate.coap import CoapServer

NODE = {"name": "node1", "points": {"temp": {"type": "float32"}}}


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        yield ctx
    finally:
        await ctx.shutdown()


def udp_listeners(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses of the UDP sockets bound to `port` (Linux /proc/net/udp and udp6)."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for table, v6 in (("/proc/net/udp", False), ("/proc/net/udp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            address, _, hexport = local.partition(":")
            if int(hexport, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.IPv6Address(raw) if v6 else ipaddress.IPv4Address(raw))
    return found


async def put(client: aiocoap.Context, port: int, path: str, payload: bytes) -> aiocoap.Message:
    msg = aiocoap.Message(
        code=Code.PUT, uri=f"coap://127.0.0.1:{port}{path}", payload=payload, content_format=50
    )
    async with asyncio.timeout(10):
        return await client.request(msg).response


async def test_the_server_binds_loopback_by_default(
    mosquitto: Any, tmp_path: Path, client: aiocoap.Context
) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap={"port": port, "nodes": [NODE]})  # no bind
    async with running_gateway(cfg) as gw:
        server = next(c for c in gw.parts.components if isinstance(c, CoapServer))
        async with asyncio.timeout(5):
            await server.ready.wait()
        listeners = udp_listeners(port)
        assert listeners
        for address in listeners:
            mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            assert (mapped or address).is_loopback, listeners
        # The gateway itself may write (here the point is read-only: the router answers).
        r = await put(client, port, "/p/node1/temp", b"1")
        assert r.code == Code.METHOD_NOT_ALLOWED
        assert b"read_only" in r.payload


async def test_writes_off(mosquitto: Any, tmp_path: Path, client: aiocoap.Context) -> None:
    port = free_port()
    coap = {"bind": "127.0.0.1", "port": port, "writes": "off", "nodes": [NODE]}
    async with running_gateway(base_config(tmp_path, mosquitto.port, [], coap=coap)) as gw:
        server = next(c for c in gw.parts.components if isinstance(c, CoapServer))
        async with asyncio.timeout(5):
            await server.ready.wait()
        r = await put(client, port, "/p/node1/temp", b"1")
        assert r.code == Code.METHOD_NOT_ALLOWED
        assert r.payload == b"writes over CoAP are off (coap.writes: off)"
