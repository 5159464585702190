"""The CoAP server: nodes POST readings to `/r/<device>`; every point is `/p/<device>/<point>`
(GET, Observe, PUT); `/.well-known/core` lists them.

Built on aiocoap's `Site`; the two subtrees are `PathCapable` resources that parse the rest of the
path themselves, so devices and points added at run time need no re-registration.  Every answer
this module builds goes through `answer`, which counts it by code for the metrics.  A request
that fails in a way we did not foresee is answered 5.00 (counted) and logged; the server goes on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

import aiocoap
from aiocoap import error, interfaces, resource
from aiocoap.numbers.codes import Code
from aiocoap.util.linkformat import Link, LinkFormat

from picogate._metrics import counter
from picogate._model import PointInfo, PointType, Quality, Reading, Value
from picogate._outbox import OutboxUnavailable
from picogate._pipeline import Pipeline
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import CommandRouter, ErrorCode, WriteError, WriteRequest, coerce
from picogate.coap._config import CoapSection
from picogate.coap._payload import (
    CF_JSON,
    CF_SENML_CBOR,
    CF_SENML_JSON,
    PayloadError,
    decode_report,
    decode_value,
    encode_reading,
    split_name,
)
from picogate.coap._points import node_points
from picogate.coap._policy import is_loopback, write_refusal

log = logging.getLogger("picogate.coap")

_CODES = {
    "2.04": Code.CHANGED,
    "2.05": Code.CONTENT,
    "4.00": Code.BAD_REQUEST,
    "4.01": Code.UNAUTHORIZED,
    "4.04": Code.NOT_FOUND,
    "4.05": Code.METHOD_NOT_ALLOWED,
    "4.06": Code.NOT_ACCEPTABLE,
    "4.13": Code.REQUEST_ENTITY_TOO_LARGE,
    "4.15": Code.UNSUPPORTED_CONTENT_FORMAT,
    "4.29": Code.TOO_MANY_REQUESTS,
    "5.00": Code.INTERNAL_SERVER_ERROR,
    "5.02": Code.BAD_GATEWAY,
    "5.03": Code.SERVICE_UNAVAILABLE,
    "5.04": Code.GATEWAY_TIMEOUT,
}

# What a write's error code becomes in CoAP (docs/coap.md, "Answers").
WRITE_CODES = {
    ErrorCode.OK: "2.04",
    ErrorCode.UNKNOWN_POINT: "4.04",
    ErrorCode.READ_ONLY: "4.05",
    ErrorCode.BAD_TYPE: "4.00",
    ErrorCode.OUT_OF_RANGE: "4.00",
    ErrorCode.BAD_REQUEST: "4.00",
    ErrorCode.RATE_LIMITED: "4.29",
    ErrorCode.DEVICE_ERROR: "5.02",
    ErrorCode.DEVICE_OFFLINE: "5.03",
    ErrorCode.BUSY: "5.03",
    ErrorCode.STALE: "5.03",
    ErrorCode.OUTCOME_UNKNOWN: "5.04",
}

_ACCEPTED = (CF_JSON, CF_SENML_JSON, CF_SENML_CBOR)
_FLOATS = (PointType.FLOAT32, PointType.FLOAT64)


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _cf(value: Any) -> int | None:
    return None if value is None else int(value)


class CoapServer:
    """The server component (kind "source": it stops taking readings before the outbox drains)."""

    name = "coap-server"
    kind: Literal["source", "service"] = "source"

    def __init__(
        self, section: CoapSection, *, registry: PointRegistry, router: CommandRouter, pipeline: Pipeline
    ) -> None:
        self.section = section
        self.registry = registry
        self.router = router
        self.pipeline = pipeline
        self.responses: collections.Counter[str] = collections.Counter()
        self.readings = 0
        self.reports = 0
        self.inflight = 0  # requests being handled
        self.writes_inflight = 0  # PUTs being written
        self.port = section.port
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._observers: dict[tuple[str, str], set[Any]] = {}
        self._typeinfo: dict[tuple[str, str], PointInfo] = {}
        self._nodes = {n.name for n in section.nodes}
        self._oscore_nodes = {o.node for o in section.oscore}
        self._contexts: dict[int, str] = {}  # id(security context) → node
        reports = _Reports(self)
        site = _Root(self, reports)
        site.add_resource((".well-known", "core"), resource.WKCResource(site.get_resources_as_linkheader))
        site.add_resource(("r",), reports)
        site.add_resource(("p",), _Points(self))
        self.site = site
        self._secured: tuple[Any, Any] = (site, None)  # the site as served, and its credentials
        pipeline.listeners.append(self._on_published)

    def register(self) -> None:
        """Put the declared nodes' points in the registry; load the OSCORE contexts (an unusable
        one is a start-up error naming it)."""
        if self.section.oscore:
            self._secured = self._oscore_site()
        for info in node_points(self.section):
            self.registry.add(info)

    # ------------------------------------------------------------------ run

    def _oscore_site(self) -> tuple[Any, Any]:
        """The site wrapped for OSCORE, and the credentials (aiocoap[oscore] needed)."""
        try:
            from aiocoap.credentials import CredentialsMap
            from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
        except ImportError as exc:
            raise RuntimeError(
                f"coap.oscore needs aiocoap's OSCORE support: pip install 'aiocoap[oscore]' ({exc})"
            ) from None
        credentials = CredentialsMap()
        for i, o in enumerate(self.section.oscore):
            try:
                credentials.load_from_dict({f":{o.node}": {"oscore": {"basedir": str(o.context) + "/"}}})
            except Exception as exc:  # aiocoap raises several kinds (LoadError, OSError, KeyError, ...)
                raise ValueError(
                    f"coap.oscore[{i}] ({o.node}): cannot load the OSCORE context in {o.context}: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
        self._contexts = {id(credentials[f":{o.node}"]): o.node for o in self.section.oscore}
        return OscoreSiteWrapper(self.site, credentials), credentials

    def check_peer(self, request: aiocoap.Message, device: str | None) -> None:
        """Refuse (4.01) a report of an OSCORE node that is not protected by that node's context,
        and, when OSCORE is configured, a write not protected by any."""
        if not self._oscore_nodes or (device is not None and device not in self._oscore_nodes):
            return
        context = getattr(request.remote, "security_context", None)
        node = self._contexts.get(id(context)) if context is not None else None
        if node is None or (device is not None and node != device):
            what = f"reports of {device}" if device is not None else "writes"
            raise _Refused("4.01", f"{what} must be protected with OSCORE")

    def check_write(self, request: aiocoap.Message) -> None:
        """Refuse a PUT that `coap.writes` does not allow (coap/_policy.py): 4.01 or 4.05."""
        context = getattr(request.remote, "security_context", None)
        protected = context is not None and id(context) in self._contexts
        refusal = write_refusal(
            self.section.writes,
            protected=protected,
            oscore_configured=bool(self._oscore_nodes),
            peer=_peer_ip(request.remote),
        )
        if refusal is not None:
            raise _Refused(*refusal)

    async def run(self) -> None:
        site, credentials = self._secured
        ctx = await aiocoap.Context.create_server_context(
            site,
            bind=(self.section.bind, self.section.port),
            transports=["udp6"],
            server_credentials=credentials,
        )
        log.info("CoAP server on udp %s:%d", self.section.bind, self.section.port)
        if self.section.writes == "open" and not self._oscore_nodes and not is_loopback(self.section.bind):
            log.warning(
                "CoAP: anyone who reaches udp %s:%d may write every writable point (coap.writes: open)",
                self.section.bind,
                self.section.port,
            )
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            self.ready.clear()
            # Let requests being answered finish (their readings are being committed), so that
            # their answers are not sent into a closed transport.
            for _ in range(200):
                if not self.inflight:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)  # aiocoap sends the answer after render() returned
            await ctx.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def collect(self) -> Iterable[Any]:
        yield counter(
            "picogate_coap_responses",
            "CoAP responses sent by the server, by code",
            ["code"],
            (([code], n) for code, n in sorted(self.responses.items())),
        )
        yield counter("picogate_coap_readings", "Readings accepted over CoAP", [], [([], self.readings)])

    # ------------------------------------------------------------------ helpers

    def answer(
        self, code: str, payload: bytes | str = b"", *, content_format: int | None = None
    ) -> aiocoap.Message:
        self.responses[code] += 1
        data = payload.encode() if isinstance(payload, str) else payload
        msg = aiocoap.Message(code=_CODES[code], payload=data)
        if content_format is not None:
            msg.opt.content_format = content_format
        return msg

    def _on_published(self, readings: Sequence[Reading]) -> None:
        if not self._observers:
            return
        for r in readings:
            observers = self._observers.get((r.device, r.point))
            if observers:
                for o in list(observers):
                    o.trigger()

    def _type_only(self, info: PointInfo) -> PointInfo:
        """The point without its write limits (a reading outside them is still a reading)."""
        if info.min is None and info.max is None:
            return info
        key = (info.device, info.name)
        cached = self._typeinfo.get(key)
        if cached is None or cached.type is not info.type:
            cached = self._typeinfo[key] = replace(info, min=None, max=None)
        return cached

    # ------------------------------------------------------------------ POST /r/<device>

    async def report(self, request: aiocoap.Message, path: Sequence[str]) -> aiocoap.Message:
        if request.code != Code.POST:
            raise _Refused("4.05", "readings are sent with POST to /r/<device>")
        if len(path) != 1:
            raise _Refused("4.04", "report to /r/<device>")
        device = path[0]
        if len(request.payload) > self.section.max_payload:
            raise _Refused(
                "4.13", f"payload of {len(request.payload)} bytes exceeds {self.section.max_payload}"
            )
        self.check_peer(request, device)
        known = device in self._nodes or self.registry.device(device) is not None  # O(1), not per point
        if not known and not self.section.auto_register:
            raise _Refused("4.04", f"unknown device {device!r}: declare it under coap.nodes")
        try:
            records = decode_report(request.payload, _cf(request.opt.content_format))
        except PayloadError as exc:
            raise _Refused(exc.code, str(exc)) from None
        readings: list[Reading] = []
        new: dict[str, PointInfo] = {}
        for i, rec in enumerate(records):
            where = f"record {i}"
            try:
                point = split_name(rec.name, device, where)
            except PayloadError as exc:
                raise _Refused(exc.code, str(exc)) from None
            info = self.registry.find(device, point) or new.get(point)
            value: Value
            if info is None:
                if not self.section.auto_register:
                    raise _Refused("4.04", f"{where}: unknown point {device}.{point}")
                info = new[point] = PointInfo(device, point, _infer(rec.value), rec.unit, origin="coap")
            elif info.origin != "coap":
                raise _Refused("4.04", f"{where}: {info.key} is a {info.origin or 'config'} point, not CoAP")
            if rec.unit and info.unit and rec.unit != info.unit:
                raise _Refused("4.00", f"{where}: {info.key} is in {info.unit!r}, not {rec.unit!r}")
            try:
                value = coerce(self._type_only(info), rec.value)
            except WriteError as exc:
                raise _Refused("4.00", f"{where}: {exc}") from None
            if info.type in _FLOATS and not isinstance(value, float):
                value = float(value)
            readings.append(Reading(device, point, value, rec.ts, Quality.GOOD, info.unit))
        for info in new.values():
            self.registry.add(info)
            log.info("CoAP: registered %s (%s) from a report", info.key, info.type.value)
        status = self.registry.device(device)
        if status is not None and status.state is not DeviceState.ONLINE:
            self.registry.set_device_state(device, DeviceState.ONLINE, ts=readings[-1].ts)
            await self.pipeline.device_status(
                DeviceStatus(device, DeviceState.ONLINE, "", readings[-1].ts), wait=False
            )
        # Returns once committed to the outbox; the node waits for the 2.04.
        try:
            await self.pipeline.emit(readings)
        except OutboxUnavailable as exc:
            raise _Refused("5.03", f"not accepted, send again later: {exc}") from None
        self.reports += 1
        self.readings += len(readings)
        return self.answer("2.04")

    # ------------------------------------------------------------------ /p/<device>/<point>

    def _point(self, path: Sequence[str]) -> PointInfo:
        if len(path) != 2:
            raise _Refused("4.04", "points are /p/<device>/<point>")
        info = self.registry.find(path[0], path[1])
        if info is None:
            raise _Refused("4.04", f"unknown point {path[0]}.{path[1]}")
        return info

    async def point(self, request: aiocoap.Message, path: Sequence[str]) -> aiocoap.Message:
        if request.code == Code.PUT:
            if len(path) != 2:
                raise _Refused("4.04", "points are /p/<device>/<point>")
            return await self._put(request, path[0], path[1])
        info = self._point(path)
        if request.code == Code.GET:
            accept = _cf(request.opt.accept)
            cf = CF_JSON if accept is None else accept
            if cf not in _ACCEPTED:
                raise _Refused("4.06", "Accept application/json (50), senml+json (110) or senml+cbor (112)")
            r = self.pipeline.latest.get((info.device, info.name))
            if r is None:
                raise _Refused("4.04", f"{info.key} has no value yet")
            return self.answer("2.05", encode_reading(r, cf), content_format=cf)
        raise _Refused("4.05", "points take GET (with Observe) and PUT")

    async def _put(self, request: aiocoap.Message, device: str, point: str) -> aiocoap.Message:
        """A write through the command router; refused early or not, it leaves one audit line."""
        received = time.monotonic()
        origin = f"coap:{request.remote.hostinfo}"
        try:
            self.check_write(request)
            if len(request.payload) > self.section.max_payload:
                raise _Refused("4.13", f"payload exceeds {self.section.max_payload} bytes")
            try:
                value = decode_value(request.payload, _cf(request.opt.content_format))
            except PayloadError as exc:
                raise _Refused(exc.code, str(exc)) from None
        except _Refused as exc:
            refused = WriteRequest(device, point, request.payload, origin=origin, received=received)
            self.router.refuse(refused, ErrorCode.BAD_REQUEST, f"CoAP {exc.code}: {exc}")
            raise
        write = WriteRequest(device, point, value, origin=origin, received=received)
        limit = self.router.policy.max_pending
        if self.writes_inflight >= limit:
            result = self.router.refuse(
                write, ErrorCode.BUSY, f"{limit} CoAP writes already in progress (commands.max_pending)"
            )
        else:
            self.writes_inflight += 1
            try:
                result = await self.router.write(write)
            finally:
                self.writes_inflight -= 1
        if result.ok:
            return self.answer("2.04")
        raise _Refused(WRITE_CODES.get(result.code, "5.00"), f"{result.code.value}: {result.error}")

    def observe(self, path: Sequence[str], observation: Any) -> None:
        if len(path) != 2 or (path[0], path[1]) not in self.registry:
            return  # not accepted: the first answer (4.04) ends it
        key = (path[0], path[1])
        observers = self._observers.setdefault(key, set())
        observers.add(observation)

        def cancelled() -> None:
            observers.discard(observation)
            if not observers:
                self._observers.pop(key, None)

        observation.accept(cancelled)

    def links(self, kind: str) -> list[Link]:
        if kind == "r":
            devices = sorted({p.device for p in self.registry if p.origin == "coap"} | self._nodes)
            return [Link(f"/{d}", rt="picogate.report", ct="110 112 50", **{"if": "core.p"}) for d in devices]
        return [
            Link(
                f"/{p.device}/{p.name}",
                rt="picogate.point",
                ct="50 110 112",
                obs="",
                **{"if": "core.a" if p.writable else "core.s"},
            )
            for p in sorted(self.registry, key=lambda p: p.key)
        ]


def _peer_ip(remote: Any) -> str | None:
    """The sender's IP address as text (aiocoap's UDP remote keeps the socket address)."""
    sockaddr = getattr(remote, "sockaddr", None)
    if isinstance(sockaddr, tuple) and sockaddr and isinstance(sockaddr[0], str):
        return sockaddr[0]
    return None


def _infer(value: Value) -> PointType:
    if isinstance(value, bool):
        return PointType.BOOL
    if isinstance(value, str):
        return PointType.STRING
    return PointType.FLOAT64  # SenML numbers are floats; an int now may be 21.5 next time


class _Subtree(resource.Resource, resource.PathCapable):  # type: ignore[misc]  # aiocoap is untyped
    kind = ""

    def __init__(self, server: CoapServer) -> None:
        super().__init__()
        self.server = server

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self.render_path(request, request.opt.uri_path)

    async def render_path(self, request: aiocoap.Message, path: Sequence[str]) -> aiocoap.Message:
        """Answer `request`, `path` being what follows this subtree's own segment."""
        self.server.inflight += 1
        try:
            return await self.handle(request, path)
        except _Refused as exc:
            return self.server.answer(exc.code, str(exc))
        except Exception:  # a bug, or the outbox closing under us: answer, log, and go on serving
            log.exception("CoAP %s %s failed", request.code, "/".join(request.opt.uri_path))
            return self.server.answer("5.00", "internal error (see the gateway's log); send again later")
        finally:
            self.server.inflight -= 1

    async def handle(self, request: aiocoap.Message, path: Sequence[str]) -> aiocoap.Message:
        raise NotImplementedError

    def get_resources_as_linkheader(self) -> LinkFormat:
        return LinkFormat(self.server.links(self.kind))


