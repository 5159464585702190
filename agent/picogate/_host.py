"""How a plug-in plugs into the gateway: `Plugin` (its config section and its `attach`), the narrow
`Host` it attaches to, and the `Component`s the gateway runs for it.

Every source, processor and sink is a plug-in (Modbus, MQTT, Pico boards, CoAP, rules, EdgeX).
The gateway calls each plug-in's

    async def attach(host: Host, cfg: <its section>) -> None

once while it is built, in the order of `picogate._plugins.PLUGINS` (sources first, then rules,
which see every source's points, then EdgeX, which describes every point, LET points included).
`attach` registers what it has through the host: points in `host.registry`, writers with
`host.register_writer`, processors and encoders with `host.add_processor` / `host.add_encoder`,
sinks with `host.add_sink`, metrics with `host.add_collector`, HTTP routes on `host.http_app`, and
long-running pieces with `host.add_component`.  A plug-in never sees the `Gateway` nor another
plug-in's state; the host remembers what it added, so that `host.stop()` takes the plug-in out
again (the gateway's `reconfigure(name, section)` stops it and attaches it anew).

A plug-in whose section has independent parts (a Modbus line, a Pico board) registers each part
through `host.part(key)`, a host of its own inside the plug-in's, and gives its `Plugin` an
`update(host, old, new)`: when `gateway.yaml` is reloaded, `update` stops (`host.drop_part(key)`)
and builds again only the parts that changed, while the others go on running.  A plug-in without
`update` is re-attached whole when its section changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from aiohttp import web

from picogate._http import HttpServer
from picogate._metrics import Collect, Metrics
from picogate._outbox import Outbox
from picogate._pipeline import Encoder, Pipeline, Processor
from picogate._registry import Listener, PointRegistry
from picogate._router import CommandRouter, Writer
from picogate._sink import RunningSink, Sink
from picogate.config import Section

log = logging.getLogger("picogate")

S = TypeVar("S")


class Component(Protocol):
    """A long-running piece of a plug-in, run by the gateway in its task group.

    `kind` decides the shutdown order: "source" components are asked to `stop()` first, before the
    outbox is drained (so nothing new is accepted while draining); "service" components (servers,
    the rule engine's timers, command listeners) are stopped after the drain.  `run()` runs until
    it returns after `stop()` or is cancelled.
    """

    name: str
    kind: Literal["source", "service"]

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Messages(Protocol):
    """What the gateway's message sink (MQTT) offers the other plug-ins: the outbox sink its
    messages go to, the root of the gateway's own topics, and a publish on the live connection
    for state that must not queue up (the rules' status)."""

    sink: str
    root: str
    qos: int

    def topic(self, name: str) -> str:
        """`<root>/<name>`, e.g. `topic("alerts")`."""

    def publish_now(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Send now if connected; False when not sent."""

    @property
    def connection(self) -> object | None:
        """The live connection (a new object after each reconnect), None while there is none."""


@dataclass(frozen=True, slots=True)
class Plugin(Generic[S]):
    """One plug-in: its name, its section of `gateway.yaml`, its `attach`, and `declare`, which
    registers the points its section declares without starting anything (for `config check`,
    `rules check --config`, `edgex profiles`)."""

    name: str
    section: Section
    attach: Callable[[Host, S], Awaitable[None]]
    declare: Callable[[S, PointRegistry], None] | None = None
    update: Callable[[Host, S, S], Awaitable[None]] | None = None
    """`update(host, old, new)`: apply a changed section to the running plug-in, rebuilding only
    the parts that changed (see the module docstring); None: the plug-in is re-attached whole."""


class Shared:
    """What the plug-ins of one gateway share beyond the core: the gateway status, its listeners
    and the message sink.  Owned by the gateway; every `Host` of that gateway refers to it."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status
        self.status_listeners: list[Callable[[], None]] = []
        self.messages: Messages | None = None
        self.services: dict[str, object] = {}
        self.service_listeners: dict[str, list[Callable[[object], None]]] = {}

    def provide(self, name: str, service: object) -> None:
        self.services[name] = service
        for listener in list(self.service_listeners.get(name, ())):
            listener(service)

    def status_changed(self) -> None:
        for listener in list(self.status_listeners):
            listener()


class Host:
    """The narrow interface one plug-in attaches to (see the module docstring)."""

    def __init__(
        self,
        plugin: str,
        *,
        gateway_id: str,
        registry: PointRegistry,
        router: CommandRouter,
        pipeline: Pipeline,
        outbox: Outbox,
        metrics: Metrics,
        http: HttpServer,
        shared: Shared,
        sinks: list[RunningSink],
        components: list[Component],
        parent: Host | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.plugin = plugin
        self.gateway_id = gateway_id
        """The gateway's id (`gateway.id`): the `<gw>` level of MQTT topics, client ids."""
        self.data_dir = data_dir
        """The gateway's data directory (`gateway.data_dir`), for a plug-in's small state files."""
        self.registry = registry
        self.router = router
        self.pipeline = pipeline
        self.metrics = metrics
        self.http = http
        """The gateway's local HTTP server: routes, middleware and TLS (`ssl`), before it starts."""
        self.http_app: web.Application = http.app
        """The gateway's local HTTP application: add routes in `attach` (before the server starts)."""
        self._outbox = outbox
        self._shared = shared
        self._all_sinks = sinks
        self._all_components = components
        self.components: list[Component] = []
        self.sinks: list[RunningSink] = []
        self._writers: list[str] = []
        self._encoders: list[Encoder] = []
        self._processors: list[Processor] = []
        self._collectors: list[Any] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._status_listeners: list[Callable[[], None]] = []
        self._points: set[tuple[str, str]] = set()
        self._provided: list[str] = []
        self._service_listeners: list[tuple[str, Callable[[object], None]]] = []
        self._provided_messages: Messages | None = None
        self._parent = parent
        self._parts: dict[str, Host] = {}
        self._task_of: Callable[[object], asyncio.Task[None] | None] = lambda _owner: None
        self._spawn: Callable[[object, str, Coroutine[Any, Any, None]], asyncio.Task[None]] | None = None
        self.state: Any = None
        """What the plug-in keeps from `attach` for its `update` (its lines, its boards)."""

    @property
    def task_of(self) -> Callable[[object], asyncio.Task[None] | None]:
        """Set by the gateway while it runs: the task running a component or a sink."""
        return self._parent.task_of if self._parent is not None else self._task_of

    @task_of.setter
    def task_of(self, value: Callable[[object], asyncio.Task[None] | None]) -> None:
        self._task_of = value

    @property
    def spawn(self) -> Callable[[object, str, Coroutine[Any, Any, None]], asyncio.Task[None]] | None:
        """Set by the gateway while it runs: components added then are started at once."""
        return self._parent.spawn if self._parent is not None else self._spawn

    @spawn.setter
    def spawn(
        self, value: Callable[[object, str, Coroutine[Any, Any, None]], asyncio.Task[None]] | None
    ) -> None:
        self._spawn = value

    # ------------------------------------------------------------------ what attach uses

    def register_writer(self, device: str, writer: Writer) -> None:
        self.router.register_writer(device, writer)
        self._writers.append(device)

    def add_processor(self, processor: Processor) -> None:
        self.pipeline.processors.append(processor)
        self._processors.append(processor)

    def add_encoder(self, encoder: Encoder) -> None:
        self.pipeline.encoders.append(encoder)
        self._encoders.append(encoder)

    def add_sink(
        self,
        sink: Sink,
        *,
        batch_size: int = 500,
        window: int = 4,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> RunningSink:
        """Deliver the outbox's records of `sink.name` through `sink` (retry, reconnect, batching
        and statistics by `RunningSink`)."""
        running = RunningSink(
            sink, self._outbox, batch_size=batch_size, window=window, min_delay=min_delay, max_delay=max_delay
        )
        self.sinks.append(running)
        self._all_sinks.append(running)
        if self.spawn is not None:
            self.spawn(running, f"sink-{running.name}", running.run())
        return running

    def add_component(self, component: Component) -> None:
        self.components.append(component)
        self._all_components.append(component)
        if self.spawn is not None:
            self.spawn(component, component.name, component.run())

    def add_collector(self, collect: Collect) -> None:
        self._collectors.append(self.metrics.add_collector(collect))

    def subscribe(self, listener: Listener) -> None:
        """Registry events (points added or removed, device states), until the plug-in stops."""
        self._unsubscribe.append(self.registry.subscribe(listener))

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Called when the plug-in (or this part) stops, after its components: for what it set up
        outside the host (a registry listener subscribed by a constructor)."""
        self._unsubscribe.append(callback)

    def track_points(self, keys: Iterable[tuple[str, str]]) -> None:
        """Points this plug-in registered, removed from the registry when it stops."""
        self._points.update(keys)

    # -------------------------------------------------- what the plug-ins share beyond the core

    def status(self) -> dict[str, Any]:
        """The gateway's status (outbox, devices, writes, clock): the body of the status topic."""
        return self._shared.status()

    def on_status_change(self, listener: Callable[[], None]) -> None:
        """Called when the gateway's status changed (clock, outbox commits failing or back, parked
        messages) and every 30 s."""
        self._shared.status_listeners.append(listener)
        self._status_listeners.append(listener)

    def provide_messages(self, messages: Messages) -> None:
        """Offer the gateway's message sink to the plug-ins attached after this one (until this
        plug-in stops)."""
        self._shared.messages = self._provided_messages = messages

    @property
    def messages(self) -> Messages | None:
        """The gateway's message sink (MQTT), None when there is none."""
        return self._shared.messages

    def provide(self, name: str, service: object) -> None:
        """Offer a service of this plug-in by name to the others (the rules service as "rules");
        the gateway offers its local API as "api".  Withdrawn when the plug-in stops."""
        self._shared.provide(name, service)
        self._provided.append(name)

    def service(self, name: str) -> object | None:
        """The service offered as `name` now, None while there is none."""
        return self._shared.services.get(name)

    def on_service(self, name: str, listener: Callable[[object], None]) -> None:
        """Call `listener(service)` with the service offered as `name`: now if it is offered
        already, and whenever it is offered again."""
        self._shared.service_listeners.setdefault(name, []).append(listener)
        self._service_listeners.append((name, listener))
        service = self._shared.services.get(name)
        if service is not None:
            listener(service)

    # ------------------------------------------------------------------ parts

    def part(self, key: str) -> Host:
        """The host of one independent part of the plug-in (a line, a board): what is added
        through it is taken out by `drop_part(key)` alone, and by the plug-in's `stop()`."""
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = Host(
                self.plugin,
                gateway_id=self.gateway_id,
                registry=self.registry,
                router=self.router,
                pipeline=self.pipeline,
                outbox=self._outbox,
                metrics=self.metrics,
                http=self.http,
                shared=self._shared,
                sinks=self._all_sinks,
                components=self._all_components,
                parent=self,
                data_dir=self.data_dir,
            )
        return part

    async def drop_part(self, key: str) -> None:
        """Stop the part `key` and take out what it added (nothing when there is no such part)."""
        part = self._parts.pop(key, None)
        if part is not None:
            await part.stop(quiet=True)
            log.info("plug-in %s: %s stopped", self.plugin, key)

    # ------------------------------------------------------------------ taking it out again

    async def stop(self, *, grace: float = 3.0, quiet: bool = False) -> None:
        """Take the plug-in out of the running gateway: stop its components and sinks (sources
        first), and remove its writers, processors, encoders, metrics, listeners and points."""
        for key in list(self._parts):
            part = self._parts.pop(key)
            await part.stop(grace=grace, quiet=True)
        for c in sorted(self.components, key=lambda c: c.kind != "source"):
            c.stop()
        tasks = [t for t in map(self.task_of, [*self.components, *self.sinks]) if t is not None]
        for s in self.sinks:
            tasks_of_sink = self.task_of(s)
            if tasks_of_sink is not None:
                tasks_of_sink.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        for device in self._writers:
            self.router.unregister_writer(device)
        for p in self._processors:
            with contextlib.suppress(ValueError):
                self.pipeline.processors.remove(p)
        for e in self._encoders:
            with contextlib.suppress(ValueError):
                self.pipeline.encoders.remove(e)
        for collector in self._collectors:
            self.metrics.remove_collector(collector)
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        for listener in self._status_listeners:
            with contextlib.suppress(ValueError):
                self._shared.status_listeners.remove(listener)
        for name in self._provided:
            self._shared.services.pop(name, None)
        for name, service_listener in self._service_listeners:
            with contextlib.suppress(ValueError):
                self._shared.service_listeners.get(name, []).remove(service_listener)
        self._provided.clear()
        self._service_listeners.clear()
        for c in self.components:
            with contextlib.suppress(ValueError):
                self._all_components.remove(c)
        for s in self.sinks:
            with contextlib.suppress(ValueError):
                self._all_sinks.remove(s)
        for device, point in sorted(self._points):
            self.registry.remove(device, point)
        if self._provided_messages is not None and self._shared.messages is self._provided_messages:
            self._shared.messages = None
        self.components.clear()
        self.sinks.clear()
        self._writers.clear()
        self._processors.clear()
        self._encoders.clear()
        self._collectors.clear()
        self._unsubscribe.clear()
        self._status_listeners.clear()
        self._points.clear()
        if not quiet:
            log.info("plug-in %s stopped", self.plugin)
