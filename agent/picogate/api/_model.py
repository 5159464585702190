"""The local API's JSON model (docs/api.md): plain dicts built from the gateway's own state, no I/O,
and the shape of its answers (`json_response`, `json_error`).

Every time is milliseconds since the Unix epoch (as on MQTT), or null.  The model only grows:
fields are added, never renamed or removed, so that `picogate watch`, the operator console and
scripts written against one version keep working with the next.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from picogate._clock import epoch_ms
from picogate._model import PointInfo, Reading
from picogate._registry import DeviceStatus
from picogate._router import WriteRequest, WriteResult, clip

if TYPE_CHECKING:
    from picogate.rules import LiveRules


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body) + b"\n", status=status, content_type="application/json")


def json_error(status: int, code: str, error: str) -> web.Response:
    """`{"error": "<what to do>", "code": "<stable code>"}`."""
    return json_response({"error": error, "code": code}, status)


MAX_WRITES = 100
"""Writes kept for `GET /api/v1/writes`, the newest last."""


def _ms(ns: int | None) -> int | None:
    return epoch_ms(ns) if ns else None


def point_json(info: PointInfo, reading: Reading | None, published: int | None = None) -> dict[str, Any]:
    """A point, its definition, its last reading (value, quality and ts null before the first) and
    when a reading of it was last published (`published`, ns)."""
    return {
        "device": info.device,
        "point": info.name,
        "key": info.key,
        "type": info.type.value,
        "unit": info.unit,
        "writable": info.writable,
        "min": info.min,
        "max": info.max,
        "description": info.description,
        "origin": info.origin,
        "value": None if reading is None else reading.value,
        "quality": None if reading is None else reading.quality.value,
        "ts": None if reading is None else _ms(reading.ts),
        "published": _ms(published),
    }


def device_json(
    status: DeviceStatus,
    points: Iterable[PointInfo],
    latest: Mapping[tuple[str, str], Reading],
    address: Mapping[str, Mapping[str, str]] | None,
    published: Callable[[str, str], int | None] = lambda device, point: None,
) -> dict[str, Any]:
    """A device: its state (`unknown` before the first poll, `online`, `offline` with the reason),
    since when, how the gateway reaches it, and its points."""
    return {
        "name": status.name,
        "state": status.state.value,
        "reason": status.reason,
        "since": _ms(status.since_ns),
        "origin": status.origin,
        "address": {k: dict(v) for k, v in address.items()} if address else None,
        "points": [
            point_json(p, latest.get((p.device, p.name)), published(p.device, p.name)) for p in points
        ],
    }


class WriteLog:
    """The last writes through the command router, whoever asked (an observer of the router)."""

    def __init__(self, size: int = MAX_WRITES) -> None:
        self._writes: deque[dict[str, Any]] = deque(maxlen=size)
        self.total = 0
        """Writes seen since the start."""

    def __call__(self, request: WriteRequest, result: WriteResult, seconds: float) -> None:
        self._writes.append(write_json(request, result, seconds, ts=time.time_ns()))
        self.total += 1

    def writes(self) -> list[dict[str, Any]]:
        return list(self._writes)

    def since(self, total: int) -> list[dict[str, Any]]:
        """The writes after the first `total` (those still kept)."""
        n = self.total - total
        return list(self._writes)[-n:] if n > 0 else []


def write_json(request: WriteRequest, result: WriteResult, seconds: float, *, ts: int) -> dict[str, Any]:
    """One write and its result (`code`: the router's stable result code, `ok` only when written)."""
    value = request.value
    if not (value is None or isinstance(value, bool | int | float)):
        value = clip(value) if isinstance(value, str) else clip(repr(value))
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        value = clip(repr(value))
    return {
        "device": request.device,
        "point": request.point,
        "key": f"{request.device}.{request.point}",
        "value": value,
        "written": result.value,
        "origin": request.origin,
        "id": clip(result.request_id or request.request_id),
        "ok": result.ok,
        "code": result.code.value,
        "error": result.error,
        "ms": round(seconds * 1000, 2),
        "ts": epoch_ms(ts),
    }


# --------------------------------------------------------------------------- rules and alerts


def rules_json(live: LiveRules | None) -> dict[str, Any]:
    """The rule set and each rule's live state; `enabled: false` when the gateway runs no rules."""
    if live is None:
        return {"enabled": False, "ok": True, "version": None, "errors": [], "warnings": [], "rules": []}
    status = live.status()
    infos = {r.id: r for r in live.loaded.rules} if live.loaded is not None else {}
    rules = []
    for rule_id, state in status.pop("rules").items():
        info = infos.get(rule_id)
        named = state.get("kind") in ("on", "every") and not rule_id.startswith("anon-")
        rules.append(
            {
                "id": rule_id,
                "name": rule_id if named else None,
                "kind": state.get("kind"),
                "state": state.get("state"),
                "reason": state.get("reason"),
                "last_fired": state.get("last_fired"),
                "fired": state.get("fired", 0),
                "chattering": state.get("chattering", False),
                "file": state.get("file"),
                "line": state.get("line"),
                "text": info.text if info is not None else "",
            }
        )
    return {"enabled": True, "directory": str(live.directory), **status, "rules": rules}


def alerts_json(live: LiveRules | None) -> dict[str, Any]:
    """The active alerts (the oldest first) with their rule's place and text, and the last alert
    events (active and cleared, the newest last)."""
    if live is None:
        return {"active": [], "recent": []}
    infos = {r.id: r for r in live.loaded.rules} if live.loaded is not None else {}

    def alert(rule: str, severity: str, message: str, state: str, ts: int) -> dict[str, Any]:
        info = infos.get(rule)
        return {
            "rule": rule,
            "severity": severity,
            "message": message,
            "state": state,
            "ts": epoch_ms(ts),
            "file": info.file if info is not None else None,
            "line": info.line if info is not None else None,
            "text": info.text if info is not None else "",
        }

    book = live.alerts
    return {
        "active": [alert(a.rule, a.severity, a.message, a.state, a.ts) for a in book.active()],
        "recent": [alert(a.rule, a.severity, a.message, a.state, a.ts) for a in book.recent()],
    }
