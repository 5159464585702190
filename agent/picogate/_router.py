"""The command router: the one entry point for every write, whoever asks for it.

MQTT commands, rule actions, EdgeX and CoAP all call `CommandRouter.write()`.  A write is
physical (it moves a valve), so each one happens once, on time, to the right place — or not at
all, with a stable code that says which:

    received (by the ingress, time.monotonic())
      → deadline: received + the origin's deadline (`commands.deadline`), shortened by the age the
        sender gave it (MQTT `ts`), never extended
      → same origin, point and id as a write received before its deadline: that write's result,
        nothing written again (idempotency)
      → checks: point known and writable, value converted to its type and range, deadline not
        passed, device not offline
      → the device's bounded slot (`busy` when `queue_per_device` writes already wait for it)
      → the point's rate limit: held back until its turn, or `rate_limited` at once if that turn
        comes after the deadline
      → the device's `Writer`, with a `WriteTicket`: the writer calls `ticket.send()` right before
        the request leaves for the device, which refuses (`stale`) once the deadline has passed
      → the router waits at most until the deadline: a write not sent by then is `stale`
        (nothing written), one sent but not confirmed is `outcome_unknown`
      → one `WriteResult`, one audit log line (the value truncated), the observers.

An exception nobody foresaw, in the router or in a writer, is that write's `device_error`: logged
once with its traceback, counted, and it never leaves the writer's task.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import math
import reprlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from picogate._errors import PicogateError
from picogate._model import PointInfo, PointType, Value
from picogate._registry import DeviceState, PointRegistry

log = logging.getLogger("picogate.router")
audit_log = logging.getLogger("picogate.audit")


class ErrorCode(enum.StrEnum):
    """Stable codes: consumers match on these, never on the message text."""

    OK = "ok"
    UNKNOWN_POINT = "unknown_point"
    READ_ONLY = "read_only"
    BAD_TYPE = "bad_type"
    OUT_OF_RANGE = "out_of_range"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_ERROR = "device_error"
    BAD_REQUEST = "bad_request"  # malformed command (JSON, missing field, retained, too large, ...)
    STALE = "stale"  # the deadline passed before the write was sent: nothing written
    BUSY = "busy"  # the device's or the ingress's bounded queue is full: nothing written
    RATE_LIMITED = "rate_limited"  # the point's rate limit would hold it past its deadline: nothing written
    OUTCOME_UNKNOWN = "outcome_unknown"  # sent, but not confirmed in time: it may or may not be applied


# --------------------------------------------------------------------------- values in text

VALUE_TEXT_MAX = 80
"""Characters of a value's text in a result, an error message or an audit line, at most."""

_repr = reprlib.Repr()
_repr.maxstring = VALUE_TEXT_MAX
_repr.maxother = VALUE_TEXT_MAX
_repr.maxlong = 40
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6


