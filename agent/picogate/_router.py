"""The command router: the one entry point for every write, whoever asks for it.

MQTT commands, rule actions, EdgeX and CoAP all call `CommandRouter.write()`.  The router checks
the point (known, writable), converts the value to the point's type, checks its range and the
device's state, hands it to the device's writer with a deadline, and returns one `WriteResult`
with a stable error code.  Every write leaves one audit log line: who asked, what, the result.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

from picogate._model import PointInfo, PointType, Value
from picogate._registry import DeviceState, PointRegistry

audit_log = logging.getLogger("picogate.audit")


class ErrorCode(enum.StrEnum):
    """Stable codes: consumers match on these, never on the message text."""

    OK = "ok"
    UNKNOWN_POINT = "unknown_point"
    READ_ONLY = "read_only"
    BAD_TYPE = "bad_type"
    OUT_OF_RANGE = "out_of_range"
    DEVICE_OFFLINE = "device_offline"
    TIMEOUT = "timeout"
    DEVICE_ERROR = "device_error"
    BAD_REQUEST = "bad_request"  # malformed command (JSON, missing field, retained, ...)
    STALE = "stale"  # older than the configured command TTL


@dataclass(frozen=True, slots=True)
class WriteRequest:
    device: str
    point: str
    value: object  # as received; the router converts it
    origin: str  # who asked: "mqtt", "rule:boiler_overheat", "edgex", "coap:[::1]:5683", ...
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class WriteResult:
    ok: bool
    code: ErrorCode
    error: str = ""
    value: Value | None = None  # the value written, converted to the point's type
    request_id: str = ""

    def as_json(self) -> bytes:
        return orjson.dumps(
            {"id": self.request_id, "ok": self.ok, "code": self.code.value, "error": self.error}
        )


class WriteError(Exception):
    """Raised by a device writer; carries the code the router reports."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Writer(Protocol):
    """What a source offers for its writable points (Modbus device, Pico board, CoAP node)."""

    async def write(self, point: PointInfo, value: Value) -> None:
        """Write and return when the device confirmed, or raise WriteError."""


WriteObserver = Callable[[WriteRequest, WriteResult, float], None]


def coerce(point: PointInfo, value: object) -> Value:
    """Convert `value` to the point's type, or raise WriteError(BAD_TYPE / OUT_OF_RANGE).

    Accepted: true/false or 0/1 for a bool point; an integer (or an integral float) for an
    integer point; any finite number for a float point; a string for a string point.
    """
    t = point.type
    if t is PointType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise WriteError(
            ErrorCode.BAD_TYPE, f"{point.key} is a bool point: send true/false or 0/1, not {value!r}"
        )
    if t is PointType.STRING:
        if isinstance(value, str):
            return value
        raise WriteError(ErrorCode.BAD_TYPE, f"{point.key} is a string point: send a string, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteError(
            ErrorCode.BAD_TYPE, f"{point.key} is a {t.value} point: send a number, not {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteError(ErrorCode.BAD_TYPE, f"{point.key}: {value} is not a finite number")
    out: int | float = value
    if t.is_integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise WriteError(
                    ErrorCode.BAD_TYPE, f"{point.key} is a {t.value} point: {value} is not an integer"
                )
            out = int(value)
        rng = t.int_range
        assert rng is not None
        if not rng[0] <= int(out) <= rng[1]:
            raise WriteError(
                ErrorCode.OUT_OF_RANGE, f"{point.key}: {value} is outside {t.value} ({rng[0]}..{rng[1]})"
            )
    if point.min is not None and out < point.min:
        raise WriteError(ErrorCode.OUT_OF_RANGE, f"{point.key}: {value} is below the minimum {point.min:g}")
    if point.max is not None and out > point.max:
        raise WriteError(ErrorCode.OUT_OF_RANGE, f"{point.key}: {value} is above the maximum {point.max:g}")
    return out


class CommandRouter:
    """Validates, dispatches and audits writes.  Writers register per device."""

    def __init__(self, registry: PointRegistry, *, timeout: float = 5.0) -> None:
        self._registry = registry
        self._writers: dict[str, Writer] = {}
        self._observers: list[WriteObserver] = []
        self.timeout = timeout

    def register_writer(self, device: str, writer: Writer) -> None:
        self._writers[device] = writer

    def unregister_writer(self, device: str) -> None:
        self._writers.pop(device, None)

    def observe(self, observer: WriteObserver) -> None:
        """Called after every write (metrics, the demo's view)."""
        self._observers.append(observer)

    async def write(self, request: WriteRequest) -> WriteResult:
        started = time.perf_counter()
        result = await self._write(request)
        elapsed = time.perf_counter() - started
        audit_log.info(
            "write %s.%s=%r by %s id=%s -> %s%s (%.1f ms)",
            request.device,
            request.point,
            request.value,
            request.origin,
            request.request_id or "-",
            result.code.value,
            f" ({result.error})" if result.error else "",
            elapsed * 1000,
            extra={
                "audit": {
                    "device": request.device,
                    "point": request.point,
                    "value": request.value,
                    "origin": request.origin,
                    "id": request.request_id,
                    "code": result.code.value,
                    "error": result.error,
                    "ms": round(elapsed * 1000, 2),
                }
            },
        )
        for observer in self._observers:
            observer(request, result, elapsed)
        return result

    async def _write(self, request: WriteRequest) -> WriteResult:
        rid = request.request_id

        def fail(code: ErrorCode, message: str) -> WriteResult:
            return WriteResult(False, code, message, request_id=rid)

        point = self._registry.find(request.device, request.point)
        if point is None:
            return fail(ErrorCode.UNKNOWN_POINT, f"unknown point {request.device}.{request.point}")
        if not point.writable:
            return fail(ErrorCode.READ_ONLY, f"{point.key} is read-only")
        try:
            value = coerce(point, request.value)
        except WriteError as exc:
            return fail(exc.code, str(exc))
        status = self._registry.device(request.device)
        if status is not None and status.state is DeviceState.OFFLINE:
            return fail(ErrorCode.DEVICE_OFFLINE, f"device {request.device} is offline ({status.reason})")
        writer = self._writers.get(request.device)
        if writer is None:
            return fail(ErrorCode.DEVICE_OFFLINE, f"device {request.device} has no connection that can write")
        try:
            async with asyncio.timeout(self.timeout):
                await writer.write(point, value)
        except TimeoutError:
            return fail(ErrorCode.TIMEOUT, f"{point.key}: no confirmation within {self.timeout:g} s")
        except WriteError as exc:
            return fail(exc.code, str(exc))
        return WriteResult(True, ErrorCode.OK, "", value, rid)


# A convenience for sources whose writes are plain coroutines.
class FunctionWriter:
    def __init__(self, fn: Callable[[PointInfo, Value], Awaitable[None]]) -> None:
        self._fn = fn

    async def write(self, point: PointInfo, value: Value) -> None:
        await self._fn(point, value)
