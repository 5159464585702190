"""EdgeX device commands (GET and SET), whoever carries them: the message bus or the device
service's REST API.  GET answers from the latest reading of each point; SET goes through the
command router, like every write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from picogate._model import PointInfo, Quality, Reading
from picogate._registry import PointRegistry
from picogate._router import CommandRouter, ErrorCode, WriteRequest
from picogate.edgex._model import API_VERSION, event_dto, new_id, parse_value, reading_dto


class CommandError(Exception):
    """A command that failed; `status` is the HTTP status the device-service API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_STATUS = {
    ErrorCode.UNKNOWN_POINT: 404,
    ErrorCode.READ_ONLY: 405,
    ErrorCode.BAD_TYPE: 400,
    ErrorCode.OUT_OF_RANGE: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.STALE: 400,
    ErrorCode.DEVICE_OFFLINE: 503,
    ErrorCode.TIMEOUT: 503,
    ErrorCode.DEVICE_ERROR: 500,
}


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

    async def set(self, device: str, command: str, body: Any, request_id: str = "") -> None:
        """SET: `body` maps resource names to values; each is written through the router."""
        points = {p.name: p for p in self.resolve(device, command)}
        if not isinstance(body, dict) or not body:
            raise CommandError(
                400, 'SET needs a JSON object mapping resources to values, e.g. {"setpoint": "21.5"}'
            )
        writes = []
        for name, text in body.items():
            info = points.get(name)
            if info is None:
                raise CommandError(404, f"DeviceResource {name} not found in command {command} of {device}")
            if not info.writable:
                raise CommandError(405, f"DeviceResource {name} of {device} is read-only")
            try:
                writes.append((info, parse_value(info, text)))
            except ValueError as exc:
                raise CommandError(400, str(exc)) from None
        for info, value in writes:
            result = await self.router.write(
                WriteRequest(device, info.name, value, origin="edgex", request_id=request_id or new_id())
            )
            if not result.ok:
                raise CommandError(_STATUS.get(result.code, 500), f"{result.code.value}: {result.error}")