def brief(value: object) -> str:
    """`repr(value)`, bounded: a 20 MB string or a list nested 255 deep cost a few dozen
    characters here, whatever their size (reprlib never builds the whole text)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"  # repr() of a huge int is slow, or refused
    if isinstance(value, bytes | bytearray | memoryview) and len(value) > VALUE_TEXT_MAX:
        return repr(bytes(value[:VALUE_TEXT_MAX])) + f"... ({len(value)} bytes)"
    try:
        text = _repr.repr(value)
    except Exception:  # a value whose repr fails: say what it is
        return f"<{type(value).__name__}>"
    return text if len(text) <= 2 * VALUE_TEXT_MAX else text[: 2 * VALUE_TEXT_MAX] + "..."


def clip(text: str, limit: int = VALUE_TEXT_MAX) -> str:
    """`text`, cut to `limit` characters (and "...") when longer."""
    return text if len(text) <= limit else text[:limit] + "..."


def _audit_value(value: object) -> tuple[object, bool]:
    """The value as the JSON audit record carries it, and whether it had to be cut short."""
    if value is None or isinstance(value, bool):
        return value, False
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value, False
    if isinstance(value, float) and math.isfinite(value):
        return value, False
    if isinstance(value, str) and len(value) <= VALUE_TEXT_MAX:
        return value, False
    return brief(value), True


# --------------------------------------------------------------------------- requests and results


@dataclass(frozen=True, slots=True)
class WriteRequest:
    device: str
    point: str
    value: object  # as received; the router converts it
    origin: str  # who asked: "mqtt", "rule:boiler_overheat", "edgex", "coap:[::1]:5683", ...
    request_id: str = ""
    received: float = field(default_factory=time.monotonic)
    """When the gateway received the request (`time.monotonic()`): the deadline counts from here."""
    age: float = 0.0
    """How old the request already was when it arrived, by the sender's clock (MQTT `ts`): it
    shortens the deadline; a negative age (a sender's clock ahead of ours) counts as 0."""

    @property
    def origin_kind(self) -> str:
        """`mqtt`, `edgex`, `coap`, `rule`, ...: the origin without the peer or rule name."""
        return self.origin.partition(":")[0]


@dataclass(frozen=True, slots=True)
class WriteResult:
    ok: bool
    code: ErrorCode
    error: str = ""
    value: Value | None = None  # the value written, converted to the point's type
    request_id: str = ""

    def as_json(self) -> bytes:
        return orjson.dumps(
            {"id": self.request_id, "ok": self.ok, "code": self.code.value, "error": self.error}
        )


class WriteError(PicogateError):
    """Raised by a device writer; carries the code the router reports."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class WriteTicket:
    """One write on its way to a device: its deadline, and whether it has been sent.

    A writer calls `send()` synchronously right before the request leaves for the device (no
    `await` in between).  It raises `WriteError(STALE)` once the deadline has passed or the router
    gave up waiting, and otherwise marks the write as sent: from then on, a write without a
    confirmation is `outcome_unknown`, never `stale`.
    """

    __slots__ = ("_unexpected", "abandoned", "deadline", "point", "sent")

    def __init__(
        self,
        deadline: float,
        point: str = "",
        unexpected: Callable[[str, BaseException], WriteError] | None = None,
    ) -> None:
        self.deadline = deadline
        """`time.monotonic()` after which nothing may be sent."""
        self.point = point
        self.sent = False
        self.abandoned = False
        self._unexpected = unexpected

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise WriteError(STALE) if the write may no longer be sent."""
        if self.abandoned or time.monotonic() >= self.deadline:
            raise WriteError(
                ErrorCode.STALE, f"{self.point}: its deadline passed before it was sent (nothing written)"
            )

    def send(self) -> None:
        """`check()`, then mark the write as sent.  Call it right before the request goes out."""
        self.check()
        self.sent = True

    def unexpected(self, exc: BaseException) -> WriteError:
        """For a writer that serves writes in a task of its own: an exception it did not foresee,
        logged once with its traceback and counted, as the `device_error` to report."""
        if self._unexpected is not None:
            return self._unexpected(self.point, exc)
        log.error("write %s failed unexpectedly", self.point, exc_info=exc)
        return WriteError(ErrorCode.DEVICE_ERROR, f"{self.point}: internal error: {type(exc).__name__}")


class Writer(Protocol):
    """What a source offers for its writable points (Modbus device, Pico board, CoAP node)."""

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        """Write and return when the device confirmed, or raise WriteError.

        Call `ticket.send()` right before the request leaves for the device; a write that was
        sent and whose confirmation does not come (device timeout, link lost) raises
        WriteError(OUTCOME_UNKNOWN), one that could not be sent DEVICE_OFFLINE (or STALE)."""


WriteObserver = Callable[[WriteRequest, WriteResult, float], None]


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Writes to one point: up to `burst` at once, then one per `interval` (0: no limit)."""

    interval: float = 1.0
    burst: int = 10


DEFAULT_DEADLINES: Mapping[str, float] = {"mqtt": 10.0, "edgex": 10.0, "coap": 5.0, "rule": 5.0}


@dataclass(frozen=True, slots=True)
class WritePolicy:
    """How writes are bounded (gateway.yaml `commands:`)."""

    deadlines: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    """Origin kind (`mqtt`, `edgex`, `coap`, `rule`) → seconds from reception."""
    default_deadline: float = 10.0
    """For any other origin."""
    queue_per_device: int = 32
    """Writes in progress or waiting for one device, at most; beyond: busy."""
    max_pending: int = 256
    """Commands in progress per ingress (MQTT, EdgeX, CoAP), at most; beyond: busy."""
    max_payload: int = 65536
    """Bytes of one command (MQTT message, EdgeX SET), at most; beyond: bad_request."""
    rate_limit: RateLimit = RateLimit()
    point_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    """`device.point` → its own rate limit."""

    def deadline_for(self, origin_kind: str) -> float:
        return self.deadlines.get(origin_kind, self.default_deadline)

    def rate_for(self, key: str) -> RateLimit:
        return self.point_limits.get(key, self.rate_limit)


# --------------------------------------------------------------------------- conversion


def coerce(point: PointInfo, value: object) -> Value:
    """Convert `value` to the point's type, or raise WriteError(BAD_TYPE / OUT_OF_RANGE).

    Accepted: true/false or 0/1 for a bool point; an integer (or an integral float) for an
    integer point; any finite number that a float can hold for a float point; a string for a
    string point.
    """
    t = point.type
    if t is PointType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise WriteError(
            ErrorCode.BAD_TYPE, f"{point.key} is a bool point: send true/false or 0/1, not {brief(value)}"
        )
    if t is PointType.STRING:
        if isinstance(value, str):
            return value
        raise WriteError(
            ErrorCode.BAD_TYPE, f"{point.key} is a string point: send a string, not {brief(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteError(
            ErrorCode.BAD_TYPE, f"{point.key} is a {t.value} point: send a number, not {brief(value)}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteError(ErrorCode.BAD_TYPE, f"{point.key}: {value} is not a finite number")
    out: int | float = value
    if t.is_integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise WriteError(
                    ErrorCode.BAD_TYPE, f"{point.key} is a {t.value} point: {value} is not an integer"
                )
            out = int(value)
        rng = t.int_range
        assert rng is not None
        if not rng[0] <= int(out) <= rng[1]:
            raise WriteError(
                ErrorCode.OUT_OF_RANGE,
                f"{point.key}: {brief(value)} is outside {t.value} ({rng[0]}..{rng[1]})",
            )
    elif isinstance(value, int):
        try:  # an integer no float can hold (a CBOR bignum, a rule literal): out of range
            float(value)
        except OverflowError:
            raise WriteError(
                ErrorCode.OUT_OF_RANGE, f"{point.key}: {brief(value)} is too large for a {t.value} point"
            ) from None
    if point.min is not None and out < point.min:
        raise WriteError(
            ErrorCode.OUT_OF_RANGE, f"{point.key}: {brief(value)} is below the minimum {point.min:g}"
        )
    if point.max is not None and out > point.max:
        raise WriteError(
            ErrorCode.OUT_OF_RANGE, f"{point.key}: {brief(value)} is above the maximum {point.max:g}"
        )
    return out


# --------------------------------------------------------------------------- the router


@dataclass(slots=True)
class RouterStats:
    held: collections.Counter[str] = field(default_factory=collections.Counter)
    """`device.point` → writes held back by its rate limit (written later, within their deadline)."""
    rate_limited: collections.Counter[str] = field(default_factory=collections.Counter)
    """`device.point` → writes refused by its rate limit."""
    duplicates: int = 0
    """Writes answered with an earlier write's result (same id): not written again."""
    unexpected: int = 0
    """Exceptions nobody foresaw, reported as device_error."""
    forgotten: int = 0
    """Ids forgotten before their deadline because too many were remembered."""


@dataclass(slots=True)
class _Memo:
    value: object
    expires: float
    result: asyncio.Future[WriteResult]


_MAX_REMEMBERED = 10_000
_MAYBE_WRITTEN = frozenset({ErrorCode.OK, ErrorCode.OUTCOME_UNKNOWN, ErrorCode.DEVICE_ERROR})
"""Results after which a write with the same id is a repeat; after any other, nothing was written."""


class CommandRouter:
    """Validates, bounds, dispatches and audits writes.  Writers register per device."""

    def __init__(
        self, registry: PointRegistry, *, policy: WritePolicy | None = None, timeout: float | None = None
    ) -> None:
        """`timeout`, when given, is the deadline of every origin (a shorthand for tests)."""
        if policy is None:
            policy = WritePolicy()
        if timeout is not None:
            policy = WritePolicy(
                deadlines={},
                default_deadline=timeout,
                queue_per_device=policy.queue_per_device,
                max_pending=policy.max_pending,
                max_payload=policy.max_payload,
                rate_limit=policy.rate_limit,
                point_limits=policy.point_limits,
            )
        self._registry = registry
        self._writers: dict[str, Writer] = {}
        self._observers: list[WriteObserver] = []
        self.policy = policy
        self.stats = RouterStats()
        self._pending: dict[str, int] = {}  # device → writes in progress or waiting
        self._next_turn: dict[str, float] = {}  # device.point → its rate limit's theoretical arrival time
        self._remembered: collections.OrderedDict[tuple[str, str, str, str], _Memo] = (
            collections.OrderedDict()
        )

    def register_writer(self, device: str, writer: Writer) -> None:
        self._writers[device] = writer

    def unregister_writer(self, device: str) -> None:
        self._writers.pop(device, None)

    def observe(self, observer: WriteObserver) -> None:
        """Called after every write (metrics, the demo's view)."""
        self._observers.append(observer)

    def deadline_of(self, request: WriteRequest) -> float:
        """`time.monotonic()` after which `request` may no longer be sent."""
        return request.received + self.policy.deadline_for(request.origin_kind) - max(0.0, request.age)

    def pending(self, device: str) -> int:
        """Writes in progress or waiting for `device`."""
        return self._pending.get(device, 0)

    # ------------------------------------------------------------------ writing

    async def write(self, request: WriteRequest) -> WriteResult:
        """Write, and return the result.  Never raises (but for the caller's cancellation)."""
        started = time.perf_counter()
        ticket = WriteTicket(
            self.deadline_of(request), f"{request.device}.{request.point}", self._unexpected_error
        )
        result: WriteResult | None = None
        note = ""
        memo: _Memo | None = None
        try:
            memo, earlier = self._remember(request, ticket)
            if earlier is not None:
                result, note = await self._repeat(request, earlier)
            else:
                result = await self._write(request, ticket)
        except asyncio.CancelledError:
            ticket.abandoned = True
            if ticket.sent:
                result = self._fail(request, ErrorCode.OUTCOME_UNKNOWN, "cancelled after it was sent")
            else:
                result = self._fail(request, ErrorCode.DEVICE_OFFLINE, "cancelled before it was sent")
            note = "the gateway is stopping"
            raise
        except Exception as exc:  # a bug in the router itself: this write fails, nothing else
            result = self._fail(
                request, ErrorCode.DEVICE_ERROR, str(self._unexpected_error(ticket.point, exc))
            )
        finally:
            if result is not None:
                if memo is not None:
                    self._settle(request, memo, result)
                self._finish(request, result, time.perf_counter() - started, note)
        return result

    def refuse(self, request: WriteRequest, code: ErrorCode, error: str) -> WriteResult:
        """A write an ingress refused before it reached the router (malformed, too large, busy):
        audited and observed like any other write."""
        result = self._fail(request, code, error)
        self._finish(request, result, 0.0, "")
        return result

    def _fail(self, request: WriteRequest, code: ErrorCode, message: str) -> WriteResult:
        return WriteResult(False, code, message, request_id=request.request_id)

    def _unexpected_error(self, where: str, exc: BaseException) -> WriteError:
        self.stats.unexpected += 1
        log.error("write %s failed unexpectedly (reported as device_error)", where, exc_info=exc)
        return WriteError(
            ErrorCode.DEVICE_ERROR, f"{where}: internal error ({type(exc).__name__}; see the gateway's log)"
        )

    # idempotency ---------------------------------------------------------------------------

    def _remember(self, request: WriteRequest, ticket: WriteTicket) -> tuple[_Memo | None, _Memo | None]:
        """(the memo of this write, or the one of an earlier write with the same id)."""
        if not request.request_id:
            return None, None
        now = time.monotonic()
        remembered = self._remembered
        while remembered:
            first = next(iter(remembered.values()))
            if first.expires > now and len(remembered) < _MAX_REMEMBERED:
                break
            if first.expires > now:
                self.stats.forgotten += 1
            remembered.popitem(last=False)
        key = (request.origin_kind, request.device, request.point, request.request_id)
        earlier = remembered.get(key)
        if earlier is not None and earlier.expires > now:
            return None, earlier
        memo = _Memo(request.value, ticket.deadline, asyncio.get_running_loop().create_future())
        remembered[key] = memo
        remembered.move_to_end(key)
        return memo, None

    def _settle(self, request: WriteRequest, memo: _Memo, result: WriteResult) -> None:
        """Hand the result to repeats waiting for it, and remember it for one more deadline (a
        client that got `outcome_unknown` at the deadline may retry: that is still a repeat).
        Forget a write that certainly wrote nothing, so that sending it again (e.g. once the
        device is back) is a new try."""
        if not memo.result.done():
            memo.result.set_result(result)
        key = (request.origin_kind, request.device, request.point, request.request_id)
        if self._remembered.get(key) is not memo:
            return
        if result.code in _MAYBE_WRITTEN:
            memo.expires = time.monotonic() + self.policy.deadline_for(request.origin_kind)
            self._remembered.move_to_end(key)
        else:
            del self._remembered[key]

    async def _repeat(self, request: WriteRequest, earlier: _Memo) -> tuple[WriteResult, str]:
        value = request.value
        if type(value) is not type(earlier.value) or value != earlier.value:
            return self._fail(
                request,
                ErrorCode.BAD_REQUEST,
                f"id {brief(request.request_id)} was used for {request.device}.{request.point} "
                f"= {brief(earlier.value)} already; a new command needs a new id (nothing written)",
            ), ""
        self.stats.duplicates += 1
        first = await asyncio.shield(earlier.result)
        return WriteResult(first.ok, first.code, first.error, first.value, request.request_id), (
            "a repeat of an earlier command with this id: not written again"
        )

    # the write -----------------------------------------------------------------------------

    async def _write(self, request: WriteRequest, ticket: WriteTicket) -> WriteResult:
        rid = request.request_id

        def fail(code: ErrorCode, message: str) -> WriteResult:
            return WriteResult(False, code, message, request_id=rid)

        point = self._registry.find(request.device, request.point)
        if point is None:
            return fail(ErrorCode.UNKNOWN_POINT, f"unknown point {request.device}.{request.point}")
        if not point.writable:
            return fail(ErrorCode.READ_ONLY, f"{point.key} is read-only")
        try:
            value = coerce(point, request.value)
        except WriteError as exc:
            return fail(exc.code, str(exc))
        allowed = self.policy.deadline_for(request.origin_kind)
        if ticket.remaining() <= 0:
            if request.age > 0:
                return fail(
                    ErrorCode.STALE,
                    f"{point.key}: the command is {request.age:.1f} s old by its ts; "
                    f"{request.origin_kind} commands expire after {allowed:g} s (nothing written)",
                )
            return fail(
                ErrorCode.STALE, f"{point.key}: its deadline ({allowed:g} s) passed (nothing written)"
            )
        status = self._registry.device(request.device)
        if status is not None and status.state is DeviceState.OFFLINE:
            return fail(ErrorCode.DEVICE_OFFLINE, f"device {request.device} is offline ({status.reason})")
        writer = self._writers.get(request.device)
        if writer is None:
            return fail(ErrorCode.DEVICE_OFFLINE, f"device {request.device} has no connection that can write")
        device = request.device
        waiting = self._pending.get(device, 0)
        if waiting >= self.policy.queue_per_device:
            return fail(
                ErrorCode.BUSY,
                f"{point.key}: {waiting} writes already wait for device {device} "
                f"(commands.queue_per_device); nothing written",
            )
        self._pending[device] = waiting + 1
        try:
            turn = self._take_turn(point.key, ticket.deadline)
            if turn is None:
                self.stats.rate_limited[point.key] += 1
                limit = self.policy.rate_for(point.key)
                return fail(
                    ErrorCode.RATE_LIMITED,
                    f"{point.key}: written too often (at most {limit.burst} at once, then one per "
                    f"{limit.interval:g} s); its turn would come after its deadline: nothing written",
                )
            wait = turn - time.monotonic()
            if wait > 0:
                self.stats.held[point.key] += 1
                await asyncio.sleep(wait)
            try:
                ticket.check()
            except WriteError as exc:
                return fail(exc.code, str(exc))
            return await self._dispatch(request, point, value, writer, ticket)
        finally:
            left = self._pending[device] - 1
            if left:
                self._pending[device] = left
            else:
                del self._pending[device]

    def _take_turn(self, key: str, deadline: float) -> float | None:
        """When the point's rate limit lets this write go (now or later); None if after `deadline`.

        GCRA (a token bucket as virtual scheduling): each write moves the point's theoretical
        arrival time on by `interval`; a write may go `(burst - 1) * interval` ahead of it.
        """
        limit = self.policy.rate_for(key)
        now = time.monotonic()
        if limit.interval <= 0:
            return now
        tat = max(self._next_turn.get(key, now), now)
        turn = max(now, tat - (limit.burst - 1) * limit.interval)
        if turn > deadline:
            return None
        self._next_turn[key] = tat + limit.interval
        return turn

    async def _dispatch(
        self, request: WriteRequest, point: PointInfo, value: Value, writer: Writer, ticket: WriteTicket
    ) -> WriteResult:
        rid = request.request_id
        allowed = self.policy.deadline_for(request.origin_kind)
        try:
            async with asyncio.timeout(ticket.remaining()) as scope:
                await writer.write(point, value, ticket)
        except TimeoutError as exc:
            if not scope.expired():  # a writer's own timeout that it did not turn into a code
                error = self._unexpected_error(point.key, exc)
                return WriteResult(False, ErrorCode.DEVICE_ERROR, str(error), request_id=rid)
            ticket.abandoned = True
            if ticket.sent:
                return WriteResult(
                    False,
                    ErrorCode.OUTCOME_UNKNOWN,
                    f"{point.key}: sent to the device, but not confirmed within the deadline "
                    f"({allowed:g} s): it may or may not have been applied",
                    request_id=rid,
                )
            return WriteResult(
                False,
                ErrorCode.STALE,
                f"{point.key}: not sent within the deadline ({allowed:g} s): nothing written",
                request_id=rid,
            )
        except WriteError as exc:
            return WriteResult(False, exc.code, str(exc), request_id=rid)
        except Exception as exc:
            return WriteResult(
                False, ErrorCode.DEVICE_ERROR, str(self._unexpected_error(point.key, exc)), request_id=rid
            )
        return WriteResult(True, ErrorCode.OK, "", value, rid)

    # audit -----------------------------------------------------------------------------------

    def _finish(self, request: WriteRequest, result: WriteResult, elapsed: float, note: str) -> None:
        value, cut = _audit_value(request.value)
        record: dict[str, Any] = {
            "device": request.device,
            "point": request.point,
            "value": value,
            "origin": request.origin,
            "id": clip(request.request_id),
            "code": result.code.value,
            "error": result.error,
            "ms": round(elapsed * 1000, 2),
        }
        if cut:
            record["truncated"] = True
        if note:
            record["note"] = note
        audit_log.info(
            "write %s.%s=%s by %s id=%s -> %s%s%s (%.1f ms)",
            request.device,
            request.point,
            brief(request.value),
            request.origin,
            record["id"] or "-",
            result.code.value,
            f" ({result.error})" if result.error else "",
            f" [{note}]" if note else "",
            elapsed * 1000,
            extra={"audit": record},
        )
        for observer in self._observers:
            try:
                observer(request, result, elapsed)
            except Exception:
                log.exception("write observer %r failed", observer)

    # metrics ---------------------------------------------------------------------------------

    def collect(self) -> Iterable[Any]:
        from picogate._metrics import counter, gauge

        s = self.stats
        yield counter(
            "picogate_write_rate_limited",
            "Writes held back (then written) or refused by a point's rate limit",
            ["point", "action"],
            [([k, "held"], n) for k, n in sorted(s.held.items())]
            + [([k, "refused"], n) for k, n in sorted(s.rate_limited.items())],
        )
        yield counter(
            "picogate_write_duplicates",
            "Commands answered with an earlier command's result (same id): not written again",
            [],
            [([], s.duplicates)],
        )
        yield counter(
            "picogate_write_unexpected_errors",
            "Writes that failed on an exception nobody foresaw (reported as device_error, logged)",
            [],
            [([], s.unexpected)],
        )
        yield gauge(
            "picogate_write_pending",
            "Writes in progress or waiting, per device",
            ["device"],
            [([d], n) for d, n in sorted(self._pending.items())],
        )

    def summary(self) -> dict[str, int]:
        """For the status topic: writes held back and refused by rate limits, repeats answered."""
        s = self.stats
        return {
            "held": sum(s.held.values()),
            "rate_limited": sum(s.rate_limited.values()),
            "duplicates": s.duplicates,
            "unexpected_errors": s.unexpected,
        }


# A convenience for sources whose writes are plain coroutines.
class FunctionWriter:
    def __init__(self, fn: Callable[[PointInfo, Value], Awaitable[None]]) -> None:
        self._fn = fn

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket | None = None) -> None:
        if ticket is not None:
            ticket.send()
        await self._fn(point, value)
