"""EdgeX test helpers: the EdgeX 3.1 OpenAPI schemas (with the known mistakes patched, see
tests/cases/edgex/specs/SOURCE.txt and docs/edgex.md) as JSON-schema validators, and a local
aiohttp server standing in for core-data and core-metadata that checks every request against
its OpenAPI operation and answers as EdgeX does (201 / 207 with per-entry codes / 400 / 409)."""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from aiohttp import web

SPECS = Path(__file__).parent / "cases" / "edgex" / "specs"


@functools.cache
def spec(name: str) -> dict[str, Any]:
    """An OpenAPI file with the mistakes listed in the EdgeX notes patched (stricter or truer,
    never looser than the Go validators EdgeX runs)."""
    doc: dict[str, Any] = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    s = doc["components"]["schemas"]
    if name == "core-data":
        # Event.apiVersion is required by the Go DTO (embedded Versionable); the file forgets it.
        s["Event"]["required"] = [*s["Event"]["required"], "apiVersion"]
        # objectValue is any JSON in Go (interface{}), not string/byte.
        s["ObjectReading"]["allOf"][1]["properties"]["objectValue"] = {}
    if name == "core-metadata":
        # attributes are map[string]any in Go (real profiles hold numbers and bools).
        s["DeviceResource"]["properties"]["attributes"] = {"type": "object"}
        # DeviceResource.tags is map[string]any, not a string.
        s["DeviceResource"]["properties"]["tags"] = {"type": "object"}
        # ProtocolProperties is map[string]any with scalar values, not a map of objects.
        s["ProtocolProperties"]["additionalProperties"] = {"type": ["string", "number", "boolean"]}
        # AutoEvent's required field is sourceName (the file says "resource").
        s["AutoEvent"]["required"] = ["interval", "sourceName"]
        # PATCH /deviceservice takes an array like every batch call (Go controller), not one object.
        op = doc["paths"]["/deviceservice"]["patch"]["requestBody"]["content"]["application/json"]
        op["schema"] = {"type": "array", "items": op["schema"]}
    return doc


