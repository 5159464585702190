"""The CoAP server against a real aiocoap client over loopback, with mosquitto and a pymodbus
device as the other real peers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import orjson
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from _agent import base_config, recorder, running_gateway, wait_msgs
from _peers import free_port
from picogate._gateway import Gateway
from picogate.coap import CoapServer

ROOT = "picogate/gw1"
NODE = {
    "name": "node1",
    "points": {
        "temp": {"type": "float32", "unit": "Cel"},
        "hum": {"type": "float64", "unit": "%RH"},
        "count": {"type": "uint16"},
        "door": {"type": "bool"},
        "label": {"type": "string"},
    },
}


def coap_section(port: int, **extra: Any) -> dict[str, Any]:
    return {"bind": "127.0.0.1", "port": port, "nodes": [NODE], **extra}


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        yield ctx
    finally:
        await ctx.shutdown()


def server_of(gw: Gateway) -> CoapServer:
    return next(c for c in gw.parts.components if isinstance(c, CoapServer))


async def started(gw: Gateway) -> CoapServer:
    server = server_of(gw)
    async with asyncio.timeout(5):
        await server.ready.wait()
    return server


async def request(
    ctx: aiocoap.Context,
    code: Code,
    uri: str,
    payload: bytes = b"",
    *,
    cf: int | None = None,
    accept: int | None = None,
    con: bool = True,
) -> aiocoap.Message:
    tuning = aiocoap.Reliable if con else aiocoap.Unreliable
    msg = aiocoap.Message(code=code, uri=uri, payload=payload, transport_tuning=tuning)
    if cf is not None:
        msg.opt.content_format = cf
    if accept is not None:
        msg.opt.accept = accept
    async with asyncio.timeout(10):
        return await ctx.request(msg).response


@pytest.mark.parametrize("con", [True, False], ids=["CON", "NON"])
async def test_senml_json_and_cbor_reach_mqtt(
    mosquitto: Any, tmp_path: Path, client: aiocoap.Context, con: bool
) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port))
    url = f"coap://127.0.0.1:{port}/r/node1"
    senml_json = orjson.dumps(
        [
            {"bn": "node1/", "bt": 1.8e9, "bu": "Cel", "n": "temp", "v": 21.5},
            {"n": "temp", "t": 10, "v": 22.0},
            {"n": "hum", "u": "%RH", "v": 40.25},
            {"n": "door", "vb": True},
            {"n": "label", "vs": "hall"},
        ]
    )
    senml_cbor = cbor2.dumps([{-2: "node1/", 0: "count", 2: 7}, {0: "hum", 1: "%RH", 2: 41.5}])
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg) as gw:
            await started(gw)
            r1 = await request(client, Code.POST, url, senml_json, cf=110, con=con)
            assert r1.code == Code.CHANGED, r1.payload
            # a NON request gets a NON answer; a CON one a piggy-backed ACK or (after an empty ACK) a CON
            assert (r1.mtype == aiocoap.NON) == (not con), r1.mtype
            r2 = await request(client, Code.POST, url, senml_cbor, cf=112, con=con)
            assert r2.code == Code.CHANGED, r2.payload
            r3 = await request(client, Code.POST, url, b'{"count": 9}', cf=50, con=con)
            assert r3.code == Code.CHANGED, r3.payload
            msgs = await wait_msgs(
                rec,
                lambda ms: sum(m.topic == f"{ROOT}/data/node1/count" for m in ms) >= 2,
                what="node1 readings",
            )
    temps = [m.json() for m in msgs if m.topic == f"{ROOT}/data/node1/temp"]
    assert [t["v"] for t in temps] == [21.5, 22.0]
    assert [t["ts"] for t in temps] == [1_800_000_000_000, 1_800_000_010_000]  # bt + t honoured
    assert temps[0]["unit"] == "Cel"  # bu honoured
    assert [m.json()["v"] for m in msgs if m.topic == f"{ROOT}/data/node1/hum"] == [40.25, 41.5]
    assert [m.json()["v"] for m in msgs if m.topic == f"{ROOT}/data/node1/door"] == [True]
    assert [m.json()["v"] for m in msgs if m.topic == f"{ROOT}/data/node1/label"] == ["hall"]
    assert [m.json()["v"] for m in msgs if m.topic == f"{ROOT}/data/node1/count"] == [7, 9]


async def test_response_only_after_outbox_commit(
    mosquitto: Any, tmp_path: Path, client: aiocoap.Context
) -> None:
    """A 2.04 means the readings are in the outbox: their commit finished before the answer left."""
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port))
    async with running_gateway(cfg) as gw:
        await started(gw)
        committed: list[bytes] = []
        original = gw.pipeline.outbox.append

        async def slow_append(envelopes: Any, *, prompt: bool = False) -> None:
            await asyncio.sleep(0.5)  # a slow disk: the answer must wait for it
            await original(envelopes)
            committed.extend(e.payload for e in envelopes)

        gw.pipeline.outbox.append = slow_append  # type: ignore[method-assign]
        for con in (True, False):
            committed.clear()
            r = await request(
                client, Code.POST, f"coap://127.0.0.1:{port}/r/node1", b'{"temp": %d.5}' % con, cf=50, con=con
            )
            assert r.code == Code.CHANGED
            assert any(b'"v":%d.5' % con in p for p in committed), committed


async def test_blockwise_report_is_assembled_and_short_reports_need_no_block_layer(
    mosquitto: Any, tmp_path: Path, client: aiocoap.Context
) -> None:
    """A report bigger than one datagram arrives in Block1 pieces (aiocoap's client splits it):
    the server assembles it (Site's way); a one-datagram report takes the short way. Both land."""
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port, max_payload=8192))
    big = orjson.dumps(
        [{"bn": "node1/", "n": "count", "t": -60, "v": 0}]
        + [{"n": "count", "t": -60 + i, "v": i, "u": ""} for i in range(1, 121)]
    )
    assert len(big) > 2048  # at least three blocks of 1024
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/node1/count") as rec:
        async with running_gateway(cfg) as gw:
            server = await started(gw)
            # The blocks one by one, as a node sends them (RFC 7959): 2.31 Continue, then 2.04.
            chunks = [big[i : i + 1024] for i in range(0, len(big), 1024)]
            for num, chunk in enumerate(chunks):
                msg = aiocoap.Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/r/node1", payload=chunk)
                msg.opt.content_format = 110
                msg.opt.block1 = BlockOption.BlockwiseTuple(num, num < len(chunks) - 1, 6)
                async with asyncio.timeout(10):
                    r = await client.request(msg, handle_blockwise=False).response
                last = num == len(chunks) - 1
                assert r.code == (Code.CHANGED if last else Code.CONTINUE), (num, r.code, r.payload)
            assert server.readings == 121
            r = await request(client, Code.POST, f"coap://127.0.0.1:{port}/r/node1", big, cf=110)
            assert r.code == Code.CHANGED, r.payload  # aiocoap's client splits it by itself
            r = await request(client, Code.POST, f"coap://127.0.0.1:{port}/r/node1", b'{"count": 500}', cf=50)
            assert r.code == Code.CHANGED
            assert r.opt.block1 is None
            assert server.readings == 243
            msgs = await wait_msgs(rec, lambda m: len(m) >= 243, what="243 count readings")
    assert [m.json()["v"] for m in msgs] == list(range(121)) * 2 + [500]


