"""Can a rule's ON and CLEAR conditions both be true?  While both are, an active rule clears
(CLEAR is true) and an idle one fires again (ON is true): the rule fires and clears at every
evaluation, and so do its actions.  `rules check` and the gateway's reload warn about it.

Pure and bounded.  Each condition is put in disjunctive normal form (NOT pushed down to the
comparisons; at most 32 conjunctions) over literals the analysis understands:

- a comparison of a linear combination of numeric terms with a constant (`tank.level > 75`,
  `boiler.temp > boiler.setpoint + 5` is `boiler.temp - boiler.setpoint > 5`); a term is a point,
  a LET (replaced by its expression when that is linear too), a window or any other function;
- a bool point or LET (`door.open`, `NOT pump.on`, `x == true`), a string point against a string
  (`line.state == "run"`), `quality(p)` against a string, `changed(p)`, `offline(p)`, `good(p)`.

A conjunction of ON's and one of CLEAR's is satisfiable when every term's constraints (an interval,
whole numbers for integer points and counts, values excluded by `!=`) leave a value.  The warning
names one such value.  Terms are taken as independent of one another unless they share a point (a
point and a LET computed from it, `x` and `x - y`): a conjunction where they do, or with a literal
the analysis does not understand (a comparison of two strings, say), is left undecided, never
reported.  So a warning is always right; a rule without one may still chatter (docs/rules.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from picogate._model import PointInfo
from picogate.rules import _ast as A
from picogate.rules._check import ANY, BOOL, NUM, STR, nodes
from picogate.rules._codegen import canon

_MAX_CONJUNCTIONS = 32
_MAX_STEPS = 2000  # literals built and compared, per rule
_MAX_INLINE = 8  # LETs replaced by their expressions, one inside the other

_INDEPENDENT = ("avg", "min", "max", "sum", "count", "rate", "delta", "age")  # of a window or the clock
_DOMAIN: dict[str, tuple[float, float, bool]] = {  # lo, hi, whole numbers
    "age": (0.0, math.inf, False),
    "count": (0.0, math.inf, True),
    "hour": (0.0, 23.0, True),
    "minute": (0.0, 59.0, True),
    "weekday": (1.0, 7.0, True),
    "abs": (0.0, math.inf, False),
    "sqrt": (0.0, math.inf, False),
    "floor": (-math.inf, math.inf, True),
    "ceil": (-math.inf, math.inf, True),
}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_QUALITIES = ("good", "uncertain", "bad", "missing")


class _TooBig(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Term:
    """A numeric term a linear form is made of."""

    key: str
    points: frozenset[str]  # what it is computed from (itself when independent)
    lo: float = -math.inf
    hi: float = math.inf
    whole: bool = False


@dataclass(frozen=True, slots=True)
class _Num:
    """sum(coef * term) op const, normalised so that the first coefficient is 1."""

    form: tuple[tuple[str, float], ...]
    op: str
    const: float


@dataclass(frozen=True, slots=True)
class _Set:
    """key == value (eq) or key != value, for a bool or string variable."""

    key: str
    eq: bool
    value: bool | str


@dataclass(frozen=True, slots=True)
class _Const:
    value: bool


@dataclass(frozen=True, slots=True)
class _Opaque:
    key: str
    positive: bool


_Lit = _Num | _Set | _Const | _Opaque
_Conj = tuple[_Lit, ...]


@dataclass(slots=True)
class _Analysis:
    types: Mapping[str, str]  # device.point → NUM | BOOL | STR | ANY (LETs too)
    infos: Mapping[str, PointInfo]
    lets: Mapping[str, A.Expr]
    steps: int = 0
    terms: dict[str, _Term] = field(default_factory=dict)
    shown: dict[str, str] = field(default_factory=dict)  # term key → how the operator wrote it
    sets: dict[str, tuple[frozenset[str], tuple[str, ...] | None]] = field(default_factory=dict)
    """bool/string variables: the points they depend on, their finite domain (None: any text)."""

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > _MAX_STEPS:
            raise _TooBig

    # ------------------------------------------------------------------ numbers

    def term(self, e: A.Expr, depth: int, inline: bool = False) -> tuple[dict[str, float], float] | None:
        """A numeric expression as a linear form ({term key: coefficient}, constant), None if it
        is not numeric (or, `inline`, for a LET's expression, not linear)."""
        self.step()
        if isinstance(e, A.Num):
            return {}, float(e.value)
        if isinstance(e, A.Dur):
            return {}, e.seconds
        if isinstance(e, A.Ref):
            if self.types.get(e.key, ANY) not in (NUM, ANY):
                return None
            let = self.lets.get(e.key)
            if let is not None and depth < _MAX_INLINE:
                inner = self.term(let, depth + 1, inline=True)
                if inner is not None:
                    return inner
            return self.atom(e.key, e, depth)
        if isinstance(e, A.Unary) and e.op == "-":
            inner = self.term(e.operand, depth, inline)
            return None if inner is None else ({k: -c for k, c in inner[0].items()}, -inner[1])
        if isinstance(e, A.Chain) and e.ops[0] in ("+", "-", "*", "/", "%"):
            linear = self.chain(e, depth, inline)
            if linear is None and not inline:
                return self.atom(canon(e), e, depth)
            return linear
        if isinstance(e, A.Call) and e.func not in ("changed", "offline", "good", "quality"):
            return self.atom(canon(e), e, depth)
        return None

    def chain(self, e: A.Chain, depth: int, inline: bool) -> tuple[dict[str, float], float] | None:
        """A sum or product as a linear form, None if it is not linear."""
        parts = [self.term(x, depth, inline) for x in e.operands]
        first = parts[0]
        if first is None:
            return None
        terms, const = first
        for op, part in zip(e.ops, parts[1:], strict=True):
            if part is None:
                return None
            if op in ("+", "-"):
                sign = 1.0 if op == "+" else -1.0
                merged = dict(terms)
                for key, c in part[0].items():
                    merged[key] = merged.get(key, 0.0) + sign * c
                terms, const = {t: c for t, c in merged.items() if c != 0.0}, const + sign * part[1]
            elif op == "*" and not part[0]:  # times a constant
                f = part[1]
                terms, const = {t: c * f for t, c in terms.items() if c * f != 0.0}, const * f
            elif op == "*" and not terms:  # a constant times it
                f = const
                terms, const = {t: c * f for t, c in part[0].items() if c * f != 0.0}, part[1] * f
            elif op == "/" and not part[0] and part[1] != 0.0:
                terms, const = {t: c / part[1] for t, c in terms.items()}, const / part[1]
            else:
                return None
        return terms, const

    def atom(self, key: str, e: A.Expr, depth: int) -> tuple[dict[str, float], float]:
        if key not in self.terms:
            self.terms[key] = self.make_term(key, e, depth)
            self.shown[key] = key if isinstance(e, A.Ref) else _show(e)
        return {key: 1.0}, 0.0

    def make_term(self, key: str, e: A.Expr, depth: int) -> _Term:
        if isinstance(e, A.Ref):
            info = self.infos.get(key)
            let = self.lets.get(key)
            points = frozenset(self.points_of(let, depth)) if let is not None else frozenset((key,))
            limits = info.type.int_range if info is not None else None
            if limits is not None:
                return _Term(key, points, float(limits[0]), float(limits[1]), True)
            return _Term(key, points)
        if isinstance(e, A.Call):
            lo, hi, whole = _DOMAIN.get(e.func, (-math.inf, math.inf, False))
            if e.func in _INDEPENDENT:
                return _Term(key, frozenset((key,)), lo, hi, whole)
            return _Term(key, frozenset(self.points_of(e, depth)), lo, hi, whole)
        return _Term(key, frozenset(self.points_of(e, depth)))

    def points_of(self, e: A.Expr, depth: int) -> set[str]:
        """The points (and independent terms) an expression is computed from, LETs expanded."""
        out: set[str] = set()
        for x in nodes(e):
            self.step()
            if isinstance(x, A.Call) and x.func in _INDEPENDENT:
                out.add(canon(x))
            elif isinstance(x, A.Ref):
                let = self.lets.get(x.key)
                if let is not None and depth < _MAX_INLINE:
                    out |= self.points_of(let, depth + 1)
                else:
                    out.add(x.key)
        return out

    # ------------------------------------------------------------------ conditions

    def literal(self, e: A.Expr, depth: int) -> list[_Conj] | None:
        """A condition that is not AND/OR/NOT, as a DNF of one literal (or a LET's condition)."""
        if isinstance(e, A.Bool):
            return [(_Const(e.value),)]
        if isinstance(e, A.Ref):
            if self.types.get(e.key, ANY) not in (BOOL, ANY):
                return None
            let = self.lets.get(e.key)
            if let is not None and depth < _MAX_INLINE:
                return self.dnf(let, True, depth + 1)
            self.variable(e.key, e, None, depth)
            return [(_Set(e.key, True, True),)]
        if isinstance(e, A.Call) and e.func in ("changed", "offline", "good") and e.args:
            key = canon(e)
            self.variable(key, e, None, depth)
            return [(_Set(key, True, True),)]
        if isinstance(e, A.Binary):
            return self.comparison(e, depth)
        return [(_Opaque(canon(e), True),)]

    def variable(self, key: str, e: A.Expr, domain: tuple[str, ...] | None, depth: int) -> None:
        if key not in self.sets:
            self.sets[key] = (frozenset(self.points_of(e, depth)), domain)

    def comparison(self, e: A.Binary, depth: int) -> list[_Conj] | None:
        left, right, op = e.left, e.right, e.op
        opaque: list[_Conj] = [(_Opaque(canon(e), True),)]
        lt, rt = self.term(left, depth), self.term(right, depth)
        if lt is not None and rt is not None:
            terms = dict(lt[0])
            for k, c in rt[0].items():
                terms[k] = terms.get(k, 0.0) - c
            terms = {k: c for k, c in terms.items() if c != 0.0}
            const = rt[1] - lt[1]  # sum(terms) op const
            if not terms:
                return [(_Const(_compare(0.0, op, const)),)]
            form = sorted(terms.items())
            first = form[0][1]
            if first < 0:
                op = _FLIP[op]
            norm = tuple((k, c / first) for k, c in form)
            return [(_Num(norm, op, const / first),)]
        if op not in ("==", "!="):
            return opaque
        if isinstance(right, A.Str | A.Bool) and not isinstance(left, A.Str | A.Bool):
            left, right = right, left
        value: bool | str
        if isinstance(left, A.Bool):
            value = left.value
        elif isinstance(left, A.Str) and left.plain is not None:
            value = left.plain
        else:
            return opaque
        eq = op == "=="
        if isinstance(right, A.Ref) and self.types.get(right.key, ANY) in (
            BOOL if isinstance(value, bool) else STR,
            ANY,
        ):
            if isinstance(value, bool) and right.key in self.lets and depth < _MAX_INLINE:
                return self.dnf(self.lets[right.key], value == eq, depth + 1)
            self.variable(right.key, right, (("true", "false") if isinstance(value, bool) else None), depth)
            return [(_Set(right.key, eq, value),)]
        if isinstance(right, A.Call) and right.func == "quality" and isinstance(value, str):
            key = canon(right)
            self.variable(key, right, _QUALITIES, depth)
            return [(_Set(key, eq, value),)]
        return opaque

    def dnf(self, e: A.Expr, positive: bool, depth: int = 0) -> list[_Conj] | None:
        """`e` (or NOT e) in disjunctive normal form; None when too large to reason about."""
        self.step()
        if isinstance(e, A.Unary) and e.op == "not":
            return self.dnf(e.operand, not positive, depth)
        if isinstance(e, A.Chain) and e.ops[0] in ("and", "or"):
            parts = [self.dnf(x, positive, depth) for x in e.operands]
            if any(p is None for p in parts):
                return None
            if (e.ops[0] == "and") == positive:  # a conjunction of the parts
                out: list[_Conj] = [()]
                for part in parts:
                    assert part is not None
                    out = [a + b for a in out for b in part]
                    self.step(len(out))
                    if len(out) > _MAX_CONJUNCTIONS:
                        return None
                return out
            union = [c for part in parts if part is not None for c in part]
            return union if len(union) <= _MAX_CONJUNCTIONS else None
        lit = self.literal(e, depth)
        if lit is None:
            return None
        return lit if positive else self.negate(lit)

    def negate(self, dnf: list[_Conj]) -> list[_Conj] | None:
        """NOT of a DNF of one literal (or, for a LET's condition, of any DNF)."""
        if len(dnf) == 1 and len(dnf[0]) == 1:
            return [(_negate(dnf[0][0]),)]
        out: list[_Conj] = [()]
        for conj in dnf:  # NOT (c1 OR c2) = NOT c1 AND NOT c2; NOT (a AND b) = NOT a OR NOT b
            out = [(*a, _negate(lit)) for a in out for lit in conj]
            self.step(len(out))
            if len(out) > _MAX_CONJUNCTIONS:
                return None
        return out

    # ------------------------------------------------------------------ solving

    def solve(self, conj: _Conj) -> list[str] | None:
        """A value for each variable that makes every literal true (shown as text), None when
        there is none or the analysis cannot tell."""
        self.step(len(conj))
        nums: dict[tuple[tuple[str, float], ...], list[_Num]] = {}
        sets: dict[str, list[_Set]] = {}
        opaque: dict[str, bool] = {}
        for lit in conj:
            if isinstance(lit, _Const):
                if not lit.value:
                    return None
            elif isinstance(lit, _Opaque):
                if opaque.setdefault(lit.key, lit.positive) != lit.positive:
                    return None
            elif isinstance(lit, _Num):
                nums.setdefault(lit.form, []).append(lit)
            else:
                sets.setdefault(lit.key, []).append(lit)
        witness: list[str] = []
        for form, lits in nums.items():
            value = self.interval(form, lits)
            if value is None:
                return None
            witness.append(self.show_form(form, value))
        for key, slits in sets.items():
            shown = self.choose(key, slits)
            if shown is None:
                return None
            witness.append(f"{self.shown.get(key, key)} {shown}")
        if opaque:
            return None  # something it does not understand: no claim
        owner: dict[str, object] = {}
        for form in nums:  # variables computed from the same point are not independent
            for point in set().union(*(self.terms[k].points for k, _ in form)):
                if owner.setdefault(point, form) != form:
                    return None
        for key in sets:
            for point in self.sets[key][0]:
                if owner.setdefault(point, key) != key:
                    return None
        return witness

    def show_form(self, form: tuple[tuple[str, float], ...], value: float) -> str:
        """`a - b = 3`: the terms in the order the rule wrote them, the first one positive."""
        order = list(self.shown)
        terms = sorted(form, key=lambda kc: order.index(kc[0]) if kc[0] in order else len(order))
        if terms[0][1] < 0:
            terms, value = [(k, -c) for k, c in terms], -value
        out = ""
        for i, (key, coef) in enumerate(terms):
            mag = abs(coef)
            name = self.shown.get(key, key)
            text = name if mag == 1.0 else f"{_show_number(mag)} * {name}"
            out = text if i == 0 else f"{out} {'-' if coef < 0 else '+'} {text}"
        return f"{out} = {_show_number(value)}"

    def interval(self, form: tuple[tuple[str, float], ...], lits: list[_Num]) -> float | None:
        lo, lo_open, hi, hi_open, whole = -math.inf, False, math.inf, False, False
        if len(form) == 1 and form[0][1] == 1.0:
            t = self.terms[form[0][0]]
            lo, hi, whole = t.lo, t.hi, t.whole
        excluded: set[float] = set()
        for lit in lits:
            c, op = lit.const, lit.op
            if op == "!=":
                excluded.add(c)
                continue
            if op in (">", ">=", "==") and (c > lo or (c == lo and op == ">")):
                lo, lo_open = c, op == ">"
            if op in ("<", "<=", "==") and (c < hi or (c == hi and op == "<")):
                hi, hi_open = c, op == "<"
        return _pick(lo, lo_open, hi, hi_open, whole, excluded)

    def choose(self, key: str, lits: list[_Set]) -> str | None:
        """`= value` (or `other than …` for text) satisfying every literal, None if none does."""
        equal = {lit.value for lit in lits if lit.eq}
        other = {lit.value for lit in lits if not lit.eq}
        if len(equal) > 1 or equal & other:
            return None
        if equal:
            return "= " + _show_value(next(iter(equal)))
        if any(isinstance(lit.value, bool) for lit in lits):
            left = [v for v in (True, False) if v not in other]
            return "= " + _show_value(left[0]) if left else None
        domain = self.sets[key][1]
        if domain is not None:
            free = [v for v in domain if v not in other]
            return "= " + _show_value(free[0]) if free else None
        return "other than " + ", ".join(sorted(_show_value(v) for v in other))


def _compare(a: float, op: str, b: float) -> bool:
    return {
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
        "==": a == b,
        "!=": a != b,
    }[op]


def _negate(lit: _Lit) -> _Lit:
    if isinstance(lit, _Num):
        return _Num(lit.form, _NEGATE[lit.op], lit.const)
    if isinstance(lit, _Set):
        return _Set(lit.key, not lit.eq, lit.value)
    if isinstance(lit, _Const):
        return _Const(not lit.value)
    return _Opaque(lit.key, not lit.positive)


def _pick(
    lo: float, lo_open: bool, hi: float, hi_open: bool, whole: bool, excluded: set[float]
) -> float | None:
    """A value in the interval (whole if asked), not excluded; a round one when there is one."""
    if whole:
        lo = (
            math.floor(lo) + 1
            if lo_open and math.isfinite(lo)
            else math.ceil(lo)
            if math.isfinite(lo)
            else lo
        )
        hi = (
            math.ceil(hi) - 1
            if hi_open and math.isfinite(hi)
            else math.floor(hi)
            if math.isfinite(hi)
            else hi
        )
        lo_open = hi_open = False
    if lo > hi or (lo == hi and (lo_open or hi_open)):
        return None
    candidates: list[float] = []
    if math.isfinite(lo) and math.isfinite(hi):
        mid = (lo + hi) / 2
        candidates += [float(round(mid)), float(math.floor(mid)), float(math.ceil(mid)), mid]
        candidates += [lo + (hi - lo) * f for f in (0.25, 0.75, 0.1, 0.9)] + [lo, hi]
    elif math.isfinite(lo):
        candidates += [float(math.floor(lo) + 1), lo + 1.0, lo]
    elif math.isfinite(hi):
        candidates += [float(math.ceil(hi) - 1), hi - 1.0, hi]
    else:
        candidates += [0.0, 1.0, -1.0]
    # Values next to the first candidate, on both sides (whole and half steps), for when the
    # excluded values (`!=`) took the first ones: `x != 0 AND x < 1` has no room above 0 but below.
    steps = [float(d) for d in range(1, len(excluded) + 2)] + [
        d / 2 for d in range(1, 2 * len(excluded) + 3, 2)
    ]
    candidates += [c + sign * d for c in candidates[:1] for d in steps for sign in (1.0, -1.0)]

    def inside(v: float) -> bool:
        if whole and not v.is_integer():
            return False
        return (v > lo or (v == lo and not lo_open)) and (v < hi or (v == hi and not hi_open))

    for v in candidates:
        if inside(v) and v not in excluded:
            return v
    return None


def _show_number(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:g}"


def _show_value(v: bool | str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _show(e: A.Expr) -> str:
    """An expression as an operator would write it (for messages; depth bounded by the parser)."""
    if isinstance(e, A.Num):
        return _show_number(float(e.value))
    if isinstance(e, A.Dur):
        return e.text
    if isinstance(e, A.Bool):
        return "true" if e.value else "false"
    if isinstance(e, A.Str):
        return _show_value(e.plain) if e.plain is not None else '"…"'
    if isinstance(e, A.Ref):
        return e.key
    if isinstance(e, A.Name):
        return e.name
    if isinstance(e, A.Unary):
        return f"-{_show(e.operand)}" if e.op == "-" else f"NOT {_show(e.operand)}"
    if isinstance(e, A.Binary):
        return f"({_show(e.left)} {e.op} {_show(e.right)})"
    if isinstance(e, A.Chain):
        text = _show(e.operands[0])
        for op, x in zip(e.ops, e.operands[1:], strict=True):
            text += f" {op.upper() if op in ('and', 'or') else op} {_show(x)}"
        return f"({text})"
    args = [_show(a) for a in e.args] + [f"{k.name}={_show(k.value)}" for k in e.kwargs]
    return f"{e.func}({', '.join(args)})"


def overlap(
    rule: A.Rule, types: Mapping[str, str], infos: Mapping[str, PointInfo], lets: Mapping[str, A.Expr]
) -> str | None:
    """If the rule's ON and CLEAR conditions can both be true: values that make them so
    (`tank.level = 70`), else None (they cannot, or the analysis cannot tell)."""
    if rule.kind != "on" or rule.when is None or rule.clear is None:
        return None
    a = _Analysis(types, infos, lets)
    try:
        on = a.dnf(rule.when, True)
        clear = a.dnf(rule.clear, True)
        if on is None or clear is None:
            return None
        for c1 in on:
            for c2 in clear:
                witness = a.solve(c1 + c2)
                if witness is not None:
                    return " and ".join(witness) or "always"
    except (_TooBig, RecursionError):  # (LETs put in place of LETs: bounded, but never a crash)
        return None
    return None


def extent(e: A.Expr) -> A.Pos:
    """Where an expression is written: from its first character (to the last on that line)."""
    positions: list[A.Pos] = []
    for x in nodes(e):
        pos = getattr(x, "pos", None)
        if isinstance(pos, A.Pos):
            positions.append(pos)
        if isinstance(x, A.Chain):
            positions += x.op_pos
    first = min(positions, key=lambda p: (p.line, p.col))
    end = max((p.col + p.length for p in positions if p.line == first.line), default=first.col + 1)
    return A.Pos(first.line, first.col, max(end - first.col, 1))


__all__ = ["extent", "overlap"]
