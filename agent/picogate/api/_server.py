"""The local API's routes (`/api/v1/…`, docs/api.md) on the gateway's HTTP server (picogate._http).

    api = Api(registry=…, pipeline=…, router=…, rules=…, …)
    http.add_routes(api.routes())

Reads are answered from the gateway's own state (the registry, the pipeline's last readings, the
rules service, the router's last writes); the one write goes through the command router like any
other (same validation, deadline — `commands.deadline.other` — and audit line), origin
`api:<peer>`.  Another module (the operator console) adds its routes, an authentication
middleware and TLS to the same server; it decides who may write with `Api.may_write`, and how the
audit line names the writer with `Api.origin_of`, without touching these handlers.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from picogate import __version__
from picogate._http import HttpServer
from picogate._model import NAME_RE, PointInfo
from picogate._pipeline import Pipeline
from picogate._registry import DeviceStatus, PointRegistry
from picogate._router import CommandRouter, ErrorCode, WriteRequest, WriteResult, clip
from picogate.api._events import Streams
from picogate.api._model import (
    WriteLog,
    alerts_json,
    device_json,
    json_error,
    json_response,
    point_json,
    rules_json,
    write_json,
)

if TYPE_CHECKING:
    from picogate.rules import LiveRules

log = logging.getLogger("picogate.api")

API_PREFIX = "/api/v1"
MAX_ID_LENGTH = 256
"""Characters of a write's `id`, at most (as for MQTT commands)."""

STATUS_OF_CODE: dict[ErrorCode, int] = {
    ErrorCode.OK: 200,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_POINT: 404,
    ErrorCode.READ_ONLY: 422,
    ErrorCode.BAD_TYPE: 422,
    ErrorCode.OUT_OF_RANGE: 422,
    ErrorCode.BUSY: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.DEVICE_ERROR: 502,
    ErrorCode.DEVICE_OFFLINE: 503,
    ErrorCode.STALE: 504,
    ErrorCode.OUTCOME_UNKNOWN: 504,
}
"""The HTTP status of a write's answer, by the router's result code (the body carries the code)."""

_WRITE_FIELDS = ("device", "point", "value", "id")


