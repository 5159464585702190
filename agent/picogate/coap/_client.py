"""The CoAP client source: resources of devices that serve CoAP, polled (GET every `interval`) or
observed (RFC 7641); their values enter as `Reading`s, and writes go out as PUT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any, Literal

import aiocoap
import orjson
from aiocoap.numbers.codes import Code

from picogate._metrics import counter
from picogate._model import PointInfo, PointType, Quality, Reading, Value
from picogate._pipeline import Pipeline
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import ErrorCode, WriteError, WriteTicket, coerce
from picogate.coap._config import CoapClientDevice, CoapResource
from picogate.coap._payload import CF_JSON, PayloadError, decode_value
from picogate.coap._points import client_points
from picogate.coap._points import url as resource_url

log = logging.getLogger("picogate.coap")

_FLOATS = (PointType.FLOAT32, PointType.FLOAT64)


class CoapClientSource:
    name = "coap-client"
    kind: Literal["source", "service"] = "source"

    def __init__(
        self, devices: list[CoapClientDevice], *, registry: PointRegistry, pipeline: Pipeline
    ) -> None:
        self.devices = {d.name: d for d in devices}
        self.registry = registry
        self.pipeline = pipeline
        self.requests = 0
        self.failures = 0
        self._ctx: aiocoap.Context | None = None
        self._ctx_ready = asyncio.Event()
        self._stop = asyncio.Event()

    def register(self) -> None:
        for info in client_points(list(self.devices.values())):
            self.registry.add(info)

    def writer_for(self, device: str) -> _Writer:
        return _Writer(self, self.devices[device])

    def collect(self) -> Iterable[Any]:
        yield counter("picogate_coap_client_requests", "CoAP client requests", [], [([], self.requests)])
        yield counter(
            "picogate_coap_client_failures", "Failed CoAP client requests", [], [([], self.failures)]
        )

    async def context(self) -> aiocoap.Context:
        await self._ctx_ready.wait()
        assert self._ctx is not None
        return self._ctx

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        self._ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
        self._ctx_ready.set()
        tasks = [
            asyncio.create_task(
                self._observe(d, r) if r.observe else self._poll(d, r), name=f"coap-{d.name}-{r.point}"
            )
            for d in self.devices.values()
            for r in d.resources
        ]
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._ctx_ready.clear()
            await self._ctx.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def _poll(self, device: CoapClientDevice, res: CoapResource) -> None:
        url = resource_url(device, res.path)
        while True:
            started = time.monotonic()
            try:
                assert self._ctx is not None
                self.requests += 1
                async with asyncio.timeout(device.timeout):
                    response = await self._ctx.request(aiocoap.Message(code=Code.GET, uri=url)).response
                await self._take(device, res, response)
            except (TimeoutError, aiocoap.error.Error, OSError) as exc:
                self.failures += 1
                await self._offline(device, f"GET {url}: {exc or type(exc).__name__}")
            await asyncio.sleep(max(0.0, res.interval - (time.monotonic() - started)))

    async def _observe(self, device: CoapClientDevice, res: CoapResource) -> None:
        url = resource_url(device, res.path)
        while True:
            assert self._ctx is not None
            self.requests += 1
            req = self._ctx.request(aiocoap.Message(code=Code.GET, uri=url, observe=0))
            try:
                async with asyncio.timeout(device.timeout):
                    first = await req.response
                await self._take(device, res, first)
                async for response in req.observation:
                    await self._take(device, res, response)
            except (TimeoutError, aiocoap.error.Error, OSError) as exc:
                self.failures += 1
                await self._offline(device, f"observe {url}: {exc or type(exc).__name__}")
            finally:
                with contextlib.suppress(Exception):
                    req.observation.cancel()
            await asyncio.sleep(res.interval)

    async def _take(self, device: CoapClientDevice, res: CoapResource, response: aiocoap.Message) -> None:
        url = resource_url(device, res.path)
        if not response.code.is_successful():
            self.failures += 1
            text = response.payload.decode(errors="replace")[:200]
            log.warning("CoAP %s answered %s %s", url, response.code, text)
            return
        cf = response.opt.content_format
        try:
            raw = decode_value(response.payload, None if cf is None else int(cf))
            info = self.registry.get(device.name, res.point)
            value: Value = coerce(PointInfo(info.device, info.name, info.type), raw)
        except (PayloadError, WriteError) as exc:
            self.failures += 1
            log.warning("CoAP %s: %s", url, exc)
            return
        if res.type in _FLOATS and not isinstance(value, float):
            value = float(value)
        now = time.time_ns()
        status = self.registry.device(device.name)
        if status is not None and status.state is not DeviceState.ONLINE:
            self.registry.set_device_state(device.name, DeviceState.ONLINE, ts=now)
            await self.pipeline.device_status(
                DeviceStatus(device.name, DeviceState.ONLINE, "", now), wait=False
            )
        await self.pipeline.emit(
            [Reading(device.name, res.point, value, now, Quality.GOOD, res.unit)], wait=False
        )

    async def _offline(self, device: CoapClientDevice, reason: str) -> None:
        now = time.time_ns()
        if self.registry.set_device_state(device.name, DeviceState.OFFLINE, reason=reason, ts=now):
            log.warning("CoAP device %s offline: %s", device.name, reason)
            await self.pipeline.device_status(
                DeviceStatus(device.name, DeviceState.OFFLINE, reason, now), wait=False
            )


class _Writer:
    """Writes a point of a CoAP device: PUT of the value as JSON to the resource's path.

    The PUT goes out only before the write's deadline, and is given up at the device's `timeout`
    or the deadline, whichever comes first: a PUT without an answer is `outcome_unknown` (the
    device may have applied it and its answer got lost)."""

    def __init__(self, source: CoapClientSource, device: CoapClientDevice) -> None:
        self.source = source
        self.device = device
        self.paths = {r.point: r.path for r in device.resources}

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        url = resource_url(self.device, self.paths[point.name])
        ctx = await self.source.context()
        msg = aiocoap.Message(code=Code.PUT, uri=url, payload=orjson.dumps(value), content_format=CF_JSON)
        self.source.requests += 1
        ticket.send()
        request = ctx.request(msg)
        try:
            async with asyncio.timeout(min(self.device.timeout, max(ticket.remaining(), 0.0))):
                response = await request.response
        except (TimeoutError, aiocoap.error.TimeoutError):
            self.source.failures += 1
            raise WriteError(
                ErrorCode.OUTCOME_UNKNOWN,
                f"PUT {url}: no answer within {self.device.timeout:g} s: it may or may not have been applied",
            ) from None
        except (aiocoap.error.Error, OSError) as exc:
            self.source.failures += 1
            raise WriteError(ErrorCode.DEVICE_OFFLINE, f"PUT {url}: {exc}") from None
        finally:
            if not request.response.done():
                request.response.cancel()  # no more retransmissions of a PUT given up
        if not response.code.is_successful():
            self.source.failures += 1
            text = response.payload.decode(errors="replace")[:200]
            raise WriteError(ErrorCode.DEVICE_ERROR, f"PUT {url} answered {response.code}: {text}")
