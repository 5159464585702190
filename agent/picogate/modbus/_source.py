"""Modbus polling: one task per link (a TCP connection, or a serial bus), serving its devices.

- Points of a device are grouped by poll interval; each group is planned once into merged reads.
- Writes wait in a bounded queue per device (a full one refuses `busy`); the link serves them
  before its next poll request, the devices in turn, so that one slow device's backlog does not
  hold up the writes of the others.  A write whose deadline passed before its frame could go
  out is `stale`; one sent but not confirmed is `outcome_unknown`.
- A failed poll is retried `retries` times; after `offline_after` failed polls the device goes
  offline: its points are published with quality `bad`, its status is published, and it is polled
  with exponential backoff (up to `backoff_max`) so that a dead slave on a shared bus costs one
  timeout per backoff period, not one per cycle.  It comes back by itself.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from picogate._model import PointInfo, Quality, Reading, Value
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import ErrorCode, WriteError, WriteTicket
from picogate.modbus._codec import CodecError, Encoding, Table, bit_masks, decode, encode, set_bit
from picogate.modbus._config import ModbusRtuDevice, ModbusTcpDevice
from picogate.modbus._planner import Request, plan
from picogate.modbus._points import point_info
from picogate.modbus._transport import FailKind, ModbusFailure, ModbusLink, SerialParams, TcpParams

log = logging.getLogger("picogate.modbus")

WRITES_PER_DEVICE = 64
"""Writes waiting per device on a line, at most (the router's `commands.queue_per_device` is the
bound that applies first; this one guards a line used without the router)."""

DeviceConfig = ModbusTcpDevice | ModbusRtuDevice
_T = TypeVar("_T")
Emit = Callable[[Sequence[Reading]], Awaitable[None]]
StatusChanged = Callable[[DeviceStatus], Awaitable[None]]


@dataclass(slots=True)
class PollStats:
    polls: int = 0
    requests: int = 0
    failures: int = 0
    timeouts: int = 0
    exceptions: int = 0
    writes: int = 0
    write_failures: int = 0
    latency_sum: float = 0.0


POLL_SLOT = 0.05
"""Seconds: the grid on which the polls of different devices are spread (see `build_lines`)."""
_EPOCH: list[float] = []
_EARLY = 0.002
"""Seconds: a line woken this close before its instant, and within a quarter of the interval
(a 1 ms grid stays at most 1,000 polls a second), polls at once.  uvloop's timers count
in whole milliseconds and ring up to one early; sleeping again for the rest would cost a
timer, a wake-up and a task step more per poll (about one poll in six, measured)."""


def _epoch() -> float:
    """One start time for every line of the process, so that their grids coincide."""
    if not _EPOCH:
        _EPOCH.append(time.monotonic())
    return _EPOCH[0]


class _Wakeable(Protocol):
    def set(self) -> None: ...


class _Wake:
    """What a line sleeps on between polls, set by its alarm, a write or `stop()`: an
    `asyncio.Event` for one waiter, without the Event's loop lookup and list of waiters (a line
    sleeps once per poll)."""

    __slots__ = ("_fut", "_set")

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None
        self._set = False

    def set(self) -> None:
        self._set = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        fut = self._fut = asyncio.get_running_loop().create_future()
        try:
            await fut
        finally:
            self._fut = None


class _Alarms:
    """One timer per instant for every poller that sleeps until it.  The devices of one poll slot
    are due at exactly the same time (the POLL_SLOT grid): 25 lines of a slot (scenario a) wake
    from one timer rather than 25 timers set and cancelled.  A line woken early (a write) takes
    its event back; the timer goes when nobody waits for it."""

    def __init__(self) -> None:
        self._at: dict[float, tuple[asyncio.TimerHandle, list[_Wakeable], asyncio.AbstractEventLoop]] = {}

    def set(self, at: float, wake: _Wakeable) -> None:
        entry = self._at.get(at)
        loop = asyncio.get_running_loop()
        if entry is None or entry[2] is not loop:  # (an entry of a loop that has ended: replaced)
            delay = max(0.0, at - time.monotonic())
            self._at[at] = (loop.call_later(delay, self._ring, at), [wake], loop)
        else:
            entry[1].append(wake)

    def unset(self, at: float, wake: _Wakeable) -> None:
        entry = self._at.get(at)
        if entry is None:
            return  # rung
        waiting = entry[1]
        try:
            waiting.remove(wake)
        except ValueError:
            return  # in another entry for the same instant (the timer rang a little early)
        if not waiting:
            entry[0].cancel()
            del self._at[at]

    def _ring(self, at: float) -> None:
        entry = self._at.pop(at, None)
        if entry is not None:
            for wake in entry[1]:
                wake.set()

    @property
    def timers(self) -> int:
        """Timers set now (one per instant somebody sleeps until)."""
        return len(self._at)


_ALARMS = _Alarms()
"""The process's alarms: every line on the one POLL_SLOT grid, also lines built later (a reload)."""


