"""docs/coap.md is tested: its set-up config runs, and each report example marked
`<!-- coap-example: METHOD PATH CF [CODE] -->` is sent by a real aiocoap client and gets CODE."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import aiocoap
import yaml
from aiocoap.numbers.codes import Code

from _agent import base_config, running_gateway
from _peers import free_port
from picogate.coap import CoapServer
from picogate.coap._payload import decode_value

DOC = (Path(__file__).resolve().parents[2] / "docs" / "coap.md").read_text(encoding="utf-8")
EXAMPLE = re.compile(r"<!-- coap-example: (\w+) (\S+) (\d+)(?: ([\d.]+))? -->\n```json\n(.*?)```", re.S)
SETUP = re.search(r"```yaml\n(.*?)```", DOC, re.S)


def test_doc_has_examples() -> None:
    kinds = [m.group(1) for m in EXAMPLE.finditer(DOC)]
    assert kinds.count("POST") >= 2
    assert "PUT" in kinds


def test_put_examples_decode() -> None:
    for m in EXAMPLE.finditer(DOC):
        if m.group(1) == "PUT":
            assert decode_value(m.group(5).encode(), int(m.group(3))) == 650


async def test_post_examples_are_accepted(mosquitto: Any, tmp_path: Path) -> None:
    assert SETUP is not None
    coap = yaml.safe_load(SETUP.group(1))["coap"]
    port = free_port()
    coap.update(bind="127.0.0.1", port=port)
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap)
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        async with running_gateway(cfg) as gw:
            server = next(c for c in gw.parts.components if isinstance(c, CoapServer))
            async with asyncio.timeout(5):
                await server.ready.wait()
            for m in EXAMPLE.finditer(DOC):
                method, path, cf, code, body = m.groups()
                if method != "POST":
                    continue
                msg = aiocoap.Message(
                    code=Code.POST, uri=f"coap://127.0.0.1:{port}{path}", payload=body.encode()
                )
                msg.opt.content_format = int(cf)
                async with asyncio.timeout(10):
                    r = await ctx.request(msg).response
                assert str(r.code.dotted) == code, (body, r.code, r.payload)
            assert gw.pipeline.latest[("tank_3", "pump_on")].value is True
            assert gw.pipeline.latest[("tank_3", "count")].value == 17

            # the shell example's POST, with aiocoap's own command-line client
            shell = re.search(r"```sh\n(.*?)```", DOC, re.S)
            assert shell is not None
            post = next(c for c in shell.group(1).replace("\\\n", " ").splitlines() if "-m POST" in c)
            argv = shlex.split(post.replace("gateway.local", f"127.0.0.1:{port}"))
            argv[0] = str(Path(sys.executable).with_name(argv[0]))
            proc = await asyncio.create_subprocess_exec(*argv)
            async with asyncio.timeout(20):
                assert await proc.wait() == 0
            assert gw.pipeline.latest[("tank_3", "level")].value == 80.5
    finally:
        await ctx.shutdown()
