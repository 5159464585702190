"""What the rules do to the world in the gateway (`LiveActions`: alerts, publish, set, log), their
counters (`RuleStats`), and the engine's place in the pipeline (`RuleProcessor`).

Both act for the rules service (rules/_live.py), which they see through `Service`: what they
need of it, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import orjson

from picogate._clock import epoch_ms
from picogate._model import Reading
from picogate._outbox import Envelope
from picogate._router import ErrorCode, WriteRequest, WriteResult, brief
from picogate.rules._alerts import AlertBook
from picogate.rules._config import RulesSection
from picogate.rules._engine import RuleEngine

if TYPE_CHECKING:
    from picogate._host import Host

log = logging.getLogger("picogate.rules")

_MAX_QUEUED = 10_000
"""Alerts/publishes/status messages waiting for the outbox at most (they wait only while the
outbox commits; beyond this they are dropped, counted and logged)."""


class Service(Protocol):
    """What the actions and the processor need of the rules service."""

    host: Host
    config: RulesSection
    stats: RuleStats
    engine: RuleEngine
    alerts: AlertBook

    def refuse_topic(self, topic: str) -> str: ...

    def write_result(self, rule: str, ok: bool, message: str) -> None: ...

    async def router_write(self, request: WriteRequest) -> WriteResult: ...

    def engine_failed(self, where: str) -> None: ...

    def deadline_may_have_moved(self, *, force: bool = False) -> None: ...


@dataclass(slots=True)
class RuleStats:
    """Counters for the metrics and the status topic."""

    reloads_ok: int = 0
    reloads_failed: int = 0
    reloads_unchanged: int = 0
    last_reload_s: float = 0.0
    last_compile_s: float = 0.0
    last_prepare_s: float = 0.0
    last_swap_s: float = 0.0
    alerts: int = 0
    publishes: int = 0
    writes: int = 0
    writes_failed: int = 0
    writes_refused: int = 0
    logs: int = 0
    dropped: int = 0
    engine_errors: int = 0
    publish_refused: int = 0


class LiveActions:
    """What the rules do to the world, in the gateway (the `Actions` of picogate.rules).

    Called synchronously from the engine, inside the pipeline: alerts and publish() are queued here
    and handed to the outbox by the service's `_flush` task; set() starts a write through the
    command router whose outcome goes back to the engine.
    """

    def __init__(self, live: Service) -> None:
        self._live = live
        self.queue: list[Envelope] = []
        self.wakeup = asyncio.Event()
        self.writes: set[asyncio.Task[None]] = set()

    def _enqueue(self, envelope: Envelope) -> None:
        stats = self._live.stats
        if len(self.queue) >= _MAX_QUEUED:
            stats.dropped += 1
            if stats.dropped == 1 or stats.dropped % 1000 == 0:
                log.error("rules: %d messages dropped: the outbox does not keep up", stats.dropped)
            return
        self.queue.append(envelope)
        self.wakeup.set()

    def alert(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        live = self._live
        live.stats.alerts += 1
        live.alerts.record(rule, severity, message, state, ts)
        level = logging.INFO if state == "cleared" else logging.WARNING
        log.log(level, "alert %s: rule %s [%s]: %s", state, rule, severity, message)
        messages = live.host.messages
        if messages is None:
            return
        payload = orjson.dumps(
            {"rule": rule, "severity": severity, "message": message, "state": state, "ts": epoch_ms(ts)}
        )
        self._enqueue(
            Envelope(messages.sink, messages.topic("alerts"), payload, live.config.alert_qos, False)
        )

    def publish(self, rule: str, topic: str, value: object, ts: int) -> None:
        live = self._live
        problem = live.refuse_topic(topic)
        if problem:
            live.stats.publish_refused += 1
            log.error("rule %s: publish(%r) refused: %s", rule, topic, problem)
            return
        live.stats.publishes += 1
        messages = live.host.messages
        if messages is None:
            log.info("rule %s: publish %s %r (MQTT is disabled)", rule, topic, value)
            return
        try:
            payload = orjson.dumps({"v": value, "ts": epoch_ms(ts), "rule": rule})
        except TypeError:
            payload = orjson.dumps({"v": str(value), "ts": epoch_ms(ts), "rule": rule})
        self._enqueue(Envelope(messages.sink, topic, payload, messages.qos, False))

    def log(self, rule: str, message: str) -> None:
        self._live.stats.logs += 1
        log.info("rule %s: %s", rule, message)

    def set(self, rule: str, device: str, point: str, value: object) -> None:
        live = self._live
        loop = asyncio.get_running_loop()
        # The write's deadline (commands.deadline.rules) counts from now, when the rule fired.
        request = WriteRequest(device, point, value, origin=f"rule:{rule}")
        if len(self.writes) >= live.config.max_pending_writes:
            live.stats.writes_refused += 1
            message = (
                f"set({device}.{point}) refused: {len(self.writes)} writes already wait for their devices "
                "(rules.max_pending_writes)"
            )
            log.error("rule %s: %s", rule, message)
            live.host.router.refuse(request, ErrorCode.BUSY, message)  # its audit line
            # not from inside the engine's own evaluation: on the next turn of the loop
            loop.call_soon(live.write_result, rule, False, message)
            return
        live.stats.writes += 1
        task = loop.create_task(self._write(rule, request), name=f"rule-write-{rule}")
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def _write(self, rule: str, request: WriteRequest) -> None:
        live = self._live
        device, point, value = request.device, request.point, request.value
        try:
            result = await live.router_write(request)
        except Exception as exc:  # the router reports failures as results; anything else is a bug
            log.exception("rule %s: set(%s.%s) failed", rule, device, point)
            live.stats.writes_failed += 1
            live.write_result(rule, False, f"set({device}.{point}): {type(exc).__name__}: {exc}")
            return
        if result.ok:
            live.write_result(rule, True, "")
        else:
            live.stats.writes_failed += 1
            message = f"set({device}.{point}, {brief(value)}) failed: {result.code.value}: {result.error}"
            log.debug("rule %s: %s", rule, message)  # the audit log and the engine report it
            live.write_result(rule, False, message)


class RuleProcessor:
    """The engine's place in `pipeline.processors`."""

    def __init__(self, live: Service) -> None:
        self._live = live
        self.skip_next = False
        """Set while the service emits the LET readings of a tick: the engine made them itself."""

    def process(self, readings: Sequence[Reading]) -> Sequence[Reading]:
        if self.skip_next:
            self.skip_next = False
            return ()
        live = self._live
        try:
            derived = live.engine.process(readings)
        except Exception:
            live.engine_failed("process")
            return ()
        live.deadline_may_have_moved()
        return derived
