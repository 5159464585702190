"""Rule text → lark parse tree (with positions) → typed AST.  Syntax errors become RuleErrors;
after one, parsing resumes at the next statement so that a file reports all its errors.

The text is lexed as one stream and cut into statements at their first keyword (`_Splitter`);
each statement is parsed on its own (lark's interactive parser, fed the tokens already lexed), so
that the largest parse tree held is one statement's, and a syntax error costs only the statement
it is in.  The limits of `_limits.py` are checked on the way: on tokens while lexing, on nesting
and size while the AST is built, before anything recursive sees a deeper tree."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from typing import Any

import lark
from lark import Token, Tree
from lark.utils import TextSlice

from picogate.rules import _ast as A
from picogate.rules import _limits
from picogate.rules._errors import RuleError
from picogate.rules._grammar import FRIENDLY, GRAMMAR
from picogate.rules._limits import (
    MAX_FILE_BYTES,
    MAX_NESTING,
    MAX_OPERATIONS,
    MAX_STATEMENT_TOKENS,
    MAX_STATEMENTS,
    MAX_STRING,
    MAX_TOKENS,
    MAX_WORD,
)

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DUR_RE = re.compile(r"^(\d+(?:\.\d+)?)([a-z]+)$", re.I)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "{": "{", "}": "}"}  # \{ is a literal {
_MAX_ERRORS = 200
_LEAVES = frozenset(("number", "duration", "true", "false", "string", "name", "ref"))
_CHAINS = frozenset(("or_expr", "and_expr", "sum", "product"))
_OPS = {"&&": "and", "||": "or", "<>": "!="}


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(GRAMMAR, parser="lalr", lexer="basic", start=["start", "expr"])


class _Fail(Exception):
    def __init__(self, pos: A.Pos, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message
        self.suggestion = suggestion


def _k(t: Any) -> list[Any]:
    return list(t.children)


def _tpos(tok: Token) -> A.Pos:
    return A.Pos(tok.line or 1, tok.column or 1, max(len(str(tok)), 1))


def _first_token(t: Tree[Token] | Token) -> Token | None:
    """The first token under a parse tree node (iterative: the tree may be deep)."""
    node: Any = t
    while isinstance(node, Tree):
        node = next((c for c in node.children if c is not None), None)
    return node if isinstance(node, Token) else None


class _Builder:
    """Parse tree → AST, refusing an expression nested deeper than MAX_NESTING or larger than
    MAX_OPERATIONS (counted per top-level expression: a condition, a LET's value, an action)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.depth = 0
        self.ops = 0

    def pos(self, tok: Token) -> A.Pos:
        return _tpos(tok)

    def top(self, t: Tree[Token] | Token) -> A.Expr:
        self.depth = 0
        self.ops = 0
        return self.expr(t)

    def count(self, *tokens: Token) -> None:
        """Count operations (one per token given); refuse at the one beyond the limit."""
        before = self.ops
        self.ops += len(tokens)
        if self.ops > MAX_OPERATIONS:
            raise _Fail(
                _tpos(tokens[MAX_OPERATIONS - before]),
                f"expression too long (more than {MAX_OPERATIONS:,} operations): split it with LET",
            )

    # ------------------------------------------------------------------ statements

    def statements(self, tree: Tree[Token]) -> list[A.Statement]:
        out: list[A.Statement] = []
        for st in _k(tree):
            assert isinstance(st, Tree)
            out.append(getattr(self, "s_" + str(st.data))(st))
        return out

    def s_let_stmt(self, t: Tree[Token]) -> A.Let:
        kw, ref, _, expr, *rest = _k(t)
        unit = ""
        if rest and isinstance(rest[0], Tree):
            s = self.string(_k(rest[0])[1])
            if s.plain is None:
                raise _Fail(s.pos, "a UNIT cannot interpolate values")
            unit = s.plain
        assert isinstance(kw, Token)
        return A.Let(self.ref(ref), self.top(expr), unit, self.pos(kw), self.file)

    def s_every_rule(self, t: Tree[Token]) -> A.Rule:
        kw, dur, _, actions = _k(t)
        assert isinstance(kw, Token)
        return A.Rule(
            None,
            "every",
            every=self.duration(dur),
            then=self.actions(actions),
            pos=self.pos(kw),
            file=self.file,
        )

    def s_on_rule(self, t: Tree[Token]) -> A.Rule:
        kw = _k(t)[0]
        assert isinstance(kw, Token)
        rule = A.Rule(None, "on", when=self.top(_k(t)[1]), pos=self.pos(kw), file=self.file)
        for ch in _k(t)[2:]:
            if isinstance(ch, Tree):
                if ch.data == "for_part":
                    rule.hold = self.duration(_k(ch)[1])
                elif ch.data == "clear_part":
                    rule.clear = self.top(_k(ch)[1])
                elif ch.data == "else_part":
                    rule.orelse = self.actions(_k(ch)[1])
                elif ch.data == "actions":
                    rule.then = self.actions(ch)
        return rule

    def s_rule_block(self, t: Tree[Token]) -> A.Rule:
        kw, name = _k(t)[0], _k(t)[1]
        assert isinstance(kw, Token)
        assert isinstance(name, Token)
        rule = A.Rule(str(name), "on", pos=self.pos(name), file=self.file)
        seen: dict[str, A.Pos] = {}
        for cl in _k(t)[2:-1]:
            assert isinstance(cl, Tree)
            ckw = _k(cl)[0]
            assert isinstance(ckw, Token)
            kind = str(cl.data)[2:]
            p = self.pos(ckw)
            if kind in seen:
                raise _Fail(p, f"{kind.upper()} given twice in RULE {name} (first at line {seen[kind].line})")
            seen[kind] = p
            val = _k(cl)[1]
            if kind == "on":
                rule.when = self.top(val)
            elif kind == "for":
                rule.hold = self.duration(val)
            elif kind == "clear":
                rule.clear = self.top(val)
            elif kind == "then":
                rule.then = self.actions(val)
            elif kind == "else":
                rule.orelse = self.actions(val)
            elif kind == "every":
                rule.every = self.duration(val)
                rule.kind = "every"
        npos = self.pos(name)
        if "on" in seen and "every" in seen:
            raise _Fail(seen["every"], f"RULE {name} has both ON and EVERY: use one (or two rules)")
        if "on" not in seen and "every" not in seen:
            raise _Fail(npos, f"RULE {name} needs an ON condition or an EVERY period")
        if "then" not in seen:
            raise _Fail(npos, f"RULE {name} has no THEN actions")
        if "every" in seen:
            for bad in ("for", "clear", "else"):
                if bad in seen:
                    raise _Fail(seen[bad], f"{bad.upper()} has no meaning in an EVERY rule")
        return rule

    def actions(self, t: Tree[Token]) -> tuple[A.Call, ...]:
        out = []
        for ch in _k(t):
            if isinstance(ch, Tree):
                c = self.top(ch)
                assert isinstance(c, A.Call)
                out.append(c)
        return tuple(out)

    # ------------------------------------------------------------------ expressions

    def duration(self, t: Tree[Token]) -> A.Dur:
        tok = _k(t)[0]
        assert isinstance(tok, Token)
        text = str(tok)
        m = _DUR_RE.match(text)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in UNITS:
            raise _Fail(self.pos(tok), _bad_duration(text))
        return A.Dur(float(m.group(1)) * UNITS[unit], text, self.pos(tok))

    def ref(self, t: Tree[Token]) -> A.Ref:
        dev, _, pt = _k(t)
        assert isinstance(dev, Token)
        assert isinstance(pt, Token)
        p = self.pos(dev)
        return A.Ref(str(dev), str(pt), A.Pos(p.line, p.col, len(dev) + 1 + len(pt)))

    def expr(self, t: Tree[Token] | Token) -> A.Expr:
        if isinstance(t, Token):  # pragma: no cover - every atom is wrapped in a rule
            raise _Fail(self.pos(t), f"unexpected '{t}'")
        if t.data in _LEAVES:
            return self._expr(t)
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                tok = _first_token(t)
                raise _Fail(
                    _tpos(tok) if tok is not None else A.Pos(1, 1),
                    f"expression nested too deeply (more than {MAX_NESTING} levels): split it with LET",
                )
            return self._expr(t)
        finally:
            self.depth -= 1

    def _expr(self, t: Tree[Token]) -> A.Expr:
        d = str(t.data)
        ch = _k(t)
        if d == "number":
            tok = ch[0]
            assert isinstance(tok, Token)
            s = str(tok)
            # an integer is kept exact (a set() constant for a 64-bit point); beyond 20 digits, and
            # for decimals, it is a float64 (the rule language's number model)
            val: float | int = int(s) if s.isdigit() and len(s) <= 20 else float(s)
            if isinstance(val, float) and (val != val or val in (float("inf"), float("-inf"))):
                shown = s if len(s) <= 24 else s[:20] + "…"
                raise _Fail(self.pos(tok), f"number {shown} is out of range (float64: about ±1.8e308)")
            return A.Num(val, self.pos(tok))
        if d == "duration":
            return self.duration(t)
        if d in ("true", "false"):
            tok = ch[0]
            assert isinstance(tok, Token)
            return A.Bool(d == "true", self.pos(tok))
        if d == "string":
            return self.string(ch[0])
        if d == "name":
            tok = ch[0]
            assert isinstance(tok, Token)
            return A.Name(str(tok), self.pos(tok))
        if d == "ref":
            return self.ref(t)
        if d == "atom":  # ( expr )
            return self.expr(ch[1])
        if d == "neg":
            tok = ch[0]
            assert isinstance(tok, Token)
            inner = self.expr(ch[1])
            if isinstance(inner, A.Num):
                return A.Num(-inner.value, self.pos(tok))
            self.count(tok)
            return A.Unary("-", inner, self.pos(tok))
        if d == "not_":
            tok = ch[0]
            assert isinstance(tok, Token)
            self.count(tok)
            return A.Unary("not", self.expr(ch[1]), self.pos(tok))
        if d in _CHAINS:
            ops_tok = [op for op in ch[1::2] if isinstance(op, Token)]
            self.count(*ops_tok)
            operands = tuple(self.expr(x) for x in ch[0::2])
            ops = tuple(_OPS.get(str(op).lower(), str(op).lower()) for op in ops_tok)
            op_pos = tuple(self.pos(op) for op in ops_tok)
            return A.Chain(operands, ops, op_pos, op_pos[0])
        if d == "comparison":
            op = ch[1]
            assert isinstance(op, Token)
            self.count(op)
            o = _OPS.get(str(op), str(op))
            return A.Binary(o, self.expr(ch[0]), self.expr(ch[2]), self.pos(op))
        if d == "call":
            name = ch[0]
            assert isinstance(name, Token)
            self.count(name)
            args: list[A.Expr] = []
            kwargs: list[A.Kwarg] = []
            for a in ch[2:-1]:
                if a is None or isinstance(a, Token):
                    continue
                if a.data == "kwarg":
                    k = _k(a)[0]
                    assert isinstance(k, Token)
                    kwargs.append(A.Kwarg(str(k).lower(), self.expr(_k(a)[2]), self.pos(k)))
                else:
                    if kwargs:
                        raise _Fail(self.expr(a).pos, "a plain argument cannot follow a name=value argument")
                    args.append(self.expr(a))
            return A.Call(str(name).lower(), tuple(args), tuple(kwargs), self.pos(name))
        raise _Fail(A.Pos(1, 1), f"internal: unknown node {d}")  # pragma: no cover

    def string(self, tok: Token) -> A.Str:
        """Decode escapes and split `{expr}` / `{expr:spec}` interpolations (parsed as expressions,
        with their positions in the file, one level deeper than the string)."""
        raw = str(tok)[1:-1]
        base = self.pos(tok)
        if len(raw) > MAX_STRING:  # (the splitter refuses it first; for strings built otherwise)
            raise _Fail(base, f"a string of {len(raw):,} characters; a string holds at most {MAX_STRING:,}")
        parts: list[str | A.Part] = []
        buf: list[str] = []
        i = 0
        n = len(raw)
        while i < n:
            c = raw[i]
            if c == "\\" and i + 1 < n:
                e = raw[i + 1]
                if e not in _ESCAPES:
                    raise _Fail(A.Pos(base.line, base.col + 1 + i, 2), f"unknown escape '\\{e}' in a string")
                buf.append(_ESCAPES[e])
                i += 2
                continue
            if c == "}" and raw[i + 1 : i + 2] == "}":
                buf.append("}")
                i += 2
                continue
            if c == "{":
                if raw[i + 1 : i + 2] == "{":
                    buf.append("{")
                    i += 2
                    continue
                close = raw.find("}", i + 1)
                if close < 0:
                    raise _Fail(
                        A.Pos(base.line, base.col + 1 + i), "'{' without its '}' (write {{ for a brace)"
                    )
                inner = raw[i + 1 : close]
                spec = ""
                if ":" in inner:
                    inner, spec = inner.split(":", 1)
                col = base.col + 1 + i + 1
                if not inner.strip():
                    raise _Fail(
                        A.Pos(base.line, col - 1, 2),
                        "empty '{}' in a string: put a value in it, like {boiler.temp}",
                    )
                try:
                    tree = _parser().parse(inner, start="expr")
                except lark.exceptions.UnexpectedInput as exc:
                    err = _syntax(exc, inner)
                    if err.message.startswith("unexpected end of file"):
                        err = _Syntax(1, len(inner) + 1, "the expression in {…} is incomplete")
                    raise _Fail(A.Pos(base.line, col + err.col - 1, err.length), err.message) from None
                self.count(tok)
                self.depth += 1
                try:
                    expr = self.expr(tree)
                except _Fail as f:  # its position is in `inner`: move it to its place in the file
                    raise _Fail(
                        A.Pos(base.line, col + f.pos.col - 1, f.pos.length), f.message, f.suggestion
                    ) from None
                finally:
                    self.depth -= 1
                expr = _shift(expr, base.line, col - 1)
                if buf:
                    parts.append("".join(buf))
                    buf = []
                parts.append(A.Part(expr, spec))
                i = close + 1
                continue
            buf.append(c)
            i += 1
        if buf or not parts:
            parts.append("".join(buf))
        return A.Str(tuple(parts), base)


def _shift(e: A.Expr, line: int, dcol: int) -> A.Expr:
    """Move an expression parsed from inside a string to its place in the file (recursive: the
    builder has bounded its depth)."""

    def p(x: A.Pos) -> A.Pos:
        return A.Pos(line, x.col + dcol, x.length)

    if isinstance(e, A.Unary):
        return A.Unary(e.op, _shift(e.operand, line, dcol), p(e.pos))
    if isinstance(e, A.Binary):
        return A.Binary(e.op, _shift(e.left, line, dcol), _shift(e.right, line, dcol), p(e.pos))
    if isinstance(e, A.Chain):
        return A.Chain(
            tuple(_shift(x, line, dcol) for x in e.operands), e.ops, tuple(p(x) for x in e.op_pos), p(e.pos)
        )
    if isinstance(e, A.Call):
        return A.Call(
            e.func,
            tuple(_shift(a, line, dcol) for a in e.args),
            tuple(A.Kwarg(k.name, _shift(k.value, line, dcol), p(k.pos)) for k in e.kwargs),
            p(e.pos),
        )
    if isinstance(e, A.Str):
        return A.Str(e.parts, p(e.pos))
    return dataclasses.replace(e, pos=p(e.pos))


class _Syntax:
    def __init__(self, line: int, col: int, message: str, length: int = 1) -> None:
        self.line, self.col, self.message, self.length = line, col, message, length


def _expected(exc: lark.exceptions.UnexpectedToken) -> str:
    expected = sorted({FRIENDLY.get(t, t) for t in exc.expected if t in FRIENDLY})
    return ", ".join(expected[:8]) + (", …" if len(expected) > 8 else "")


def _syntax(exc: lark.exceptions.UnexpectedInput, text: str) -> _Syntax:
    """A lark error → position and an operator's message (`text`: what was lexed, for the
    character at fault and for the end of the text)."""
    line = exc.line if isinstance(exc.line, int) and exc.line > 0 else text.count("\n") + 1
    col = exc.column if isinstance(exc.column, int) and exc.column > 0 else 1
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        at = exc.pos_in_stream if isinstance(exc.pos_in_stream, int) else -1
        ch = text[at] if 0 <= at < len(text) else "?"
        if ch in "\"'":
            return _Syntax(line, col, "string not closed on this line")
        if ch == "{" or ch == "}":
            return _Syntax(line, col, f"unexpected '{ch}' (interpolation works only inside a string)")
        before, after = (text[max(0, at - 64) : at], text[at : at + 16]) if at >= 0 else ("", ch)
        return _Syntax(line, col, _odd_character(ch, before, after))
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        tok = exc.token
        exp = _expected(exc)
        if tok.type == "$END":
            lines = text.rstrip().split("\n")
            line, col = len(lines), len(lines[-1]) + 1
            if "END" in exc.expected:
                return _Syntax(line, col, "unexpected end of file: a RULE block is not closed with END")
            return _Syntax(line, col, f"unexpected end of file; expected {exp}")
        return _unexpected(tok, exc, line, col)
    return _Syntax(line, col, str(exc).splitlines()[0] if str(exc) else "syntax error")  # pragma: no cover


_LOOKALIKES = {
    "\u00a0": "a non-breaking space (U+00A0, often pasted from Word or a web page): delete it and type "
    "an ordinary space",
    "\u202f": "a narrow non-breaking space (U+202F, often pasted from Word or a web page): delete it and "
    "type an ordinary space",
    "\u2007": "a figure space (U+2007, pasted from a document): delete it and type an ordinary space",
    "\u2009": "a thin space (U+2009, pasted from a document): delete it and type an ordinary space",
    "\u200b": "an invisible zero-width space (U+200B, pasted from a document) at the caret: delete it",
    "\u3000": "a wide space (U+3000): delete it and type an ordinary space",
    "\u201c": "a typographic quote '\u201c': type a straight quote \" instead",
    "\u201d": "a typographic quote '\u201d': type a straight quote \" instead",
    "\u201e": "a typographic quote '\u201e': type a straight quote \" instead",
    "\u00ab": "a typographic quote '\u00ab': type a straight quote \" instead",
    "\u00bb": "a typographic quote '\u00bb': type a straight quote \" instead",
    "\u2018": "a typographic quote '\u2018': type a straight quote ' instead",
    "\u2019": "a typographic quote '\u2019': type a straight quote ' instead",
    "\u2265": "'\u2265' is written >= in rules",
    "\u2264": "'\u2264' is written <= in rules",
    "\u2260": "'\u2260' is written != in rules",
    "\u2212": "'\u2212' (a typographic minus) is written - in rules",
    "\u2013": "'\u2013' (a dash) is written - in rules",
    "\u2014": "'\u2014' (a dash) is written - in rules",
    "\u00d7": "'\u00d7' is written * in rules",
    "\u00f7": "'\u00f7' is written / in rules",
    "\u2192": "'\u2192' is not an operator: a rule is written ON condition THEN actions",
}
_NUMBER_BEFORE = re.compile(r"(\d+(?:\.\d+)?)\s*$")
_UNIT_AFTER = re.compile(r"\S[A-Za-z]*")


def _odd_character(ch: str, before: str, after: str) -> str:
    """What to type instead of a character the language does not have (`before`: the text up to
    it, `after`: from it on)."""
    known = _LOOKALIKES.get(ch)
    if known is not None:
        return known
    if ch in "\u00b0\u2030\u00b5":  # a unit after a number: 85°C, 85 °C
        number = _NUMBER_BEFORE.search(before)
        unit = _UNIT_AFTER.match(after)
        if number is not None and unit is not None:
            n, written = number.group(1), unit.group(0)
            return (
                f"a unit after a number: write {n}, not {n}{written} (a point's unit is set in gateway.yaml; "
                f'in a message, the unit goes inside the quotes: "{{boiler.temp}} {written}")'
            )
        return f"unexpected character {ch!r}: outside a string, only numbers, names and operators are written"
    return f"unexpected character {ch!r}"


_UNIT_WORDS = {
    **dict.fromkeys(("ms", "msec", "msecs", "millis", "millisecond", "milliseconds"), "ms"),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("d", "day", "days"), "d"),
}
_DURATION_PARTS = re.compile(r"^(\d+(?:\.\d+)?)([A-Za-z_]\w*)$")


