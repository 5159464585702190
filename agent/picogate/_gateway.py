"""Assembles the gateway from its configuration and runs it.

The core (registry, router, pipeline, outbox, metrics, the HTTP server) is built here; everything
else is a plug-in (`picogate._plugins.PLUGINS`: Modbus, MQTT, Pico boards, CoAP, rules, EdgeX),
attached through a `Host` of its own (picogate._host).  Sources emit `Reading`s into the
pipeline; the pipeline commits what is to be published to the outbox; one `RunningSink` per sink
delivers from the outbox.  Writes from anywhere go through the one command router.

Given the path of its `gateway.yaml`, the running gateway reloads it when it changes or on SIGHUP
(`reload`, picogate._reload): the plug-ins whose section changed are updated, the rest keeps
running untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picogate import __version__, rules
from picogate._clock import Clock, epoch_ms
from picogate._datadir import DataDirLock
from picogate._host import Component, Host, Plugin, Shared
from picogate._http import HttpServer
from picogate._metrics import Metrics, counter, gauge
from picogate._outbox import Outbox
from picogate._pipeline import Pipeline
from picogate._plugins import PLUGINS, load_config
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._reload import ConfigWatch, ReloadAttempt, diff, keep_core, signature
from picogate._router import CommandRouter, RateLimit, WritePolicy, WriteRequest, WriteResult
from picogate._secrets import redact
from picogate._sink import RunningSink
from picogate.api import Api
from picogate.config import CommandsSection, ConfigError, CoreConfig

log = logging.getLogger("picogate")

_FULL_COLLECTION_EVERY = 100
"""Collections of the middle generation between two full ones, at most (CPython's default: 10)."""


def write_policy(commands: CommandsSection) -> WritePolicy:
    """The command router's policy from the `commands:` section."""
    d = commands.deadline
    return WritePolicy(
        deadlines={"mqtt": d.mqtt, "edgex": d.edgex, "coap": d.coap, "rule": d.rules},
        default_deadline=d.other,
        queue_per_device=commands.queue_per_device,
        max_pending=commands.max_pending,
        max_payload=commands.max_payload,
        rate_limit=RateLimit(commands.rate_limit.interval, commands.rate_limit.burst),
        point_limits={k: RateLimit(v.interval, v.burst) for k, v in commands.points.items()},
    )


@dataclass(slots=True)
class _Parts:
    outbox: Outbox
    registry: PointRegistry
    router: CommandRouter
    pipeline: Pipeline
    clock: Clock
    metrics: Metrics
    shared: Shared
    sinks: list[RunningSink] = field(default_factory=list)
    """Every plug-in's sinks."""
    components: list[Component] = field(default_factory=list)
    """What the plug-ins asked the gateway to run, in attach order."""
    hosts: dict[str, Host] = field(default_factory=dict)
    """The host of each plug-in, by name."""


class Gateway:
    """`async with Gateway(cfg) as gw: await gw.run()`; `gw.stop()` asks for a clean shutdown.

    With `config_path` (the file `config` was read from), the running gateway reloads that file
    when it changes and on SIGHUP (`reload`)."""

    def __init__(
        self,
        config: CoreConfig,
        *,
        drain_timeout: float = 10.0,
        plugins: Iterable[Plugin[Any]] = PLUGINS,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        """The configuration running now (after a reload: the new file, but the core's sections
        as they were at start)."""
        self.config_path = config_path
        self._loaded = signature(config_path) if config_path is not None else None
        self.last_reload: ReloadAttempt | None = None
        """The last reload of `config_path` (None before the first)."""
        self.reloads: dict[str, int] = {"ok": 0, "error": 0}
        """Reloads of `config_path` by result (a reload that applied only part of the file is an
        error)."""
        self.reload_done: list[Callable[[ReloadAttempt], None]] = []
        """Called after every reload attempt (tests, views)."""
        self._reloading = asyncio.Lock()
        self.drain_timeout = drain_timeout
        self._stop = asyncio.Event()
        self._parts: _Parts | None = None
        self.http = HttpServer(host=config.metrics.host, port=config.metrics.port, name="local API")
        """The local HTTP server (on the `metrics` address, when enabled): metrics, health, the
        local API; parts add routes in attach, a console its routes, middleware and TLS before
        `run()` (picogate._http)."""
        self._api: Api | None = None
        self.started_ns = time.time_ns()
        self.ready = asyncio.Event()
        self.plugins = {p.name: p for p in plugins}
        self._lock = DataDirLock(config.gateway.data_dir)
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}

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

    @property
    def api(self) -> Api:
        """The local API (`/api/v1/…`): its JSON model, and who may write through it."""
        assert self._api is not None, "gateway not started"
        return self._api

    @property
    def components(self) -> list[Component]:
        """What the plug-ins run (pollers, boards, servers, the rules service, ...)."""
        return self.parts.components

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
        for note in cfg.deprecations():
            log.warning("%s", note)
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
        router = CommandRouter(registry, policy=write_policy(cfg.commands))
        clock = Clock(check_sync=cfg.clock.check_sync)
        pipeline = Pipeline(registry, outbox, clock)
        metrics = Metrics()
        self.http.app.add_routes(metrics.routes())
        parts = _Parts(outbox, registry, router, pipeline, clock, metrics, Shared(self.status))
        self._parts = parts
        for plugin in self.plugins.values():
            await self._attach(plugin, cfg.section(plugin.section.key))

        router.observe(self._observe_write)
        self._api = Api(
            gateway_id=cfg.gateway.id,
            started_ns=self.started_ns,
            registry=registry,
            pipeline=pipeline,
            router=router,
            rules=lambda: rules.live_rules(self),  # the rules package loads its compiler when asked
            status=self.status,
            health=self.health,
        )
        self._api.add_to(self.http)
        parts.shared.provide("api", self._api)  # the console sets who may write through it
        clock.listeners.append(lambda _synced: parts.shared.status_changed())
        outbox.listeners.append(parts.shared.status_changed)  # commits failing or back, messages parked
        metrics.add_collector(self._collect)
        metrics.add_collector(router.collect)
        metrics.add_collector(self.http.collect)
        metrics.health = self.health

    def _host(self, name: str) -> Host:
        p = self.parts
        return Host(
            name,
            gateway_id=self.config.gateway.id,
            registry=p.registry,
            router=p.router,
            pipeline=p.pipeline,
            outbox=p.outbox,
            metrics=p.metrics,
            http=self.http,
            shared=p.shared,
            sinks=p.sinks,
            components=p.components,
            data_dir=self.config.gateway.data_dir,
        )

    async def _attach(self, plugin: Plugin[Any], section: Any) -> Host:
        host = self._host(plugin.name)
        self.parts.hosts[plugin.name] = host
        if self._tg is not None:  # running: what it adds (its parts' too) starts at once
            host.spawn, host.task_of = self._spawn, self._task_of
        try:
            await plugin.attach(host, section)
        except BaseException:
            if self._tg is not None:  # take out again what it added before it failed
                del self.parts.hosts[plugin.name]
                await host.stop(quiet=True)
            raise
        return host

    async def stop_plugin(self, name: str) -> None:
        """Take the plug-in `name` out of the running gateway (picogate._host.Host.stop)."""
        host = self.parts.hosts.pop(name)
        await host.stop()
        gc.unfreeze()  # what it built at start was frozen (see run): let the collector free it

    async def reconfigure(self, name: str, section: Any) -> None:
        """Stop the plug-in `name` and attach it again with `section` (its new configuration)."""
        if name in self.parts.hosts:
            await self.stop_plugin(name)
        await self._attach(self.plugins[name], section)

    async def update(self, name: str, old: Any, new: Any) -> None:
        """Apply the plug-in `name`'s changed section: through its `update` (only the parts that
        changed are rebuilt) when it has one and is attached, else by `reconfigure`."""
        plugin = self.plugins[name]
        host = self.parts.hosts.get(name)
        if plugin.update is not None and host is not None:
            await plugin.update(host, old, new)
        else:
            await self.reconfigure(name, new)

    # ------------------------------------------------------------------ reload

    async def reload(self) -> ReloadAttempt:
        """Read `config_path` again and apply what changed (picogate._reload).  A file with errors
        changes nothing; a section whose plug-in cannot start with it keeps its running
        configuration.  The outcome is logged and told on the status topic (`config`)."""
        assert self.config_path is not None, "the gateway was not given its file"
        async with self._reloading:
            attempt = ReloadAttempt(ts=epoch_ms(time.time_ns()))
            if self._stop.is_set():
                attempt.ok, attempt.errors = False, ["the gateway is stopping"]
                return attempt
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                attempt.ok = False
                attempt.errors = [redact(str(issue)) for issue in exc.issues]
                log.error("%s\n%s: not reloaded; the running configuration stays", exc, self.config_path)
            except Exception as exc:  # a bug: reported like a bad file, the running config stays
                attempt.ok = False
                attempt.errors = [f"{self.config_path}: cannot be read: {redact(str(exc))}"]
                log.exception("%s: not reloaded; the running configuration stays", self.config_path)
            else:
                await self.apply(new, attempt)
            self.last_reload = attempt
            self.reloads["ok" if attempt.ok else "error"] += 1
            if self._parts is not None:
                self.parts.shared.status_changed()
            for done in list(self.reload_done):
                done(attempt)
            return attempt

    async def apply(self, new: CoreConfig, attempt: ReloadAttempt | None = None) -> ReloadAttempt:
        """Change the running gateway to `new`: each plug-in whose section changed is updated, in
        attach order; the core's sections are kept (reported as needing a restart)."""
        attempt = attempt if attempt is not None else ReloadAttempt(ts=epoch_ms(time.time_ns()))
        running = self.config
        changes = diff(running, new, self.plugins.values())
        if changes.restart:
            attempt.restart = list(changes.restart)
            log.warning(
                "%s: %s changed: applied at the next start of the agent (restart it to apply)",
                self.config_path or "gateway.yaml",
                ", ".join(changes.restart),
            )
        before = {d.name for d in self.registry.devices()}
        applied: dict[str, Any] = {}
        for name in changes.plugins:
            key = self.plugins[name].section.key
            old_section, new_section = running.section(key), new.section(key)
            try:
                await self.update(name, old_section, new_section)
            except Exception as exc:
                attempt.ok = False
                attempt.errors.append(f"{key}: {redact(str(exc))}")
                log.error(
                    "%s: cannot be applied: %s; it keeps its running configuration", key, redact(str(exc))
                )
                await self._restore(name, old_section)
            else:
                applied[key] = new_section
                attempt.applied.append(key)
        not_applied = [
            self.plugins[n].section.key for n in changes.plugins if self.plugins[n].section.key not in applied
        ]
        self.config = keep_core(running, new, also=not_applied)
        if changes.commands:  # the router reads its policy for every write
            self.router.policy = write_policy(self.config.commands)
            attempt.applied.append("commands")
        gone = sorted(before - {d.name for d in self.registry.devices()})
        if gone:
            now = time.time_ns()
            await self.pipeline.device_status(
                *[DeviceStatus(d, DeviceState.OFFLINE, "removed from the configuration", now) for d in gone],
                wait=False,
            )
        if attempt.applied:
            log.info(
                "%s reloaded: %s applied; everything else kept running",
                self.config_path or "configuration",
                ", ".join(attempt.applied),
            )
        elif attempt.ok and not changes:
            log.info("%s reloaded: nothing changed", self.config_path or "configuration")
        return attempt

    async def _restore(self, name: str, section: Any) -> None:
        """After a failed update: the plug-in as it ran before (attached anew with its old section)."""
        try:
            await self.reconfigure(name, section)
        except Exception as exc:
            log.error("plug-in %s could not be restarted and is stopped: %s", name, redact(str(exc)))

    def status(self) -> dict[str, Any]:
        """The gateway's state as the status topic tells it: clock, outbox, devices, writes."""
        p = self.parts
        body: dict[str, Any] = {"clock_synced": p.clock.synced}
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
        if self.last_reload is not None:
            body["config"] = self.last_reload.status()
        return body

    def _observe_write(self, request: WriteRequest, result: WriteResult, seconds: float) -> None:
        origin = request.origin.split(":", 1)[0]
        self.parts.metrics.write_seconds.labels(origin, result.code.value).observe(seconds)

    def _collect(self) -> Iterable[Any]:
        p = self.parts
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
        if self.config_path is not None:
            yield counter(
                "picogate_config_reloads",
                "Reloads of gateway.yaml by result (error: a file with errors, or a section not applied)",
                ["result"],
                (([result], n) for result, n in self.reloads.items()),
            )
            yield gauge(
                "picogate_config_reload_failed",
                "1 while the last reload of gateway.yaml failed (the running configuration is not the file's)",
                [],
                [([], float(self.last_reload is not None and not self.last_reload.ok))],
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
        watch = None
        if self.config_path is not None:
            watch = ConfigWatch(self.config_path, self.reload, loaded=self._loaded)
            p.components.append(watch)
            if install_signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signal.SIGHUP, watch.request)
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
        # What was built so far lives as long as the gateway: out of the collector's full scans.
        # With 500 devices that is ~150,000 objects, a full collection of 100-200 ms on the loop
        # every few seconds (the readings kept as `latest` are promoted to the oldest generation
        # and soon call for one); frozen, a full collection scans what was created since.
        gc.collect()
        gc.freeze()
        # The readings kept as `latest` reach the oldest generation within seconds, which then
        # calls for a full collection about every 10 s (500 devices: 50-80 ms on the loop each,
        # measured); one in ten times fewer (the collector still waits, too, for the oldest
        # generation to grow by a quarter since its last full collection).
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], max(thresholds[2], _FULL_COLLECTION_EVERY))
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for s in p.sinks:
                    self._spawn(s, f"sink-{s.name}", s.run())
                sources = [c for c in p.components if c.kind == "source"]
                services = [c for c in p.components if c.kind != "source"]
                for c in [*sources, *services]:
                    self._spawn(c, c.name, c.run())
                for host in p.hosts.values():
                    host.spawn, host.task_of = self._spawn, self._task_of
                status_task = tg.create_task(self._status_ticker(), name="status")
                self.ready.set()
                log.info(
                    "picogate %s: gateway %s up: %d devices, %d points; plug-ins: %s",
                    __version__,
                    self.config.gateway.id,
                    len(p.registry.devices()),
                    len(p.registry),
                    ", ".join(p.hosts),
                )
                await self._stop.wait()
                if watch is not None:  # a reload under way ends first: it may add sources
                    watch.stop()
                    await _finish(self._tasks_of([watch]), grace=10.0, wait_first=True)
                log.info(
                    "stopping: polls stop, then the outbox is flushed (up to %.0f s)", self.drain_timeout
                )
                sources = [c for c in p.components if c.kind == "source"]
                for c in sources:
                    c.stop()
                await _finish(self._tasks_of(sources), grace=1.0)
                for s in p.sinks:
                    if not await s.drained(self.drain_timeout):
                        log.warning(
                            "sink %s: %d records still in the outbox; they will be sent at the next start",
                            s.name,
                            p.outbox.depth(s.name),
                        )
                services = [c for c in p.components if c.kind != "source"]
                for c in services:
                    c.stop()
                await _finish([status_task, *self._tasks_of([*services, *p.sinks])])
        finally:
            if watch is not None:
                with contextlib.suppress(ValueError):
                    p.components.remove(watch)
                if install_signals:
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(signal.SIGHUP)
            self._tg = None
            self._tasks.clear()
            self.ready.clear()
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    def _spawn(self, owner: object, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._tg is not None, "gateway not running"
        task = self._tg.create_task(coro, name=name)
        self._tasks[id(owner)] = task
        task.add_done_callback(lambda _t: self._tasks.pop(id(owner), None))
        return task

    def _task_of(self, owner: object) -> asyncio.Task[None] | None:
        return self._tasks.get(id(owner))

    def _tasks_of(self, owners: Iterable[object]) -> list[asyncio.Task[None]]:
        return [t for t in (self._tasks.get(id(o)) for o in owners) if t is not None]

    async def _status_ticker(self) -> None:
        while True:
            await asyncio.sleep(30)
            self.parts.shared.status_changed()


async def _finish(
    tasks: list[asyncio.Task[None]], *, grace: float = 3.0, tries: int = 50, wait_first: bool = False
) -> None:
    """Cancel `tasks` and wait for them; after `grace` seconds (for their clean-up, e.g. the
    "offline" status), cancel again those still running, every 100 ms.  With `wait_first`, they
    are given `grace` seconds to end by themselves before they are cancelled.

    On Python 3.11 `asyncio.wait_for` (inside pymodbus) can swallow a cancellation that races
    with a reply; cancelling once and waiting forever would then hang the shutdown.
    """
    pending = {t for t in tasks if not t.done()}
    if pending and wait_first:
        _, pending = await asyncio.wait(pending, timeout=grace)
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