@dataclass(slots=True)
class _Group:
    interval: float
    requests: list[Request[str]]
    next_due: float = 0.0
    anchor: float = 0.0
    """An instant of the group's grid (the POLL_SLOT grid shifted by its slot)."""

    def after(self, started: float) -> float:
        """When to poll next after a poll that started at `started`: one interval after the
        grid instant nearest to it.  A poll that ran off the grid (late, or early: a write's
        read-back; the first one of a line built after the others) brings the next back onto
        it; cycles missed while busy are skipped.  Interval 0: at once."""
        if self.interval <= 0:
            return started
        k = round((started - self.anchor) / self.interval)
        return self.anchor + (k + 1) * self.interval


@dataclass(slots=True)
class _Device:
    cfg: DeviceConfig
    encodings: dict[str, Encoding]
    infos: dict[str, PointInfo]
    groups: list[_Group]
    members: dict[int, list[tuple[str, int, int, Encoding, str]]] = field(default_factory=dict)
    """The decoding plan of each request (by id), built at its first reply."""
    failures: int = 0
    offline: bool = False
    backoff: float = 0.0
    retry_at: float = 0.0
    status: DeviceStatus = field(default_factory=lambda: DeviceStatus(""))


@dataclass(slots=True)
class _Write:
    device: _Device
    point: PointInfo
    value: Value
    done: asyncio.Future[None]
    ticket: WriteTicket


