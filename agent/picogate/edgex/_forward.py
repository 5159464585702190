"""Readings → EdgeX events, through the outbox, to the message bus and/or core-data.

The encoder stores each event's AddEventRequest JSON in the outbox, addressed by
`<profile>/<device>/<source>`; the event id is fixed then, so a replay after an outage carries
the same id (core-data answers 409 to a duplicate, which counts as delivered).  The bus sink
wraps the request in a MessageEnvelope when it publishes; the REST sink posts it as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from picogate._model import PointInfo, Quality, Reading
from picogate._outbox import Envelope, Record, Refused
from picogate._registry import DeviceStatus, PointRegistry, RegistryEvent
from picogate._sink import SinkUnavailable
from picogate.edgex._commands import CommandError, Commands, EdgexNames
from picogate.edgex._model import (
    EnvelopeError,
    envelope,
    envelope_payload,
    format_value,
    id_series,
    new_id,
    parse_envelope,
    reading_template,
    value_type,
)
from picogate.mqtt import (
    IncomingMessage,
    MqttClient,
    MqttLost,
    MqttPublishRefused,
    await_acks,
    drop_acks,
)

log = logging.getLogger("picogate.edgex")

BUS_SINK = "edgex"
REST_SINK = "edgex_rest"


class EdgexEncoder:
    """Readings → AddEventRequests: per device and batch one event (source = the batch command),
    or one event per reading (source = the resource).  Bad-quality readings are left out."""

    def __init__(self, sink: str, registry: PointRegistry, names: EdgexNames, *, batch: bool) -> None:
        self.sink = sink
        self.registry = registry
        self.names = names
        self.batch = batch
        # per (device, point, unit): the reading's constant JSON head, and its value formatter
        self._templates: dict[tuple[str, str, str], tuple[str, str]] = {}
        self.unsubscribe = registry.subscribe(self._on_registry)

    def _on_registry(self, event: RegistryEvent) -> None:
        if event.kind != "device_state":
            self._templates.clear()

    def _template(self, r: Reading, profile: str) -> tuple[str, str]:
        info = self.registry.find(r.device, r.point)
        fields = reading_template(r.device, r.point, info, profile, r.unit)
        if info is None:  # no definition: the type follows the value, nothing is cached
            fields["valueType"] = value_type(None, r.value)
        head = orjson.dumps(fields).decode()[:-1] + ","  # '{...,' : the constant part
        if info is not None:
            self._templates[(r.device, r.point, r.unit)] = (head, fields["valueType"])
        return head, fields["valueType"]

    def _readings(self, group: list[Reading], profile: str) -> list[str]:
        """The readings' JSON texts, built from cached heads (the hot path: no dict per reading)."""
        templates = self._templates
        values = _value_texts(group)
        out = []
        for r, rid, value in zip(group, id_series(len(group)), values, strict=True):
            t = templates.get((r.device, r.point, r.unit))
            head = t[0] if t is not None else self._template(r, profile)[0]
            tags = _UNCERTAIN if r.quality is Quality.UNCERTAIN else ""
            out.append(f'{head}"id":"{rid}","origin":{r.ts},"value":{value}{tags}}}')
        return out

    def _event(self, device: str, profile: str, source: str, readings: list[str], origin: int) -> bytes:
        """An AddEventRequest (see picogate.edgex._model.add_event_request / event_dto)."""
        rq, eid = new_id(), new_id()
        names = orjson.dumps([device, profile, source]).decode()[1:-1].split(",", 2)
        return (
            f'{{"apiVersion":"v3","requestId":"{rq}","event":{{"apiVersion":"v3","id":"{eid}",'
            f'"deviceName":{names[0]},"profileName":{names[1]},"sourceName":{names[2]},'
            f'"origin":{origin},"readings":[{",".join(readings)}]}}}}'
        ).encode()

    def readings(self, readings: Sequence[Reading]) -> list[Envelope]:
        by_device: dict[str, list[Reading]] = {}
        for r in readings:
            if r.quality is Quality.BAD or r.value is None:
                continue
            group = by_device.get(r.device)
            if group is None:
                by_device[r.device] = [r]
            else:
                group.append(r)
        out: list[Envelope] = []
        for device, group in by_device.items():
            profile = self.names.profile(device)
            texts = self._readings(group, profile)
            if self.batch and len(group) > 1:
                source = self.names.batch_command
                body = self._event(device, profile, source, texts, max(r.ts for r in group))
                out.append(Envelope(self.sink, f"{profile}/{device}/{source}", body))
                continue
            parts: list[bytes] = []
            for r, text in zip(group, texts, strict=True):
                parts.append(f"{profile}/{device}/{r.point}".encode())
                parts.append(self._event(device, profile, r.point, [text], r.ts))
            if len(group) == 1:
                out.append(Envelope(self.sink, parts[0].decode(), parts[1]))
            else:  # one outbox row for the lot (see Envelope)
                out.append(Envelope(self.sink, "", b"\x00".join(parts), parts=len(group)))
        return out

    def device_status(self, status: DeviceStatus) -> list[Envelope]:
        return []  # carried by the readings' absence; see docs/edgex.md