def _bad_duration(text: str) -> str:
    """`10sec` → what to write instead."""
    m = _DURATION_PARTS.match(text)
    unit = _UNIT_WORDS.get(m.group(2).lower()) if m is not None else None
    if m is not None and unit is not None:
        return f"bad duration '{text}': write {m.group(1)}{unit} (units: ms, s, m, h, d)"
    return f"bad duration '{text}': write a number and ms, s, m, h or d (500ms, 10s, 5m, 1h)"


def _joined(tokens: list[Token]) -> str:
    """Tokens as an operator would write them: `boiler.temp`, `avg(boiler.temp, 5m)`."""
    out = ""
    prev: Token | None = None
    for t in tokens:
        tight = prev is not None and (
            prev.type in ("DOT", "LPAR") or t.type in ("DOT", "LPAR", "RPAR", "COMMA")
        )
        out += ("" if tight or prev is None else " ") + str(t)
        prev = t
    return out


_OPERAND_END = frozenset(
    ("AND", "OR", "NOT", "ON", "CLEAR", "THEN", "ELSE", "FOR", "LPAR", "COMMA", "ASSIGN")
)


def _operand(tokens: list[Token], start: int) -> list[Token]:
    """The operand that starts at `start`: a number, a name, `device.point`, or a call with its
    parentheses."""
    if start >= len(tokens):
        return []
    end = start + 1
    if end + 1 < len(tokens) and tokens[end].type == "DOT":
        end += 2
    elif end < len(tokens) and tokens[end].type == "LPAR":
        depth = 0
        while end < len(tokens):
            depth += {"LPAR": 1, "RPAR": -1}.get(tokens[end].type, 0)
            end += 1
            if depth == 0:
                break
    return tokens[start:end]


