"""Runtime state of the rule engine: points, windows and rules (kept across reloads)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from picogate._model import Quality

NS = 1_000_000_000


class PointState:
    """What the rules know of one point.  v is None while the value is unknown."""

    __slots__ = ("chg", "dlt", "gts", "last", "off", "q", "ts", "v", "why")

    def __init__(self) -> None:
        self.v: Any = None  # the current value (None: missing or bad)
        self.last: Any = None  # the last good value
        self.chg: bool | None = None  # did the latest reading change the value
        self.dlt: Any = None  # latest good value minus the one before
        self.gts: int | None = None  # ts of the last good value
        self.ts: int | None = None  # ts of the last reading
        self.off: bool | None = None  # last reading bad (None: no reading yet)
        self.q = "missing"
        self.why = ""


class Window:
    """Samples of one point over the last `span` ns; sum, min, max kept as samples come and go."""

    __slots__ = ("hi", "lo", "mm", "q", "span", "total")

    def __init__(self, span: int, mm: bool) -> None:
        self.span = span
        self.mm = mm
        self.q: deque[tuple[int, Any]] = deque()
        self.total = 0.0
        self.lo: deque[tuple[int, Any]] = deque()
        self.hi: deque[tuple[int, Any]] = deque()

    def add(self, t: int, v: Any) -> None:
        q = self.q
        q.append((t, v))
        if v.__class__ is not str:
            self.total += v
        if self.mm:
            lo, hi = self.lo, self.hi
            while lo and lo[-1][1] >= v:
                lo.pop()
            lo.append((t, v))
            while hi and hi[-1][1] <= v:
                hi.pop()
            hi.append((t, v))
        cut = t - self.span
        if q[0][0] <= cut:
            self.expire(t)

    def expire(self, t: int) -> None:
        cut = t - self.span
        q = self.q
        while q and q[0][0] <= cut:
            _, old = q.popleft()
            if old.__class__ is not str:
                self.total -= old
        if self.mm:
            while self.lo and self.lo[0][0] <= cut:
                self.lo.popleft()
            while self.hi and self.hi[0][0] <= cut:
                self.hi.popleft()
        if not q:
            self.total = 0.0

    def resum(self) -> None:
        """A running float sum drifts as samples come and go: the engine adds it up again now and then."""
        self.total = math.fsum(v for _, v in self.q if v.__class__ is not str)

    def avg(self, t: int) -> Any:
        q = self.q
        if q and q[0][0] <= t - self.span:
            self.expire(t)
        return self.total / len(self.q) if self.q else None

    def sum(self, t: int) -> Any:
        q = self.q
        if q and q[0][0] <= t - self.span:
            self.expire(t)
        return self.total if self.q else None

    def count(self, t: int) -> int:
        q = self.q
        if q and q[0][0] <= t - self.span:
            self.expire(t)
        return len(self.q)

    def min(self, t: int) -> Any:
        q = self.q
        if q and q[0][0] <= t - self.span:
            self.expire(t)
        return self.lo[0][1] if self.lo else None

    def max(self, t: int) -> Any:
        q = self.q
        if q and q[0][0] <= t - self.span:
            self.expire(t)
        return self.hi[0][1] if self.hi else None

    def delta(self, t: int) -> Any:
        q = self.q
        if q and q[0][0] <= t - self.span:
            self.expire(t)
        q = self.q
        return q[-1][1] - q[0][1] if len(q) >= 2 else None

    def rate(self, t: int) -> Any:
        """Change per minute over the window: (last - first) / elapsed."""
        self.expire(t)
        q = self.q
        if len(q) < 2 or q[-1][0] == q[0][0]:
            return None
        return (q[-1][1] - q[0][1]) * 60 * NS / (q[-1][0] - q[0][0])


class RuleState:
    """One rule's state; an unchanged rule keeps this object across reloads."""

    __slots__ = (
        "active",
        "alerted",
        "clearing",
        "due",
        "ek",
        "err",
        "every_next",
        "file",
        "fire_times",
        "fired",
        "has_clear",
        "id",
        "kind",
        "last_fired",
        "line",
        "live",
        "orelse",
        "refs",
        "step",
        "text_hash",
        "then",
        "unk",
        "wrote",
    )  # fmt: skip

    def __init__(self, rid: str, kind: str, text_hash: str) -> None:
        self.id = rid
        self.kind = kind
        self.text_hash = text_hash
        self.active = False
        self.unk = False
        self.due: int | None = None  # FOR: when the condition will have held long enough
        self.err: str | None = None
        self.ek = 0  # 1: evaluation error (cleared by the next good evaluation), 2: action error
        self.last_fired: int | None = None
        self.fired = 0
        self.fire_times: tuple[int, ...] = ()  # the last CHATTER_FIRES firings (status: chattering)
        self.has_clear = False
        self.alerted: list[tuple[str, str]] = []  # alerts raised by THEN, cleared on clear
        self.every_next: int | None = None
        self.clearing = False
        self.live = True
        self.file = ""
        self.line = 0
        self.refs: tuple[str, ...] = ()
        self.step: Callable[[int], None] | None = None
        self.then: Callable[[int], None] | None = None
        self.orelse: Callable[[int], None] | None = None
        self.wrote: dict[str, tuple[object, int]] = {}  # point → the last value set() wrote, and when


