"""Reload of `gateway.yaml` in the running gateway: what changed between two configurations
(`diff`, pure), and the watcher that asks for a reload when the file changes or on SIGHUP
(`ConfigWatch`).  The gateway applies the difference (`Gateway.reload`): each plug-in whose section
changed is updated through its host, rebuilding only the parts that changed (`Plugin.update`) or,
for a plug-in without parts, re-attached; the core (outbox, registry, router, HTTP server) is never
rebuilt, so keys of the core sections are reported as needing a restart.

    gateway.yaml ──inotify (_watch)──────┐
    SIGHUP ──────────────────────────────┴──► debounce ──► load + validate (a thread)
                                                               │ bad file: the running config stays;
                                                               │ log, status topic ("config")
                                                               ▼
                                             diff(running, new) ──► plug-ins' update / reconfigure
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from picogate._host import Plugin
from picogate._watch import watch
from picogate.config import CoreConfig

log = logging.getLogger("picogate")

CORE_SECTIONS: tuple[str, ...] = tuple(CoreConfig.model_fields)
"""The core's sections (gateway, outbox, metrics, clock, commands): read at start, but for the
keys of `LIVE_COMMANDS`."""

LIVE_COMMANDS: tuple[str, ...] = ("deadline", "rate_limit", "points", "max_pending")
"""The keys of `commands:` the running command router takes at once (it reads them for every
write); the others (`queue_per_device`, `max_payload`) size queues and servers built at start."""


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What differs between the running configuration and a new one."""

    plugins: tuple[str, ...] = ()
    """The plug-ins whose section changed, in attach order."""
    restart: tuple[str, ...] = ()
    """The keys of the core's sections that changed (`metrics.port`): applied at the next start."""
    commands: tuple[str, ...] = ()
    """The keys of `commands:` that changed and apply at once (`commands.deadline.mqtt`)."""

    def __bool__(self) -> bool:
        return bool(self.plugins or self.restart or self.commands)


def diff(old: CoreConfig, new: CoreConfig, plugins: Iterable[Plugin[Any]]) -> ConfigDiff:
    """The difference between two valid configurations (no I/O)."""
    changed = tuple(p.name for p in plugins if old.section(p.section.key) != new.section(p.section.key))
    keys: list[str] = []
    for key in CORE_SECTIONS:
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            keys.extend(_changed_keys(key, a.model_dump(), b.model_dump()))
    live = tuple(k for k in keys if k.split(".")[:2] in (["commands", n] for n in LIVE_COMMANDS))
    return ConfigDiff(changed, tuple(k for k in keys if k not in live), live)


def _changed_keys(prefix: str, a: object, b: object) -> Iterator[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                yield from _changed_keys(f"{prefix}.{k}", a.get(k), b.get(k))
    elif a != b:
        yield prefix


def keep_core(running: CoreConfig, new: CoreConfig, *, also: Iterable[str] = ()) -> CoreConfig:
    """`new` as a running gateway applies it: the running core sections but for the keys of
    `LIVE_COMMANDS`, and the running sections `also` (those that could not be applied)."""
    update = {key: getattr(running, key) for key in (*CORE_SECTIONS, *also)}
    update["commands"] = running.commands.model_copy(
        update={name: getattr(new.commands, name) for name in LIVE_COMMANDS}
    )
    return new.model_copy(update=update)


@dataclass(slots=True)
class ReloadAttempt:
    """The last reload of `gateway.yaml`, for the status topic and the log."""

    ts: int = 0
    """Milliseconds since the epoch."""
    ok: bool = True
    errors: list[str] = field(default_factory=list)
    """Why the file, or part of it, was not applied (the file's problems: `file:line:column: …`)."""
    applied: list[str] = field(default_factory=list)
    """The sections applied (`devices`, `mqtt`, …)."""
    restart: list[str] = field(default_factory=list)
    """The changed keys that are applied at the next start."""

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "ts": self.ts}
        if self.errors:
            body["errors"] = self.errors
        if self.applied:
            body["applied"] = self.applied
        if self.restart:
            body["restart_needed"] = self.restart
        return body


FileSignature = tuple[int, int, int, int]


def signature(path: Path) -> FileSignature | None:
    """(device, inode, size, mtime) of the file behind `path`; None while it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ConfigWatch:
    """The gateway's "config" service: calls `reload()` after `gateway.yaml` changed (file watch)
    or `request()` was called (SIGHUP), once the file has been quiet for `debounce` seconds."""

    name = "config-watch"
    kind: Literal["source", "service"] = "service"

    def __init__(
        self,
        path: Path,
        reload: Callable[[], Awaitable[object]],
        *,
        loaded: FileSignature | None = None,
        debounce: float = 0.3,
    ) -> None:
        self.path = path.absolute()  # not resolve(): a symlink swapped by a deploy is followed
        self._reload = reload
        self.seen = loaded
        """The file as it was when last read (`signature`): a file that differs is read again,
        also when the watch missed its change (changed before the watch began)."""
        self.debounce = debounce
        self._stop = asyncio.Event()
        self._wanted = asyncio.Event()

    def request(self) -> None:
        """Reload soon (SIGHUP)."""
        self._wanted.set()

    def stop(self) -> None:
        self._stop.set()
        self._wanted.set()

    async def run(self) -> None:
        watcher = asyncio.create_task(self._watch(), name="config-watch-files")
        try:
            await self._serve()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _serve(self) -> None:
        while not self._stop.is_set():
            await self._wanted.wait()
            while not self._stop.is_set():  # wait for the file to be quiet
                self._wanted.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.debounce):
                        await self._wanted.wait()
                if not self._wanted.is_set():
                    break
            if self._stop.is_set():
                return
            self.seen = signature(self.path)
            try:
                await self._reload()
            except Exception:  # a reload must never end the gateway: the running config stays
                log.exception("gateway.yaml: reload failed; the running configuration stays")

    def _filter(self, path: str) -> bool:
        """The file itself, and `..name` entries, which deploy tools swap atomically (Kubernetes'
        `..data` symlink behind a ConfigMap's files); the directory itself when the kernel lost
        events (its queue overflowed)."""
        name = Path(path).name
        return name == self.path.name or name.startswith("..") or path == str(self.path.parent)

    async def _watch(self) -> None:
        """Watch the file's directory (editors and deploy tools replace the file by a rename)."""
        directory = self.path.parent
        while not self._stop.is_set():
            try:
                changes = watch(
                    directory,
                    path_filter=self._filter,
                    recursive=False,
                    debounce=self.debounce,
                    stop=self._stop,
                )
                async with contextlib.aclosing(changes):
                    async for changed in changes:
                        if changed:
                            log.debug("gateway.yaml: changed: %s", sorted(changed))
                            self.request()
                        elif signature(self.path) != self.seen:  # (every second while quiet)
                            self.request()
            except OSError as exc:  # the directory went away under the watcher
                log.warning("gateway.yaml: watching %s stopped: %s; trying again", directory, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._stop.wait()