def _chained(tokens: list[Token], at: int) -> str | None:
    """`80 < t < 90`: the comparison at `at` follows another one in the same operand."""
    depth = 0
    i = at - 1
    first: int | None = None
    while i >= 0:
        t = tokens[i]
        if t.type == "RPAR":
            depth += 1
        elif t.type == "LPAR" and depth:
            depth -= 1
        elif depth == 0 and t.type in _OPERAND_END:
            break
        elif depth == 0 and t.type == "COMP" and first is None:
            first = i
        i -= 1
    if first is None:
        return None
    left, middle = tokens[i + 1 : first], tokens[first + 1 : at]
    right = _operand(tokens, at + 1)
    if not left or not middle or not right:
        return None
    a, b, c = _joined(left), _joined(middle), _joined(right)
    return f"comparisons cannot be chained: write {a} {tokens[first]} {b} AND {b} {tokens[at]} {c}"


def _unexpected(
    tok: Token,
    exc: lark.exceptions.UnexpectedToken,
    line: int,
    col: int,
    tokens: list[Token] | None = None,
    at: int = -1,
) -> _Syntax:
    """An unexpected token (`tokens`: its statement's, `at`: its index there, when known)."""
    value = str(tok)
    length = max(len(value), 1)
    toks = tokens or []
    prev = toks[at - 1] if 0 < at <= len(toks) else None
    nxt = toks[at + 1] if 0 <= at < len(toks) - 1 else None
    if (
        tok.type == "COMMA"
        and prev is not None
        and prev.type == "NUMBER"
        and nxt is not None
        and nxt.type == "NUMBER"
        and prev.end_pos == tok.start_pos
        and tok.end_pos == nxt.start_pos
    ):
        return _Syntax(
            prev.line or line,
            prev.column or col,
            f"'{prev},{nxt}': a decimal number is written with a point: {prev}.{nxt}",
            len(prev) + 1 + len(nxt),
        )
    if tok.type == "ASSIGN":
        return _Syntax(line, col, "unexpected '=': compare with ==", length)
    if tok.type == "NAME" and at == 2 and toks[0].type == "RULE" and toks[1].type == "NAME":
        words = [str(toks[1])]
        for t in toks[2:]:
            if t.type != "NAME" or t.line != toks[1].line:
                break
            words.append(str(t))
        name = "_".join(words).lower()
        return _Syntax(
            toks[1].line or line,
            toks[1].column or col,
            f"a rule name is one word: write RULE {name} (letters, digits and '_', no spaces)",
            len(" ".join(words)),
        )
    if tok.type == "ON" and prev is not None and prev.type in ("COMMA", "LPAR", "COMP"):
        return _Syntax(line, col, "'on' is not a value in rules: write true (and false for off)", length)
    if tok.type == "COMP" and (chain := _chained(toks, at)) is not None:
        return _Syntax(line, col, chain, length)
    if tok.type == "NAME" and "THEN" in exc.expected:
        return _Syntax(line, col, f"unexpected '{value}': is THEN missing before the actions?", length)
    if tok.type == "BAD_DURATION":
        return _Syntax(line, col, _bad_duration(value), length)
    if tok.type == "NUMBER" and "DURATION" in exc.expected:
        unit = _UNIT_WORDS.get(str(nxt).lower()) if nxt is not None and nxt.type == "NAME" else None
        if nxt is not None and unit is not None:
            return _Syntax(
                line,
                col,
                f"a duration is written without a space: write {value}{unit}",
                (nxt.end_column or col + length) - col if nxt.line == tok.line else length,
            )
        return _Syntax(
            line, col, f"a duration needs its unit: write {value}s (or {value}ms, {value}m, {value}h)", length
        )
    return _Syntax(line, col, f"unexpected '{value}'; expected {_expected(exc)}", length)


