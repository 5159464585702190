"""Assembles the gateway from its configuration and runs it.

Sources (Modbus lines today; Pico boards, CoAP and rules plug in the same way) emit `Reading`s
into the pipeline; the pipeline commits what is to be published to the outbox; one `RunningSink`
per sink delivers from the outbox.  Writes from anywhere go through the one command router.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from picogate import __version__
from picogate._clock import Clock
from picogate._component import Component
from picogate._datadir import DataDirLock
from picogate._http import HttpServer
from picogate._metrics import Metrics, counter, gauge
from picogate._outbox import Outbox
from picogate._pipeline import Pipeline
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import CommandRouter, WriteRequest, WriteResult
from picogate._sink import RunningSink
from picogate.config._schema import GatewayConfig, PublishMode
from picogate.modbus._source import ModbusLine, build_lines
from picogate.mqtt._client import MqttClient, tls_context
from picogate.mqtt._sink import CommandIngress, MqttEncoder, MqttSink
from picogate.mqtt._topics import Topics

log = logging.getLogger("picogate")


@dataclass(slots=True)
class _Parts:
    outbox: Outbox
    registry: PointRegistry
    router: CommandRouter
    pipeline: Pipeline
    clock: Clock
    topics: Topics
    metrics: Metrics
    lines: list[ModbusLine] = field(default_factory=list)
    sinks: list[RunningSink] = field(default_factory=list)
    mqtt: MqttSink | None = None
    components: list[Component] = field(default_factory=list)
    """What the plug-ins (pico, coap, rules, edgex) asked the gateway to run."""


class Gateway:
    """`async with Gateway(cfg) as gw: await gw.run()`; `gw.stop()` asks for a clean shutdown."""

    def __init__(self, config: GatewayConfig, *, drain_timeout: float = 10.0) -> None:
        self.config = config
        self.drain_timeout = drain_timeout
        self._stop = asyncio.Event()
        self._latency_children: dict[str, Any] = {}
        self._parts: _Parts | None = None
        self.http = HttpServer(host=config.metrics.host, port=config.metrics.port, name="metrics and health")
        """The local HTTP server (on the `metrics` address, when enabled): parts add routes in attach."""
        self.started_ns = time.time_ns()
        self.ready = asyncio.Event()
        self._password: str | None = None
        self._lock = DataDirLock(config.gateway.data_dir)

    @property
    def parts(self) -> _Parts:
        assert self._parts is not None, "gateway not started"
        return self._parts

    # The pieces other components plug into.
    @property
    def registry(self) -> PointRegistry:
        return self.parts.registry

    @property
    def router(self) -> CommandRouter:
        return self.parts.router

    @property
    def pipeline(self) -> Pipeline:
        return self.parts.pipeline

    def stop(self) -> None:
        self._stop.set()

    async def __aenter__(self) -> Gateway:
        # First of all: a second agent on this data_dir stops here (DataDirInUse), before it
        # touches the outbox, a device or the broker.
        self._lock.acquire()
        try:
            await self._build()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._parts is not None:
                await self._parts.outbox.close()
            await self.http.close()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ build

    async def _build(self) -> None:
        cfg = self.config
        # Read the secret once, now: a missing variable or file is a start-up error, not a
        # reconnect loop.  It is kept in memory only and never logged.
        self._password = cfg.mqtt.password() if cfg.mqtt.enabled and cfg.mqtt.username else None
        outbox = Outbox(
            cfg.outbox_path(),
            max_records=cfg.outbox.max_records,
            synchronous=cfg.outbox.synchronous,
            commit_interval=cfg.outbox.commit_interval,
            max_pending_bytes=cfg.outbox.max_pending_mb * 1024 * 1024,
            max_parked=cfg.outbox.max_parked,
            parked_retry=cfg.outbox.parked_retry,
        )
        await outbox.open()
        registry = PointRegistry()
        router = CommandRouter(registry, policy=cfg.commands.policy(mqtt_ttl=cfg.mqtt.command_ttl))
        if cfg.mqtt.command_ttl is not None:
            log.warning("mqtt.command_ttl is deprecated: it is read as commands.deadline.mqtt; rename it")
        clock = Clock(check_sync=cfg.clock.check_sync)
        pipeline = Pipeline(registry, outbox, clock)
        topics = Topics(cfg.mqtt.base_topic, cfg.gateway.id)
        metrics = Metrics()
        self.http.app.add_routes(metrics.routes())
        parts = _Parts(outbox, registry, router, pipeline, clock, topics, metrics)
        self._parts = parts

        # A poll is acknowledged to nobody: its readings are handed over without waiting for the
        # commit, so that a line polls as fast as its devices answer.
        for line in build_lines(
            cfg.devices,
            registry=registry,
            emit=functools.partial(pipeline.emit, wait=False),
            status_changed=functools.partial(pipeline.device_status, wait=False),
        ):
            line.register()
            line.set_write_queue(cfg.commands.queue_per_device)
            for name in line.devices:
                router.register_writer(name, line.writer_for(name))
            line.latency_observer = self._observe_latency
            parts.lines.append(line)

        if cfg.mqtt.enabled:
            mode = cfg.mqtt.publish
            pipeline.encoders.append(
                MqttEncoder(
                    topics,
                    per_point=mode in (PublishMode.POINT, PublishMode.BOTH),
                    per_device=mode in (PublishMode.DEVICE, PublishMode.BOTH),
                    qos=cfg.mqtt.qos,
                    retain=cfg.mqtt.retain,
                )
            )
            sink = MqttSink(
                client_factory=self._mqtt_client, topics=topics, status_payload=self._status_payload
            )
            sink.commands = CommandIngress(topics, router, reply=self._reply)
            parts.mqtt = sink
            parts.sinks.append(
                RunningSink(
                    sink,
                    outbox,
                    window=4,
                    min_delay=cfg.mqtt.reconnect.min_delay,
                    max_delay=cfg.mqtt.reconnect.max_delay,
                )
            )
        # The plug-ins, in this order: sources first, then rules (which see every source's
        # points), then EdgeX (which describes every point, LET points included).
        from picogate.coap._attach import attach as attach_coap
        from picogate.edgex._attach import attach as attach_edgex
        from picogate.pico._attach import attach as attach_pico
        from picogate.rules._attach import attach as attach_rules

        for attach in (attach_pico, attach_coap, attach_rules, attach_edgex):
            parts.components.extend(await attach(self))

        router.observe(self._observe_write)
        clock.listeners.append(lambda _synced: self._publish_status())
        outbox.listeners.append(self._publish_status)  # commits failing or back, messages parked
        metrics.add_collector(self._collect)
        metrics.add_collector(router.collect)
        metrics.add_collector(self.http.collect)
        metrics.health = self.health

    def _mqtt_client(self, **kwargs: Any) -> MqttClient:
        m = self.config.mqtt
        tls = None
        if m.tls is not None:
            tls = tls_context(
                ca_file=str(m.tls.ca_file) if m.tls.ca_file else None,
                cert_file=str(m.tls.cert_file) if m.tls.cert_file else None,
                key_file=str(m.tls.key_file) if m.tls.key_file else None,
                insecure=m.tls.insecure,
            )
        return MqttClient(
            host=m.host,
            port=m.port,
            client_id=self.config.client_id(),
            username=m.username,
            password=self._password,
            tls=tls,
            protocol=m.protocol,
            keepalive=m.keepalive,
            max_inflight=m.max_inflight,
            max_packet_size=m.max_packet_size,
            **kwargs,
        )

    def _reply(self, topic: str, payload: bytes) -> None:
        mqtt = self.parts.mqtt
        if mqtt is not None and not mqtt.publish_now(topic, payload, qos=1):
            log.warning("command result for %s not sent: broker not connected", topic)

    def _status_payload(self, state: str) -> bytes:
        p = self._parts
        body: dict[str, Any] = {"state": state, "ts": time.time_ns() // 1_000_000, "version": __version__}
        if p is not None and state == "online":
            body["clock_synced"] = p.clock.synced
            ob = p.outbox
            body["outbox"] = {
                "depth": ob.depth(),
                "dropped": ob.dropped(),
                "parked": ob.parked(),
                "lost": ob.lost(),
                "failing": ob.failing,
            }
            if p.pipeline.unfit:
                body["unfit_readings"] = sum(p.pipeline.unfit.values())
            devices = p.registry.devices()
            body["devices"] = {
                "online": sum(d.state is DeviceState.ONLINE for d in devices),
                "offline": sum(d.state is DeviceState.OFFLINE for d in devices),
            }
            body["writes"] = p.router.summary()
        return orjson.dumps(body)

    def _publish_status(self) -> None:
        mqtt = self._parts.mqtt if self._parts is not None else None
        if mqtt is not None:
            mqtt.publish_status("online")

    def _observe_latency(self, device: str, seconds: float) -> None:
        # One labelled child per device, looked up once (labels() costs more than observe()).
        child = self._latency_children.get(device)
        if child is None:
            child = self._latency_children[device] = self.parts.metrics.request_seconds.labels(device)
        child.observe(seconds)

    def _observe_write(self, request: WriteRequest, result: WriteResult, seconds: float) -> None:
        origin = request.origin.split(":", 1)[0]
        self.parts.metrics.write_seconds.labels(origin, result.code.value).observe(seconds)

    def _collect(self) -> Iterable[Any]:
        p = self.parts
        lines = p.lines
        yield counter(
            "picogate_polls", "Polls started", ["line"], (([ln.name], ln.stats.polls) for ln in lines)
        )
        yield counter(
            "picogate_modbus_requests",
            "Modbus requests",
            ["line"],
            (([ln.name], ln.stats.requests) for ln in lines),
        )
        yield counter(
            "picogate_modbus_errors",
            "Failed Modbus requests",
            ["line", "kind"],
            [([ln.name, "timeout"], ln.stats.timeouts) for ln in lines]
            + [([ln.name, "exception"], ln.stats.exceptions) for ln in lines]
            + [([ln.name, "any"], ln.stats.failures) for ln in lines],
        )
        yield counter(
            "picogate_modbus_discarded",
            "What Modbus links received and discarded: late replies, frames of other units, replies "
            "that did not fit their request, garbage bytes, broken Modbus TCP streams",
            ["line", "reason"],
            [
                ([ln.name, reason], getattr(ln.link.stats, reason))
                for ln in lines
                for reason in ("late", "foreign", "mismatched", "garbage", "desync")
            ],
        )
        yield counter(
            "picogate_readings_received", "Readings from all sources", [], [([], p.pipeline.received)]
        )
        yield counter(
            "picogate_readings_published", "Readings passed to the outbox", [], [([], p.pipeline.published)]
        )
        yield gauge(
            "picogate_outbox_depth",
            "Records waiting in the outbox",
            ["sink"],
            (([s.name], p.outbox.depth(s.name)) for s in p.sinks),
        )
        yield counter(
            "picogate_outbox_commits", "Transactions committed by the outbox", [], [([], p.outbox.commits)]
        )
        yield counter(
            "picogate_outbox_dropped",
            "Records dropped because the outbox was full",
            ["sink"],
            (([s.name], p.outbox.dropped(s.name)) for s in p.sinks),
        )
        yield counter(
            "picogate_outbox_lost",
            "Messages never committed: commits failed (disk full) and the memory bound was reached",
            ["sink"],
            (([s.name], p.outbox.lost(s.name)) for s in p.sinks),
        )
        yield gauge(
            "picogate_outbox_parked",
            "Messages the peer refused, parked to be sent again later",
            ["sink"],
            (([s.name], p.outbox.parked(s.name)) for s in p.sinks),
        )
        yield counter(
            "picogate_outbox_parked_dropped",
            "Parked messages dropped because the parked table was full",
            ["sink"],
            (([s.name], p.outbox.parked_dropped(s.name)) for s in p.sinks),
        )
        yield gauge(
            "picogate_outbox_failing",
            "1 while the outbox's commits fail (disk full, I/O error)",
            [],
            [([], float(bool(p.outbox.failing)))],
        )
        yield counter(
            "picogate_outbox_commit_failures", "Commits that failed", [], [([], p.outbox.commit_failures)]
        )
        yield gauge(
            "picogate_outbox_pending",
            "Messages handed to the outbox and not yet committed",
            [],
            [([], p.outbox.pending)],
        )
        yield counter(
            "picogate_outbox_backpressure",
            "Times a source waited because too much was waiting for a commit",
            [],
            [([], p.outbox.backpressure_waits)],
        )
        yield counter(
            "picogate_readings_unfit",
            "Readings made bad because no sink could carry their value",
            ["reason"],
            (([reason], n) for reason, n in p.pipeline.unfit.items()),
        )
        yield counter(
            "picogate_pipeline_failures",
            "Processor (rules) and encoder failures; the readings went on",
            ["part"],
            (([part], n) for part, n in p.pipeline.failures.items()),
        )
        yield counter(
            "picogate_messages_delivered",
            "Messages confirmed by a sink",
            ["sink"],
            (([s.name], s.stats.delivered) for s in p.sinks),
        )
        yield gauge(
            "picogate_sink_connected",
            "1 when the sink is connected",
            ["sink"],
            (([s.name], float(s.stats.connected)) for s in p.sinks),
        )
        yield gauge(
            "picogate_device_online",
            "1 when the device answers",
            ["device"],
            (([d.name], float(d.state is DeviceState.ONLINE)) for d in p.registry.devices()),
        )
        yield gauge(
            "picogate_clock_synced",
            "1 when the system clock is synchronised",
            [],
            [([], float(p.clock.synced))],
        )

    def health(self) -> dict[str, Any]:
        p = self.parts
        healthy = all(s.stats.connected for s in p.sinks) and not p.outbox.failing
        return {
            "status": "ok" if healthy else "degraded",
            "outbox": {"failing": p.outbox.failing, "parked": p.outbox.parked(), "lost": p.outbox.lost()},
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 1),
            "sinks": {
                s.name: {"connected": s.stats.connected, "depth": p.outbox.depth(s.name)} for s in p.sinks
            },
            "devices": {d.name: d.state.value for d in p.registry.devices()},
            "clock_synced": p.clock.synced,
        }

    # ------------------------------------------------------------------ run

    async def run(self, *, install_signals: bool = True) -> None:
        p = self.parts
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
        if self.config.metrics.enabled:
            await self.http.start()
        # Announce every device's state once (unknown until first poll).
        # (in one outbox commit: one commit per device would cost 25 s for 500 devices)
        now = time.time_ns()
        await p.pipeline.device_status(
            *[
                DeviceStatus(d.name, DeviceState.UNKNOWN, "not polled yet", now)
                for d in p.registry.devices()
                if d.state is DeviceState.UNKNOWN
            ],
            wait=False,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                sink_tasks = [tg.create_task(s.run(), name=f"sink-{s.name}") for s in p.sinks]
                source_tasks = [tg.create_task(ln.run(), name=f"modbus-{ln.name}") for ln in p.lines]
                sources = [c for c in p.components if c.kind == "source"]
                services = [c for c in p.components if c.kind != "source"]
                source_tasks += [tg.create_task(c.run(), name=c.name) for c in sources]
                service_tasks = [tg.create_task(c.run(), name=c.name) for c in services]
                status_task = tg.create_task(self._status_ticker(), name="status")
                self.ready.set()
                log.info(
                    "picogate %s: gateway %s up: %d devices on %d links, %d points",
                    __version__,
                    self.config.gateway.id,
                    len(self.config.devices),
                    len(p.lines),
                    len(p.registry),
                )
                await self._stop.wait()
                log.info(
                    "stopping: polls stop, then the outbox is flushed (up to %.0f s)", self.drain_timeout
                )
                for line in p.lines:
                    line.stop()
                for c in sources:
                    c.stop()
                await _finish(source_tasks, grace=1.0)
                for s in p.sinks:
                    if not await s.drained(self.drain_timeout):
                        log.warning(
                            "sink %s: %d records still in the outbox; they will be sent at the next start",
                            s.name,
                            p.outbox.depth(s.name),
                        )
                for c in services:
                    c.stop()
                await _finish([status_task, *service_tasks, *sink_tasks])
        finally:
            self.ready.clear()

    async def _status_ticker(self) -> None:
        while True:
            await asyncio.sleep(30)
            self._publish_status()


async def _finish(tasks: list[asyncio.Task[None]], *, grace: float = 3.0, tries: int = 50) -> None:
    """Cancel `tasks` and wait for them; after `grace` seconds (for their clean-up, e.g. the
    "offline" status), cancel again those still running, every 100 ms.

    On Python 3.11 `asyncio.wait_for` (inside pymodbus) can swallow a cancellation that races
    with a reply; cancelling once and waiting forever would then hang the shutdown.
    """
    pending = {t for t in tasks if not t.done()}
    for t in pending:
        t.cancel()
    if pending:
        _, pending = await asyncio.wait(pending, timeout=grace)
    for _ in range(tries):
        if not pending:
            return
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    if pending:
        log.error("tasks did not stop: %s", ", ".join(t.get_name() for t in pending))
