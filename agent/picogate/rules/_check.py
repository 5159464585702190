"""The checker: the AST against the gateway's points.  Types, functions, set() conversions, LET
cycles, publish topics; every error with its position and, where likely, a suggestion."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from picogate._model import NAME_RE, PointInfo, PointType
from picogate.rules import _ast as A

NUM, BOOL, STR, ANY = "number", "bool", "string", "any"
SEVERITIES = ("info", "warning", "critical")
VALUE_FUNCS = (
    "abs", "round", "floor", "ceil", "sqrt", "min", "max", "avg", "sum", "count", "rate", "delta",
    "changed", "age", "offline", "quality", "good", "hour", "minute", "weekday",
)  # fmt: skip
CLOCK_FUNCS = ("hour", "minute", "weekday")  # the gateway's local time
WINDOW_FUNCS = ("avg", "min", "max", "sum", "count", "rate", "delta")
POINT_FUNCS = ("changed", "age", "offline", "quality", "good")
TIME_FUNCS = (
    "age",
    *WINDOW_FUNCS,
    *CLOCK_FUNCS,
)  # their value moves with time: the rule is re-checked by a timer
ACTIONS = ("alert", "set", "publish", "log")
MAX_WINDOW_S = 86400.0
_VALUE_WORDS = {
    **dict.fromkeys(("off", "no", "closed", "close", "low", "stop", "stopped"), "false (true for on)"),
    **dict.fromkeys(("yes", "open", "high", "start", "started", "run"), "true (false for off)"),
}
"""Words an operator may take for a value (`set(boiler.burner, off)`)."""


@dataclass(slots=True)
class Problem:
    pos: A.Pos
    message: str
    suggestion: str | None = None
    file: str = ""


def ptype(t: PointType) -> str:
    if t is PointType.BOOL:
        return BOOL
    if t is PointType.STRING:
        return STR
    return NUM


@dataclass(slots=True)
class Checked:
    """The checker's output for the code generator."""

    rules: list[A.Rule] = field(default_factory=list)
    lets: list[A.Let] = field(default_factory=list)  # in dependency order
    let_types: dict[str, str] = field(default_factory=dict)
    points: dict[str, PointInfo] = field(default_factory=dict)  # every point known (with LETs)
    problems: list[Problem] = field(default_factory=list)


def nodes(e: object) -> list[object]:
    """Every node of an expression, a call or a tuple of them (operands, arguments, keyword values,
    the expressions interpolated in strings), parents first.  (Recursive: the parser has bounded
    the nesting of expressions, _limits.MAX_NESTING.)"""
    out: list[object] = []

    def walk(x: object) -> None:
        if isinstance(x, tuple):
            for y in x:
                walk(y)
            return
        out.append(x)
        if isinstance(x, A.Unary):
            walk(x.operand)
        elif isinstance(x, A.Binary):
            walk(x.left)
            walk(x.right)
        elif isinstance(x, A.Chain):
            for y in x.operands:
                walk(y)
        elif isinstance(x, A.Call):
            for a in x.args:
                walk(a)
            for k in x.kwargs:
                walk(k.value)
        elif isinstance(x, A.Str):
            for p in x.parts:
                if isinstance(p, A.Part):
                    walk(p.expr)

    walk(e)
    return out


def refs(e: object) -> list[A.Ref]:
    """Every point reference in an expression, a call or a tuple of them."""
    return [x for x in nodes(e) if isinstance(x, A.Ref)]