# --------------------------------------------------------------------------- statements


_KEYWORD_STARTS = frozenset(("RULE", "LET", "EVERY", "ON"))
_NOT_A_START = frozenset(("DOT", "COMMA", "LPAR", "COMP"))
"""After these a keyword is a point's name (`pump.on`) or a value written by mistake (`set(x, on)`)."""


class _Lexed:
    """One statement's tokens, and the token that starts the next one (None at the end)."""

    __slots__ = ("next", "tokens")

    def __init__(self, tokens: list[Token], next_: Token | None) -> None:
        self.tokens = tokens
        self.next = next_


class _Splitter:
    """The file's tokens, lexed as a stream and cut into statements, with the limits on tokens
    checked on the way: no more than one statement's tokens are held at a time.

    A statement starts at RULE and LET, and at EVERY and ON outside a RULE block (after `.` they
    are point names).  After a lexing error the rest of the line is skipped and the statement it
    was in is dropped (one error per statement, as for syntax errors)."""

    def __init__(self, file: str, text: str, lines: list[str], errors: list[RuleError], budget: int) -> None:
        self.file, self.text, self.lines, self.errors = file, text, lines, errors
        self.budget = budget
        self.tokens = 0
        self.stopped = False

    def error(self, line: int, col: int, message: str, length: int = 1) -> None:
        self.errors.append(_error(self.file, self.lines, line, col, message, None, length))

    def statements(self) -> Iterator[_Lexed]:
        text = self.text
        cur: list[Token] = []
        broken = False  # the current statement had an error: its tokens are dropped
        in_block = False
        prev = ""
        pos = 0
        while not self.stopped:
            try:
                stream = _parser().lex(TextSlice(text, pos, len(text)) if pos else text)
                for tok in stream:
                    ty = tok.type
                    if prev not in _NOT_A_START and (
                        ty in ("RULE", "LET") or (ty in _KEYWORD_STARTS and not in_block)
                    ):
                        if cur and not broken:
                            yield _Lexed(cur, tok)
                        cur, broken = [], False
                        in_block = ty == "RULE"
                    elif ty == "END" and prev != "DOT":
                        in_block = False
                    prev = ty
                    if broken:
                        continue
                    problem = self.check(tok, cur)
                    if problem:
                        broken = True
                        if self.stopped:
                            return
                        continue
                    cur.append(tok)
                break
            except lark.exceptions.UnexpectedCharacters as exc:
                s = _syntax(exc, text)
                self.error(s.line, s.col, s.message, s.length)
                broken = True
                at = exc.pos_in_stream if isinstance(exc.pos_in_stream, int) else len(text)
                nl = text.find("\n", at)
                if nl < 0 or len(self.errors) >= _MAX_ERRORS:
                    break
                pos = nl + 1
                prev = ""
        if cur and not broken:
            yield _Lexed(cur, None)

    def check(self, tok: Token, cur: list[Token]) -> bool:
        """Refuse a token beyond a limit (True: the statement is dropped, its error recorded)."""
        self.tokens += 1
        line, col = tok.line or 1, tok.column or 1
        if self.tokens > self.budget:
            self.error(
                line,
                col,
                f"the rule files hold more than {MAX_TOKENS:,} tokens (words, numbers, operators) together: "
                "this is where the limit is passed (docs/rules.md, Limits)",
            )
            self.stopped = True
            return True
        n = len(tok)
        if tok.type == "STRING":
            if n - 2 > MAX_STRING:
                self.error(
                    line, col, f"a string of {n - 2:,} characters; a string holds at most {MAX_STRING:,}"
                )
                return True
        elif n > MAX_WORD:
            what = "number" if tok.type in ("NUMBER", "DURATION") else "name"
            self.error(line, col, f"a {what} of {n:,} characters; at most {MAX_WORD} are allowed")
            return True
        if len(cur) >= MAX_STATEMENT_TOKENS:
            first = cur[0]
            self.error(
                first.line or 1,
                first.column or 1,
                f"this statement has more than {MAX_STATEMENT_TOKENS:,} tokens (words, numbers, operators): "
                "split it into several rules or LETs",
                max(len(first), 1),
            )
            return True
        return False