class Bad(Exception):
    """Raised inside a generated handler for a reading without a usable value."""


def to_num(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def to_bool(v: Any) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if v in (0, 1):
        return bool(v)
    raise ValueError(f"{v!r} is not true/false")


def num_value(v: Any) -> float:
    """A reading's value as the rules see a number: a finite float64."""
    if isinstance(v, int | float):  # (bool too: True is 1.0)
        try:
            f = float(v)
        except OverflowError:
            raise ValueError("an integer beyond float64's range") from None
        if not math.isfinite(f):
            raise ValueError(f"{v} is not a finite number")
        return f
    raise TypeError(f"{_short(v)} is not a number")


class BadLet(ValueError):
    """A LET's value that is not a finite float64; `reason` is the metric's label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def let_num(v: Any) -> float:
    """A numeric LET's value: a finite float64, else BadLet."""
    if v.__class__ is bool or not isinstance(v, int | float):
        raise BadLet("not_a_number", f"the value {_short(v)} is not a number")
    try:
        f = float(v)
    except OverflowError:
        raise BadLet("not_finite", "the value is beyond float64's range (about ±1.8e308)") from None
    if not math.isfinite(f):
        raise BadLet("not_finite", f"the value is not a finite number ({f})")
    return f


def let_any(v: Any) -> Any:
    """The value of a LET of unknown type (rules checked without the points): numbers as for
    let_num, anything else as it is."""
    if v.__class__ is bool or not isinstance(v, int | float):
        return v
    return let_num(v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def bool_value(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1):
        return bool(v)
    raise TypeError(f"{v!r} is not true/false")


def fmt(v: Any, spec: str) -> str:
    if v is None:
        return "unknown"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if spec:
        try:
            return format(v, spec)
        except (ValueError, TypeError):
            return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.6g}" if abs(v) >= 1e6 or abs(v) < 1e-3 else str(round(v, 4))
    return str(v)


def _math(name: str) -> Callable[[Any], Any]:
    f = getattr(math, name)
    if name in ("floor", "ceil"):  # a float, like every number (math's are integers)
        return lambda x: float(f(x))
    return lambda x: f(x)


def round_(x: Any, n: int | None = None) -> Any:
    """round(x) as a float (Python's is an integer), round(x, n) as Python's."""
    return float(round(x)) if n is None else round(x, n)


def _local(t: int) -> time.struct_time:
    return time.localtime(t // NS)


def hour(t: int) -> int:
    """0..23 in the gateway's local time."""
    return _local(t).tm_hour


def minute(t: int) -> int:
    return _local(t).tm_min


def weekday(t: int) -> int:
    """1 (Monday) .. 7 (Sunday), as ISO 8601 numbers them."""
    return _local(t).tm_wday + 1


BAD = Quality.BAD
HELPERS: dict[str, Any] = {
    "_BAD": BAD,
    "_Bad": Bad,
    "_fmt": fmt,
    "_to_num": to_num,
    "_to_bool": to_bool,
    "_same": lambda v: v,
    "_num": num_value,
    "_let_num": let_num,
    "_let_any": let_any,
    "_round": round_,
    "_bool": bool_value,
    "_floor": _math("floor"),
    "_ceil": _math("ceil"),
    "_sqrt": _math("sqrt"),
    "_hour": hour,
    "_minute": minute,
    "_weekday": weekday,
}
