"""Registration in core-metadata: profiles, then the device service, then the devices.

Idempotent: each is created (POST) and, where it exists already (409), updated (PUT for
profiles, PATCH for the service and devices).  The batch calls answer 207 with one entry per
request; each entry is checked.  Retried with backoff until everything is accepted, and again
whenever points appear or disappear.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import orjson

from picogate._errors import PicogateError
from picogate._registry import PointRegistry, RegistryEvent
from picogate.edgex._commands import EdgexNames
from picogate.edgex._forward import point_infos
from picogate.edgex._model import API_VERSION, device_dto, device_profile, device_service

log = logging.getLogger("picogate.edgex")


class RegistrationError(PicogateError):
    pass


class MetadataClient:
    """The few core-metadata calls registration needs."""

    def __init__(self, session: aiohttp.ClientSession, base: str, *, bypass_validation: bool = False) -> None:
        self.session = session
        self.base = f"{base}/api/v3"
        self.bypass = bypass_validation

    async def _batch(
        self, method: str, path: str, key: str, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        body = [{"apiVersion": API_VERSION, key: item} for item in items]
        url = self.base + path
        if self.bypass and path == "/device" and method == "POST":
            url += "?bypassValidation=true"
        try:
            async with self.session.request(method, url, data=orjson.dumps(body)) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistrationError(f"{method} {path}: core-metadata not reachable ({exc})") from exc
        if status != 207:
            raise RegistrationError(f"{method} {path}: core-metadata answered {status}: {text[:300]}")
        try:
            entries = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise RegistrationError(f"{method} {path}: reply is not JSON: {text[:200]}") from None
        if not isinstance(entries, list) or len(entries) != len(items):
            raise RegistrationError(f"{method} {path}: expected {len(items)} reply entries, got {text[:200]}")
        return [e if isinstance(e, dict) else {} for e in entries]

    async def upsert(
        self, path: str, key: str, items: list[dict[str, Any]], update: Literal["PUT", "PATCH"]
    ) -> None:
        """Create each item, update those that exist; raise RegistrationError naming what failed."""
        if not items:
            return
        entries = await self._batch("POST", path, key, items)
        existing: list[dict[str, Any]] = []
        failed: list[str] = []
        for item, entry in zip(items, entries, strict=True):
            code = entry.get("statusCode")
            if code == 201:
                continue
            if code == 409:
                existing.append(item)
            else:
                failed.append(f"{item['name']}: {code} {entry.get('message', '')}")
        if existing:
            for item, entry in zip(existing, await self._batch(update, path, key, existing), strict=True):
                if entry.get("statusCode") != 200:
                    failed.append(
                        f"{item['name']} (update): {entry.get('statusCode')} {entry.get('message', '')}"
                    )
        if failed:
            raise RegistrationError(f"{key} registration failed: " + "; ".join(failed))


class Registrar:
    """The component that keeps core-metadata in step with the gateway's points."""

    kind: Literal["source", "service"] = "service"

    def __init__(
        self,
        *,
        registry: PointRegistry,
        names: EdgexNames,
        core_metadata: str,
        base_address: str,
        labels: list[str],
        protocols: Callable[[str], dict[str, dict[str, Any]]],
        timeout: float,
        bypass_validation: bool,
        ready: asyncio.Event | None = None,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self.name = "edgex-register"
        self.registry = registry
        self.names = names
        self.core_metadata = core_metadata
        self.base_address = base_address
        self.labels = labels
        self.protocols = protocols
        self.timeout = timeout
        self.bypass = bypass_validation
        self.ready = ready  # the bus is up (device validation needs it)
        self.min_delay, self.max_delay = min_delay, max_delay
        self._changed = asyncio.Event()
        self._changed.set()
        self._stop = asyncio.Event()
        self.registered = asyncio.Event()
        self.rounds = 0
        self.last_error = ""
        self.unsubscribe = registry.subscribe(self._on_registry)

    def _on_registry(self, event: RegistryEvent) -> None:
        if event.kind in ("point_added", "point_removed"):
            self._changed.set()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()

    def documents(self) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
        """Profiles, the device service and the devices to register."""
        profiles, devices = [], []
        for status in sorted(self.registry.devices(), key=lambda d: d.name):
            points = point_infos(self.registry, status.name)
            if not points:
                continue
            pname = self.names.profile(status.name)
            profiles.append(
                device_profile(
                    pname, status.name, points, batch_command=self.names.batch_command, labels=self.labels
                )
            )
            devices.append(device_dto(status.name, self.names.service, pname, self.protocols(status.name)))
        return profiles, device_service(self.names.service, self.base_address, self.labels), devices

    async def register_once(self, session: aiohttp.ClientSession) -> None:
        profiles, service, devices = self.documents()
        client = MetadataClient(session, self.core_metadata, bypass_validation=self.bypass)
        await client.upsert("/deviceprofile", "profile", profiles, "PUT")
        await client.upsert("/deviceservice", "service", [service], "PATCH")
        await client.upsert("/device", "device", devices, "PATCH")
        log.info("EdgeX: registered %d profiles and devices of service %s", len(devices), self.names.service)

    async def run(self) -> None:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"Content-Type": "application/json"}
        ) as session:
            delay = self.min_delay
            while not self._stop.is_set():
                await self._changed.wait()
                if self._stop.is_set():
                    return
                if self.ready is not None and not self.ready.is_set():
                    await _first(self.ready.wait(), self._stop.wait())
                    continue
                self._changed.clear()
                await asyncio.sleep(0.2)  # let a burst of new points settle
                self.rounds += 1
                try:
                    await self.register_once(session)
                except RegistrationError as exc:
                    self.last_error = str(exc)
                    log.warning("EdgeX registration: %s; retrying in %.1f s", exc, delay)
                    self._changed.set()
                    await _first(asyncio.sleep(delay * random.uniform(0.5, 1.0)), self._stop.wait())
                    delay = min(delay * 2, self.max_delay)
                    continue
                delay = self.min_delay
                self.last_error = ""
                self.registered.set()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