def _parse_statement(lexed: _Lexed) -> Tree[Token]:
    """One statement's parse tree; raises lark's UnexpectedToken (no end of text yet: see
    _statement_error)."""
    ip = _parser().parse_interactive(start="start")
    for tok in lexed.tokens:
        ip.feed_token(tok)
    tree = ip.feed_token(Token.new_borrow_pos("$END", "", lexed.tokens[-1]))
    assert isinstance(tree, Tree)
    return tree


_EMPTY_CLAUSE = {
    "THEN": 'nothing after THEN: give the actions to run, like THEN alert("too hot")',
    "ELSE": "nothing after ELSE: give the actions to run when the rule clears, like "
    'ELSE log("back to normal"), or remove ELSE',
    "ON": "nothing after ON: give the condition, like ON boiler.temp > 85",
    "CLEAR": "nothing after CLEAR: give the condition that clears the rule, like CLEAR boiler.temp < 80, "
    "or remove CLEAR",
    "FOR": "nothing after FOR: give how long the condition must hold, like FOR 10s",
    "EVERY": "nothing after EVERY: give the period, like EVERY 1m",
}


def _statement_error(exc: lark.exceptions.UnexpectedToken, lexed: _Lexed) -> _Syntax:
    """A syntax error in one statement, worded for where it is: a statement cut short by the next
    one is reported at the next one's first token."""
    tok = exc.token
    tokens = lexed.tokens
    if tok.type != "$END":
        at = next((i for i, t in enumerate(tokens) if t is tok), -1)
        return _unexpected(tok, exc, tok.line or 1, tok.column or 1, tokens, at)
    last = tokens[-1]
    nxt = lexed.next
    empty = _EMPTY_CLAUSE.get(last.type)
    if empty is not None:
        return _Syntax(last.line or 1, last.column or 1, empty, max(len(last), 1))
    if nxt is None:
        line, col = last.end_line or last.line or 1, last.end_column or (last.column or 1) + len(last)
        if "END" in exc.expected:
            return _Syntax(line, col, "unexpected end of file: a RULE block is not closed with END")
        return _Syntax(line, col, f"unexpected end of file; expected {_expected(exc)}")
    line, col = nxt.line or 1, nxt.column or 1
    if "END" in exc.expected:
        return _Syntax(line, col, "the RULE block before this is not closed with END", max(len(nxt), 1))
    return _Syntax(line, col, f"unexpected '{nxt}'; expected {_expected(exc)}", max(len(nxt), 1))