class Checker:
    def __init__(self, points: Mapping[str, PointInfo] | None) -> None:
        self.known = dict(points) if points is not None else None
        self.devices = {k.split(".", 1)[0] for k in self.known} if self.known is not None else set()
        self.problems: list[Problem] = []
        self.file = ""
        self.let_types: dict[str, str] = {}

    def err(self, pos: A.Pos, message: str, suggestion: str | None = None) -> None:
        self.problems.append(Problem(pos, message, suggestion, self.file))

    # ------------------------------------------------------------------ points

    def point(self, r: A.Ref) -> PointInfo | bool | None:
        """The point's info; True if it is a LET or unchecked; None (after an error) if unknown."""
        if r.key in self.let_types:
            return True
        if self.known is None:
            return True
        info = self.known.get(r.key)
        if info is not None:
            return info
        candidates = [*self.known, *self.let_types]
        close = difflib.get_close_matches(r.key, candidates, n=1, cutoff=0.6)
        if r.device not in self.devices and not any(k.startswith(r.device + ".") for k in self.let_types):
            devs = sorted(self.devices | {k.split(".")[0] for k in self.let_types})
            dclose = difflib.get_close_matches(r.device, devs, n=1, cutoff=0.6)
            sug = close[0] if close else (f"{dclose[0]}.{r.point}" if dclose else None)
            self.err(A.Pos(r.pos.line, r.pos.col, len(r.device)), f"unknown device '{r.device}'", sug)
        else:
            own = [k for k in candidates if k.startswith(r.device + ".")]
            found = difflib.get_close_matches(r.key, own, n=1, cutoff=0.5) or close
            self.err(r.pos, f"device '{r.device}' has no point '{r.point}'", found[0] if found else None)
        return None

    def ref_type(self, r: A.Ref) -> str:
        info = self.point(r)
        if info is None:
            return ANY
        if info is True:
            return self.let_types.get(r.key, ANY)
        assert isinstance(info, PointInfo)
        return ptype(info.type)

    # ------------------------------------------------------------------ expressions

    def expr(self, e: A.Expr) -> str:
        if isinstance(e, A.Num | A.Dur):
            return NUM
        if isinstance(e, A.Bool):
            return BOOL
        if isinstance(e, A.Str):
            self.string(e)
            return STR
        if isinstance(e, A.Name):
            word = _VALUE_WORDS.get(e.name.lower())
            if word is not None and e.name not in self.devices:
                self.err(e.pos, f"'{e.name}' is not a value in rules: write {word}")
                return BOOL
            hint = f"{e.name}.<point>" if self.known is None or e.name in self.devices else None
            self.err(e.pos, f"unknown name '{e.name}': a point is written device.point", hint)
            return ANY
        if isinstance(e, A.Ref):
            return self.ref_type(e)
        if isinstance(e, A.Unary):
            t = self.expr(e.operand)
            want = NUM if e.op == "-" else BOOL
            if t not in (want, ANY):
                self.err(e.pos, f"'{e.op.upper() if e.op == 'not' else e.op}' needs a {want}, not a {t}")
            return want
        if isinstance(e, A.Binary):
            return self.binary(e.op, self.expr(e.left), self.expr(e.right), e.pos, e.right)
        if isinstance(e, A.Chain):
            t = self.expr(e.operands[0])
            for op, operand, pos in zip(e.ops, e.operands[1:], e.op_pos, strict=True):
                t = self.binary(op, t, self.expr(operand), pos, operand)
            return t
        return self.call(e)

    def binary(self, op: str, lt: str, rt: str, pos: A.Pos, right: A.Expr) -> str:
        """The type of `left op right` (their types given), and its errors at the operator."""
        shown = op.upper() if op in ("and", "or") else op
        if op in ("and", "or"):
            for t in (lt, rt):
                if t not in (BOOL, ANY):
                    self.err(pos, f"{shown} needs true/false on both sides, got a {t}")
                    break
            return BOOL
        if op in ("==", "!="):
            if ANY not in (lt, rt) and lt != rt:
                self.err(pos, f"cannot compare a {lt} with a {rt}")
            return BOOL
        if op in ("<", "<=", ">", ">="):
            if ANY not in (lt, rt) and not (lt == rt == NUM or lt == rt == STR):
                self.err(pos, f"'{op}' compares numbers (or strings), got a {lt} and a {rt}")
            return BOOL
        if op == "+" and STR in (lt, rt):
            if ANY not in (lt, rt) and lt != rt:
                self.err(
                    pos, f'cannot add a {lt} and a {rt} (use "{{…}}" in a string to join text and values)'
                )
            return STR
        for t in (lt, rt):
            if t not in (NUM, ANY):
                self.err(pos, f"'{op}' needs numbers, got a {lt} and a {rt}")
                break
        if op in ("/", "%") and isinstance(right, A.Num) and right.value == 0:
            self.err(right.pos, "division by zero")
        return NUM

    def string(self, s: A.Str) -> None:
        for p in s.parts:
            if isinstance(p, A.Part):
                self.expr(p.expr)
                if p.spec:
                    try:
                        format(1.5, p.spec)
                    except (ValueError, TypeError):
                        self.err(p.expr.pos, f"bad format '{p.spec}' (e.g. {{x:.1f}} for one decimal)")

    def call(self, c: A.Call) -> str:
        f = c.func
        if f in ACTIONS:
            self.err(c.pos, f"{f}() is an action: it goes after THEN or ELSE, not in a value", None)
            return ANY
        if f not in VALUE_FUNCS:
            close = difflib.get_close_matches(f, [*VALUE_FUNCS, *ACTIONS], n=1, cutoff=0.6)
            self.err(c.pos, f"unknown function '{f}'", f"{close[0]}()" if close else None)
            return ANY
        if c.kwargs:
            self.err(c.kwargs[0].pos, f"{f}() takes no name=value arguments")
        args = c.args
        window = f in ("avg", "sum", "count", "rate") or (
            f in ("min", "max", "delta") and len(args) == 2 and isinstance(args[1], A.Dur)
        )
        if window:
            if len(args) != 2:
                self.err(c.pos, f"{f}() takes a point and a window, like {f}(boiler.temp, 5m)")
                return NUM
            if not isinstance(args[0], A.Ref):
                self.err(args[0].pos, f"{f}() works on a point, like {f}(boiler.temp, 5m)")
                self.expr(args[0])
            else:
                t = self.ref_type(args[0])
                if f != "count" and t not in (NUM, ANY):
                    self.err(args[0].pos, f"{f}() needs a numeric point; {args[0].key} is a {t}")
            d = args[1]
            if not isinstance(d, A.Dur):
                self.err(d.pos, f"the window of {f}() is a duration, like 5m")
            elif d.seconds <= 0 or d.seconds > MAX_WINDOW_S:
                self.err(d.pos, f"a window must be longer than 0 and at most 1d, not {d.text}")
            return NUM
        if f in CLOCK_FUNCS:
            if args:
                self.err(args[0].pos, f"{f}() takes no arguments: {f}() is the gateway's local time")
            return NUM
        if f in POINT_FUNCS or f == "delta":
            if len(args) != 1 or not isinstance(args[0], A.Ref):
                self.err(c.pos, f"{f}() takes one point, like {f}(boiler.temp)")
                for a in args:
                    self.expr(a)
                return {"changed": BOOL, "offline": BOOL, "good": BOOL, "quality": STR}.get(f, NUM)
            t = self.ref_type(args[0])
            if f == "delta" and t not in (NUM, ANY):
                self.err(args[0].pos, f"delta() needs a numeric point; {args[0].key} is a {t}")
            return {"changed": BOOL, "offline": BOOL, "good": BOOL, "quality": STR}.get(f, NUM)
        types = [self.expr(a) for a in args]
        if f in ("min", "max"):
            if len(args) < 2:
                self.err(c.pos, f"{f}() takes two or more numbers, or a point and a window: {f}(a.x, 5m)")
        elif f == "round":
            if len(args) not in (1, 2):
                self.err(c.pos, "round() takes a number and optionally how many decimals")
            elif len(args) == 2 and not (isinstance(args[1], A.Num) and isinstance(args[1].value, int)):
                self.err(args[1].pos, "the decimals of round() are a whole number, like round(x, 1)")
        elif len(args) != 1:
            self.err(c.pos, f"{f}() takes one number")
        for a, t in zip(args, types, strict=True):
            if t not in (NUM, ANY):
                self.err(a.pos, f"{f}() needs numbers, got a {t}")
                break
        return NUM

    # ------------------------------------------------------------------ statements

    def condition(self, e: A.Expr, what: str) -> None:
        t = self.expr(e)
        if t not in (BOOL, ANY):
            self.err(e.pos, f"the {what} condition must be true or false, not a {t} (compare it: x > 10)")

    def duration(self, d: A.Dur, what: str, minimum: float) -> None:
        if d.seconds < minimum or d.seconds > 7 * 86400:
            self.err(d.pos, f"{what} {d.text} is out of range ({minimum:g}s to 7d)")

    def actions(self, calls: tuple[A.Call, ...]) -> tuple[A.Call, ...]:
        return tuple(self.action(c) for c in calls)

    def message(self, e: A.Expr) -> None:
        self.expr(e)

    def action(self, c: A.Call) -> A.Call:
        f = c.func
        if f not in ACTIONS:
            if f in VALUE_FUNCS:
                self.err(c.pos, f"{f}() is not an action (actions: alert, set, publish, log)")
            else:
                close = difflib.get_close_matches(f, ACTIONS, n=1, cutoff=0.5)
                self.err(c.pos, f"unknown action '{f}'", f"{close[0]}()" if close else None)
            return c
        allowed = {"alert": ("severity",)}.get(f, ())
        for k in c.kwargs:
            if k.name not in allowed:
                hint = " (alert() takes severity=…)" if f == "alert" else ""
                self.err(k.pos, f"{f}() has no argument '{k.name}'{hint}")
        if f in ("alert", "log"):
            if len(c.args) != 1:
                self.err(c.pos, f'{f}() takes one message, like {f}("boiler at {{boiler.temp}}")')
            for a in c.args:
                self.message(a)
            for k in c.kwargs:
                if k.name == "severity":
                    v = k.value
                    if not isinstance(v, A.Str) or v.plain is None:
                        self.err(v.pos, f"severity is one of {', '.join(SEVERITIES)} (a plain string)")
                    elif v.plain not in SEVERITIES:
                        close = difflib.get_close_matches(v.plain, SEVERITIES, n=1, cutoff=0.4)
                        self.err(
                            v.pos,
                            f"unknown severity '{v.plain}': use info, warning or critical",
                            close[0] if close else None,
                        )
            return c
        if f == "publish":
            if len(c.args) != 2:
                self.err(c.pos, 'publish() takes a topic and a value, like publish("plant/boiler/avg", x)')
                for a in c.args:
                    self.expr(a)
                return c
            topic, value = c.args
            if not isinstance(topic, A.Str) or topic.plain is None:
                self.err(topic.pos, 'the topic of publish() is a plain string, like "plant/boiler/avg"')
            else:
                t = topic.plain
                if not t or t.startswith("/") or t.endswith("/"):
                    self.err(
                        topic.pos,
                        f"topic '{t}' must be absolute: levels separated by '/', not starting or ending with '/'",
                    )
                elif "+" in t or "#" in t:
                    self.err(topic.pos, f"topic '{t}' has a wildcard (+ or #): publish needs one exact topic")
                elif "\x00" in t or len(t.encode()) > 65535:
                    self.err(topic.pos, "topic has a NUL character or is too long")
            self.expr(value)
            return c
        # set(device.point, value)
        if len(c.args) != 2 or not isinstance(c.args[0], A.Ref):
            self.err(c.pos, "set() takes a point and a value, like set(boiler.burner, false)")
            for a in c.args:
                self.expr(a)
            return c
        target, value = c.args[0], c.args[1]
        assert isinstance(target, A.Ref)
        vt = self.expr(value)
        if target.key in self.let_types:
            self.err(target.pos, f"{target.key} is derived by a LET: set() needs a writable device point")
            return c
        info = self.point(target)
        if not isinstance(info, PointInfo):
            return c
        if not info.writable:
            self.err(target.pos, f"{target.key} is read-only: set() needs a writable point")
            return c
        if isinstance(value, A.Num | A.Bool | A.Str | A.Dur):
            conv = convert(value, info)
            if isinstance(conv, str):
                self.err(value.pos, conv)
                return c
            return replace(c, args=(target, conv))
        want = ptype(info.type)
        if vt not in (want, ANY) and want != STR:
            self.err(value.pos, f"{target.key} is of type {info.type.value}; this value is a {vt}")
        return c

    def rule(self, r: A.Rule) -> A.Rule:
        self.file = r.file
        if r.name is not None and not NAME_RE.match(r.name):
            self.err(
                r.pos,
                f"rule name '{r.name}' must be lower-case letters, digits and '_', starting with a letter",
            )
        if r.kind == "every":
            assert r.every is not None
            self.duration(r.every, "EVERY", 0.1)
        else:
            assert r.when is not None
            self.condition(r.when, "ON")
            if r.hold is not None:
                self.duration(r.hold, "FOR", 0.0)
            if r.clear is not None:
                self.condition(r.clear, "CLEAR")
        then = self.actions(r.then)
        orelse = self.actions(r.orelse)
        return replace(r, then=then, orelse=orelse)


