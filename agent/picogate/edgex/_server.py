"""The device service's own REST API (device-sdk.yaml), the part core-command's REST path uses:
`GET /api/v3/ping`, `GET /api/v3/version`, `GET|PUT /api/v3/device/name/{name}/{command}`."""

from __future__ import annotations

import email.utils
import logging
import time
from typing import Any, Literal

import orjson
from aiohttp import web

from picogate import __version__
from picogate._http import HttpServer, new_app
from picogate.edgex._commands import CommandError, Commands
from picogate.edgex._model import API_VERSION

log = logging.getLogger("picogate.edgex")


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"apiVersion": API_VERSION, "statusCode": status, "message": message}, status)


class DeviceServiceApi:
    kind: Literal["source", "service"] = "service"

    def __init__(self, commands: Commands, *, host: str, port: int) -> None:
        self.name = "edgex-api"
        self.commands = commands
        self.host, self.port = host, port
        self._stopped: Any = None
        # Bounded requests, 414/431/400 for what is not HTTP, as the gateway's own server; a body
        # larger than commands.max_payload is refused (413, EdgeX's JSON, audited) by the route,
        # before it is read in full.
        self.app = new_app(max_body=commands.router.policy.max_payload, routes_refuse_large=True)
        self.http = HttpServer(host=host, port=port, name="EdgeX device-service API", app=self.app)
        self.app.router.add_get("/api/v3/ping", self._ping)
        self.app.router.add_get("/api/v3/version", self._version)
        self.app.router.add_get("/api/v3/device/name/{name}/{command}", self._get)
        self.app.router.add_put("/api/v3/device/name/{name}/{command}", self._put)

    async def start(self) -> None:
        await self.http.start()
        self.port = self.http.port

    async def close(self) -> None:
        await self.http.close()

    async def run(self) -> None:
        import asyncio

        self._stopped = asyncio.Event()
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    def stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def _ping(self, request: web.Request) -> web.Response:
        return _json(
            {
                "apiVersion": API_VERSION,
                "timestamp": email.utils.formatdate(usegmt=True),
                "serviceName": self.commands.names.service,
            }
        )

    async def _version(self, request: web.Request) -> web.Response:
        return _json(
            {"apiVersion": API_VERSION, "version": __version__, "serviceName": self.commands.names.service}
        )

    async def _get(self, request: web.Request) -> web.Response:
        try:
            body = self.commands.get(request.match_info["name"], request.match_info["command"])
        except CommandError as exc:
            return _error(exc.status, str(exc))
        if request.query.get("ds-returnevent", "true").lower() == "false":
            return _json({"apiVersion": API_VERSION, "statusCode": 200})
        return _json(body)

    async def _put(self, request: web.Request) -> web.Response:
        received = time.monotonic()
        device, command = request.match_info["name"], request.match_info["command"]
        limit = self.commands.router.policy.max_payload
        try:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                size = request.content_length or limit + 1
                raise CommandError(
                    413, f"bad_request: body of {size} bytes is larger than {limit} (commands.max_payload)"
                ) from None
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise CommandError(400, f"body is not JSON: {exc}") from None
        except CommandError as exc:
            length = request.content_length
            shown = f"<{length} bytes>" if length is not None else "<a body>"
            self.commands.refuse(device, command, shown, exc, received=received)
            return _error(exc.status, str(exc))
        try:
            await self.commands.set(device, command, body, received=received, size=len(raw))
        except CommandError as exc:
            return _error(exc.status, str(exc))
        return _json({"apiVersion": API_VERSION, "statusCode": 200})