class Parsed:
    """What parse_file found in one file."""

    __slots__ = ("errors", "statements", "tokens")

    def __init__(self, statements: list[A.Statement], errors: list[RuleError], tokens: int) -> None:
        self.statements = statements
        self.errors = errors
        self.tokens = tokens
        """Tokens read; more than the budget given when the budget stopped the parse."""


_CACHE: dict[tuple[str, str], Parsed] = {}
_CACHE_FILES = 256
_CACHE_CHARS = 8 << 20
_cached_chars = 0


def parse_file(file: str, text: str, budget: int = MAX_TOKENS) -> Parsed:
    """Every statement of a file, and every syntax error in it, reading at most `budget` tokens
    (what is left of MAX_TOKENS for the set).  An unchanged file is not parsed again (a reload
    after editing one file of many parses that one); the AST is not mutated later."""
    global _cached_chars
    if text.startswith("\ufeff"):  # a byte order mark some editors write
        text = text[1:]
    key = (file, text)
    hit = _CACHE.get(key)
    if hit is None or hit.tokens > budget:
        hit = _parse_file(file, text, budget)
        if key in _CACHE:
            _CACHE.pop(key)
            _cached_chars -= len(text)
        while _CACHE and (len(_CACHE) >= _CACHE_FILES or _cached_chars + len(text) > _CACHE_CHARS):
            old = next(iter(_CACHE))
            _CACHE.pop(old)
            _cached_chars -= len(old[1])
        if len(text) <= _CACHE_CHARS and hit.tokens <= budget:
            _CACHE[key] = hit
            _cached_chars += len(text)
    return Parsed(list(hit.statements), list(hit.errors), hit.tokens)