class _WriteQueues:
    """The writes waiting on one link: a bounded queue per device, served in turn."""

    def __init__(self, per_device: int) -> None:
        self.per_device = per_device
        self._queues: dict[str, deque[_Write]] = {}

    def empty(self) -> bool:
        return not self._queues

    def qsize(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def put_nowait(self, write: _Write) -> None:
        name = write.device.cfg.name
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = deque()
        elif len(queue) >= self.per_device:
            raise WriteError(
                ErrorCode.BUSY, f"{write.point.key}: {len(queue)} writes already wait for device {name}"
            )
        queue.append(write)

    def get_nowait(self) -> _Write:
        """The oldest write of the next device in turn (devices rotate after each write)."""
        name, queue = next(iter(self._queues.items()))  # KeyError-free: callers check empty()
        write = queue.popleft()
        del self._queues[name]
        if queue:
            self._queues[name] = queue  # to the back of the turn
        return write


_SHARED: dict[object, object] = {}
_SHARED_MAX = 65_536
"""Encodings and decoding plans, one object for all that are equal: 500 devices of one model
would otherwise hold 15,000 of each (about 3 MB)."""


def _shared(key: object, value: _T) -> _T:
    found = _SHARED.get(key)
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[key] = found = value
    return found  # type: ignore[return-value]


def _build_device(cfg: DeviceConfig) -> _Device:
    encodings = {}
    for p in cfg.points:
        enc = p.encoding(cfg.byte_order)
        # equal encodings are interchangeable (`scale: 1` and `1.0` are equal: the types too)
        encodings[p.name] = _shared((enc, type(enc.scale), type(enc.offset)), enc)
    infos = {p.name: point_info(cfg, p, encodings[p.name]) for p in cfg.points}
    by_interval: dict[float, list[tuple[str, Encoding]]] = {}
    for p in cfg.points:
        by_interval.setdefault(p.poll or cfg.poll, []).append((p.name, encodings[p.name]))
    groups = [
        _Group(
            interval,
            plan(
                members,
                max_registers=cfg.max_registers,
                max_bits=cfg.max_bits,
                max_gap=cfg.max_gap,
                no_merge=cfg.no_merge,
            ),
        )
        for interval, members in sorted(by_interval.items())
    ]
    return _Device(cfg, encodings, infos, groups, status=DeviceStatus(cfg.name, origin="modbus"))


_UINT16, _INT16, _OTHER = 0, 1, 2


def _members(dev: _Device, req: Request[str]) -> list[tuple[str, int, int, Encoding, str]]:
    """(point, offset, kind, encoding, unit) of each point a request reads; `kind` says whether
    the value is one register read as is (uint16 or int16, big-endian bytes, unscaled)."""
    out = []
    for point, offset in req.members:
        enc = dev.encodings[point]
        kind = _OTHER
        if (
            enc.width == 1
            and enc.bit is None
            and enc.scale == 1.0
            and enc.offset == 0.0
            and not enc.table.is_bit
        ):
            if decode(enc, [0x1234]) == 0x1234 and decode(enc, [0xFEDC]) == 0xFEDC:
                kind = _UINT16
            elif decode(enc, [0x1234]) == 0x1234 and decode(enc, [0xFEDC]) == 0xFEDC - 0x10000:
                kind = _INT16
        member = (point, offset, kind, enc, dev.infos[point].unit)
        out.append(_shared((member, type(enc.scale), type(enc.offset)), member))
    return out


def link_key(cfg: DeviceConfig) -> tuple[str, ...]:
    """Devices with the same key share one connection (a TCP gateway, an RS-485 bus)."""
    if isinstance(cfg, ModbusTcpDevice):
        return ("tcp", cfg.host, str(cfg.port), cfg.framing)
    return ("rtu", cfg.port)


class ModbusLine:
    """The poller of one link (a source component of the Modbus plug-in)."""

    kind: Literal["source", "service"] = "source"

    def __init__(
        self,
        devices: Sequence[DeviceConfig],
        *,
        registry: PointRegistry,
        emit: Emit,
        status_changed: StatusChanged,
        now_ns: Callable[[], int] = time.time_ns,
        alarms: _Alarms | None = None,
    ) -> None:
        first = devices[0]
        if isinstance(first, ModbusTcpDevice):
            params: TcpParams | SerialParams = TcpParams(first.host, first.port, first.framing)
        else:
            params = SerialParams(first.port, first.baudrate, first.parity, first.stopbits, first.bytesize)
        self.link = ModbusLink(
            params,
            timeout=max(d.timeout for d in devices),
            late_reply={d.unit_id: d.late_reply for d in devices},
            driver=first.driver,
        )
        self.name = self.link.description
        self.devices = {d.name: _build_device(d) for d in devices}
        self.registry = registry
        self._emit = emit
        self._status_changed = status_changed
        self._now_ns = now_ns
        self._writes = _WriteQueues(WRITES_PER_DEVICE)
        self._wake = _Wake()
        self._alarms = alarms if alarms is not None else _ALARMS
        self._stopping = False
        # What is due next: (due, order, device, group), one entry per group.  A group whose
        # device is held back (offline backoff, RTU quiet time) is pushed back with its new due.
        self._due: list[tuple[float, int, _Device, _Group]] = []
        self._order = itertools.count()
        self.phases: dict[str, float] = {}
        """Share (0 to 1) of its interval by which a device's first poll is put off."""
        self.stats = PollStats()
        self.latency_observer: Callable[[str, float], None] | None = None

    # ------------------------------------------------------------------ registration

    def register(self) -> None:
        for dev in self.devices.values():
            for info in dev.infos.values():
                self.registry.add(info, replace=True)

    def set_write_queue(self, per_device: int) -> None:
        """Writes waiting per device at most (more are refused `busy`)."""
        self._writes.per_device = per_device

    def writer_for(self, device: str) -> _DeviceWriter:
        return _DeviceWriter(self, self.devices[device])

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Poll until stopped.  Readings go to the pipeline without waiting for the outbox's
        commit (`emit` given to the line does not wait): the next poll starts as soon as the
        device allows, whatever the disk is doing; the pipeline applies backpressure only when
        too much is waiting for a commit."""
        await self._poll_loop()

    def stop(self) -> None:
        """Stop polling at the next turn.  Cancelling alone is not enough: on Python 3.11,
        `asyncio.wait_for` (used by pymodbus for every request) can swallow a cancellation that
        arrives just as the reply does, and the loop would go on."""
        self._stopping = True
        self._wake.set()

    async def _poll_loop(self) -> None:
        due = self._due
        start = _epoch()
        for dev in self.devices.values():
            for group in dev.groups:
                if not group.next_due:
                    # on the POLL_SLOT grid shared by every line: polls of one slot are due at
                    # exactly the same time, and the loop serves them in one turn
                    slot = round(self.phases.get(dev.cfg.name, 0.0) * group.interval / POLL_SLOT)
                    group.next_due = group.anchor = start + slot * POLL_SLOT
                heapq.heappush(due, (group.next_due, next(self._order), dev, group))
        writes_seen = 0
        try:
            while not self._stopping:
                if not self._writes.empty():
                    await self._serve_writes()
                if writes_seen != self.stats.writes:
                    # A write asks for its point to be read back at once (next_due moved earlier).
                    writes_seen = self.stats.writes
                    due[:] = [(max(g.next_due, d.retry_at), o, d, g) for _, o, d, g in due]
                    heapq.heapify(due)
                if not due:
                    await self._sleep_until(time.monotonic() + 1.0)
                    continue
                at, order, dev, group = due[0]
                real = max(group.next_due, dev.retry_at)
                if real > at:  # held back since it was queued: requeue at its real time
                    heapq.heapreplace(due, (real, order, dev, group))
                    continue
                early = at - time.monotonic()
                if early > 0 and (early > _EARLY or early * 4 > group.interval):
                    await self._sleep_until(at)
                    continue
                heapq.heappop(due)
                try:
                    await self._poll(dev, group)
                finally:
                    heapq.heappush(due, (max(group.next_due, dev.retry_at), next(self._order), dev, group))
        finally:
            self.link.close()
            self._refuse_waiting_writes()

    def _refuse_waiting_writes(self) -> None:
        """Writes still queued when the line stops (a reload rebuilds it, the agent stops) were
        never sent: they fail now, rather than at their deadline."""
        while not self._writes.empty():
            w = self._writes.get_nowait()
            if not w.done.done():
                w.done.set_exception(_stopped(w.point.key))

    async def _sleep_until(self, at: float) -> None:
        """Sleep until `at` (time.monotonic()), or until a write arrives: on a timer shared with
        every line due at the same instant, no timeout context (the loop sleeps once per poll)."""
        wake = self._wake
        wake.clear()
        self._alarms.set(at, wake)
        try:
            await wake.wait()
        finally:
            self._alarms.unset(at, wake)

    async def _poll(self, dev: _Device, group: _Group) -> None:
        cfg = dev.cfg
        started = time.monotonic()
        group.next_due = group.after(started)  # on the fixed grid, skipping cycles missed while busy
        self.stats.polls += 1
        readings: list[Reading] = []
        failure: ModbusFailure | None = None
        for req in group.requests:
            if not self._writes.empty():
                await self._serve_writes()  # writes take priority over the rest of the poll
            words: list[int] | list[bool] | None = None
            for attempt in range(cfg.retries + 1):
                t0 = time.perf_counter()
                try:
                    self.link.timeout = cfg.timeout
                    words = await self.link.read(cfg.unit_id, req.table, req.start, req.count)
                except ModbusFailure as exc:
                    failure = exc
                    self.stats.failures += 1
                    if exc.kind is FailKind.TIMEOUT:
                        self.stats.timeouts += 1
                    elif exc.kind is FailKind.EXCEPTION:
                        self.stats.exceptions += 1
                        break  # the device answered: asking again gets the same answer
                    if attempt < cfg.retries:
                        await asyncio.sleep(min(0.05 * (attempt + 1), cfg.timeout))
                    continue
                finally:
                    self.stats.requests += 1
                elapsed = time.perf_counter() - t0
                self.stats.latency_sum += elapsed
                if self.latency_observer is not None:
                    self.latency_observer(cfg.name, elapsed)
                break
            ts = self._now_ns()
            if words is None:
                if failure is not None and failure.kind is FailKind.EXCEPTION:
                    # The device is alive; these registers are not.  Their points are bad.
                    readings.extend(self._bad(dev, req, ts))
                    continue
                await self._failed(dev, failure)
                return
            readings.extend(self._decode(dev, req, words, ts))
        if dev.offline or dev.failures or dev.status.state is not DeviceState.ONLINE:
            await self._recovered(dev)
        await self._emit(readings)

    def _decode(
        self, dev: _Device, req: Request[str], words: list[int] | list[bool], ts: int
    ) -> list[Reading]:
        members = dev.members.get(id(req))
        if members is None:
            members = dev.members[id(req)] = _members(dev, req)
        out: list[Reading] = []
        name = dev.cfg.name
        good, bad = Quality.GOOD, Quality.BAD
        for point, offset, kind, enc, unit in members:
            # The common registers (a plain 16-bit integer) without a call into the codec.
            if kind != _OTHER:
                raw = words[offset]
                if raw.__class__ is int and 0 <= raw <= 0xFFFF:
                    # an exact int already: no int() call (30 a poll)
                    v = raw - 0x10000 if kind == _INT16 and raw >= 0x8000 else raw
                    out.append(Reading(name, point, v, ts, good, unit))
                    continue
            try:
                value: Value = decode(enc, words[offset : offset + enc.width])
            except (CodecError, ValueError, UnicodeDecodeError):
                out.append(Reading(name, point, None, ts, bad, unit))
                continue
            if isinstance(value, float) and not math.isfinite(value):
                out.append(Reading(name, point, None, ts, bad, unit))
                continue
            out.append(Reading(name, point, value, ts, good, unit))
        return out

    def _bad(self, dev: _Device, req: Request[str], ts: int) -> list[Reading]:
        return [Reading(dev.cfg.name, p, None, ts, Quality.BAD, dev.infos[p].unit) for p, _ in req.members]

    async def _failed(self, dev: _Device, failure: ModbusFailure | None) -> None:
        cfg = dev.cfg
        dev.failures += 1
        reason = str(failure) if failure else "no reply"
        if not dev.offline and dev.failures >= cfg.offline_after:
            dev.offline = True
            dev.backoff = min(cfg.poll or 1.0, cfg.backoff_max)  # poll 0: from 1 s
            log.warning("device %s offline after %d failed polls: %s", cfg.name, dev.failures, reason)
            ts = self._now_ns()
            await self._set_state(dev, DeviceState.OFFLINE, reason, ts)
            bad = [Reading(cfg.name, p, None, ts, Quality.BAD, info.unit) for p, info in dev.infos.items()]
            await self._emit(bad)
        elif dev.offline:
            dev.backoff = min(max(dev.backoff * 2, cfg.poll or 1.0), cfg.backoff_max)
        if dev.offline:
            dev.retry_at = time.monotonic() + dev.backoff
        # RTU: a unit that timed out may still answer until its late-reply window ends, and is
        # asked nothing else meanwhile (the link would wait); poll the other devices instead.
        dev.retry_at = max(dev.retry_at, self.link.quiet_until(cfg.unit_id))

    async def _recovered(self, dev: _Device) -> None:
        was_offline = dev.offline
        dev.failures = 0
        dev.offline = False
        dev.backoff = 0.0
        dev.retry_at = 0.0
        if was_offline:
            log.info("device %s back online", dev.cfg.name)
        if was_offline or dev.status.state is not DeviceState.ONLINE:
            await self._set_state(dev, DeviceState.ONLINE, "", self._now_ns())

    async def _set_state(self, dev: _Device, state: DeviceState, reason: str, ts: int) -> None:
        if self.registry.set_device_state(dev.cfg.name, state, reason=reason, ts=ts):
            status = self.registry.device(dev.cfg.name)
            assert status is not None
            dev.status = status
            snapshot = DeviceStatus(status.name, status.state, status.reason, status.since_ns, status.origin)
            await self._status_changed(snapshot)

    # ------------------------------------------------------------------ writes

    async def submit(self, write: _Write) -> None:
        if self._stopping:
            raise _stopped(write.point.key)
        self._writes.put_nowait(write)  # WriteError(BUSY) when the device's queue is full
        self._wake.set()
        await write.done

    async def _serve_writes(self) -> None:
        while not self._writes.empty():
            w = self._writes.get_nowait()
            if w.done.done():  # the router gave up (deadline) or the requester went away
                continue
            try:
                await self._do_write(w)
            except WriteError as exc:
                self.stats.write_failures += 1
                if not w.done.done():
                    w.done.set_exception(exc)
            except Exception as exc:  # a bug: this write fails, the line goes on
                self.stats.write_failures += 1
                error = w.ticket.unexpected(exc)
                if not w.done.done():
                    w.done.set_exception(error)
            else:
                self.stats.writes += 1
                if not w.done.done():
                    w.done.set_result(None)
                for group in w.device.groups:  # show the new value at the next turn
                    if any(p == w.point.name for r in group.requests for p, _ in r.members):
                        group.next_due = time.monotonic()

    async def _do_write(self, w: _Write) -> None:
        """Encode, connect, wait for the unit's quiet time, then `ticket.send()` right before the
        request frame goes out: nothing is sent after the write's deadline."""
        cfg = w.device.cfg
        enc = w.device.encodings[w.point.name]
        ticket = w.ticket
        self.link.timeout = cfg.timeout
        try:
            values = None if enc.bit is not None else encode(enc, w.value)
        except CodecError as exc:
            code = ErrorCode.OUT_OF_RANGE if exc.code == "out_of_range" else ErrorCode.BAD_TYPE
            raise WriteError(code, f"{w.point.key}: {exc}") from exc
        try:
            ticket.check()
            if not self.link.connected:
                await self.link.connect()
            quiet = self.link.quiet_until(cfg.unit_id) - time.monotonic()
            if quiet > 0:  # after a timeout on RTU: a late reply must not be taken for ours
                await asyncio.sleep(quiet)
            if values is not None:
                ticket.send()
                await self.link.write(cfg.unit_id, enc.table, enc.address, values)
                return
            assert enc.bit is not None
            if cfg.fc22:
                and_mask, or_mask = bit_masks(enc.bit, bool(w.value))
                ticket.send()
                await self.link.mask_write(cfg.unit_id, enc.address, and_mask, or_mask)
            else:  # read-modify-write of the register holding the bit
                ticket.check()
                words = await self.link.read(cfg.unit_id, Table.HOLDING, enc.address, 1)
                word = set_bit(int(words[0]), enc.bit, bool(w.value))
                ticket.send()
                await self.link.write(cfg.unit_id, Table.HOLDING, enc.address, [word])
        except ModbusFailure as exc:
            if not ticket.sent:
                if exc.kind is FailKind.EXCEPTION:  # the read of a read-modify-write was refused
                    raise WriteError(ErrorCode.DEVICE_ERROR, f"{w.point.key}: {exc}") from exc
                raise WriteError(ErrorCode.DEVICE_OFFLINE, f"{w.point.key}: {exc} (nothing written)") from exc
            if exc.kind is FailKind.EXCEPTION:
                raise WriteError(ErrorCode.DEVICE_ERROR, f"{w.point.key}: {exc}") from exc
            raise WriteError(
                ErrorCode.OUTCOME_UNKNOWN,
                f"{w.point.key}: {exc}: the write was sent and may or may not have been applied",
            ) from exc


def _stopped(key: str) -> WriteError:
    return WriteError(
        ErrorCode.DEVICE_OFFLINE,
        f"{key}: the device's connection was stopped (configuration reloaded, or the agent stopping) "
        "before the write was sent: nothing written",
    )


class _DeviceWriter:
    """The command router's handle on one Modbus device."""

    def __init__(self, line: ModbusLine, device: _Device) -> None:
        self._line = line
        self._device = device

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._line.submit(_Write(self._device, point, value, fut, ticket))


def build_lines(
    devices: Sequence[DeviceConfig], *, registry: PointRegistry, emit: Emit, status_changed: StatusChanged
) -> list[ModbusLine]:
    """Group devices by link and build one poller per link."""
    groups: dict[tuple[str, ...], list[DeviceConfig]] = {}
    for d in devices:
        groups.setdefault(link_key(d), []).append(d)
    # The first poll of each device is put off by a share of its interval, so that 500 devices
    # polled every second are not polled all at once (a burst of 15,000 readings that the outbox
    # and the broker take in one go: 200 ms of lag for the last of them): they are spread over
    # the interval in slots of POLL_SLOT, the devices of one slot polled together (one timer and
    # one wake-up of the loop for several polls, and one commit for their readings).
    lines = [
        ModbusLine(g, registry=registry, emit=emit, status_changed=status_changed) for g in groups.values()
    ]
    index = {d.name: i for i, d in enumerate(devices)}
    for line in lines:
        line.phases = {name: index[name] / len(devices) for name in line.devices}
    return lines