async def test_get_and_observe(mosquitto: Any, tmp_path: Path, client: aiocoap.Context) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port))
    base = f"coap://127.0.0.1:{port}"
    async with running_gateway(cfg) as gw:
        await started(gw)
        r = await request(client, Code.GET, f"{base}/p/node1/temp")
        assert r.code == Code.NOT_FOUND
        assert b"no value yet" in r.payload
        await request(client, Code.POST, f"{base}/r/node1", b'{"temp": 20.5}', cf=50)
        r = await request(client, Code.GET, f"{base}/p/node1/temp")
        assert r.code == Code.CONTENT
        assert orjson.loads(r.payload)["v"] == 20.5
        r = await request(client, Code.GET, f"{base}/p/node1/temp", accept=110)
        assert int(r.opt.content_format) == 110
        assert orjson.loads(r.payload)[0]["v"] == 20.5
        assert orjson.loads(r.payload)[0]["n"] == "node1/temp"
        r = await request(client, Code.GET, f"{base}/p/node1/temp", accept=112)
        assert cbor2.loads(r.payload)[0][2] == 20.5
        r = await request(client, Code.GET, f"{base}/p/node1/temp", accept=0)
        assert r.code == Code.NOT_ACCEPTABLE

        obs_req = client.request(aiocoap.Message(code=Code.GET, uri=f"{base}/p/node1/temp", observe=0))
        first = await asyncio.wait_for(obs_req.response, 10)
        assert orjson.loads(first.payload)["v"] == 20.5
        got: list[float] = []

        async def collect() -> None:
            async for n in obs_req.observation:
                got.append(orjson.loads(n.payload)["v"])
                if len(got) == 2:
                    return

        task = asyncio.create_task(collect())
        for v in (21.0, 21.0, 22.5):  # the repeated value is no change: no notification
            await request(client, Code.POST, f"{base}/r/node1", orjson.dumps({"temp": v}), cf=50)
        await asyncio.wait_for(task, 10)
        obs_req.observation.cancel()
        assert got == [21.0, 22.5]


