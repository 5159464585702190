"""Code generation: checked AST → Python source.  The source is built only from our own
identifiers, operators and numbers that Python printed; every string of the operator's text is
read from the constants table `K` by index.  No operator text is ever part of the source."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from picogate.rules import _ast as A
from picogate.rules._check import BOOL, NUM, STR, TIME_FUNCS, refs

NS = 1_000_000_000
INLINE_TIMED = True


def canon(x: object) -> str:
    """Normalized text of a node (no positions, lower-case keywords): the identity of a rule."""
    if isinstance(x, A.Num):
        return repr(x.value)
    if isinstance(x, A.Dur):
        return f"{x.seconds!r}s"
    if isinstance(x, A.Bool):
        return "true" if x.value else "false"
    if isinstance(x, A.Str):
        return (
            "str("
            + ",".join(repr(p) if isinstance(p, str) else f"{{{canon(p.expr)}:{p.spec}}}" for p in x.parts)
            + ")"
        )
    if isinstance(x, A.Name):
        return x.name
    if isinstance(x, A.Ref):
        return x.key
    if isinstance(x, A.Unary):
        return f"({x.op} {canon(x.operand)})"
    if isinstance(x, A.Binary):
        return f"({canon(x.left)} {x.op} {canon(x.right)})"
    if isinstance(x, A.Chain):  # as the left-leaning pairs it stands for: ((a + b) + c)
        text = canon(x.operands[0])
        for op, operand in zip(x.ops, x.operands[1:], strict=True):
            text = f"({text} {op} {canon(operand)})"
        return text
    if isinstance(x, A.Call):
        args = [canon(a) for a in x.args] + [f"{k.name}={canon(k.value)}" for k in x.kwargs]
        return f"{x.func}({','.join(args)})"
    if isinstance(x, A.Rule):
        parts = [f"rule {x.name}" if x.name else "", x.kind]
        parts += [f"on {canon(x.when)}" if x.when else "", f"for {canon(x.hold)}" if x.hold else ""]
        parts += [f"clear {canon(x.clear)}" if x.clear else "", f"every {canon(x.every)}" if x.every else ""]
        parts += [
            "then " + ";".join(canon(c) for c in x.then),
            "else " + ";".join(canon(c) for c in x.orelse),
        ]
        return " ".join(parts)
    if isinstance(x, A.Let):
        return f"let {x.target.key} = {canon(x.expr)} unit {x.unit!r}"
    return repr(x)  # pragma: no cover


@dataclass(slots=True)
class Gen:
    consts: list[Any] = field(default_factory=list)
    points: dict[str, int] = field(default_factory=dict)
    windows: dict[tuple[int, int], int] = field(default_factory=dict)
    window_mm: dict[int, set[str]] = field(default_factory=dict)  # windows that keep min (lo) / max (hi)
    delta_points: set[int] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)
    tmp: int = 0
    time_dependent: bool = False
    bodies: dict[int, A.Rule] = field(default_factory=dict)  # rules whose bodies handlers inline
    fresh: int | None = None  # generating inside this point's handler

    def const(self, v: Any) -> str:
        self.consts.append(v)
        return f"K[{len(self.consts) - 1}]"

    def point(self, key: str) -> int:
        return self.points.setdefault(key, len(self.points))

    def window(self, key: str, seconds: float, side: str) -> int:
        w = self.windows.setdefault((self.point(key), int(seconds * NS)), len(self.windows))
        if side:
            self.window_mm.setdefault(w, set()).add(side)
        return w

    def t(self) -> str:
        self.tmp += 1
        return f"_{self.tmp}"

    # ------------------------------------------------------------------ expressions

    def num(self, v: float | int | bool) -> str:
        """A constant as it is (a set() or publish() value keeps an integer exact)."""
        if isinstance(v, bool):
            return "True" if v else "False"
        if isinstance(v, float) and not math.isfinite(v):  # pragma: no cover - refused by the parser
            raise ValueError(v)
        return repr(v)

    def value(self, e: A.Expr) -> str:
        """An action's whole value: a constant as written, anything else as an expression."""
        if isinstance(e, A.Num):
            return self.num(e.value)
        if isinstance(e, A.Str):
            return self.text(e)
        return self.expr(e)

    def expr(self, e: A.Expr) -> str:
        """A Python expression: the value, or None when unknown.  Numbers are float64 (the rule
        language's number model): a number in an expression is a float, so that no arithmetic
        grows an integer beyond 64 bits."""
        if isinstance(e, A.Bool):
            return self.num(e.value)
        if isinstance(e, A.Num):
            return self.num(float(e.value))
        if isinstance(e, A.Dur):
            return self.num(e.seconds)
        if isinstance(e, A.Str):
            return self.text(e)
        if isinstance(e, A.Name):  # pragma: no cover - refused by the checker
            return "None"
        if isinstance(e, A.Ref):
            return f"P{self.point(e.key)}.v"
        if isinstance(e, A.Unary):
            a = self.t()
            op = "-" if e.op == "-" else "not "
            return f"(None if ({a}:={self.expr(e.operand)}) is None else {op}{a})"
        if isinstance(e, A.Binary):
            return self.binary(e)
        if isinstance(e, A.Chain):
            return self.chain(e)
        return self.call(e)

    @staticmethod
    def const_node(e: A.Expr) -> bool:
        return isinstance(e, A.Num | A.Bool | A.Dur) or (isinstance(e, A.Str) and e.plain is not None)

    def binary(self, e: A.Binary) -> str:
        return self.flat((e.left, e.right), (e.op,))

    def chain(self, e: A.Chain) -> str:
        """One flat Python expression for the whole chain (no nesting per term).  AND/OR are
        three-valued and short-circuit as the left-leaning pairs would: AND is False at the first
        False operand (the rest is not evaluated), else unknown if one is unknown, else True."""
        if e.ops[0] in ("and", "or"):
            stop, other = ("False", "True") if e.ops[0] == "and" else ("True", "False")
            names = [self.t() for _ in e.operands]
            vals = [self.expr(x) for x in e.operands]
            first = " or ".join(f"({n}:={v}) is {stop}" for n, v in zip(names, vals, strict=True))
            unknown = " or ".join(f"{n} is None" for n in names)
            return f"({stop} if {first} else (None if {unknown} else {other}))"
        return self.flat(e.operands, e.ops)

    def flat(self, operands: tuple[A.Expr, ...], ops: tuple[str, ...]) -> str:
        """`a op b op c …` evaluated left to right, unknown (None) if any operand is."""
        checks = []
        names = []
        for x in operands:
            v = self.expr(x)
            if self.const_node(x):
                names.append(v)
            else:
                n = self.t()
                checks.append(f"({n}:={v}) is None")
                names.append(n)
        text = names[0] + "".join(f" {op} {n}" for op, n in zip(ops, names[1:], strict=True))
        if not checks:
            return f"({text})"
        return f"(None if {' or '.join(checks)} else {text})"

    def call(self, c: A.Call) -> str:
        f, args = c.func, c.args
        if f in TIME_FUNCS:
            self.time_dependent = True
        if f in ("hour", "minute", "weekday"):
            return f"_{f}(t)"
        if len(args) == 2 and isinstance(args[1], A.Dur) and isinstance(args[0], A.Ref) and f in (
            "avg", "min", "max", "sum", "count", "rate", "delta",
        ):  # fmt: skip
            w = self.window(args[0].key, args[1].seconds, {"min": "lo", "max": "hi"}.get(f, ""))
            if self.fresh == self.point(args[0].key):  # in this point's handler: expired already
                if f == "avg":
                    q = self.t()
                    return f"(W{w}.total / len({q}) if ({q}:=W{w}.q) else None)"
                if f == "sum":
                    return f"(W{w}.total if W{w}.q else None)"
                if f == "count":
                    return f"len(W{w}.q)"
                if f in ("min", "max"):
                    side = "lo" if f == "min" else "hi"
                    return f"(W{w}.{side}[0][1] if W{w}.{side} else None)"
            return f"W{w}.{f}(t)"
        if (
            f in ("changed", "age", "offline", "quality", "good", "delta")
            and len(args) == 1
            and isinstance(args[0], A.Ref)
        ):
            i = self.point(args[0].key)
            if f == "changed":
                return f"P{i}.chg"
            if f == "age":
                return f"_age(P{i}, t)"
            if f == "offline":
                return f"P{i}.off"
            if f == "quality":
                return f"P{i}.q"
            if f == "good":
                return f"(P{i}.q == 'good')"
            self.delta_points.add(i)
            return f"P{i}.dlt"
        vals = [self.expr(a) for a in args]
        if f == "round" and len(args) == 2 and isinstance(args[1], A.Num):
            vals[1] = self.num(int(args[1].value))  # the number of decimals is an integer
        names = [self.t() for _ in vals]
        check = " or ".join(f"({n}:={v}) is None" for n, v in zip(names, vals, strict=True))
        fn = {
            "abs": "abs",
            "round": "_round",
            "min": "min",
            "max": "max",
            "floor": "_floor",
            "ceil": "_ceil",
            "sqrt": "_sqrt",
        }[f]
        return f"(None if {check} else {fn}({', '.join(names)}))"

    def text(self, s: A.Str) -> str:
        if s.plain is not None:
            return self.const(s.plain)
        parts = []
        for p in s.parts:
            if isinstance(p, str):
                parts.append(self.const(p))
            else:
                parts.append(f"_fmt({self.expr(p.expr)}, {self.const(p.spec)})")
        return "''.join((" + ", ".join(parts) + ",))"

    def message(self, e: A.Expr) -> str:
        if isinstance(e, A.Str):
            return self.text(e)
        return f"_fmt({self.expr(e)}, '')"

    # ------------------------------------------------------------------ statements

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def actions(self, name: str, j: int, calls: tuple[A.Call, ...], ptypes: dict[str, str]) -> None:
        if not calls:
            return
        self.emit(f"def {name}(t):", f"    s = S{j}")
        for c in calls:
            self.emit("    try:")
            if c.func in ("alert", "log"):
                msg = self.message(c.args[0]) if c.args else "''"
                if c.func == "log":
                    self.emit(f"        _log(s, {msg})")
                else:
                    sev = next((k.value for k in c.kwargs if k.name == "severity"), None)
                    sv = self.const(sev.plain) if isinstance(sev, A.Str) and sev.plain else "'warning'"
                    self.emit(f"        _alert(s, {sv}, {msg}, t)")
            elif c.func == "publish":
                topic, value = c.args
                assert isinstance(topic, A.Str)
                self.emit(f"        _publish(s, {self.text(topic)}, {self.value(value)}, t)")
            else:  # set
                target, value = c.args
                assert isinstance(target, A.Ref)
                conv = {NUM: "_to_num", BOOL: "_to_bool"}.get(ptypes.get(target.key, ""), "_same")
                self.emit(
                    f"        _set(s, {self.const(target.device)}, {self.const(target.point)}, "
                    f"{conv}({self.value(value)}))"
                )
            self.emit("    except Exception as e:", "        _err(s, e, 2)")
        self.emit("")

    def rule(self, j: int, r: A.Rule, ptypes: dict[str, str]) -> None:
        self.time_dependent = False
        if r.kind == "on":
            body = self.body(j, r)  # also finds out whether the rule depends on time
            # A function of its own when a timer re-evaluates the rule (its value moves with time)
            # or when several points' handlers share it; else only inlined in its point's handler.
            # (A FOR timer alone needs none: without a reading the condition cannot have changed.)
            shared = len({x.key for x in refs((r.when, r.clear))}) != 1
            if self.time_dependent or shared:
                self.emit(f"def R{j}(t):", *body, "")
                if shared or INLINE_TIMED is False:
                    return self.actions_of(j, r, ptypes)
            self.bodies[j] = r
        self.actions_of(j, r, ptypes)
        return None

    def actions_of(self, j: int, r: A.Rule, ptypes: dict[str, str]) -> None:
        self.actions(f"T{j}", j, r.then, ptypes)
        self.actions(f"F{j}", j, r.orelse, ptypes)

    def body(self, j: int, r: A.Rule) -> list[str]:
        """The statements of an ON rule's step, indented for a function body."""
        out: list[str] = []
        saved, self.lines = self.lines, out
        try:
            self._body(j, r)
        finally:
            self.lines = saved
        return out

    def _body(self, j: int, r: A.Rule) -> None:
        assert r.when is not None
        cond = self.expr(r.when)
        self.emit(f"    s = S{j}", "    try:")
        if r.clear is None:  # active until the condition is false
            self.emit(
                f"        c = {cond}",
                "        if s.active:",
                "            if c is False:",
                "                _clear(s, t)",
                "            s.unk = c is None",
                "        elif c is True:",
            )
            ind = "            "
        else:  # active until the CLEAR condition is true
            self.emit(
                "        if s.active:",
                f"            c = {self.expr(r.clear)}",
                "            if c is True:",
                "                _clear(s, t)",
                "            s.unk = c is None",
                "        else:",
                f"            c = {cond}",
                "            if c is True:",
            )
            ind = "                "
        out = ind[:-4]
        self.emit(f"{ind}s.unk = False")
        if r.hold is not None and r.hold.seconds > 0:
            hold = int(r.hold.seconds * NS)
            self.emit(
                f"{ind}d = s.due",
                f"{ind}if d is None:",
                f"{ind}    s.due = t + {hold}",
                f"{ind}    _timer(s, t + {hold})",
                f"{ind}elif t >= d:",
                f"{ind}    _fire(s, t)",
                f"{out}else:",
                f"{ind}s.unk = c is None",
                f"{ind}s.due = None",
            )
        else:
            self.emit(f"{ind}_fire(s, t)", f"{out}else:", f"{ind}s.unk = c is None")
        self.emit(
            "        if s.ek == 1:",
            "            s.ek = 0",
            "            s.err = None",
            "    except Exception as e:",
            "        _err(s, e, 1)",
        )

    def let(self, j: int, let: A.Let, vtype: str) -> None:
        """A LET's step.  A numeric LET's value is a finite float64: an integer is converted, and
        a value that is not a finite number (inf, NaN, or beyond float64's range) is an error of
        the LET, which publishes it bad (_let_num / _let_any in _runtime.py)."""
        self.time_dependent = False
        self.point(let.target.key)
        check = {NUM: "_let_num", BOOL: "", STR: ""}.get(vtype, "_let_any")
        self.emit(
            f"def L{j}(t):",
            f"    s = S{j}",
            "    try:",
            f"        v = {self.expr(let.expr)}",
        )
        if check:
            self.emit(
                "        if v is not None and (v.__class__ is not float or v - v):",
                f"            v = {check}(v)",
            )
        self.emit(
            "        if s.ek == 1:",
            "            s.ek = 0",
            "            s.err = None",
            "    except Exception as e:",
            "        _err(s, e, 1)",
            "        v = None",
            "    s.unk = v is None",
            "    _let(s, v, t)",
            "",
        )

    def handler(self, i: int, ptype: str, lets: list[int], rules: list[int]) -> None:
        wins = [w for (pi, _), w in self.windows.items() if pi == i]
        self.emit(
            f"def H{i}(r):",
            "    t = r.ts",
            "    v = r.value",
            f"    p = P{i}",
            "    try:",
            "        if v is None or r.quality is _BAD:",
            "            raise _Bad",
        )
        # v - v is 0 for a finite number and NaN (true) for NaN and infinities, which _num refuses
        if ptype == NUM:  # a float64 (an integer is converted; a huge one is a bad value)
            self.emit(
                "        if v.__class__ is not float or v - v:",
                "            v = _num(v)",
            )
        elif ptype not in (BOOL, STR):
            self.emit(
                "        if v.__class__ is int or v.__class__ is float and v - v:",
                "            v = _num(v)",
            )
        elif ptype == BOOL:
            self.emit("        if v.__class__ is not bool:", "            v = _bool(v)")
        self.emit(
            "        last = p.last",
            "        p.chg = None if last is None else v != last",
        )
        if i in self.delta_points:
            self.emit("        p.dlt = None if last is None else v - last")
        self.emit(
            "        p.last = p.v = v",
            "        p.gts = t",
            "        p.off = False",
            "        p.q = r.quality",
        )
        for w in wins:
            span = next(sp for (pi, sp), ww in self.windows.items() if ww == w)
            num = ptype == NUM
            self.emit(
                f"        w = W{w}",
                "        e = (t, v)",
                "        q = w.q",
                "        q.append(e)",
                "        w.total += v" if num else "        if v.__class__ is not str: w.total += v",
            )
            sides = sorted(self.window_mm.get(w, ()))
            for side, op in (("lo", ">="), ("hi", "<=")):
                if side in sides:
                    self.emit(
                        f"        {side} = w.{side}",
                        f"        while {side} and {side}[-1][1] {op} v:",
                        f"            {side}.pop()",
                        f"        {side}.append(e)",
                    )
            # expire what left the window (the sample just added is in it: the loops end there)
            self.emit(f"        cut = t - {span}", "        while q[0][0] <= cut:")
            if num:
                self.emit("            w.total -= q.popleft()[1]")
            else:
                self.emit(
                    "            o = q.popleft()[1]", "            if o.__class__ is not str: w.total -= o"
                )
            for side in sides:
                self.emit(f"        while {side}[0][0] <= cut:", f"            {side}.popleft()")
        self.emit("    except Exception as e:", "        _bad(p, e)")
        for w in wins:
            self.emit(f"        W{w}.expire(t)")
        for j in lets:  # computed once at the end of the batch (RuleEngine._flush_lets)
            self.emit(f"    _defer(L{j}, t)")
        self.fresh = i
        try:
            for j in rules:
                if j in self.bodies:
                    self.emit(*self.body(j, self.bodies[j]))
                else:
                    self.emit(f"    R{j}(t)")
        finally:
            self.fresh = None
        self.emit("")