def convert(value: A.Num | A.Bool | A.Str | A.Dur, info: PointInfo) -> A.Num | A.Bool | A.Str | str:
    """A constant for set() converted to the point's type, or an error message."""
    t = info.type
    raw: object = (
        value.seconds
        if isinstance(value, A.Dur)
        else value.plain
        if isinstance(value, A.Str)
        else value.value
    )
    where = f"{info.key} is of type {t.value}"
    if isinstance(value, A.Str) and raw is None:
        if t is PointType.STRING:
            return value
        return f"{where}: a text with {{…}} cannot be written to it"
    if t is PointType.BOOL:
        if isinstance(raw, bool):
            return A.Bool(raw, value.pos)
        if isinstance(raw, int | float) and raw in (0, 1):
            return A.Bool(bool(raw), value.pos)
        if isinstance(raw, str) and raw.lower() in ("true", "false", "on", "off"):
            return A.Bool(raw.lower() in ("true", "on"), value.pos)
        return f"{where}: {raw!r} is not true/false (nor 1/0)"
    if t is PointType.STRING:
        text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
        return A.Str((text,), value.pos)
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            return f"{where}: {raw!r} is not a number"
    assert isinstance(raw, int | float)
    num: int | float = int(raw) if isinstance(raw, bool) else raw
    if t.is_integer:
        if isinstance(num, float):
            if not num.is_integer() or not math.isfinite(num):
                return f"{where}: {num:g} is not a whole number"
            num = int(num)
        lo, hi = t.int_range or (0, 0)
        if not lo <= num <= hi:
            return f"{where}: {num} is out of its range {lo}..{hi}"
    else:
        num = float(num)
    if info.min is not None and num < info.min:
        return f"{where}: {num:g} is below its minimum {info.min:g}"
    if info.max is not None and num > info.max:
        return f"{where}: {num:g} is above its maximum {info.max:g}"
    return A.Num(num, value.pos)


