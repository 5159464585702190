"""`GET /api/v1/events`: live updates of the local API's model as server-sent events (SSE).

A stream starts with the whole `snapshot`, then sends, at most once per `interval` (1 s by
default, 0.25 s at least), only what changed since: the `points` that have a new reading, the
`devices` whose state changed, the `rules` and the `alerts` when they changed, the new `writes`,
the `status` when it changed; a new snapshot when points were added or removed.  It is throttled
by construction: a point read 50 times a second is sent at most once per interval, with its last
value, whatever the gateway's rate, and only when its value or quality changed (or every 10 s, so
that its `ts` tells its age); `?devices=boiler,pump` keeps a stream to the devices a page shows.

Streams are bounded (`MAX_STREAMS`; beyond, 503) and end when the server closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from picogate._model import PointInfo, Reading
from picogate._pipeline import Pipeline
from picogate._registry import DeviceStatus, PointRegistry
from picogate.api._model import WriteLog, json_error, rules_json

if TYPE_CHECKING:
    from picogate.rules import LiveRules

MAX_STREAMS = 32
MIN_INTERVAL = 0.25
REFRESH_NS = 10 * 1_000_000_000
"""A point whose value stays the same is sent again after this long (its `ts`: its age)."""
KEEPALIVE = 15.0
"""Seconds of silence after which a comment line keeps proxies and browsers from timing out."""


def _event(name: str, body: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


def _steady(status: dict[str, Any]) -> dict[str, Any]:
    """The status without what changes on its own every second (the uptime)."""
    health = {k: v for k, v in status.get("health", {}).items() if k != "uptime_s"}
    return {**status, "health": health}


class Model(Protocol):
    """What a stream reads (the `Api`)."""

    registry: PointRegistry
    pipeline: Pipeline
    writes: WriteLog
    rules: Callable[[], LiveRules | None]

    def snapshot_json(self) -> dict[str, Any]: ...

    def device_of(self, status: DeviceStatus) -> dict[str, Any]: ...

    def point_of(self, info: PointInfo) -> dict[str, Any]: ...

    def alerts_json(self) -> dict[str, Any]: ...

    def status_json(self) -> dict[str, Any]: ...


class Streams:
    """The open event streams of one `Api`."""

    def __init__(self, api: Model) -> None:
        self.api = api
        self.open = 0
        self.closing = asyncio.Event()

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            interval = max(MIN_INTERVAL, float(request.query.get("interval", "1")))
        except ValueError:
            return json_error(400, "bad_request", "interval is a number of seconds, e.g. ?interval=0.5")
        wanted = {d for d in request.query.get("devices", "").split(",") if d}
        unknown = sorted(d for d in wanted if self.api.registry.device(d) is None)
        if unknown:
            return json_error(404, "unknown_device", f"no device {', '.join(unknown)[:200]}")
        if self.open >= MAX_STREAMS:
            return json_error(503, "busy", f"{MAX_STREAMS} live streams are open already; close one")
        self.open += 1
        try:
            return await self._stream(request, interval, wanted)
        finally:
            self.open -= 1

    async def _stream(self, request: web.Request, interval: float, wanted: set[str]) -> web.StreamResponse:
        api = self.api
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)

        def mine(device: str) -> bool:
            return not wanted or device in wanted

        sent: dict[tuple[str, str], Reading] = {}
        states: dict[str, tuple[str, str]] = {}
        keys: frozenset[tuple[str, str]] = frozenset()
        rules: Any = None
        alerts: Any = None
        status: Any = None
        writes_seen = 0
        last_sent = time.monotonic()
        first = True
        with contextlib.suppress(ConnectionError):  # the client went away
            while not self.closing.is_set():
                chunks: list[bytes] = []
                now_keys = frozenset((p.device, p.name) for p in api.registry if mine(p.device))
                latest = api.pipeline.latest
                if first or now_keys != keys:
                    snapshot = api.snapshot_json()
                    if wanted:
                        snapshot["devices"] = [d for d in snapshot["devices"] if d["name"] in wanted]
                    chunks.append(_event("snapshot", snapshot))
                    keys, first = now_keys, False
                    sent = {k: r for k in keys if (r := latest.get(k)) is not None}
                    states = {
                        d.name: (d.state.value, d.reason) for d in api.registry.devices() if mine(d.name)
                    }
                    rules, alerts, status = snapshot["rules"], snapshot["alerts"], _steady(snapshot["status"])
                    writes_seen = api.writes.total
                else:
                    changed = []
                    refresh = time.time_ns() - REFRESH_NS
                    for key in keys:
                        r = latest.get(key)
                        if r is None or (before := sent.get(key)) is r:
                            continue
                        if (
                            before is None
                            or r.quality is not before.quality
                            or type(r.value) is not type(before.value)
                            or r.value != before.value
                            or before.ts < refresh
                        ):
                            sent[key] = r
                            info = api.registry.find(*key)
                            if info is not None:
                                changed.append(api.point_of(info))
                    if changed:
                        chunks.append(_event("points", {"points": changed}))
                    moved = []
                    for d in api.registry.devices():
                        if mine(d.name) and states.get(d.name) != (d.state.value, d.reason):
                            states[d.name] = (d.state.value, d.reason)
                            moved.append(api.device_of(d))
                    if moved:
                        chunks.append(_event("devices", {"devices": moved}))
                    live = api.rules()
                    now_rules = rules_json(live)
                    if now_rules != rules:
                        rules = now_rules
                        chunks.append(_event("rules", now_rules))
                    now_alerts = api.alerts_json()
                    if now_alerts != alerts:
                        alerts = now_alerts
                        chunks.append(_event("alerts", now_alerts))
                    new = api.writes.since(writes_seen)
                    if new:
                        writes_seen = api.writes.total
                        chunks.append(_event("writes", {"writes": new}))
                    now_status = _steady(api.status_json())
                    if now_status != status:
                        status = now_status
                        chunks.append(_event("status", api.status_json()))
                if chunks:
                    await response.write(b"".join(chunks))
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent >= KEEPALIVE:
                    await response.write(b": keep-alive\n\n")
                    last_sent = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self.closing.wait()
        return response