_UNCERTAIN = ',"tags":{"quality":"uncertain"}'


def _value_texts(group: Sequence[Reading]) -> list[str]:
    """Each reading's value as the JSON string EdgeX wants ("21.5", "true", "450").

    Numbers and bools of a whole group go through one orjson call (its shortest round-trip float
    text is what Go's strconv parses); strings, NaN and infinities (null in JSON) one by one."""
    values = [r.value for r in group]
    if not any(type(v) is str for v in values):
        try:
            tokens = orjson.dumps(values).decode()[1:-1].split(",")
        except orjson.JSONEncodeError:  # an integer beyond 64 bits
            pass
        else:
            return [
                f'"{t}"' if t != "null" else f'"{format_value(v)}"'  # type: ignore[arg-type]
                for t, v in zip(tokens, values, strict=True)
            ]
    return [
        orjson.dumps(v).decode() if type(v) is str else f'"{format_value(v)}"'  # type: ignore[arg-type]
        for v in values
    ]


def _messages(rec: Record) -> list[tuple[str, bytes]]:
    return rec.messages() if rec.parts else [(rec.key, rec.payload)]


# ----------------------------------------------------------------------------- message bus


class EdgexBusSink:
    """The EdgeX message bus over MQTT: publishes events, answers device validation requests
    and device commands from core-command."""

    name = BUS_SINK

    def __init__(
        self,
        *,
        client_factory: Callable[..., MqttClient],
        base_topic: str,
        version: int,
        qos: int,
        names: EdgexNames,
        commands: Commands,
        known_device: Callable[[dict[str, Any]], str],
    ) -> None:
        self._factory = client_factory
        self.base = base_topic
        self.version = version
        self.qos = qos
        self.names = names
        self.commands = commands
        self._known_device = known_device
        self.client: MqttClient | None = None
        svc = names.service
        self.events_prefix = f"{base_topic}/events/device/{svc}/"
        self.command_filter = f"{base_topic}/device/command/request/{svc}/#"
        self.command_prefix = f"{base_topic}/device/command/request/{svc}/"
        self.validate_topic = f"{base_topic}/{svc}/validate/device"
        self.response_prefix = f"{base_topic}/response/{svc}/"
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.requests = 0
        self.bad_requests = 0
        self.connected = asyncio.Event()

    async def open(self) -> None:
        client = self._factory(on_message=self._on_message)
        try:
            await client.connect()
        except MqttLost as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise SinkUnavailable(str(exc)) from exc
        self.client = client
        client.subscribe(self.command_filter, qos=1)
        client.subscribe(self.validate_topic, qos=1)
        self.connected.set()

    async def deliver(self, records: Sequence[Record]) -> list[Refused]:
        client = self.client
        if client is None or not client.connected:
            raise SinkUnavailable("not connected to the EdgeX message bus")
        prefix = self.events_prefix
        version = self.version
        qos = self.qos
        futures: list[asyncio.Future[None]] = []
        sent: list[tuple[Record, str, bytes]] = []
        refusals: list[Refused] = []
        try:
            for rec in records:
                for key, body in _messages(rec):
                    try:
                        env = envelope(body, version=version, correlation_id=new_id())
                        fut = await client.publish(prefix + key, env, qos=qos)
                    except MqttPublishRefused as exc:
                        refusals.append(self._refused(rec, key, body, exc))
                        continue
                    if fut is not None:
                        futures.append(fut)
                        sent.append((rec, key, body))
            await await_acks(futures, lambda i, exc: refusals.append(self._refused(*sent[i], exc)))
        except MqttLost as exc:
            drop_acks(futures)
            raise SinkUnavailable(str(exc)) from exc
        return refusals

    def _refused(self, rec: Record, key: str, body: bytes, exc: MqttPublishRefused) -> Refused:
        self.refused += 1
        log.error("EdgeX bus refused an event (parked: sent again at the next start): %s", exc)
        return Refused(rec, key, body, str(exc))

    async def close(self) -> None:
        self.connected.clear()
        client, self.client = self.client, None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if client is not None:
            await client.disconnect()

    # -- requests from EdgeX ----------------------------------------------------------------------

    def _on_message(self, msg: IncomingMessage) -> None:
        task = asyncio.create_task(self._handle(msg, time.monotonic()), name="edgex-request")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reply(self, request_id: str, payload: bytes | None, *, correlation_id: str, error: bool) -> None:
        client = self.client
        if client is None or not client.connected:
            log.warning("EdgeX reply to %s not sent: bus not connected", request_id)
            return
        body = envelope(
            payload, version=self.version, request_id=request_id, correlation_id=correlation_id, error=error
        )
        task = asyncio.ensure_future(client.publish(self.response_prefix + request_id, body, qos=1))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _handle(self, msg: IncomingMessage, received: float) -> None:
        self.requests += 1
        try:
            env = parse_envelope(msg.payload)
        except EnvelopeError as exc:
            self.bad_requests += 1
            log.warning("EdgeX request on %s ignored: %s (no requestID to answer to)", msg.topic, exc)
            return
        rid = env.get("requestID") or env.get("requestId") or ""
        if not isinstance(rid, str) or not rid or "/" in rid or "+" in rid or "#" in rid:
            self.bad_requests += 1
            log.warning("EdgeX request on %s ignored: no usable requestID to answer to", msg.topic)
            return
        cid = env.get("correlationID") if isinstance(env.get("correlationID"), str) else ""
        # No semaphore here: GETs and validations are answered at once, and SETs are bounded by
        # Commands (commands.max_pending: a SET beyond it is refused busy, it never waits).
        try:
            payload = await self._answer(msg.topic, env, rid, received, len(msg.payload))
        except (CommandError, EnvelopeError) as exc:
            self.bad_requests += 1
            log.warning("EdgeX request %s on %s: %s", rid, msg.topic, exc)
            self._reply(rid, str(exc).encode(), correlation_id=str(cid), error=True)
            return
        self._reply(rid, payload, correlation_id=str(cid), error=False)

    async def _answer(
        self, topic: str, env: dict[str, Any], rid: str, received: float, size: int
    ) -> bytes | None:
        if topic == self.validate_topic:
            body = envelope_payload(env)
            device = body.get("device") if isinstance(body, dict) else None
            if not isinstance(device, dict):
                raise CommandError(400, "validation request without a device")
            problem = self._known_device(device)
            if problem:
                raise CommandError(400, problem)
            return None
        if not topic.startswith(self.command_prefix):
            raise CommandError(404, f"unexpected topic {topic}")
        levels = topic[len(self.command_prefix) :].split("/")
        if len(levels) != 3:
            raise CommandError(400, f"command topic must end in <device>/<command>/<get|set>, not {topic}")
        device, command, method = levels
        method = method.upper()
        if method == "GET":
            params = env.get("queryParams") or {}
            response = self.commands.get(device, command, rid)
            if isinstance(params, dict) and str(params.get("ds-returnevent", "true")).lower() == "false":
                return None
            return orjson.dumps(response)
        if method == "SET":
            try:
                body = envelope_payload(env)
            except EnvelopeError as exc:
                error = CommandError(400, str(exc))
                raise self.commands.refuse(
                    device, command, f"<{size} bytes>", error, request_id=rid
                ) from None
            await self.commands.set(device, command, body, rid, received=received, size=size)
            return None
        raise CommandError(405, f"method must be get or set, not {levels[2]!r}")