def check(statements: list[A.Statement], points: Mapping[str, PointInfo] | None) -> Checked:
    ck = Checker(points)
    out = Checked()
    lets = [s for s in statements if isinstance(s, A.Let)]
    rules = [s for s in statements if isinstance(s, A.Rule)]
    # LETs: names, redefinitions, cycles, then types in dependency order
    by_key: dict[str, A.Let] = {}
    for let in lets:
        ck.file = let.file
        key = let.target.key
        if not NAME_RE.match(let.target.device) or not NAME_RE.match(let.target.point):
            ck.err(let.target.pos, f"'{key}': device and point names are lower-case letters, digits and '_'")
            continue
        if ck.known is not None and key in ck.known:
            ck.err(let.target.pos, f"{key} is already a point of the gateway: a LET defines a new point")
            continue
        if key in by_key:
            first = by_key[key]
            ck.err(let.target.pos, f"{key} is defined twice (first at {first.file}:{first.pos.line})")
            continue
        by_key[key] = let
    order: list[A.Let] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cyclic: set[str] = set()

    def visit(key: str, path: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = [*path[path.index(key) :], key]
            if key not in cyclic:
                cyclic.update(cycle)
                let = by_key[key]
                ck.file = let.file
                ck.err(let.target.pos, "LET cycle: " + " → ".join(cycle))
            return
        state[key] = 1
        for r in refs(by_key[key].expr):
            if r.key in by_key:
                visit(r.key, [*path, key])
        state[key] = 2
        order.append(by_key[key])

    for key in by_key:
        visit(key, [])
    for let in order:
        if let.target.key in cyclic:
            continue
        ck.file = let.file
        ck.let_types[let.target.key] = ANY  # visible to itself only through a cycle (reported)
        t = ck.expr(let.expr)
        ck.let_types[let.target.key] = t
        out.lets.append(let)
    for key in cyclic:
        ck.let_types.setdefault(key, ANY)
    for r in rules:
        out.rules.append(ck.rule(r))
    out.let_types = ck.let_types
    out.points = dict(points) if points is not None else {}
    out.problems = ck.problems
    return out