async def test_well_known_core(mosquitto: Any, tmp_path: Path, client: aiocoap.Context) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port))
    async with running_gateway(cfg) as gw:
        await started(gw)
        r = await request(client, Code.GET, f"coap://127.0.0.1:{port}/.well-known/core")
    text = r.payload.decode()
    assert int(r.opt.content_format) == 40
    assert '</r/node1>;rt="picogate.report"' in text
    assert "</p/node1/temp>" in text
    assert 'if="core.s"' in text
    assert 'ct="50 110 112"' in text
    assert "obs" in text


async def test_put_to_modbus_point(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, client: aiocoap.Context
) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    port = free_port()
    boiler = {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": dev.port,
        "poll": "100ms",
        "timeout": "300ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "scale": 0.1},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "min": 0, "max": 900},
        ],
    }
    cfg = base_config(tmp_path, mosquitto.port, [boiler], coap=coap_section(port))
    base = f"coap://127.0.0.1:{port}/p/boiler"
    async with running_gateway(cfg) as gw:
        await started(gw)
        r = await request(client, Code.PUT, f"{base}/setpoint", b"650", cf=50)
        assert r.code == Code.CHANGED, r.payload
        assert dev.get_holding(1, 1) == [650]
        r = await request(client, Code.PUT, f"{base}/setpoint", b'{"v": 700}', cf=50)
        assert r.code == Code.CHANGED
        assert dev.get_holding(1, 1) == [700]
        r = await request(client, Code.PUT, f"{base}/setpoint", b"1000", cf=50)
        assert r.code == Code.BAD_REQUEST
        assert b"out_of_range" in r.payload
        r = await request(client, Code.PUT, f"{base}/setpoint", b'"high"', cf=50)
        assert r.code == Code.BAD_REQUEST
        assert b"bad_type" in r.payload
        r = await request(client, Code.PUT, f"{base}/temp", b"1", cf=50)
        assert r.code == Code.METHOD_NOT_ALLOWED
        assert b"read-only" in r.payload
        r = await request(client, Code.PUT, f"{base}/nope", b"1", cf=50)
        assert r.code == Code.NOT_FOUND
        r = await request(client, Code.PUT, f"{base}/setpoint", b"\x01", cf=42)
        assert r.code == Code.UNSUPPORTED_CONTENT_FORMAT
        assert dev.get_holding(1, 1) == [700]


BAD_CASES = [
    ("unknown device", "/r/ghost", b'{"temp": 1}', 50, Code.NOT_FOUND, b"unknown device"),
    ("unknown point", "/r/node1", b'{"nope": 1}', 50, Code.NOT_FOUND, b"unknown point node1.nope"),
    ("wrong type", "/r/node1", b'{"door": "open"}', 50, Code.BAD_REQUEST, b"bool point"),
    ("out of type range", "/r/node1", b'{"count": 70000}', 50, Code.BAD_REQUEST, b"outside uint16"),
    ("wrong unit", "/r/node1", b'[{"n": "temp", "u": "K", "v": 1}]', 110, Code.BAD_REQUEST, b"not 'K'"),
    ("malformed JSON", "/r/node1", b'{"temp": ', 50, Code.BAD_REQUEST, b"malformed JSON"),
    ("malformed SenML", "/r/node1", b'{"n": "temp"}', 110, Code.BAD_REQUEST, b"array of records"),
    ("no value", "/r/node1", b'[{"n": "temp"}]', 110, Code.BAD_REQUEST, b"no value"),
    ("malformed CBOR", "/r/node1", b"\xff\x00", 112, Code.BAD_REQUEST, b"malformed CBOR"),
    ("bad point name", "/r/node1", b'{"Temp!": 1}', 50, Code.BAD_REQUEST, b"point name"),
    ("text payload", "/r/node1", b"temp=1", 0, Code.UNSUPPORTED_CONTENT_FORMAT, b"text/plain"),
    (
        "oversized",
        "/r/node1",
        b'{"label": "' + b"x" * 1100 + b'"}',
        50,
        Code.REQUEST_ENTITY_TOO_LARGE,
        b"exceeds",
    ),
    ("unknown path", "/x/y", b"", None, Code.NOT_FOUND, b"no resource /x/y"),
]