def loopback_only(request: web.Request) -> str | None:
    """The default `Api.may_write`: writes only from this machine, while the API has no
    authentication: from a loopback address, or from the very address the request came in on
    (`picogate write` on the gateway, when `metrics.host` is one of its own addresses)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    local = sockname[0] if isinstance(sockname, tuple) and sockname else None
    if from_this_machine(request.remote, local):
        return None
    return (
        f"writes through the local API are accepted only from this machine, not from "
        f"{request.remote}; run `picogate write` on the gateway itself"
    )


def from_this_machine(peer: str | None, local: str | None) -> bool:
    """Does a connection from `peer` to our address `local` come from this machine?  A loopback
    peer does; so does a peer with our own address (only we can open a connection from it)."""
    if is_loopback(peer):
        return True
    a, b = _ip(peer), _ip(local)
    return a is not None and a == b and not a.is_unspecified


def is_loopback(address: str | None) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def _ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def peer_origin(request: web.Request) -> str:
    """The default `Api.origin_of`: `api:<peer address>`."""
    return f"api:{request.remote or 'local'}"


class Api:
    """The JSON endpoints of the local API (see the module docstring and docs/api.md)."""

    def __init__(
        self,
        *,
        gateway_id: str,
        started_ns: int,
        registry: PointRegistry,
        pipeline: Pipeline,
        router: CommandRouter,
        rules: Callable[[], LiveRules | None],
        status: Callable[[], dict[str, Any]],
        health: Callable[[], dict[str, Any]],
    ) -> None:
        self.gateway_id = gateway_id
        self.started_ns = started_ns
        self.registry = registry
        self.pipeline = pipeline
        self.router = router
        self.rules = rules
        self.status = status
        self.health = health
        self.writes = WriteLog()
        router.observe(self.writes)
        self.may_write: Callable[[web.Request], str | None] = loopback_only
        """Who may write: None lets the request write, a text refuses it (403, with the text)."""
        self.origin_of: Callable[[web.Request], str] = peer_origin
        """The write's origin in the audit line and the last writes (`api:<peer>` by default)."""
        self.pending = 0
        """Writes through the API in progress (at most `commands.max_pending`: beyond, busy)."""
        self.refused_writers = 0
        """Writes refused by `may_write`."""
        self.streams = Streams(self)
        """The open live streams (`GET /api/v1/events`)."""

    def add_to(self, http: HttpServer) -> None:
        """Serve the API on `http` (before it starts); its live streams end when it closes."""
        http.add_routes(self.routes())
        http.app.on_shutdown.append(self.streams.on_shutdown)

    def routes(self) -> list[web.RouteDef]:
        p = API_PREFIX
        return [
            web.get(p, self._index),
            web.get(f"{p}/snapshot", self._snapshot),
            web.get(f"{p}/status", self._status),
            web.get(f"{p}/events", self.streams.handle),
            web.get(f"{p}/devices", self._devices),
            web.get(f"{p}/devices/{{device}}", self._device),
            web.get(f"{p}/points", self._points),
            web.get(f"{p}/points/{{key}}", self._point),
            web.get(f"{p}/rules", self._rules),
            web.get(f"{p}/alerts", self._alerts),
            web.get(f"{p}/writes", self._writes),
            web.post(f"{p}/writes", self._write),
        ]

    # ------------------------------------------------------------------ the model

    def gateway_json(self) -> dict[str, Any]:
        return {
            "id": self.gateway_id,
            "version": __version__,
            "started": self.started_ns // 1_000_000,
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 1),
        }

    def device_of(self, status: DeviceStatus) -> dict[str, Any]:
        """One device of the model, with its points."""
        reg, pipeline = self.registry, self.pipeline
        return device_json(
            status,
            reg.points_of(status.name),
            pipeline.latest,
            reg.device_address(status.name),
            pipeline.filter.published_ts,
        )

    def point_of(self, info: PointInfo) -> dict[str, Any]:
        """One point of the model, with its last reading."""
        key = (info.device, info.name)
        return point_json(info, self.pipeline.latest.get(key), self.pipeline.filter.published_ts(*key))

    def devices_json(self) -> list[dict[str, Any]]:
        return [self.device_of(d) for d in self.registry.devices()]

    def points_json(self, device: str | None = None) -> list[dict[str, Any]]:
        return [self.point_of(p) for p in self.registry if device is None or p.device == device]

    def status_json(self) -> dict[str, Any]:
        return {**self.status(), "health": self.health()}

    def alerts_json(self) -> dict[str, Any]:
        return alerts_json(self.rules())

    def snapshot_json(self) -> dict[str, Any]:
        """Everything `picogate watch` shows, in one answer."""
        live = self.rules()
        return {
            "gateway": self.gateway_json(),
            "status": self.status_json(),
            "devices": self.devices_json(),
            "rules": rules_json(live),
            "alerts": alerts_json(live),
            "writes": self.writes.writes(),
        }

    # ------------------------------------------------------------------ reads

    async def _index(self, request: web.Request) -> web.Response:
        paths = sorted(
            {r.canonical for r in request.app.router.resources() if r.canonical.startswith(API_PREFIX)}
        )
        return json_response({"api": 1, "gateway": self.gateway_json(), "endpoints": paths})

    async def _snapshot(self, request: web.Request) -> web.Response:
        return json_response(self.snapshot_json())

    async def _status(self, request: web.Request) -> web.Response:
        return json_response(self.status_json())

    async def _devices(self, request: web.Request) -> web.Response:
        return json_response({"devices": self.devices_json()})

    async def _device(self, request: web.Request) -> web.Response:
        name = request.match_info["device"]
        status = self.registry.device(name)
        if status is None:
            return self._no_device(name)
        return json_response(self.device_of(status))

    async def _points(self, request: web.Request) -> web.Response:
        device = request.query.get("device")
        if device is not None and self.registry.device(device) is None:
            return self._no_device(device)
        return json_response({"points": self.points_json(device)})

    async def _point(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        device, dot, point = key.partition(".")
        info = self.registry.find(device, point) if dot else None
        if info is None:
            return json_error(
                404,
                "unknown_point",
                f"no point {clip(key)}: a point is named device.point (GET {API_PREFIX}/points lists them)",
            )
        return json_response(self.point_of(info))

    def _no_device(self, name: str) -> web.Response:
        known = ", ".join(d.name for d in self.registry.devices()) or "none"
        return json_error(
            404, "unknown_device", f"no device {clip(name)}; the devices are: {clip(known, 400)}"
        )

    async def _rules(self, request: web.Request) -> web.Response:
        return json_response(rules_json(self.rules()))

    async def _alerts(self, request: web.Request) -> web.Response:
        return json_response(alerts_json(self.rules()))

    async def _writes(self, request: web.Request) -> web.Response:
        return json_response({"writes": self.writes.writes()})

    # ------------------------------------------------------------------ the write

    async def _write(self, request: web.Request) -> web.Response:
        """POST {"device", "point", "value", "id"?}: one write through the command router."""
        received = time.monotonic()
        refusal = self.may_write(request)
        if refusal is not None:
            self.refused_writers += 1
            log.info("write refused to %s: %s", request.remote, refusal)
            return json_error(403, "forbidden", refusal)
        if request.content_type != "application/json":
            return json_error(
                415,
                "unsupported_media_type",
                f'send the write as JSON with "Content-Type: application/json" (not {clip(request.content_type or "none")})',
            )
        origin = self.origin_of(request)
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self._refuse(
                "", "", raw.decode("utf-8", "replace"), origin, received, f"the body is not valid JSON: {exc}"
            )
        if not isinstance(body, dict):
            return self._refuse(
                "",
                "",
                body,
                origin,
                received,
                'the body must be a JSON object such as {"device": "boiler", "point": "setpoint", "value": 70}',
            )
        device, point, value = body.get("device"), body.get("point"), body.get("value")
        raw_id = body.get("id", "")
        rid = (
            raw_id
            if isinstance(raw_id, str)
            else str(raw_id)
            if isinstance(raw_id, int) and not isinstance(raw_id, bool)
            else ""
        )
        dev = clip(device) if isinstance(device, str) else ""
        pt = clip(point) if isinstance(point, str) else ""
        unknown = sorted(set(body) - set(_WRITE_FIELDS))
        problem = ""
        if unknown:
            problem = f"unknown field(s): {clip(', '.join(unknown))}; expected {', '.join(_WRITE_FIELDS)}"
        elif not isinstance(device, str) or not isinstance(point, str):
            problem = '"device" and "point" must be given, as strings (e.g. "device": "boiler", "point": "setpoint")'
        elif "value" not in body:
            problem = 'missing "value" (the value to write)'
        elif "id" in body and not rid:
            problem = '"id" must be a string or an integer'
        elif len(rid) > MAX_ID_LENGTH:
            problem = f'"id" is longer than {MAX_ID_LENGTH} characters'
        if problem:
            return self._refuse(
                dev, pt, value, origin, received, problem, rid if len(rid) <= MAX_ID_LENGTH else ""
            )
        limit = self.router.policy.max_pending
        write = WriteRequest(dev, pt, value, origin=origin, request_id=rid, received=received)
        if not (NAME_RE.match(dev) and NAME_RE.match(pt)):
            # not a name any point can have (and nothing for the audit line to quote at length)
            result = self.router.refuse(
                write,
                ErrorCode.UNKNOWN_POINT,
                f"unknown point {dev}.{pt}: names are lower-case letters, digits and _ (GET {API_PREFIX}/points lists them)",
            )
            return self._answer(write, result)
        if self.pending >= limit:
            result = self.router.refuse(
                write,
                ErrorCode.BUSY,
                f"{limit} writes through the API already in progress (commands.max_pending)",
            )
            return self._answer(write, result)
        self.pending += 1
        try:
            result = await self.router.write(write)
        finally:
            self.pending -= 1
        return self._answer(write, result)

    def _refuse(
        self, device: str, point: str, value: object, origin: str, received: float, error: str, rid: str = ""
    ) -> web.Response:
        write = WriteRequest(device, point, value, origin=origin, request_id=rid, received=received)
        return self._answer(write, self.router.refuse(write, ErrorCode.BAD_REQUEST, error))

    def _answer(self, write: WriteRequest, result: WriteResult) -> web.Response:
        body = write_json(write, result, time.monotonic() - write.received, ts=time.time_ns())
        return json_response(body, STATUS_OF_CODE.get(result.code, 500))
