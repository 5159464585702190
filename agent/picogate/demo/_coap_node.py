"""The demo's simulated CoAP node: a battery-powered yard sensor that wakes every few seconds and
POSTs its temperature as SenML to the gateway, as a real node would."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aiocoap
import orjson

log = logging.getLogger("picogate.demo")


class CoapNode:
    """POSTs `application/senml+json` to `coap://<host>:<port>/r/<name>` every `period` seconds."""

    def __init__(self, host: str, port: int, *, name: str = "yard", period: float = 2.0) -> None:
        self.url = f"coap://{host}:{port}/r/{name}"
        self.name = name
        self.period = period
        self.sent = 0
        self.refused = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._rnd = random.Random(7)
        self._temp = 12.0

    async def __aenter__(self) -> CoapNode:
        self._task = asyncio.create_task(self._run(), name="demo-coap-node")
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Stop between two reports: a request cancelled in flight makes aiocoap log an
        # InvalidStateError when its answer comes in after all.
        self._stopping.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(12):
                    await self._task
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    def _pack(self) -> bytes:
        self._temp += self._rnd.uniform(-0.3, 0.3)
        return orjson.dumps(
            [
                {"bn": f"{self.name}/", "bu": "Cel", "n": "temperature", "v": round(self._temp, 1)},
            ]
        )

    async def _run(self) -> None:
        ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        try:
            while not self._stopping.is_set():
                msg = aiocoap.Message(code=aiocoap.POST, uri=self.url, payload=self._pack())
                msg.opt.content_format = 110  # application/senml+json
                try:
                    async with asyncio.timeout(10):
                        response = await ctx.request(msg).response
                    if response.code == aiocoap.CHANGED:
                        self.sent += 1
                    else:
                        self.refused += 1
                        log.warning("CoAP node %s: %s %s", self.name, response.code, response.payload[:200])
                except (TimeoutError, aiocoap.error.Error, OSError) as exc:
                    log.warning("CoAP node %s: %s", self.name, exc or type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.period):
                        await self._stopping.wait()
        finally:
            await ctx.shutdown()