async def test_bad_input_gets_its_code_and_is_counted(
    mosquitto: Any, tmp_path: Path, client: aiocoap.Context
) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port))
    async with running_gateway(cfg) as gw:
        server = await started(gw)
        for what, path, payload, cf, code, text in BAD_CASES:
            method = Code.GET if path == "/x/y" else Code.POST
            r = await request(client, method, f"coap://127.0.0.1:{port}{path}", payload, cf=cf)
            assert r.code == code, (what, r.code, r.payload)
            assert text in r.payload, (what, r.payload)
        r = await request(client, Code.DELETE, f"coap://127.0.0.1:{port}/r/node1")
        assert r.code == Code.METHOD_NOT_ALLOWED
        assert gw.pipeline.received == 0  # nothing of a refused report got in
        metrics = gw.parts.metrics.render().decode()
    assert server.responses["4.00"] == 8
    assert server.responses["4.04"] == 3
    assert server.responses["4.13"] == 1
    assert server.responses["4.15"] == 1
    assert 'picogate_coap_responses_total{code="4.00"} 8.0' in metrics


async def test_auto_register(mosquitto: Any, tmp_path: Path, client: aiocoap.Context) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port, auto_register=True))
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg) as gw:
            await started(gw)
            body = orjson.dumps(
                [{"bn": "tag7/", "n": "rssi", "u": "dBW", "v": -70}, {"n": "moving", "vb": False}]
            )
            r = await request(client, Code.POST, f"coap://127.0.0.1:{port}/r/tag7", body, cf=110)
            assert r.code == Code.CHANGED, r.payload
            info = gw.registry.get("tag7", "rssi")
            assert (info.type.value, info.unit, info.origin) == ("float64", "dBW", "coap")
            assert gw.registry.get("tag7", "moving").type.value == "bool"
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/tag7/rssi" for m in ms))


async def test_fuzz_never_crashes(mosquitto: Any, tmp_path: Path, client: aiocoap.Context) -> None:
    """Random and mutated payloads in every content format: always a 2.xx or 4.xx answer."""
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port, auto_register=True))
    rnd = random.Random(7)
    seeds = [
        b'[{"bn": "node1/", "n": "temp", "v": 21.5}]',
        cbor2.dumps([{-2: "node1/", 0: "temp", 2: 1.5}]),
        b'{"temp": 1, "door": true}',
    ]
    async with running_gateway(cfg) as gw:
        server = await started(gw)
        for i in range(150):
            if i % 3 == 0:
                payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
            else:
                b = bytearray(rnd.choice(seeds))
                for _ in range(rnd.randrange(1, 4)):
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
                payload = bytes(b)
            cf = rnd.choice([None, 0, 50, 60, 110, 112, 9999])
            r = await request(
                client, Code.POST, f"coap://127.0.0.1:{port}/r/node1", payload, cf=cf, con=i % 2 == 0
            )
            assert r.code.is_successful() or r.code.class_ == 4, (payload, cf, r.code, r.payload)
        # still serving
        r = await request(client, Code.POST, f"coap://127.0.0.1:{port}/r/node1", b'{"temp": 3}', cf=50)
        assert r.code == Code.CHANGED
    assert "5.00" not in server.responses


async def test_unexpected_failure_is_answered_and_counted(
    mosquitto: Any, tmp_path: Path, client: aiocoap.Context
) -> None:
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap_section(port))
    url = f"coap://127.0.0.1:{port}/r/node1"
    async with running_gateway(cfg) as gw:
        server = await started(gw)
        original = gw.pipeline.emit

        async def broken(readings: Any) -> None:
            raise RuntimeError("disk on fire")

        gw.pipeline.emit = broken  # type: ignore[method-assign]
        r = await request(client, Code.POST, url, b'{"temp": 1}', cf=50)
        assert r.code == Code.INTERNAL_SERVER_ERROR
        assert b"internal error" in r.payload
        gw.pipeline.emit = original  # type: ignore[method-assign]
        r = await request(client, Code.POST, url, b'{"temp": 2}', cf=50)
        assert r.code == Code.CHANGED
    assert server.responses["5.00"] == 1
