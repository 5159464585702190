"""MQTT: the encoder (readings → topics and JSON payloads), the sink (outbox → broker, QoS 1 acks),
and the command ingress (`…/cmd/<device>/<point>/set` → command router → `…/result`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence

import orjson

from picogate._clock import epoch_ms
from picogate._model import Reading
from picogate._outbox import Envelope, Record, Refused
from picogate._registry import DeviceStatus
from picogate._router import CommandRouter, ErrorCode, WriteRequest, WriteResult, clip
from picogate._sink import SinkUnavailable
from picogate.mqtt._client import (
    IncomingMessage,
    MqttClient,
    MqttLost,
    MqttPublishRefused,
    Will,
)
from picogate.mqtt._topics import Topics, valid_name

log = logging.getLogger("picogate.mqtt")

SINK_NAME = "mqtt"
_DEVICE_TOPICS_MAX = 65_536  # device topics kept formatted (more than a gateway's devices)


class MqttEncoder:
    """Readings → `<root>/data/<device>/<point>` and/or `<root>/data/<device>` messages.

    Per-point messages of one device from one batch travel as one outbox record (a bundle, see
    `Envelope`), so 30 points polled together cost one row, not 30.
    """

    sink = SINK_NAME

    def __init__(self, topics: Topics, *, per_point: bool, per_device: bool, qos: int, retain: bool) -> None:
        self.topics = topics
        self.per_point = per_point
        self.per_device = per_device
        self.qos = qos
        self.retain = retain
        self._point_suffix: dict[str, bytes] = {}
        self._device_topic: dict[str, str] = {}
        """`<root>/data/<device>`, one string per device: formatted once, its hash computed once
        (the client's topic cache), and shared by every record in flight."""

    def readings(self, readings: Sequence[Reading]) -> list[Envelope]:
        out: list[Envelope] = []
        dumps = orjson.dumps
        by_device: dict[str, list[Reading]] = {}
        device: str | None = None
        group: list[Reading] = []
        for r in readings:
            if r.device is not device:  # (the same string object for a whole poll)
                device = r.device
                found = by_device.get(device)
                if found is None:
                    found = by_device[device] = []
                group = found
            group.append(r)
        topics = self._device_topic
        for device, group in by_device.items():
            topic = topics.get(device)
            if topic is None:
                if len(topics) >= _DEVICE_TOPICS_MAX:
                    topics.clear()
                topic = topics[device] = self.topics.data_device(device)
            if self.per_point:
                parts: list[bytes] = []
                suffixes = self._point_suffix
                for r in group:
                    suffix = suffixes.get(r.point)
                    if suffix is None:
                        suffix = suffixes[r.point] = r.point.encode()
                    parts.append(suffix)
                    parts.append(
                        dumps({"v": r.value, "ts": r.ts // 1_000_000, "unit": r.unit, "q": r.quality})
                    )
                prefix = topic + "/"
                if len(group) == 1:
                    out.append(Envelope(SINK_NAME, prefix + group[0].point, parts[1], self.qos, self.retain))
                else:
                    out.append(
                        Envelope(SINK_NAME, prefix, b"\x00".join(parts), self.qos, self.retain, len(group))
                    )
            if self.per_device:
                points = {}
                newest = ts = ms = 0
                for r in group:
                    if r.ts != ts:  # (one ts for a whole poll)
                        ts = r.ts
                        ms = ts // 1_000_000
                        if ts > newest:
                            newest = ts
                    points[r.point] = {"v": r.value, "ts": ms, "unit": r.unit, "q": r.quality}
                payload = dumps({"ts": epoch_ms(newest), "points": points})
                out.append(Envelope(SINK_NAME, topic, payload, self.qos, self.retain))
        return out

    def device_status(self, status: DeviceStatus) -> list[Envelope]:
        payload = orjson.dumps(
            {
                "state": status.state.value,
                "reason": status.reason,
                "ts": epoch_ms(status.since_ns or time.time_ns()),
            }
        )
        return [Envelope(SINK_NAME, self.topics.device_status(status.name), payload, 1, True)]


MAX_ID_LENGTH = 256
"""Characters of a command's `id`, at most."""


class CommandIngress:
    """Checks MQTT set commands and hands them to the command router; replies on `…/result`.

    Bounded: a command larger than `commands.max_payload` is refused unread, and when
    `commands.max_pending` commands are in progress the next one is refused `busy` at once
    (nothing waits without bound).  Every command, refused here or not, leaves one audit line.
    """

    def __init__(self, topics: Topics, router: CommandRouter, *, reply: Callable[[str, bytes], None]) -> None:
        self.topics = topics
        self.router = router
        self._reply = reply
        self._tasks: set[asyncio.Task[None]] = set()
        self.pending = 0  # commands in progress
        self.refused = 0  # refused here (malformed, retained, too large, busy)
        self.ignored = 0  # empty messages (deleting a retained command)

    def handle(self, msg: IncomingMessage) -> None:
        received = time.monotonic()
        parsed = self.topics.parse_cmd(msg.topic)
        if parsed is None:
            return
        device, point = parsed
        if not msg.payload:  # what MQTT sends to delete a retained message: not a command
            self.ignored += 1
            log.info(
                "empty message on %s ignored (it deletes a retained message; it is not a command)", msg.topic
            )
            return
        request = self.check(device, point, msg, received)
        if isinstance(request, WriteResult):  # refused (audited, answered)
            return
        limit = self.router.policy.max_pending
        if self.pending >= limit:
            self._refuse(
                request,
                msg.topic,
                ErrorCode.BUSY,
                f"{limit} commands already in progress (commands.max_pending)",
            )
            return
        self.pending += 1
        task = asyncio.create_task(self._handle(request), name="mqtt-command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def check(
        self, device: str, point: str, msg: IncomingMessage, received: float
    ) -> WriteRequest | WriteResult:
        """Parse and check a command: the request to write, or the refusal to send back (audited)."""
        size = len(msg.payload)

        def refuse(code: ErrorCode, error: str, rid: str = "", value: object = None) -> WriteResult:
            shown = value if value is not None else msg.payload
            request = WriteRequest(device, point, shown, origin="mqtt", request_id=rid, received=received)
            return self._refuse(request, msg.topic, code, error)

        limit = self.router.policy.max_payload
        if size > limit:
            return refuse(
                ErrorCode.BAD_REQUEST,
                f"command of {size} bytes is larger than {limit} (commands.max_payload); not read",
                value=f"<{size} bytes>",
            )
        if not (valid_name(device) and valid_name(point)):
            return refuse(ErrorCode.UNKNOWN_POINT, f"unknown point {clip(device)}.{clip(point)}")
        try:
            body = orjson.loads(msg.payload)
        except orjson.JSONDecodeError as exc:
            return refuse(ErrorCode.BAD_REQUEST, f"payload is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return refuse(
                ErrorCode.BAD_REQUEST, 'payload must be a JSON object such as {"v": 1, "id": "..."}'
            )
        raw_id = body.get("id", "")
        rid = str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else ""
        value = body.get("v")
        if len(rid) > MAX_ID_LENGTH:
            return refuse(
                ErrorCode.BAD_REQUEST, f'"id" is longer than {MAX_ID_LENGTH} characters', value=value
            )
        if msg.retain:
            return refuse(
                ErrorCode.BAD_REQUEST,
                "retained commands are refused (publish set commands with retain=false); delete this one "
                "from the broker with an empty retained message on the same topic",
                rid,
                value,
            )
        unknown = set(body) - {"v", "id", "ts"}
        if unknown:
            return refuse(
                ErrorCode.BAD_REQUEST,
                f"unknown field(s): {clip(', '.join(sorted(unknown)))}; expected v, id, ts",
                rid,
                value,
            )
        if "v" not in body:
            return refuse(ErrorCode.BAD_REQUEST, 'missing "v" (the value to write)', rid)
        if "id" in body and not rid:
            return refuse(ErrorCode.BAD_REQUEST, '"id" must be a string or an integer', value=value)
        ts = body.get("ts")
        age = 0.0
        if ts is not None:
            if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
                return refuse(ErrorCode.BAD_REQUEST, '"ts" must be milliseconds since the epoch', rid, value)
            age = time.time() - ts / 1000.0
        return WriteRequest(device, point, value, origin="mqtt", request_id=rid, received=received, age=age)

    def _refuse(self, request: WriteRequest, topic: str, code: ErrorCode, error: str) -> WriteResult:
        self.refused += 1
        result = self.router.refuse(request, code, error)
        log.warning("command on %s refused: %s", clip(topic, 200), error)
        self._reply(self.topics.cmd_result(request.device, request.point), result.as_json())
        return result

    async def _handle(self, request: WriteRequest) -> None:
        try:
            result = await self.router.write(request)
        finally:
            self.pending -= 1
        self._reply(self.topics.cmd_result(request.device, request.point), result.as_json())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class MqttSink:
    """Delivers outbox records to one broker at QoS 1 (or 0), subscribes to commands."""

    name = SINK_NAME

    def __init__(
        self,
        *,
        client_factory: Callable[..., MqttClient],
        topics: Topics,
        status_payload: Callable[[str], bytes],
        commands: CommandIngress | None = None,
    ) -> None:
        self._factory = client_factory
        self.topics = topics
        self._status_payload = status_payload
        self.commands = commands
        self.client: MqttClient | None = None
        self._direct: set[asyncio.Future[asyncio.Future[None] | None]] = set()
        self.refused = 0  # messages the broker refused (see deliver)
        self._publishing = asyncio.Lock()

    async def open(self) -> None:
        will = Will(self.topics.status, self._status_payload("offline"), qos=1, retain=True)
        client = self._factory(will=will, on_message=self._on_message)
        try:
            await client.connect()
        except MqttLost as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise SinkUnavailable(str(exc)) from exc
        self.client = client
        if self.commands is not None:
            # MQTT 5: keep the retain flag of commands published while we are subscribed, so that
            # a retained one is refused (3.1.1 clears it: see docs/mqtt.md).
            client.subscribe(self.topics.cmd_filter, qos=1, retain_as_published=True)
        self.publish_status("online")

    def alive(self) -> bool:
        """False once the broker connection is lost (RunningSink then reconnects, even when idle)."""
        return self.client is not None and self.client.connected

    def publish_status(self, state: str) -> None:
        self.publish_now(self.topics.status, self._status_payload(state), qos=1, retain=True)

    def publish_now(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Best-effort direct publish on the live connection (status, command results), bypassing
        the outbox so that a reply does not wait for a commit."""
        client = self.client
        if client is None or not client.connected:
            return False
        task = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
        self._direct.add(task)
        task.add_done_callback(self._direct_done)
        return True

    def _direct_done(self, task: asyncio.Future[asyncio.Future[None] | None]) -> None:
        self._direct.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._direct_failed(exc)
            return
        ack = task.result()
        if ack is not None:  # nobody awaits the PUBACK: say why it failed, if it does
            ack.add_done_callback(self._direct_acked)

    def _direct_acked(self, ack: asyncio.Future[None]) -> None:
        if not ack.cancelled() and ack.exception() is not None:
            self._direct_failed(ack.exception())  # type: ignore[arg-type]

    @staticmethod
    def _direct_failed(exc: BaseException) -> None:
        if isinstance(exc, MqttPublishRefused):  # too large, not authorised...: it will not go out
            log.warning("%s", exc)
        else:
            log.debug("direct publish failed: %s", exc)

    def _on_message(self, msg: IncomingMessage) -> None:
        if self.commands is not None:
            self.commands.handle(msg)

    async def deliver(self, records: Sequence[Record]) -> list[Refused]:
        """Publish every message of `records`; return when the broker acknowledged them all.

        A message the broker refuses (an MQTT 5 PUBACK reason code >= 0x80, e.g. not authorised
        by its ACL, or a packet larger than its maximum, refused before it is sent) would be
        refused again if re-sent at once: it is returned, and parked by the outbox (see
        docs/mqtt.md), so that one bad message cannot block the others.  A lost connection
        raises SinkUnavailable: everything unconfirmed is re-sent.
        """
        client = self.client
        if client is None or not client.connected:
            raise SinkUnavailable("not connected to the broker")
        batch = client.batch()
        try:
            # One batch at a time hands its messages to the client: batches in flight must not
            # interleave while they wait for in-flight slots, or a topic's messages could overtake.
            async with self._publishing:
                for rec in records:
                    await client.publish_many(
                        rec.messages() if rec.parts else ((rec.key, rec.payload),),
                        batch,
                        qos=rec.qos,
                        retain=rec.retain,
                    )
            batch.seal()
            await batch.done  # every PUBACK has come (or the connection was lost: MqttLost)
        except MqttLost as exc:
            batch.drop()
            raise SinkUnavailable(str(exc)) from exc
        except BaseException:  # cancelled: the connection is closed next, nobody awaits the batch
            batch.drop()
            raise
        if not batch.refused:
            return []
        return self._refusals(records, batch.refused)

    def _refusals(
        self, records: Sequence[Record], refused: list[tuple[int, MqttPublishRefused]]
    ) -> list[Refused]:
        """The refused messages, found by their ordinals in the batch (in order)."""
        by_ordinal = dict(refused)
        out: list[Refused] = []
        ordinal = 0
        for rec in records:
            for topic, body in rec.messages() if rec.parts else ((rec.key, rec.payload),):
                exc = by_ordinal.get(ordinal)
                if exc is not None:
                    out.append(self._refused(rec, topic, body, exc))
                ordinal += 1
        return out

    def _refused(self, rec: Record, topic: str, body: bytes, exc: MqttPublishRefused) -> Refused:
        self.refused += 1
        if self.refused <= 10 or self.refused % 1000 == 0:
            log.error(
                "broker refused a message (%d so far): %s; it is parked and sent again at the next "
                "start (or after outbox.parked_retry)",
                self.refused,
                exc,
            )
        return Refused(rec, topic, body, str(exc))

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        if client.connected:
            # A clean DISCONNECT suppresses the last will, so say "offline" ourselves.
            with contextlib.suppress(MqttLost, TimeoutError):
                async with asyncio.timeout(2):
                    fut = await client.publish(
                        self.topics.status, self._status_payload("offline"), qos=1, retain=True
                    )
                    if fut is not None:
                        await fut
        await client.disconnect()
