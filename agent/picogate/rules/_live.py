"""The rules running in the gateway: the engine as a pipeline processor, its timers, its actions,
and hot reload of the rule files.

    files ──watch (inotify)──► debounce ──► worker process: read, parse, check, compile ──┐
                                                                                          │ RuleSet
    readings ──► pipeline ──► RuleEngine.process ◄── swap() ◄── prepare() in a thread ◄───┘
                                 │   ▲ tick() when next_deadline() is due (FOR, EVERY, age)
                                 ▼
         alert/publish → outbox (MQTT)     set → CommandRouter → engine.write_result

The whole set is compiled in a separate process (`CompilerWorker`), so that parsing 1,000 rules
never holds the event loop; the engine prepares the new set in a thread while the running one
goes on, and only the swap (about a millisecond) runs on the loop.  If any file has an
error the last good set stays loaded; every attempt, good or bad, is reported on the retained
`<base>/<gw>/rules/status` topic, in the log and in the metrics.

This module is the service itself: its state, reload (compile, accept, prepare, swap, retire),
LET points, watching, timers and status, which all share that state.  The parts with a seam of
their own live beside it: the compiler process (_compiler.py), the actions and the pipeline
processor (_actions.py), garbage collection of replaced sets (_gc.py) and the metrics
(_metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import gc
import logging
import stat
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from picogate._clock import epoch_ms
from picogate._errors import PicogateError
from picogate._model import Reading
from picogate._registry import RegistryEvent
from picogate._router import WriteRequest
from picogate._watch import watch
from picogate.rules._actions import LiveActions, RuleProcessor, RuleStats
from picogate.rules._alerts import AlertBook
from picogate.rules._compiler import CompilerError, CompilerWorker
from picogate.rules._config import RulesSection
from picogate.rules._engine import RuleEngine
from picogate.rules._errors import RuleError
from picogate.rules._gc import release_namespaces as _release_namespaces
from picogate.rules._ruleset import RuleSet
from picogate.rules._worker import (
    CompileJob,
    CompileOutcome,
    PointRow,
    file_error,
    point_rows,
    run_job,
)

if TYPE_CHECKING:
    from picogate._host import Host

log = logging.getLogger("picogate.rules")

_MAX_DEBOUNCE_S = 1.0
"""A reload starts at the latest this long after the first change of a burst, however busy."""


# --------------------------------------------------------------------------- the service


@dataclass(slots=True)
class _Attempt:
    """The last reload attempt, for the status topic."""

    ts: int = 0
    ok: bool = True
    errors: list[RuleError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    digest: str = ""


class RulesSetupError(PicogateError, ValueError):
    """The rules section cannot be used (reported at start as `picogate: cannot start: …`)."""


class LiveRules:
    """The rule engine running in one gateway (see the module docstring).  Its `run()` is the
    gateway's "rules" service component."""

    name = "rules"
    kind: Literal["source", "service"] = "service"

    def __init__(self, host: Host, config: RulesSection, *, worker: CompilerWorker | None = None) -> None:
        self.host = host
        self.config = config
        self.directory = config.dir.absolute()  # not resolve(): a symlink swapped by a deploy is followed
        self.stats = RuleStats()
        self.alerts = AlertBook()
        """The active alerts and the last alert events (the local API, `picogate watch`)."""
        self.actions = LiveActions(self)
        self.engine = RuleEngine(self.actions)
        self.processor = RuleProcessor(self)
        self.worker = worker or CompilerWorker()
        self.loaded: RuleSet | None = None
        self.loaded_ts = 0
        self.loaded_digest = ""
        self.attempt = _Attempt()
        self.let_keys: set[tuple[str, str]] = set()
        self._updating_registry = False
        self._stop = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        self._first_change = 0.0
        self._timer_wakeup = asyncio.Event()
        self._sleep_until: int | None = None
        self._status_now = asyncio.Event()
        self._last_status: Any = None
        self._status_unsent = False
        self._loaded_identity: tuple[int, int] | None = None
        self._status_client: object = None
        self._point_rows: tuple[PointRow, ...] | None = None
        self._current: object = None
        """The prepared set running now (RuleEngine.prepare), released when it is replaced."""
        self._freeze_sets = True
        self._frozen_base = 0
        self._engine_failures_logged = 0
        self.warmed = asyncio.Event()
        """Set once the compiler process is ready (benchmarks, tests)."""
        self.reload_done: list[Callable[[_Attempt], None]] = []
        """Called after every reload attempt (tests, the demo's view)."""

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        """Load the rules once, in-process (the gateway is not running yet), and plug in."""
        if not self.directory.is_dir():
            raise RulesSetupError(
                f"rules.dir: {self.directory} does not exist or is not a directory "
                "(create it, or remove the rules section)"
            )
        # Long-lived objects (modules, the configuration, the registry) leave the garbage collector's
        # view, so that a full collection after a reload scans the rule sets only (with 1,000 rules:
        # 15-50 ms instead of 40-75 ms, bench/rules_reload.py).  Frozen before the rules are loaded,
        # so that the rule sets themselves stay collectable.
        gc.collect()
        gc.freeze()
        self._loaded_identity = self._identity()
        outcome = run_job(self._job(last_digest=""))
        self._apply_sync(outcome, total_s=outcome.compile_s)
        host = self.host
        host.add_processor(self.processor)
        host.subscribe(self._on_registry)
        host.on_stop(self._remove_lets)

    def _job(self, *, last_digest: str) -> CompileJob:
        rows = self._point_rows
        if rows is None:  # built again only after the registry changed
            points = (p for p in self.host.registry if (p.device, p.name) not in self.let_keys)
            rows = self._point_rows = point_rows(points)
        return CompileJob(
            str(self.directory), self.config.pattern, self.config.recursive, rows, last_digest=last_digest
        )

    def refuse_topic(self, topic: str) -> str:
        """Why publish() may not use `topic` ("" when it may)."""
        if not topic or "\0" in topic or "+" in topic or "#" in topic:
            return "a topic must be non-empty, without wildcards (+, #) or NUL"
        if len(topic.encode()) > 65535:
            return "the topic is longer than MQTT allows"
        messages = self.host.messages
        if messages is not None:
            root = messages.root
            if topic == root or topic.startswith(root + "/"):
                return (
                    f"the gateway's own topics ({root}/…) are not for publish(); use LET for derived points"
                )
        return ""

    # ------------------------------------------------------------------ reload

    async def reload(self) -> _Attempt:
        """Compile the set in the worker and swap it in if it is good; returns the attempt."""
        started = time.perf_counter()
        job = self._job(last_digest=self.attempt.digest)
        try:
            outcome = await self.worker.compile(job, timeout=self.config.compile_timeout)
        except CompilerError as exc:
            log.error("rules: reload failed: %s; the last good set stays", exc)
            outcome = CompileOutcome(
                "", self.attempt.files, None, [file_error(str(self.directory), str(exc))]
            )
        await self._apply(outcome, started=started)
        return self.attempt

    def _apply_sync(self, outcome: CompileOutcome, *, total_s: float) -> None:
        """At start (no event loop serving readings yet): load in this thread."""
        ruleset = self._accept(outcome)
        if ruleset is None:
            self._finish_attempt(total_s)
            return
        started = time.perf_counter()
        try:
            prepared = self.engine.prepare(ruleset)
            self.engine.swap(prepared)
            self._current = prepared
            gc.freeze()  # the first set too (see _retire)
        except Exception as exc:
            self._load_failed(outcome, exc)
        else:
            self._loaded(ruleset, outcome, time.perf_counter() - started)
        self._finish_attempt(total_s)

    async def _apply(self, outcome: CompileOutcome, *, started: float) -> None:
        """While the gateway runs: the engine prepares the new set in a thread (unmarshal, build
        its functions and state) while the loop goes on running the current set, then swaps it in
        on the loop, between two readings (about a millisecond)."""
        ruleset = self._accept(outcome)
        if ruleset is None:
            self._finish_attempt(time.perf_counter() - started)
            return
        try:
            prepare_started = time.perf_counter()
            prepared = await asyncio.to_thread(self.engine.prepare, ruleset)
            swap_started = time.perf_counter()
            self.engine.swap(prepared)
            swapped = time.perf_counter()
        except Exception as exc:
            self._load_failed(outcome, exc)
        else:
            self.stats.last_prepare_s = swap_started - prepare_started
            self._loaded(ruleset, outcome, swapped - swap_started)
            self._retire(prepared)
            self.deadline_may_have_moved(force=True)
        self._finish_attempt(time.perf_counter() - started)

    def _retire(self, prepared: object) -> None:
        """After a swap: free the replaced set at once and keep the new one out of the garbage
        collector's scans.

        A set's functions and their namespace refer to each other, so only a full collection
        frees a replaced set, and that collection scans the running set too: 15-50 ms of the loop
        for 1,000 rules (bench/rules_reload.py).  Clearing the replaced set's namespaces breaks the
        cycle (reference counting frees it right here), and `gc.freeze()` takes the new set out of
        later collections.  Guarded: if the engine's structure is not what this expects, or the
        frozen objects keep growing from reload to reload (a replaced set that reference counting
        could not free would stay frozen), it stops, unfreezes, and leaves it to the collector.
        """
        old, self._current = self._current, prepared
        if old is None or not self._freeze_sets:
            return
        if not _release_namespaces(old, prepared):
            self._freeze_sets = False
            gc.unfreeze()  # the replaced set was frozen: let the collector have it
            log.debug("rules: the engine's sets are not released by namespace; not freezing them")
            return
        gc.freeze()
        frozen = gc.get_freeze_count()
        if not self._frozen_base:
            self._frozen_base = frozen
        elif frozen > 2 * self._frozen_base + 50_000:
            self._freeze_sets = False
            gc.unfreeze()
            log.warning(
                "rules: replaced rule sets are not freed (%d frozen objects, %d after the first reload); "
                "leaving them to the garbage collector",
                frozen,
                self._frozen_base,
            )

    def _accept(self, outcome: CompileOutcome) -> RuleSet | None:
        """The set to load, or None (errors reported, attempt recorded)."""
        now = time.time_ns()
        self.stats.last_compile_s = outcome.compile_s
        if outcome.unchanged:
            self.stats.reloads_unchanged += 1
            log.debug("rules: files unchanged (%s), nothing to reload", outcome.digest)
            return None
        ruleset = outcome.ruleset
        errors = list(outcome.errors)
        if ruleset is not None:
            errors += self._let_clashes(ruleset)
        if ruleset is not None and not errors:
            return ruleset
        self.stats.reloads_failed += 1
        self.attempt = _Attempt(now, False, errors, outcome.files, outcome.digest)
        for e in errors:
            log.error("%s", e.format())
        kept = f"version {self.loaded.version}" if self.loaded is not None else "no rules"
        log.error(
            "rules: %d error%s in %s; the last good set stays (%s)",
            len(errors),
            "" if len(errors) == 1 else "s",
            ", ".join(sorted({e.file for e in errors})) or str(self.directory),
            kept,
        )
        return None

    def _load_failed(self, outcome: CompileOutcome, exc: Exception) -> None:
        self.stats.reloads_failed += 1
        log.error("rules: the engine refused the new set (%s); the last good set stays", exc, exc_info=exc)
        error = file_error(str(self.directory), f"loading failed: {type(exc).__name__}: {exc}")
        self.attempt = _Attempt(time.time_ns(), False, [error], outcome.files, outcome.digest)

    def _loaded(self, ruleset: RuleSet, outcome: CompileOutcome, swap_s: float) -> None:
        now = time.time_ns()
        self._update_lets(ruleset)
        self.stats.last_swap_s = swap_s
        self.stats.reloads_ok += 1
        self.loaded, self.loaded_ts, self.loaded_digest = ruleset, now, outcome.digest
        self.alerts.retain(r.id for r in ruleset.rules)
        self.attempt = _Attempt(now, True, [], outcome.files, outcome.digest)
        log.info(
            "rules: loaded version %s: %d rules from %d files (compiled in %.0f ms, loaded in %.0f ms)",
            ruleset.version,
            len(ruleset.rules),
            len(outcome.files),
            outcome.compile_s * 1000,
            (self.stats.last_prepare_s + swap_s) * 1000,
        )
        for w in ruleset.warnings:
            log.warning("%s", w.format())
        for e in self.engine.left_by_last_swap:
            log.warning(
                "rules: rule %s (%s:%s) was %s; the value it wrote stays in force: %s = %s, until something "
                "writes %s again",
                e["rule"],
                e["file"],
                e["line"],
                e["rule_was"],
                e["point"],
                _shown(e["value"]),
                e["point"],
            )

    def _finish_attempt(self, total_s: float) -> None:
        self.stats.last_reload_s = total_s
        self._status_now.set()
        for listener in self.reload_done:
            listener(self.attempt)

    def _let_clashes(self, ruleset: RuleSet) -> list[RuleError]:
        """A LET may not take the name of a point some source has (added since the compilation)."""
        errors = []
        registry = self.host.registry
        for let in ruleset.lets:
            key = (let.device, let.name)
            if key not in self.let_keys and key in registry:
                where = next((r for r in ruleset.rules if r.id == let.key), None)
                errors.append(
                    RuleError(
                        file=where.file if where else str(self.directory),
                        line=where.line if where else 1,
                        col=1,
                        message=f"LET {let.key}: a point of that name already exists "
                        f"(from {registry.get(*key).origin or 'the configuration'})",
                        suggestion=None,
                        source_line="",
                    )
                )
        return errors

    def _update_lets(self, ruleset: RuleSet) -> None:
        registry = self.host.registry
        new = {(p.device, p.name): p for p in ruleset.lets}
        self._updating_registry = True
        try:
            for key in sorted(self.let_keys - set(new)):
                registry.remove(*key)
            for key, info in new.items():
                if registry.find(*key) != info:
                    registry.add(info, replace=True)
        finally:
            self._updating_registry = False
        self.let_keys = set(new)

    def _remove_lets(self) -> None:
        """The rules plug-in stops (its section changed or is gone): its LET points go with it."""
        registry = self.host.registry
        for key in sorted(self.let_keys):
            info = registry.find(*key)
            if info is not None and info.origin == "rules":
                registry.remove(*key)
        self.let_keys = set()

    def _on_registry(self, event: RegistryEvent) -> None:
        """Points that come and go at run time (Pico boards, CoAP nodes): check the rules again."""
        if event.kind not in ("point_added", "point_removed"):
            return
        self._point_rows = None
        if self._updating_registry:
            return
        if (event.device, event.point) in self.let_keys:
            return
        self.request_reload()

    def request_reload(self) -> None:
        if not self._reload_wanted.is_set():
            self._first_change = time.monotonic()
            self._reload_wanted.set()

    async def _reload_loop(self) -> None:
        """Debounce: reload once nothing has changed for `debounce`, at most 1 s after the first
        change of a burst."""
        debounce = self.config.debounce
        while True:
            await self._reload_wanted.wait()
            while True:
                self._reload_wanted.clear()
                left = min(debounce, self._first_change + _MAX_DEBOUNCE_S - time.monotonic())
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._reload_wanted.wait()
                if not self._reload_wanted.is_set():
                    break
            self._reload_wanted.clear()
            try:
                await self.reload()
            except Exception:  # a reload must never end the service: the rules keep running
                log.exception("rules: reload failed")

    # ------------------------------------------------------------------ watching

    def _watch_filter(self, path: str) -> bool:
        """Rule files (not hidden ones: editors' swap and lock files), and `..name` entries, which
        deploy tools swap atomically (Kubernetes' `..data` symlink behind a ConfigMap's files)."""
        p = Path(path)
        if p == self.directory:
            return True  # the directory itself was removed or replaced
        try:
            rel = p.relative_to(self.directory)
        except ValueError:
            return False
        if not self.config.recursive and len(rel.parts) > 1:
            return False
        if rel.parts[0].startswith(".."):
            return True
        if any(part.startswith(".") for part in rel.parts):
            return False
        return fnmatch.fnmatchcase(p.name, self.config.pattern)

    def _identity(self) -> tuple[int, int] | None:
        """The directory's (device, inode), None while it is missing."""
        try:
            st = self.directory.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    async def _watch(self) -> None:
        """Watch the directory; once a second also check that it is still the same directory (a
        deploy that renames a new directory or a symlink over it, or removes and recreates it)."""
        watched = self._loaded_identity  # the directory the rules were first read from
        while not self._stop.is_set():
            current = self._identity()
            if current != watched:
                log.info("rules: %s was removed or replaced", self.directory)
                self.request_reload()  # (reports a missing directory)
                watched = current
            if current is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._stop.wait()
                continue
            try:
                changes = watch(
                    self.directory,
                    path_filter=self._watch_filter,
                    recursive=self.config.recursive,
                    force_polling=self.config.force_polling,
                    poll_delay=0.1,
                    debounce=_MAX_DEBOUNCE_S,
                    stop=self._stop,
                )
                async with contextlib.aclosing(changes):
                    async for changed in changes:
                        if changed:
                            log.debug("rules: changed: %s", sorted(changed))
                            self.request_reload()
                        if self._identity() != watched:
                            break  # watch the new one
            except OSError as exc:  # the directory went away under the watcher
                log.warning("rules: watching %s stopped: %s", self.directory, exc)
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ timers

    def deadline_may_have_moved(self, *, force: bool = False) -> None:
        """After readings or a load: wake the timer task if the next deadline is earlier now."""
        if force:
            self._timer_wakeup.set()
            return
        try:
            nd = self.engine.next_deadline()
        except Exception:
            self.engine_failed("next_deadline")
            return
        if nd is not None and (self._sleep_until is None or nd < self._sleep_until):
            self._timer_wakeup.set()

    async def _timers(self) -> None:
        """Run the engine's timers (FOR, EVERY, age) when due, readings or not."""
        ticked_at: int | None = None
        while True:
            self._timer_wakeup.clear()
            try:
                deadline = self.engine.next_deadline()
            except Exception:
                self.engine_failed("next_deadline")
                deadline = None
            self._sleep_until = deadline
            if deadline is not None:
                delay = (deadline - time.time_ns()) / 1e9
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._timer_wakeup.wait()
                    continue  # woken early (new deadline) or due now: look again
                if deadline == ticked_at:  # the tick did not move it: do not spin on it
                    await asyncio.sleep(0.01)
                ticked_at = deadline
                await self._tick()
                await asyncio.sleep(0)  # a busy engine still lets the loop breathe
            else:
                await self._timer_wakeup.wait()

    async def _tick(self) -> None:
        try:
            derived = self.engine.tick(time.time_ns())
        except Exception:
            self.engine_failed("tick")
            await asyncio.sleep(0.1)  # a failing tick must not spin
            return
        if derived:
            # The engine's own LET readings: published like any reading, not evaluated again.
            await self.emit_derived(derived)

    async def emit_derived(self, derived: list[Reading]) -> None:
        """The engine's own LET readings: published like any reading, not evaluated again."""
        self.processor.skip_next = True
        try:
            await self.host.pipeline.emit(derived, wait=False)
        finally:
            self.processor.skip_next = False

    def engine_failed(self, where: str) -> None:
        self.stats.engine_errors += 1
        if self._engine_failures_logged < 10:
            self._engine_failures_logged += 1
            log.exception("rules: the rule engine failed in %s (the gateway keeps running)", where)

    # ------------------------------------------------------------------ writes

    async def router_write(self, request: WriteRequest) -> Any:
        return await self.host.router.write(request)

    def write_result(self, rule: str, ok: bool, message: str) -> None:
        try:
            self.engine.write_result(rule, ok, message)
        except Exception:
            self.engine_failed("write_result")
        if not ok:
            self._status_now.set()

    # ------------------------------------------------------------------ outbox

    async def _flush(self) -> None:
        actions = self.actions
        while True:
            await actions.wakeup.wait()
            actions.wakeup.clear()
            batch, actions.queue = actions.queue, []
            if batch:
                await self.host.pipeline.post(batch, wait=False)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The payload of `<base>/<gw>/rules/status` (docs/mqtt.md)."""
        try:
            engine_status = self.engine.status()
        except Exception:
            self.engine_failed("status")
            engine_status = {"version": "", "rules": {}}
        rules: dict[str, Any] = {}
        for rule_id, rule in engine_status.get("rules", {}).items():
            fired = rule.get("last_fired")
            # milliseconds, as every ts on MQTT (the engine keeps nanoseconds)
            rules[rule_id] = {**rule, "last_fired": epoch_ms(fired) if isinstance(fired, int) else fired}
        counts = Counter(str(r.get("state", "unknown")) for r in rules.values())
        attempt = self.attempt
        return {
            "ok": attempt.ok,
            "version": self.loaded.version if self.loaded is not None else None,
            "loaded_ts": epoch_ms(self.loaded_ts) if self.loaded_ts else None,
            "files": list(self.loaded.files) if self.loaded is not None else [],
            "attempt": {
                "ts": epoch_ms(attempt.ts) if attempt.ts else None,
                "ok": attempt.ok,
                "files": attempt.files,
            },
            "errors": [_problem(e) for e in attempt.errors],
            "warnings": [_problem(w) for w in self.loaded.warnings] if self.loaded is not None else [],
            "counts": {s: counts.get(s, 0) for s in ("idle", "active", "unknown", "errored")},
            "rules": rules,
            "left_in_force": [
                {**e, "ts": epoch_ms(e["ts"]) if isinstance(e.get("ts"), int) else e.get("ts")}
                for e in engine_status.get("left_in_force", [])
            ],
        }

    def _publish_status(self, *, force: bool) -> None:
        messages = self.host.messages
        connection = messages.connection if messages is not None else None
        reconnected = connection is not None and connection is not self._status_client
        body = self.status()
        if not force and not reconnected and not self._status_unsent and body == self._last_status:
            return
        self._last_status = body
        if messages is None:
            return
        # The status describes the present: it is not queued in the outbox while the broker is
        # away (a backlog of stale snapshots, 100 kB each with 1,000 rules, would only overwrite
        # one another), but sent on the live connection, and again as soon as the broker is back.
        payload = orjson.dumps({**body, "ts": epoch_ms(time.time_ns())}, default=str)
        topic = messages.topic("rules/status")
        self._status_unsent = not messages.publish_now(topic, payload, qos=1, retain=True)
        self._status_client = None if self._status_unsent else messages.connection  # new connection: again

    async def _status_loop(self) -> None:
        self._publish_status(force=True)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.status_interval):
                    await self._status_now.wait()
            force = self._status_now.is_set()
            self._status_now.clear()
            self._publish_status(force=force)

    # ------------------------------------------------------------------ the component

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._timers(), name="rules-timers"),
                    tg.create_task(self._flush(), name="rules-outbox"),
                    tg.create_task(self._status_loop(), name="rules-status"),
                    tg.create_task(self._reload_loop(), name="rules-reload"),
                ]
                if self.config.watch:
                    tasks.append(tg.create_task(self._warm_up(), name="rules-compiler"))
                    tasks.append(tg.create_task(self._watch(), name="rules-watch"))
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            writes = list(self.actions.writes)  # the devices' links are stopping too
            for task in writes:
                task.cancel()
            await asyncio.gather(*writes, return_exceptions=True)
            await self._drain_queue()
            await self.worker.close()

    async def _warm_up(self) -> None:
        """Start the compiler process and let it compile the running set once: it keeps the code
        of functions it compiled, so the first reload is as quick as the next ones (measured with
        1,000 rules: 1.2 s cold, 0.3-0.5 s warm)."""
        try:
            await self.worker.start()
            await self.worker.compile(self._job(last_digest=""), timeout=self.config.compile_timeout)
        except CompilerError as exc:
            log.error("rules: %s (reloads will try again)", exc)
        finally:
            self.warmed.set()

    async def _drain_queue(self) -> None:
        batch, self.actions.queue = self.actions.queue, []
        if batch:
            with contextlib.suppress(Exception):
                await self.host.pipeline.post(batch, wait=False)

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ trying an edited file

    def trial(self, name: str, text: str) -> RuleSet:
        """Compile the running set's files with `name` (relative to the rules directory) holding
        `text` instead, against the points the gateway has now: what a save would load.  Raises
        RuleErrors (every error, file:line:col) or ValueError (a name that is not a rule file of
        this directory).  Runs in the caller's thread (a second or so for 1,000 rules)."""
        from picogate.rules._compile import compile_rules
        from picogate.rules._errors import RuleErrors
        from picogate.rules._worker import read_rule_files

        self.rule_path(name)
        files, errors = read_rule_files(self.directory, self.config.pattern, recursive=self.config.recursive)
        errors = [e for e in errors if e.file != name]
        files[name] = text
        points = [p for p in self.host.registry if (p.device, p.name) not in self.let_keys]
        try:
            ruleset = compile_rules(files, points)
        except RuleErrors as exc:
            raise RuleErrors([*errors, *exc.errors], exc.warnings) from None
        if errors:
            raise RuleErrors(errors, ruleset.warnings)
        return ruleset

    def rule_names(self) -> list[str]:
        """The rule files of the directory now (names relative to it), sorted."""
        from picogate.rules._worker import rule_files

        if not self.directory.is_dir():
            return []
        found = rule_files(self.directory, self.config.pattern, recursive=self.config.recursive)
        return [p.relative_to(self.directory).as_posix() for p in found]

    def rule_path(self, name: str) -> Path:
        """The path of the rule file `name` (relative to the rules directory); ValueError if `name`
        is not a rule file name of this directory (outside it, hidden, not matching the pattern)."""
        parts = Path(name).parts
        if (
            not parts
            or Path(name).is_absolute()
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
            or (len(parts) > 1 and not self.config.recursive)
            or not fnmatch.fnmatchcase(parts[-1], self.config.pattern)
            or "\0" in name
        ):
            raise ValueError(
                f"{name!r} is not a rule file name here: a file name matching {self.config.pattern!r} "
                f"in {self.directory}"
            )
        return self.directory / Path(*parts)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _problem(e: RuleError) -> dict[str, Any]:
    """An error or warning as the status topic shows it."""
    return {
        "file": e.file,
        "line": e.line,
        "col": e.col,
        "message": e.message,
        "suggestion": e.suggestion,
        "text": e.format(),
    }


class _Running(Protocol):
    @property
    def components(self) -> Sequence[object]: ...


def live_rules(gw: _Running) -> LiveRules | None:
    """The rules service of a built gateway (for the demo's view and tests), None without rules."""
    for c in gw.components:
        if isinstance(c, LiveRules):
            return c
    return None


__all__ = [
    "CompilerError",
    "CompilerWorker",
    "LiveActions",
    "LiveRules",
    "RulesSetupError",
    "live_rules",
]
