"""RuleEngine: runs a compiled RuleSet as a pipeline processor."""

from __future__ import annotations

import heapq
import logging
import marshal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from picogate._model import Quality, Reading
from picogate.rules._ruleset import RuleSet
from picogate.rules._runtime import HELPERS, NS, Bad, BadLet, PointState, RuleState, Window

log = logging.getLogger("picogate.rules")

_FOR, _EVERY, _RECHECK = 0, 1, 2
CHATTER_FIRES = 5
CHATTER_NS = 10 * NS
"""A rule that fired CHATTER_FIRES times within CHATTER_NS, the last time within CHATTER_NS, is
reported `chattering` in its status: a snapshot of its state (idle or active) says little about
a rule that changes it several times a second."""
_RESUM_NS = 600 * NS  # how often the windows' running sums are added up again (float drift)


class Actions(Protocol):
    """What rules do to the world; implemented by the gateway (rules-live) and `rules test`."""

    def alert(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        """state "active" | "cleared"."""

    def set(self, rule: str, device: str, point: str, value: object) -> None:
        """Fire and forget; the outcome comes back via engine.write_result(rule, ok, message)."""

    def publish(self, rule: str, topic: str, value: object, ts: int) -> None: ...

    def log(self, rule: str, message: str) -> None: ...


def _describe(e: BaseException) -> str:
    if isinstance(e, ZeroDivisionError):
        return "division by zero"
    if isinstance(e, OverflowError):
        return "number too large"
    if isinstance(e, BadLet):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _reason(e: BaseException) -> str:
    """The metric label of a LET made bad by `e`."""
    if isinstance(e, BadLet):
        return e.reason
    if isinstance(e, ZeroDivisionError):
        return "division_by_zero"
    if isinstance(e, OverflowError):
        return "not_finite"
    return "error"


class Prepared:
    """A rule set ready to be swapped in (RuleEngine.prepare → RuleEngine.swap)."""

    __slots__ = (
        "base",
        "handlers",
        "let_meta",
        "let_rank",
        "points",
        "recheck",
        "retired",
        "ruleset",
        "states",
        "windows",
        "wiring",
    )

    def __init__(self, base: RuleSet, ruleset: RuleSet, points: dict[str, PointState],
                 windows: dict[tuple[str, int], Window], states: dict[str, RuleState], retired: list[RuleState],
                 wiring: list[tuple[RuleState, Any, Any, Any, str, int, tuple[str, ...], int]],
                 handlers: dict[str, dict[str, Callable[[Reading], None]]],
                 let_meta: dict[RuleState, tuple[str, str, str, Callable[[Reading], None]]],
                 recheck: dict[str, int], let_rank: dict[Callable[[int], None], int]) -> None:  # fmt: skip
        self.base, self.ruleset = base, ruleset
        self.let_rank = let_rank
        self.points, self.windows, self.states, self.retired = points, windows, states, retired
        self.wiring, self.handlers, self.let_meta, self.recheck = wiring, handlers, let_meta, recheck


class RuleEngine:
    """A Pipeline processor.  Not thread-safe: call it from one thread (the event loop)."""

    def __init__(
        self,
        actions: Actions,
        *,
        now: Callable[[], int] = time.time_ns,
        on_transition: Callable[[str, str, int], None] | None = None,
    ) -> None:
        """on_transition(rule, "fired" | "cleared", ts), if given, hears every transition (and
        every EVERY period): for `rules test` and metrics."""
        self._actions = actions
        self._observer = on_transition
        self._now = now
        self._t0 = now()
        self._ruleset = RuleSet()
        self._points: dict[str, PointState] = {}
        self._windows: dict[tuple[str, int], Window] = {}
        self._states: dict[str, RuleState] = {}
        self._handlers: dict[str, dict[str, Callable[[Reading], None]]] = {}
        self._heap: list[tuple[int, int, int, RuleState]] = []
        self._seq = 0
        self._out: list[Reading] = []
        self._let_meta: dict[RuleState, tuple[str, str, str, Callable[[Reading], None]]] = {}
        # LETs whose inputs changed, computed once at the end of the batch (see _flush_lets)
        self._deferred: dict[Callable[[int], None], int] = {}
        self._let_rank: dict[Callable[[int], None], int] = {}
        self._recheck: dict[str, int] = {}
        self._else_alerts = 0
        self._resummed = self._t0
        self._left: dict[str, dict[str, Any]] = {}
        self._writer: dict[str, RuleState] = {}  # point → the rule that last wrote it
        self.left_by_last_swap: list[dict[str, Any]] = []
        """What the rules the last swap replaced or removed had written and left in force (a
        setpoint stays until something writes the point again): for the reload message."""
        self.let_bad: dict[str, int] = {}
        """LET readings published bad because their value could not be computed, by reason
        (not_finite, not_a_number, division_by_zero, error): a metric of the gateway."""

    # ------------------------------------------------------------------ loading

    def load(self, ruleset: RuleSet) -> None:
        """Swap atomically.  Rules whose id and text_hash are unchanged keep their state (FOR timers,
        windows, active alarms); changed rules start fresh; a removed rule that was active clears
        its alarm (alert state "cleared").  The same as swap(prepare(ruleset))."""
        self.swap(self.prepare(ruleset))

    def prepare(self, ruleset: RuleSet) -> Prepared:
        """The expensive half of a load (unmarshal, build the functions and the state they use),
        touching nothing the running set uses: it may run in a thread, or while readings go on,
        as long as no other load happens before swap()."""
        if ruleset.code and ruleset.python == sys.implementation.cache_tag:
            codes = marshal.loads(ruleset.code)
        else:
            codes = (compile(ruleset.source, f"<rules {ruleset.version}>", "exec"),)
        plan = ruleset.plan
        keys: list[str] = plan.get("points", [])
        points = {k: self._points.get(k) or PointState() for k in keys}
        windows: dict[tuple[str, int], Window] = {}
        wlist: list[Window] = []
        for i, span, mm in plan.get("windows", []):
            wk = (keys[i], span)
            w = self._windows.get(wk)
            if w is None or (mm and not w.mm):
                nw = Window(span, mm)
                for t, v in list(w.q) if w is not None else ():  # list(): one step, even beside the loop
                    nw.add(t, v)
                w = nw
            windows[wk] = w
            wlist.append(w)
        states: dict[str, RuleState] = {}
        retired: list[RuleState] = []
        for info, p in zip(ruleset.rules, plan.get("rules", []), strict=True):
            old = self._states.get(info.id)
            if old is not None and old.text_hash == info.text_hash and old.kind == info.kind:
                s = old
            else:
                if old is not None:
                    retired.append(old)
                s = RuleState(info.id, info.kind, info.text_hash)
                s.has_clear = bool(p.get("clear"))
            states[info.id] = s
        retired += [s for rid, s in self._states.items() if rid not in states]
        ns: dict[str, Any] = dict(HELPERS)
        ns.update(ruleset.consts)
        ns.update(
            _err=self._err,
            _fire=self._fire,
            _clear=self._clear,
            _timer=self._timer,
            _alert=self._alert,
            _set=self._set,
            _publish=self._publish,
            _log=self._log,
            _age=self._age,
            _bad=self._bad,
            _let=self._let,
            _defer=self._defer,
        )
        pnames: list[str] = plan["point_names"]
        rnames: list[str] = plan["rule_names"]
        for k, pn in zip(keys, pnames, strict=True):
            ns["P" + pn] = points[k]
        for wn, w in zip(plan["window_names"], wlist, strict=True):
            ns["W" + wn] = w
        order = [states[info.id] for info in ruleset.rules]
        for rn, s in zip(rnames, order, strict=True):
            ns["S" + rn] = s
        for code in codes:
            exec(code, ns)  # generated from the AST by _codegen (never operator text)
        let_points: dict[str, int] = plan.get("let_points", {})
        let_meta: dict[RuleState, tuple[str, str, str, Callable[[Reading], None]]] = {}
        units = {p.key: p.unit for p in ruleset.lets}
        pname = dict(zip(keys, pnames, strict=True))
        let_rank: dict[Callable[[int], None], int] = {}
        for key, j in let_points.items():
            dev, pt = key.split(".", 1)
            let_meta[order[j]] = (dev, pt, units.get(key, ""), ns["H" + pname[key]])
            let_rank[ns["L" + rnames[j]]] = j  # LETs are numbered in dependency order
        handlers: dict[str, dict[str, Callable[[Reading], None]]] = {}
        for k, pn in zip(keys, pnames, strict=True):
            if k in let_points:
                continue
            dev, pt = k.split(".", 1)
            handlers.setdefault(dev, {})[pt] = ns["H" + pn]
        recheck: dict[str, int] = {}
        wiring: list[tuple[RuleState, Any, Any, Any, str, int, tuple[str, ...], int]] = []
        for j, (s, p) in enumerate(zip(order, plan.get("rules", []), strict=True)):
            rn = rnames[j]
            step = ns.get("L" + rn) if s.kind == "let" else ns.get("R" + rn)
            info = ruleset.rules[j]
            every = p["every_ns"] if s.kind == "every" else 0
            wiring.append(
                (
                    s,
                    step,
                    ns.get("T" + rn),
                    ns.get("F" + rn),
                    info.file,
                    info.line,
                    tuple(p.get("cond_refs", ())),
                    every,
                )
            )
            if every:
                recheck[s.id] = every
            elif p.get("recheck_ns") or p.get("let_recheck_ns"):
                recheck[s.id] = p.get("recheck_ns") or p["let_recheck_ns"]
        return Prepared(
            self._ruleset,
            ruleset,
            points,
            windows,
            states,
            retired,
            wiring,
            handlers,
            let_meta,
            recheck,
            let_rank,
        )

    def swap(self, prep: Prepared) -> None:
        """The cheap half: wire the prepared set in and swap, between two readings."""
        if prep.base is not self._ruleset:  # another set was loaded since prepare(): do it again
            prep = self.prepare(prep.ruleset)
        now = self._now()
        heap: list[tuple[int, int, int, RuleState]] = []
        recheck = prep.recheck
        for s, step, then, orelse, file, line, refs, every in prep.wiring:
            s.live = True
            s.step, s.then, s.orelse = step, then, orelse
            s.file, s.line, s.refs = file, line, refs
            self._seq += 1
            if every:
                if s.every_next is None:
                    s.every_next = (now // every + 1) * every
                heap.append((s.every_next, self._seq, _EVERY, s))
            else:
                if s.due is not None:
                    heap.append((s.due, self._seq, _FOR, s))
                if s.id in recheck:
                    heap.append((now + recheck[s.id], self._seq, _RECHECK, s))
        heapq.heapify(heap)
        for s in prep.retired:
            s.live = False
        self._points, self._windows, self._states = prep.points, prep.windows, prep.states
        self._handlers, self._heap, self._let_meta, self._recheck = (
            prep.handlers,
            heap,
            prep.let_meta,
            recheck,
        )
        self._let_rank = prep.let_rank
        self._deferred = {}
        self._ruleset = prep.ruleset
        left = []
        for s in prep.retired:
            if s.active:
                for sev, msg in s.alerted:
                    self._call(s, "alert", s.id, sev, msg, "cleared", now)
                s.active = False
            why = "changed" if s.id in prep.states else "removed"
            for key, (value, ts) in s.wrote.items():
                if self._writer.get(key) is not s:
                    continue  # another rule wrote the point since
                del self._writer[key]
                entry = {"point": key, "value": value, "ts": ts, "rule": s.id, "file": s.file, "line": s.line}
                self._left[key] = {**entry, "rule_was": why}
                left.append(self._left[key])
        self.left_by_last_swap = left

    # ------------------------------------------------------------------ the event path

    def process(self, readings: Sequence[Reading]) -> list[Reading]:
        """Evaluate the rules that reference these readings' points, in order.  Returns the LET
        readings they derived (already seen by the rules: do not feed them back)."""
        h = self._handlers
        for r in readings:
            d = h.get(r.device)
            if d is not None:
                f = d.get(r.point)
                if f is not None:
                    f(r)
        return self._derived()

    def tick(self, now_ns: int) -> list[Reading]:
        """Run the timers due by now_ns (FOR, EVERY, age/window re-checks); LET readings."""
        if now_ns - self._resummed >= _RESUM_NS:
            self._resummed = now_ns
            for w in self._windows.values():
                w.resum()
        heap = self._heap
        for _ in range(len(heap) + 1):
            if not heap or heap[0][0] > now_ns:
                break
            due, _, kind, s = heapq.heappop(heap)
            if not s.live:
                continue
            if kind == _FOR:
                if s.due == due and not s.active:
                    if s.step is not None:  # re-evaluated: a condition that moves with time
                        s.step(due)
                    else:  # held since the last reading, which would have reset the timer
                        self._fire(s, due)
            elif kind == _EVERY:
                if s.every_next == due:
                    span = self._recheck[s.id]
                    s.last_fired = due
                    s.fired += 1
                    if s.ek == 2:
                        s.ek, s.err = 0, None
                    if self._observer is not None:
                        self._observer(s.id, "fired", due)
                    if s.then is not None:
                        s.then(due)
                    nxt = due + span
                    if nxt <= now_ns:  # behind (a stalled loop): fire once, then go on from now
                        nxt = (now_ns // span + 1) * span
                    s.every_next = nxt
                    self._seq += 1
                    heapq.heappush(heap, (nxt, self._seq, _EVERY, s))
            else:
                if s.step is not None:
                    s.step(now_ns)
                self._seq += 1
                heapq.heappush(heap, (now_ns + self._recheck[s.id], self._seq, _RECHECK, s))
        return self._derived()

    def next_deadline(self) -> int | None:
        """ns of the next timer, None if none."""
        heap = self._heap
        while heap:
            due, _, kind, s = heap[0]
            if s.live and (kind != _FOR or s.due == due) and (kind != _EVERY or s.every_next == due):
                return due
            heapq.heappop(heap)
        return None

    def write_result(self, rule: str, ok: bool, message: str) -> None:
        """The outcome of a set() that `rule` asked for; a failure marks the rule errored until it
        fires again."""
        s = self._states.get(rule)
        if s is None or ok:
            return
        self._set_error(s, f"write failed: {message}", 2)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """{"version", "rules": {id: {"state": "idle|active|unknown|errored", "reason", "last_fired",
        "file", "line"}}, "left_in_force": [{"point", "value", "ts", "rule", "file", "line",
        "rule_was": "changed|removed"}]}: the last value a rule that is no longer in the set wrote
        to a point that no rule has written since."""
        rules: dict[str, Any] = {}
        now = self._now()
        for rid, s in self._states.items():
            if s.err is not None:
                state, reason = "errored", s.err
            elif s.active:
                state, reason = "active", None
            elif s.unk:
                state, reason = "unknown", self._unknown_reason(s)
            else:
                state, reason = "idle", None
                if s.due is not None:
                    reason = f"condition true, waiting for FOR until {s.due}"
            chattering = self._chattering(s, now)
            if chattering:
                reason = chattering if reason is None else f"{reason}; {chattering}"
            rules[rid] = {
                "kind": s.kind,
                "state": state,
                "reason": reason,
                "last_fired": s.last_fired,
                "fired": s.fired,
                "chattering": bool(chattering),
                "file": s.file,
                "line": s.line,
            }
        left = [dict(e) for e in self._left.values()]
        return {"version": self._ruleset.version, "rules": rules, "left_in_force": left}

    @staticmethod
    def _chattering(s: RuleState, now: int) -> str:
        """Why the rule counts as chattering ("" when it does not)."""
        times = s.fire_times
        if s.kind != "on" or len(times) < CHATTER_FIRES:
            return ""
        span, ago = times[-1] - times[0], now - times[-1]
        if span > CHATTER_NS or ago > CHATTER_NS:
            return ""
        hint = (
            "do its ON and CLEAR conditions overlap? (rules check warns)"
            if s.has_clear
            else "its value crosses the threshold back and forth: a CLEAR condition gives hysteresis"
        )
        return f"chattering: fired {len(times)} times in {span / NS:.1f} s, the last {max(ago, 0) / NS:.1f} s ago; {hint}"

    def _unknown_reason(self, s: RuleState) -> str:
        why = []
        for key in s.refs:
            p = self._points.get(key)
            if p is None or p.q == "missing":
                why.append(f"{key}: no reading yet")
            elif p.v is None:
                why.append(f"{key}: {p.why or 'bad quality'}")
        if why:
            return "; ".join(why)
        return "a value it needs is unknown (a window without enough samples, or a value not seen twice)"

    # ------------------------------------------------------------------ called by generated code

    def _set_error(self, s: RuleState, message: str, kind: int) -> None:
        if s.err != message:
            log.warning("rule %s (%s:%s): %s", s.id, s.file, s.line, message)
        s.err = message
        s.ek = kind

    def _err(self, s: RuleState, e: BaseException, kind: int) -> None:
        if s.kind == "let":
            reason = _reason(e)
            self.let_bad[reason] = self.let_bad.get(reason, 0) + 1
        self._set_error(s, _describe(e), kind)

    def _call(self, s: RuleState, method: str, *args: Any) -> None:
        try:
            getattr(self._actions, method)(*args)
        except Exception as e:
            self._set_error(s, f"{method} failed: {_describe(e)}", 2)

    def _fire(self, s: RuleState, t: int) -> None:
        s.active = True
        s.due = None
        s.last_fired = t
        s.fired += 1
        s.fire_times = (*s.fire_times[1 - CHATTER_FIRES :], t)
        if s.ek == 2:
            s.ek, s.err = 0, None
        s.alerted = []
        s.clearing = False
        if self._observer is not None:
            self._observer(s.id, "fired", t)
        if s.then is not None:
            s.then(t)

    def _clear(self, s: RuleState, t: int) -> None:
        s.active = False
        s.due = None
        s.clearing = True
        if self._observer is not None:
            self._observer(s.id, "cleared", t)
        before = self._else_alerts
        try:
            if s.orelse is not None:
                s.orelse(t)
        finally:
            s.clearing = False
        if self._else_alerts == before:
            for sev, msg in s.alerted:
                self._call(s, "alert", s.id, sev, msg, "cleared", t)
        s.alerted = []

    def _timer(self, s: RuleState, due: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, _FOR, s))

    def _alert(self, s: RuleState, severity: str, message: str, t: int) -> None:
        if s.clearing:
            self._else_alerts += 1
            self._call(s, "alert", s.id, severity, message, "cleared", t)
        else:
            if s.kind == "on":
                s.alerted.append((severity, message))
            self._call(s, "alert", s.id, severity, message, "active", t)

    def _set(self, s: RuleState, device: str, point: str, value: object) -> None:
        if value is None:
            self._set_error(s, f"set({device}.{point}): the value is unknown, nothing written", 2)
            return
        key = f"{device}.{point}"
        s.wrote[key] = (value, self._now())
        self._writer[key] = s
        self._left.pop(key, None)  # a rule of the running set writes the point again
        self._call(s, "set", s.id, device, point, value)

    def _publish(self, s: RuleState, topic: str, value: object, t: int) -> None:
        self._call(s, "publish", s.id, topic, value, t)

    def _log(self, s: RuleState, message: str) -> None:
        self._call(s, "log", s.id, message)

    def _age(self, p: PointState, t: int) -> float:
        g = p.gts
        return (t - (self._t0 if g is None else g)) / NS

    @staticmethod
    def _bad(p: PointState, e: BaseException) -> None:
        p.v = None
        p.chg = None
        p.dlt = None
        p.off = True
        p.q = "bad"
        p.why = "bad quality" if isinstance(e, Bad) else f"bad value ({e})"

    def _derived(self) -> list[Reading]:
        """The LET readings of this batch (or tick), computed and handed over once."""
        if self._deferred:
            self._flush_lets()
        if not self._out:
            return []
        out, self._out = self._out, []
        return out

    def _defer(self, let: Callable[[int], None], t: int) -> None:
        self._deferred[let] = t

    def _flush_lets(self) -> None:
        """Compute the LETs whose inputs changed in this batch, once each, in dependency order, at
        the time of the latest input: a poll that brings both pump.voltage and pump.current gives
        one pump.power_kw, from both new values, not one per input (the first from a new current
        and an old voltage).  A LET over LETs is computed after them (its inputs defer it again)."""
        d = self._deferred
        rank = self._let_rank
        for _ in range(len(rank) * (len(rank) + 1) + 1):  # bounded: LETs form no cycle
            if not d:
                return
            let = min(d, key=rank.__getitem__) if len(d) > 1 else next(iter(d))
            let(d.pop(let))
        d.clear()

    def _let(self, s: RuleState, v: Any, t: int) -> None:
        dev, pt, unit, handler = self._let_meta[s]
        r = Reading(dev, pt, v, t, Quality.GOOD if v is not None else Quality.BAD, unit)
        self._out.append(r)
        handler(r)
