"""Each resource of the CoAP devices the gateway reads, asked once (`picogate poll --once`): GET,
even for a resource the gateway observes, and the value decoded as the client source decodes it;
the payload as it came, for the caller to print."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiocoap
from aiocoap.numbers.codes import Code

from picogate._model import PointInfo, PointType, Quality, Value
from picogate._router import WriteError, coerce
from picogate.coap._config import CoapClientDevice
from picogate.coap._payload import PayloadError, decode_value
from picogate.coap._points import url as resource_url

__all__ = ["CoapDeviceReading", "CoapPointReading", "read_once"]

_FLOATS = (PointType.FLOAT32, PointType.FLOAT64)


@dataclass(frozen=True, slots=True)
class CoapPointReading:
    """One resource as read: `payload` is what came (text, or hex for a binary payload), with its
    content format; `error` says why a bad point is bad."""

    point: str
    url: str
    value: Value | None
    unit: str
    quality: Quality
    payload: str = ""
    content_format: int | None = None
    error: str = ""


@dataclass(slots=True)
class CoapDeviceReading:
    device: str
    link: str
    points: list[CoapPointReading] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.quality is Quality.GOOD for p in self.points)


async def read_once(devices: Sequence[CoapClientDevice]) -> list[CoapDeviceReading]:
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])
    try:
        out = []
        for device in devices:
            result = CoapDeviceReading(device.name, resource_url(device, ""))
            result.points = list(
                await asyncio.gather(*(_get(ctx, device, i) for i in range(len(device.resources))))
            )
            out.append(result)
        return out
    finally:
        await ctx.shutdown()


async def _get(ctx: aiocoap.Context, device: CoapClientDevice, index: int) -> CoapPointReading:
    res = device.resources[index]
    url = resource_url(device, res.path)

    def bad(error: str, payload: str = "", cf: int | None = None) -> CoapPointReading:
        return CoapPointReading(res.point, url, None, res.unit, Quality.BAD, payload, cf, error)

    try:
        async with asyncio.timeout(device.timeout):
            response = await ctx.request(aiocoap.Message(code=Code.GET, uri=url)).response
    except TimeoutError:
        return bad(f"GET {url}: no answer within {device.timeout:g} s")
    except (aiocoap.error.Error, OSError) as exc:
        return bad(f"GET {url}: {exc or type(exc).__name__}")
    cf = None if response.opt.content_format is None else int(response.opt.content_format)
    try:
        payload = response.payload.decode("utf-8")
    except UnicodeDecodeError:
        payload = response.payload.hex(" ")
    if not response.code.is_successful():
        return bad(f"GET {url}: answered {response.code}", payload, cf)
    try:
        raw = decode_value(response.payload, cf)
        value: Value = coerce(PointInfo(device.name, res.point, res.type), raw)
    except (PayloadError, WriteError) as exc:
        return bad(f"GET {url}: {exc}", payload, cf)
    if res.type in _FLOATS and not isinstance(value, float):
        value = float(value)
    return CoapPointReading(res.point, url, value, res.unit, Quality.GOOD, payload, cf)