def validator(spec_name: str, schema: dict[str, Any] | str) -> jsonschema.Draft202012Validator:
    doc = spec(spec_name)
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    root = {**copy.deepcopy(schema), "components": doc["components"]}
    return jsonschema.Draft202012Validator(
        root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def check(spec_name: str, schema: dict[str, Any] | str, instance: Any) -> None:
    """Raise jsonschema.ValidationError unless `instance` matches."""
    validator(spec_name, schema).validate(instance)


def errors(spec_name: str, schema: dict[str, Any] | str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(spec_name, schema).iter_errors(instance)
    ]


def request_schema(spec_name: str, method: str, path: str) -> dict[str, Any]:
    op = spec(spec_name)["paths"][path][method.lower()]
    schema: dict[str, Any] = op["requestBody"]["content"]["application/json"]["schema"]
    return schema


def decode_payload(env: dict[str, Any], version: int = 3) -> Any:
    """The payload of a MessageEnvelope: base64 JSON (3.x) or a JSON value (4.x); an error's
    text is base64 in 3.x and the text itself in 4.x."""
    p = env["payload"]
    if p is None:
        return None
    if version >= 4 and env.get("contentType") == "text/plain":
        return p
    if isinstance(p, str):
        raw = base64.b64decode(p, validate=True)
        if env.get("contentType") == "text/plain":
            return raw.decode()
        return json.loads(raw)
    return p


ENVELOPE_KEYS = {
    "apiVersion",
    "receivedTopic",
    "correlationID",
    "requestID",
    "errorCode",
    "payload",
    "contentType",
}


def check_envelope(env: dict[str, Any], *, version: int) -> None:
    """The MessageEnvelope fields (go-mod-messaging pkg/types/message_envelope.go)."""
    assert set(env) >= ENVELOPE_KEYS, f"envelope lacks {ENVELOPE_KEYS - set(env)}"
    assert set(env) <= ENVELOPE_KEYS | {"queryParams"}, f"unknown envelope keys {set(env) - ENVELOPE_KEYS}"
    assert env["apiVersion"] == "v3"
    assert env["errorCode"] in (0, 1)
    if env["payload"] is not None and env["contentType"] == "application/json":
        assert isinstance(env["payload"], str if version == 3 else dict), env["payload"]


# ----------------------------------------------------------------------------- fake core services


def _err(status: int, message: str, rid: str = "") -> web.Response:
    return web.json_response(
        {"apiVersion": "v3", "requestId": rid, "statusCode": status, "message": message}, status=status
    )


class FakeEdgex:
    """core-data and core-metadata on one loopback port, strict about what they accept.

    `validate_device` (async, device DTO -> error text or "") stands in for core-metadata's
    device validation over the bus; None accepts every device (as EdgeX 4 with bypassValidation)."""

    def __init__(self, validate_device: Callable[[dict[str, Any]], Awaitable[str]] | None = None) -> None:
        self.validate_device = validate_device
        self.events: dict[str, dict[str, Any]] = {}  # event id -> AddEventRequest
        self.posts = 0
        self.duplicates = 0
        self.profiles: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.bad_requests: list[str] = []
        self.fail_next: dict[tuple[str, str], int] = {}  # (method, path) -> status to answer once
        self.lose_replies = 0  # store this many events but answer 500 (a reply lost on the way)
        app = web.Application()
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_post("/api/v3/event/{svc}/{profile}/{device}/{source}", self._event)
        for path in ("/deviceprofile", "/deviceservice", "/device"):
            app.router.add_route("*", "/api/v3" + path, self._metadata)
        self.app = app
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeEdgex:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({"apiVersion": "v3", "timestamp": "now", "serviceName": "core"})

    def _invalid(self, where: str, problems: list[str]) -> web.Response:
        text = f"{where}: " + "; ".join(problems)
        self.bad_requests.append(text)
        return _err(400, text)

    async def _event(self, request: web.Request) -> web.Response:
        self.calls.append(("POST", "/event"))
        self.posts += 1
        forced = self.fail_next.pop(("POST", "/event"), None)
        if forced:
            return _err(forced, "forced failure")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._invalid("event", ["body is not JSON"])
        problems = errors(
            "core-data",
            request_schema(
                "core-data", "post", "/event/{serviceName}/{profileName}/{deviceName}/{sourceName}"
            ),
            body,
        )
        if problems:
            return self._invalid("event", problems)
        ev = body["event"]
        m = request.match_info
        if (ev["profileName"], ev["deviceName"], ev["sourceName"]) != (
            m["profile"],
            m["device"],
            m["source"],
        ):
            return self._invalid("event", ["path does not match the event's profile/device/source"])
        if not ev["readings"]:
            return self._invalid("event", ["no readings"])
        if ev["id"] in self.events:
            self.duplicates += 1
            return _err(409, f"event {ev['id']} already exists", body.get("requestId", ""))
        self.events[ev["id"]] = body
        if self.lose_replies > 0:
            self.lose_replies -= 1
            return _err(500, "stored, but the reply is lost")
        return web.json_response(
            {"apiVersion": "v3", "requestId": body.get("requestId", ""), "statusCode": 201, "id": ev["id"]},
            status=201,
        )

    async def _metadata(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/api/v3")
        method = request.method
        self.calls.append((method, path))
        forced = self.fail_next.pop((method, path), None)
        if forced:
            return _err(forced, "forced failure")
        try:
            schema = request_schema("core-metadata", method, path)
        except KeyError:
            return _err(405, f"{method} {path} not allowed")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._invalid(path, ["body is not JSON"])
        problems = errors("core-metadata", schema, body)
        if problems:
            return self._invalid(f"{method} {path}", problems)
        key, store = {
            "/deviceprofile": ("profile", self.profiles),
            "/deviceservice": ("service", self.services),
            "/device": ("device", self.devices),
        }[path]
        replies = []
        for item in body:
            dto = item[key]
            name = dto.get("name", "")
            rid = item.get("requestId", "")
            if method == "POST":
                if name in store:
                    replies.append(
                        {
                            "apiVersion": "v3",
                            "requestId": rid,
                            "statusCode": 409,
                            "message": f"{key} {name} exists",
                        }
                    )
                    continue
                problem = await self._check_new(key, dto)
                if problem:
                    replies.append(
                        {
                            "apiVersion": "v3",
                            "requestId": rid,
                            "statusCode": problem[0],
                            "message": problem[1],
                        }
                    )
                    continue
                store[name] = dto
                replies.append(
                    {"apiVersion": "v3", "requestId": rid, "statusCode": 201, "id": str(uuid.uuid4())}
                )
            else:
                if name not in store:
                    replies.append(
                        {
                            "apiVersion": "v3",
                            "requestId": rid,
                            "statusCode": 404,
                            "message": f"{key} {name} not found",
                        }
                    )
                    continue
                store[name] = {**store[name], **dto} if method == "PATCH" else dto
                replies.append({"apiVersion": "v3", "requestId": rid, "statusCode": 200})
        return web.json_response(replies, status=207)

    async def _check_new(self, key: str, dto: dict[str, Any]) -> tuple[int, str] | None:
        if key == "profile":
            names = {r["name"] for r in dto.get("deviceResources", [])}
            for c in dto.get("deviceCommands", []):
                for op in c["resourceOperations"]:
                    if op["deviceResource"] not in names:
                        return 400, f"command {c['name']} names unknown resource {op['deviceResource']}"
            return None
        if key == "device":
            if dto["serviceName"] not in self.services:
                return 400, f"device service {dto['serviceName']} does not exist"
            if dto["profileName"] not in self.profiles:
                return 400, f"profile {dto['profileName']} does not exist"
            if self.validate_device is not None:
                try:
                    problem = await asyncio.wait_for(self.validate_device(dto), 5)
                except TimeoutError:
                    return 503, "device validation timed out (no reply on the message bus)"
                if problem:
                    return 500, f"device validation failed: {problem}"
        return None


def response_schema(spec_name: str, method: str, path: str, status: int) -> dict[str, Any]:
    op = spec(spec_name)["paths"][path][method.lower()]
    schema: dict[str, Any] = op["responses"][str(status)]["content"]["application/json"]["schema"]
    return schema


class BusPeer:
    """Talks on the EdgeX message bus like core-command and core-metadata do (paho, the reference
    MQTT client): publishes a request envelope, waits for the reply on
    `edgex/response/<service>/<requestID>`."""

    def __init__(self, host: str, port: int, service: str = "picogate", *, version: int = 3) -> None:
        from _agent import MqttRecorder

        self.service, self.version = service, version
        self.rec = MqttRecorder(host, port, f"edgex/response/{service}/#").start()
        self.rec.wait_for(lambda _ms: self.rec._client.is_connected(), 5, "bus peer connected")

    def close(self) -> None:
        self.rec.stop()

    def envelope(
        self, payload: Any, request_id: str, *, query: dict[str, str] | None = None
    ) -> dict[str, Any]:
        if payload is not None and self.version == 3:
            payload = base64.b64encode(json.dumps(payload).encode()).decode()
        return {
            "apiVersion": "v3",
            "receivedTopic": "",
            "correlationID": str(uuid.uuid4()),
            "requestID": request_id,
            "errorCode": 0,
            "payload": payload,
            "contentType": "application/json",
            "queryParams": query or {},
        }

    def request(
        self,
        topic: str,
        payload: Any = None,
        *,
        query: dict[str, str] | None = None,
        patch: dict[str, Any] | None = None,
        timeout: float = 8.0,
    ) -> dict[str, Any]:
        """Blocking (call through asyncio.to_thread): the reply envelope, its payload decoded
        under the key "decoded"."""
        rid = str(uuid.uuid4())
        env = self.envelope(payload, rid, query=query)
        self.rec.publish(topic, json.dumps({**env, **(patch or {})}))
        msg = self.rec.wait_topic(f"edgex/response/{self.service}/{rid}", timeout)[0]
        reply: dict[str, Any] = json.loads(msg.payload)
        check_envelope(reply, version=self.version)
        assert reply["requestID"] == rid
        if reply["errorCode"] == 0:
            assert reply["correlationID"] == env["correlationID"]
        reply["decoded"] = decode_payload(reply, self.version)
        return reply

    def command(
        self, device: str, command: str, method: str, payload: Any = None, **kw: Any
    ) -> dict[str, Any]:
        topic = f"edgex/device/command/request/{self.service}/{device}/{command}/{method}"
        return self.request(topic, payload, **kw)

    def validate(self, device: dict[str, Any]) -> str:
        """What core-metadata does before it adds a device: "" if accepted, else the error text."""
        req = {"apiVersion": "v3", "requestId": str(uuid.uuid4()), "device": device}
        check("core-metadata", "AddDeviceRequest", req)
        reply = self.request(f"edgex/{self.service}/validate/device", req)
        return "" if reply["errorCode"] == 0 else str(reply["decoded"])