class _Reports(_Subtree):
    kind = "r"

    async def handle(self, request: aiocoap.Message, path: Sequence[str]) -> aiocoap.Message:
        return await self.server.report(request, path)


class _Points(_Subtree, interfaces.ObservableResource):  # type: ignore[misc]  # aiocoap is untyped
    kind = "p"

    async def handle(self, request: aiocoap.Message, path: Sequence[str]) -> aiocoap.Message:
        return await self.server.point(request, path)

    async def add_observation(self, request: aiocoap.Message, serverobservation: Any) -> None:
        self.server.observe(request.opt.uri_path, serverobservation)


class _Root(resource.Site):  # type: ignore[misc]  # aiocoap is untyped
    """aiocoap's Site, answering an unknown path with a diagnostic (and counting it).

    A node's report (`POST /r/<device>` in one datagram) takes a short way to its handler: Site's
    dispatch deep-copies every request to strip its path, and Resource's block-wise layer caches
    every answer in case the client asks for it block by block; for a one-datagram report with an
    empty 2.04 (or a short diagnostic) neither does anything, and together they cost as much CPU as
    the report itself.  Anything else (block-wise transfers, other paths) goes Site's way.
    """

    def __init__(self, server: CoapServer, reports: _Reports) -> None:
        super().__init__()
        self.server = server
        self.reports = reports

    async def render_to_pipe(self, request: Any) -> None:
        req = request.request
        opt = req.opt
        path = opt.uri_path
        if (
            len(path) == 2
            and path[0] == "r"
            and opt.block1 is None
            and opt.block2 is None
            and opt.observe is None
            and opt.uri_path_abbrev is None
        ):
            request.add_response(await self.reports.render_path(req, path[1:]), is_last=True)
            return
        try:
            await super().render_to_pipe(request)
        except error.NotFound:
            path = "/" + "/".join(request.request.opt.uri_path)
            self.server.responses["4.04"] += 1
            raise error.NotFound(f"no resource {path}: see /.well-known/core") from None