# ----------------------------------------------------------------------------- core-data REST


class EdgexRestSink:
    """core-data's REST API: POST each event, 201 = stored, 409 = stored before (a replay)."""

    name = REST_SINK

    def __init__(self, *, core_data: str, service: str, timeout: float, concurrency: int = 16) -> None:
        self.url = f"{core_data}/api/v3/event/{service}/"
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(concurrency)
        self.refused = 0
        self.duplicates = 0

    async def open(self) -> None:
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"Content-Type": "application/json"},
        )
        try:
            async with session.get(self.url.split("/api/v3/")[0] + "/api/v3/ping") as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            await session.close()
            raise SinkUnavailable(f"core-data not reachable: {exc}") from exc
        self._session = session

    async def deliver(self, records: Sequence[Record]) -> list[Refused]:
        session = self._session
        if session is None:
            raise SinkUnavailable("core-data not connected")
        posts = [self._post(session, rec, key, body) for rec in records for key, body in _messages(rec)]
        results = await asyncio.gather(*posts, return_exceptions=True)
        refusals: list[Refused] = []
        for res in results:
            if isinstance(res, BaseException):
                raise SinkUnavailable(f"core-data: {res}") from res
            if res is not None:
                refusals.append(res)
        return refusals

    async def _post(
        self, session: aiohttp.ClientSession, rec: Record, key: str, body: bytes
    ) -> Refused | None:
        async with self._sem:
            try:
                async with session.post(self.url + key, data=body) as resp:
                    status = resp.status
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SinkUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if status == 201:
            return None
        if status == 409:
            self.duplicates += 1  # stored before this replay
            return None
        if status in (400, 413):  # would be refused again: parked, not blocking the outbox
            self.refused += 1
            log.error("core-data refused an event for %s (%d, parked): %s", key, status, text[:300])
            return Refused(rec, key, body, f"core-data answered {status}: {text[:200]}")
        raise SinkUnavailable(f"core-data answered {status} for {key}: {text[:200]}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def point_infos(registry: PointRegistry, device: str) -> list[PointInfo]:
    return sorted(registry.points_of(device), key=lambda p: p.name)