def _parse_file(file: str, text: str, budget: int) -> Parsed:
    lines = text.split("\n") if len(text) <= MAX_FILE_BYTES else []
    size = len(text) if len(text) > MAX_FILE_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        message = (
            f"the file is {size:,} bytes; a rule file may hold at most {MAX_FILE_BYTES:,} "
            f"({_limits.size(MAX_FILE_BYTES)}): split it into several files"
        )
        return Parsed([], [_error(file, lines, 1, 1, message, None)], 0)
    stmts: list[A.Statement] = []
    errors: list[RuleError] = []
    splitter = _Splitter(file, text, lines, errors, budget)
    builder = _Builder(file)
    for lexed in splitter.statements():
        if len(errors) >= _MAX_ERRORS:
            break
        if len(stmts) >= MAX_STATEMENTS:
            first = lexed.tokens[0]
            errors.append(
                _error(
                    file,
                    lines,
                    first.line or 1,
                    first.column or 1,
                    f"more than {MAX_STATEMENTS:,} rules and LETs: split the set (docs/rules.md, Limits)",
                    None,
                )
            )
            break
        try:
            stmts.extend(builder.statements(_parse_statement(lexed)))
        except lark.exceptions.UnexpectedToken as exc:
            s = _statement_error(exc, lexed)
            errors.append(_error(file, lines, s.line, s.col, s.message, None, s.length))
        except _Fail as f:
            errors.append(_error(file, lines, f.pos.line, f.pos.col, f.message, f.suggestion, f.pos.length))
    return Parsed(stmts, errors, splitter.tokens)


def _error(
    file: str, lines: list[str], line: int, col: int, message: str, suggestion: str | None, length: int = 1
) -> RuleError:
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    return RuleError(file, line, col, message, suggestion, src, max(length, 1))
