"""EdgeX device commands (GET and SET), whoever carries them: the message bus or the device
service's REST API.  GET answers from the latest reading of each point; SET goes through the
command router, like every write, bounded like MQTT commands: at most `commands.max_pending`
SETs in progress (more are refused `busy` at once), at most `commands.max_payload` bytes each;
each write, refused early or not, leaves one audit line."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from picogate._errors import PicogateError
from picogate._model import PointInfo, Quality, Reading
from picogate._registry import PointRegistry
from picogate._router import CommandRouter, ErrorCode, WriteRequest, clip
from picogate.edgex._model import API_VERSION, event_dto, new_id, parse_value, reading_dto


class CommandError(PicogateError):
    """A command that failed; `status` is the HTTP status the device-service API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# What a write's error code becomes in EdgeX (HTTP status; docs/edgex.md, "Commands").
STATUS = {
    ErrorCode.OK: 200,
    ErrorCode.UNKNOWN_POINT: 404,
    ErrorCode.READ_ONLY: 405,
    ErrorCode.BAD_TYPE: 400,
    ErrorCode.OUT_OF_RANGE: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.DEVICE_ERROR: 500,
    ErrorCode.DEVICE_OFFLINE: 503,
    ErrorCode.BUSY: 503,
    ErrorCode.STALE: 503,
    ErrorCode.OUTCOME_UNKNOWN: 504,
}
_CODE_OF_STATUS = {404: ErrorCode.UNKNOWN_POINT, 405: ErrorCode.READ_ONLY}


@dataclass(frozen=True, slots=True)
class EdgexNames:
    service: str
    profile_prefix: str
    batch_command: str

    def profile(self, device: str) -> str:
        return self.profile_prefix + device


class Commands:
    def __init__(
        self,
        registry: PointRegistry,
        router: CommandRouter,
        latest: Callable[[str, str], Reading | None],
        names: EdgexNames,
    ) -> None:
        self.registry = registry
        self.router = router
        self.latest = latest
        self.names = names
        self.pending = 0  # SETs in progress

    def resolve(self, device: str, command: str) -> list[PointInfo]:
        """The points a command (the batch command or one resource) covers."""
        if self.registry.device(device) is None:
            raise CommandError(404, f"device {device} not found (not served by {self.names.service})")
        if command == self.names.batch_command:
            points = self.registry.points_of(device)
            if points:
                return points
        info = self.registry.find(device, command)
        if info is None:
            raise CommandError(404, f"DeviceCommand or DeviceResource {command} not found on device {device}")
        return [info]

    def get(self, device: str, command: str, request_id: str = "") -> dict[str, Any]:
        """GET: an EventResponse with the latest good or uncertain value of each point."""
        points = self.resolve(device, command)
        profile = self.names.profile(device)
        readings = []
        missing = []
        for p in points:
            r = self.latest(device, p.name)
            if r is None or r.value is None or r.quality is Quality.BAD:
                missing.append(p.name)
                continue
            readings.append(reading_dto(r, p, profile))
        if not readings:
            raise CommandError(
                503, f"no value yet for {device}: {', '.join(missing)} (device not read or bad)"
            )
        response: dict[str, Any] = {"apiVersion": API_VERSION, "statusCode": 200}
        if request_id:
            response["requestId"] = request_id
        response["event"] = event_dto(device, profile, command, readings)
        return response

    def refuse(
        self,
        device: str,
        command: str,
        value: object,
        error: CommandError,
        *,
        request_id: str = "",
        received: float | None = None,
        code: ErrorCode | None = None,
    ) -> CommandError:
        """Audit a SET refused before it reached the router; return `error` to raise."""
        request = WriteRequest(
            device,
            command,
            value,
            origin="edgex",
            request_id=request_id,
            received=time.monotonic() if received is None else received,
        )
        self.router.refuse(
            request, code or _CODE_OF_STATUS.get(error.status, ErrorCode.BAD_REQUEST), str(error)
        )
        return error

    async def set(
        self,
        device: str,
        command: str,
        body: Any,
        request_id: str = "",
        *,
        received: float | None = None,
        size: int = 0,
    ) -> None:
        """SET: `body` maps resource names to values; each is written through the router.

        `received` is when the request arrived (time.monotonic(); default: now), `size` its size
        in bytes as received."""
        received = time.monotonic() if received is None else received
        rid = request_id or new_id()
        policy = self.router.policy
        try:
            if size > policy.max_payload:
                raise CommandError(
                    413,
                    f"bad_request: SET of {size} bytes is larger than {policy.max_payload} (commands.max_payload)",
                )
            points = {p.name: p for p in self.resolve(device, command)}
            if not isinstance(body, dict) or not body:
                raise CommandError(
                    400, 'SET needs a JSON object mapping resources to values, e.g. {"setpoint": "21.5"}'
                )
        except CommandError as exc:
            shown = f"<{size} bytes>" if size > policy.max_payload else body
            raise self.refuse(device, command, shown, exc, request_id=rid, received=received) from None
        writes = []
        for name, text in body.items():
            try:
                info = points.get(name)
                if info is None:
                    raise CommandError(
                        404, f"DeviceResource {clip(str(name))} not found in command {command} of {device}"
                    )
                if not info.writable:
                    raise CommandError(405, f"DeviceResource {name} of {device} is read-only")
                try:
                    writes.append((info, parse_value(info, text)))
                except ValueError as exc:
                    error = CommandError(400, clip(str(exc), 300))
                    raise self.refuse(
                        device, name, text, error, request_id=rid, received=received, code=ErrorCode.BAD_TYPE
                    ) from None
            except CommandError as exc:
                if exc.status == 400:  # refused (and audited) above
                    raise
                raise self.refuse(device, str(name), text, exc, request_id=rid, received=received) from None
        if self.pending >= policy.max_pending:
            error = CommandError(
                503, f"busy: {policy.max_pending} EdgeX SETs already in progress (commands.max_pending)"
            )
            for info, value in writes:
                self.refuse(
                    device, info.name, value, error, request_id=rid, received=received, code=ErrorCode.BUSY
                )
            raise error
        self.pending += 1
        try:
            for info, value in writes:
                result = await self.router.write(
                    WriteRequest(device, info.name, value, origin="edgex", request_id=rid, received=received)
                )
                if not result.ok:
                    raise CommandError(STATUS.get(result.code, 500), f"{result.code.value}: {result.error}")
        finally:
            self.pending -= 1
