"""The Sparkplug B Edge Node on the wire: the encoder (readings → outbox records that stay readings),
the sink (one MQTT session per connection: NDEATH will, births, records encoded at delivery), its
commands (NCMD, DCMD through the command router) and the primary host's STATE.

Its own MQTT connection, through the project's client: NDEATH must be the connection's will and the
Edge Node must disconnect when its primary host goes offline; neither fits the JSON sink's
connection (whose will is the gateway's status topic, and which must stay up for commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picogate._model import PointInfo, Reading
from picogate._outbox import Envelope, Record
from picogate._registry import DeviceStatus
from picogate._router import CommandRouter, ErrorCode, WriteRequest, clip
from picogate._sink import SinkUnavailable
from picogate.mqtt import IncomingMessage, MqttClient, MqttLost, MqttPublishRefused, Will
from picogate.sparkplug._payload import (
    BOOLEAN,
    DATATYPE,
    SparkplugPayloadError,
    Topics,
    decode,
    get_value,
    ndeath,
    parse_state,
)
from picogate.sparkplug._session import (
    DATA_PREFIX,
    NEXT_SERVER,
    REBIRTH,
    STATUS_PREFIX,
    EdgeSession,
    Message,
    NodeMetric,
    encode_readings,
    encode_status,
)

log = logging.getLogger("picogate.sparkplug")

SINK_NAME = "sparkplug"


class SparkplugEncoder:
    """Readings → one outbox record per device and batch: key `d/<device>`, the readings as JSON
    (`[[point, value, ts_ns, quality], …]`); device states → `s/<device>`.  Sparkplug's `seq`,
    aliases and births exist only within one MQTT session, so the sink encodes these records when
    it delivers them (`EdgeSession.record`)."""

    sink = SINK_NAME

    def readings(self, readings: Sequence[Reading]) -> list[Envelope]:
        by_device: dict[str, list[Reading]] = {}
        for r in readings:
            group = by_device.get(r.device)
            if group is None:
                by_device[r.device] = [r]
            else:
                group.append(r)
        return [
            Envelope(SINK_NAME, DATA_PREFIX + device, encode_readings(group), 0, False)
            for device, group in by_device.items()
        ]

    def device_status(self, status: DeviceStatus) -> list[Envelope]:
        payload = encode_status(status.state.value, status.since_ns or time.time_ns())
        return [Envelope(SINK_NAME, STATUS_PREFIX + status.name, payload, 0, False)]


class BdSeqStore:
    """The birth/death sequence number kept in a file: +1 (0–255, then 0) for every CONNECT, also
    across restarts and `kill -9`, so that a host can tell an old NDEATH from the current one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._previous: int | None = None

    def last(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("sparkplug: cannot read bdSeq from %s (%s); starting at 0", self.path, exc)
            return None
        if not text.isdigit() or int(text) > 255:
            log.warning("sparkplug: %s does not hold a bdSeq (0-255); starting at 0", self.path)
            return None
        return int(text)

    def next(self) -> int:
        """The bdSeq of the next CONNECT, written (fsync) before that CONNECT is sent."""
        last = self._previous = self.last()
        value = 0 if last is None else (last + 1) % 256
        self._write(value)
        return value

    def undo(self) -> None:
        """The CONNECT was never sent (the server could not be reached): take the number back."""
        previous = self._previous
        if previous is None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        else:
            self._write(previous)

    def _write(self, value: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise SinkUnavailable(f"cannot keep bdSeq in {self.path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class SparkplugStats:
    births: int = 0
    rebirths: int = 0  # NCMD rebirths
    commands: int = 0  # DCMD metrics handed to the router
    refused: int = 0  # DCMD metrics refused (by the router or here)
    bad_messages: int = 0  # NCMD/DCMD/STATE payloads that could not be used
    host_offline: int = 0  # disconnects because the primary host went offline
    next_server: int = 0


class SparkplugSink:
    """One Edge Node session per connection (see the module docstring and docs/sparkplug.md)."""

    name = SINK_NAME

    def __init__(
        self,
        *,
        client_factory: Callable[..., MqttClient],
        servers: Sequence[Server],
        topics: Topics,
        primary_host: str | None,
        bdseq: BdSeqStore,
        router: CommandRouter,
        points_of: Callable[[str], list[PointInfo]],
        find: Callable[[str, str], PointInfo | None],
        latest: Callable[[str, str], Reading | None],
        devices: Callable[[], list[str]],
        node_metrics: Callable[[], list[NodeMetric]],
        health_interval: float = 10.0,
        v5: bool = True,
        host_wait: float = 30.0,
    ) -> None:
        self._factory = client_factory
        self.servers = list(servers)
        self.topics = topics
        self.primary_host = primary_host
        self.bdseq = bdseq
        self.router = router
        self._points_of = points_of
        self._find = find
        self._latest = latest
        self._devices = devices
        self._node_metrics = node_metrics
        self._health_interval = health_interval
        self._v5 = v5
        self._host_wait = host_wait
        self.client: MqttClient | None = None
        self.session: EdgeSession | None = None
        self.server: Server | None = None
        self.stats = SparkplugStats()
        self._attempt = 0
        self._lock = asyncio.Lock()  # one writer of the session at a time: seq stays in order
        self._host_online = asyncio.Event()
        self._host_ts: dict[Server, int] = {}  # the last STATE timestamp seen, per server
        self._ending = ""  # why this session is ending ("" while it is not)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0
        self._health: asyncio.Task[None] | None = None
        self._last_health: dict[str, object] = {}

    # ------------------------------------------------------------------ connection

    async def open(self) -> None:
        server = self.servers[self._attempt % len(self.servers)]
        self._attempt += 1
        self.server = server
        bdseq = self.bdseq.next()
        now_ms = time.time_ns() // 1_000_000
        will = Will(self.topics.node_topic("NDEATH"), ndeath(bdseq, now_ms), qos=1, retain=False)
        self._will = will
        self._host_online = asyncio.Event()
        self._ending = ""
        client = self._factory(server, will=will, on_message=self._on_message)
        try:
            await client.connect()
        except BaseException as exc:
            if not client.connect_sent:
                self.bdseq.undo()  # bdSeq counts CONNECT packets, not attempts
            with contextlib.suppress(Exception):
                await client.disconnect()
            if isinstance(exc, MqttLost):
                raise SinkUnavailable(f"{server}: {exc}") from exc
            raise
        self.client = client
        session = EdgeSession(
            self.topics, bdseq, points_of=self._points_of, latest=self._latest, now_ns=time.time_ns
        )
        self.session = session
        try:
            # Subscriptions first (NCMD, DCMD, the primary host's STATE), then the births.
            client.subscribe(self.topics.node_topic("NCMD"), qos=1)
            client.subscribe(self.topics.device_topic("DCMD", "+"), qos=1)
            if self.primary_host is not None:
                client.subscribe(Topics.state(self.primary_host), qos=1)
                await self._wait_for_host(client, server)
            async with self._lock:
                await self._publish(client, session.births(self._devices(), self._node_metrics()))
            await client.ping()
        except BaseException as exc:  # no session (RunningSink calls close() only after a good open)
            self.client = self.session = None
            with contextlib.suppress(Exception):
                await self._disconnect(client)
            if isinstance(exc, MqttLost):
                raise SinkUnavailable(f"{server}: {exc}") from exc
            raise
        self.stats.births += 1
        log.info(
            "sparkplug: Edge Node %s/%s born on %s (bdSeq %d, %d devices)",
            self.topics.group,
            self.topics.node,
            server,
            bdseq,
            len(session.born_devices()),
        )
        self._health = asyncio.create_task(self._health_loop(), name="sparkplug-health")
        self._health.add_done_callback(self._health_done)

    async def _wait_for_host(self, client: MqttClient, server: Server) -> None:
        """Until the primary host's STATE says online (or, with more than one server, at most
        `host_wait` seconds: then the next server is tried)."""
        waiter = asyncio.ensure_future(self._host_online.wait())
        lost = client.lost
        try:
            timeout = self._host_wait if len(self.servers) > 1 else None
            waits: list[asyncio.Future[Any]] = [waiter] if lost is None else [waiter, lost]
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._host_online.is_set():
            raise SinkUnavailable(f"{server}: primary host {self.primary_host} is not online there")
        if not client.connected:
            raise SinkUnavailable(f"{server}: connection lost while waiting for the primary host")

    def alive(self) -> bool:
        """False once the connection is lost or the session is ending (the primary host went
        offline, Next Server): RunningSink then closes and reconnects (to the next server)."""
        return self.client is not None and self.client.connected and not self._ending

    async def _publish(self, client: MqttClient, messages: Sequence[Message]) -> None:
        for topic, body in messages:
            try:
                await client.publish(topic, body, qos=0, retain=False)
            except MqttPublishRefused as exc:  # larger than the broker takes: say so, go on
                log.error("sparkplug: %s not sent: %s", clip(topic, 200), exc)

    async def deliver(self, records: Sequence[Record]) -> None:
        """Encode each record in this session (seq, aliases, births, is_historical) and publish
        it at QoS 0; return once the broker has read them (a PINGREQ/PINGRESP after them: TCP
        keeps the order, so the broker has routed everything before it)."""
        client, session = self.client, self.session
        if client is None or session is None or not client.connected:
            raise SinkUnavailable("not connected to the MQTT server")
        if self._ending:
            raise SinkUnavailable(self._ending)
        try:
            async with self._lock:
                for rec in records:
                    try:
                        messages = session.record(rec.key, rec.payload, rec.created_ns)
                    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                        log.error("sparkplug: outbox record %d cannot be read (%s); left out", rec.id, exc)
                        continue
                    await self._publish(client, messages)
            await client.ping()
        except MqttLost as exc:
            raise SinkUnavailable(str(exc)) from exc
        if self._ending:  # the host went offline meanwhile: what was sent may not be stored
            raise SinkUnavailable(self._ending)

    async def close(self) -> None:
        """End the session on purpose: NDEATH first (MQTT 3.1.1: published before DISCONNECT;
        MQTT 5: DISCONNECT 0x04 makes the server publish the will)."""
        if self._health is not None:
            self._health.cancel()
            self._health = None
        client, self.client = self.client, None
        self.session = None
        if client is None:
            return
        await self._disconnect(client)

    async def _disconnect(self, client: MqttClient) -> None:
        if client.connected and not self._v5:  # as the will would be: QoS 1, not retained
            with contextlib.suppress(MqttLost, MqttPublishRefused, TimeoutError):
                async with asyncio.timeout(2):
                    ack = await client.publish(self._will.topic, self._will.payload, qos=1, retain=False)
                    if ack is not None:
                        await ack
        await client.disconnect(with_will=True)

    def _end(self, why: str) -> None:
        """Leave this server now (the primary host went offline, Next Server was asked for)."""
        if self._ending:
            return
        self._ending = why
        log.warning("sparkplug: %s; disconnecting from %s", why, self.server)
        client = self.client
        if client is not None:
            self._spawn(self._disconnect(client))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ health (NDATA)

    @staticmethod
    def _health_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("sparkplug: node health (NDATA) stopped", exc_info=task.exception())

    async def _health_loop(self) -> None:
        self._last_health = {m.name: m.value for m in self._node_metrics()}
        while True:
            await asyncio.sleep(self._health_interval)
            metrics = self._node_metrics()
            changed = [m for m in metrics if self._last_health.get(m.name) != m.value]
            if not changed:
                continue
            client, session = self.client, self.session
            if client is None or session is None or not client.connected or self._ending:
                return
            async with self._lock:
                msg = session.node_data(changed)
                if msg is not None:
                    with contextlib.suppress(MqttLost):
                        await self._publish(client, [msg])
            self._last_health.update({m.name: m.value for m in changed})

    # ------------------------------------------------------------------ incoming

    def _on_message(self, msg: IncomingMessage) -> None:
        topic = msg.topic
        try:
            if self.primary_host is not None and topic == Topics.state(self.primary_host):
                self._on_state(msg)
            elif topic == self.topics.node_topic("NCMD"):
                self._on_ncmd(msg)
            else:
                device = self.topics.dcmd_device(topic)
                if device is not None:
                    self._on_dcmd(device, msg)
        except SparkplugPayloadError as exc:
            self.stats.bad_messages += 1
            log.warning("sparkplug: %s", exc)

    def _on_state(self, msg: IncomingMessage) -> None:
        state = parse_state(msg.payload, msg.topic)
        server = self.server
        assert server is not None
        last = self._host_ts.get(server, 0)
        if state.timestamp < last:
            log.info(
                "sparkplug: STATE of %s with an older timestamp (%d < %d) ignored",
                self.primary_host,
                state.timestamp,
                last,
            )
            return
        self._host_ts[server] = state.timestamp
        if state.online:
            self._host_online.set()
            return
        self._host_online.clear()
        if self.session is not None and self.session.born_ns and not self._ending:
            self.stats.host_offline += 1
            self._end(f"primary host {self.primary_host} went offline")

    def _on_ncmd(self, msg: IncomingMessage) -> None:
        payload = decode(msg.payload, msg.topic)
        session = self.session
        for metric in payload.metrics:
            name = session.resolve("", metric) if session is not None else metric.name
            if name is None and metric.HasField("name"):
                name = metric.name
            on = get_value(metric, BOOLEAN) is True
            if name == REBIRTH and on:
                self.stats.rebirths += 1
                self._spawn(self._rebirth())
            elif name == NEXT_SERVER and on:
                self.stats.next_server += 1
                self._end("Node Control/Next Server asked for")
            elif name in (REBIRTH, NEXT_SERVER):  # false: nothing asked for
                continue
            else:
                self.stats.bad_messages += 1
                log.warning("sparkplug: NCMD metric %r not supported; ignored", clip(str(name), 80))

    async def _rebirth(self) -> None:
        client, session = self.client, self.session
        if client is None or session is None or self._ending:
            return
        async with self._lock:  # no DATA between the request and the births
            log.info("sparkplug: rebirth asked for (NCMD)")
            with contextlib.suppress(MqttLost):
                await self._publish(client, session.births(self._devices(), self._node_metrics()))

    def _on_dcmd(self, device: str, msg: IncomingMessage) -> None:
        received = time.monotonic()
        payload = decode(msg.payload, msg.topic)
        session = self.session
        for metric in payload.metrics:
            point = session.resolve(device, metric) if session is not None else None
            shown = f"alias {metric.alias}" if metric.HasField("alias") else clip(metric.name, 80)
            if point is None:
                self._refuse(
                    WriteRequest(device, shown, None, origin="sparkplug", received=received),
                    ErrorCode.UNKNOWN_POINT,
                    f"DCMD for {device}: no metric {shown} in its DBIRTH",
                )
                continue
            info = self._find(device, point)
            datatype = metric.datatype if metric.HasField("datatype") else None
            if datatype is None and info is not None:
                datatype = DATATYPE[info.type]
            try:
                value = get_value(metric, datatype)
            except SparkplugPayloadError as exc:
                self._refuse(
                    WriteRequest(device, point, None, origin="sparkplug", received=received),
                    ErrorCode.BAD_TYPE,
                    str(exc),
                )
                continue
            request = WriteRequest(device, point, value, origin="sparkplug", received=received)
            if value is None:
                self._refuse(request, ErrorCode.BAD_REQUEST, "DCMD metric carries no value")
                continue
            limit = self.router.policy.max_pending
            if self._pending >= limit:
                self._refuse(
                    request, ErrorCode.BUSY, f"{limit} commands already in progress (commands.max_pending)"
                )
                continue
            self._pending += 1
            self.stats.commands += 1
            self._spawn(self._write(request))

    def _refuse(self, request: WriteRequest, code: ErrorCode, error: str) -> None:
        self.stats.refused += 1
        self.router.refuse(request, code, error)
        log.warning("sparkplug: DCMD refused: %s", error)

    async def _write(self, request: WriteRequest) -> None:
        try:
            result = await self.router.write(request)
        finally:
            self._pending -= 1
        if not result.ok:
            self.stats.refused += 1
            log.warning(
                "sparkplug: DCMD %s.%s refused: %s (%s)",
                request.device,
                request.point,
                result.code.value,
                result.error,
            )
