"""Rule text → lark parse tree (with positions) → typed AST.  Syntax errors become RuleErrors;
after one, parsing resumes at the next statement so that a file reports all its errors."""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import lark
from lark import Token, Tree

from picogate.rules import _ast as A
from picogate.rules._errors import RuleError
from picogate.rules._grammar import FRIENDLY, GRAMMAR

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DUR_RE = re.compile(r"^(\d+(?:\.\d+)?)([a-z]+)$", re.I)
_STMT_START = re.compile(r"^\s*(rule|let|every|on|end)\b", re.I)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "{": "{", "}": "}"}  # \{ is a literal {
_MAX_ERRORS = 200


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


def _tpos(tok: Token, offset: int = 0) -> A.Pos:
    return A.Pos((tok.line or 1) + offset, tok.column or 1, max(len(str(tok)), 1))


class _Builder:
    """Parse tree → AST.  line_offset shifts positions of a chunk parsed on its own."""

    def __init__(self, file: str, line_offset: int) -> None:
        self.file = file
        self.off = line_offset

    def pos(self, tok: Token) -> A.Pos:
        return _tpos(tok, self.off)

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
        return A.Let(self.ref(ref), self.expr(expr), unit, self.pos(kw), self.file)

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
        rule = A.Rule(None, "on", when=self.expr(_k(t)[1]), pos=self.pos(kw), file=self.file)
        for ch in _k(t)[2:]:
            if isinstance(ch, Tree):
                if ch.data == "for_part":
                    rule.hold = self.duration(_k(ch)[1])
                elif ch.data == "clear_part":
                    rule.clear = self.expr(_k(ch)[1])
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
                rule.when = self.expr(val)
            elif kind == "for":
                rule.hold = self.duration(val)
            elif kind == "clear":
                rule.clear = self.expr(val)
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
                c = self.expr(ch)
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
            raise _Fail(
                self.pos(tok),
                f"bad duration '{text}': write a number and ms, s, m, h or d (500ms, 10s, 5m, 1h)",
            )
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
        d = str(t.data)
        ch = _k(t)
        if d == "number":
            tok = ch[0]
            assert isinstance(tok, Token)
            s = str(tok)
            val: float | int = int(s) if s.isdigit() else float(s)
            if (isinstance(val, float) and val != val) or val in (float("inf"), float("-inf")):
                raise _Fail(self.pos(tok), f"number {s} is out of range")
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
            return A.Unary("-", inner, self.pos(tok))
        if d == "not_":
            tok = ch[0]
            assert isinstance(tok, Token)
            return A.Unary("not", self.expr(ch[1]), self.pos(tok))
        if d in ("or_expr", "and_expr", "sum", "product", "comparison"):
            left = self.expr(ch[0])
            for i in range(1, len(ch), 2):
                op = ch[i]
                assert isinstance(op, Token)
                o = str(op).lower()
                o = {"&&": "and", "||": "or", "<>": "!="}.get(o, o)
                left = A.Binary(o, left, self.expr(ch[i + 1]), self.pos(op))
            return left
        if d == "call":
            name = ch[0]
            assert isinstance(name, Token)
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
        with their positions in the file)."""
        raw = str(tok)[1:-1]
        base = self.pos(tok)
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
                sub = _Builder(self.file, 0)
                expr = sub.expr(tree)
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
    """Move an expression parsed from inside a string to its place in the file."""

    def p(x: A.Pos) -> A.Pos:
        return A.Pos(line, x.col + dcol, x.length)

    if isinstance(e, A.Unary):
        return A.Unary(e.op, _shift(e.operand, line, dcol), p(e.pos))
    if isinstance(e, A.Binary):
        return A.Binary(e.op, _shift(e.left, line, dcol), _shift(e.right, line, dcol), p(e.pos))
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


def _syntax(exc: lark.exceptions.UnexpectedInput, text: str) -> _Syntax:
    """A lark error → position and an operator's message."""
    line = exc.line if isinstance(exc.line, int) and exc.line > 0 else text.count("\n") + 1
    col = exc.column if isinstance(exc.column, int) and exc.column > 0 else 1
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        at = exc.pos_in_stream if isinstance(exc.pos_in_stream, int) else -1
        ch = text[at] if 0 <= at < len(text) else "?"
        if ch in "\"'":
            return _Syntax(line, col, "string not closed on this line")
        if ch == "{" or ch == "}":
            return _Syntax(line, col, f"unexpected '{ch}' (interpolation works only inside a string)")
        return _Syntax(line, col, f"unexpected character {ch!r}")
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        tok = exc.token
        expected = sorted({FRIENDLY.get(t, t) for t in exc.expected if t in FRIENDLY})
        exp = ", ".join(expected[:8]) + (", …" if len(expected) > 8 else "")
        if tok.type == "$END":
            lines = text.rstrip().split("\n")
            line, col = len(lines), len(lines[-1]) + 1
            if "END" in exc.expected:
                return _Syntax(line, col, "unexpected end of file: a RULE block is not closed with END")
            return _Syntax(line, col, f"unexpected end of file; expected {exp}")
        value = str(tok)
        length = max(len(value), 1)
        if tok.type == "ASSIGN":
            return _Syntax(line, col, "unexpected '=': compare with ==", length)
        if tok.type == "NAME" and "THEN" in exc.expected:
            return _Syntax(line, col, f"unexpected '{value}': is THEN missing before the actions?", length)
        if tok.type == "BAD_DURATION":
            return _Syntax(
                line,
                col,
                f"bad duration '{value}': write a number and ms, s, m, h or d (500ms, 10s, 5m, 1h)",
                length,
            )
        return _Syntax(line, col, f"unexpected '{value}'; expected {exp}", length)
    return _Syntax(line, col, str(exc).splitlines()[0] if str(exc) else "syntax error")  # pragma: no cover


def _chunks(text: str) -> list[tuple[int, str]]:
    """Split a file at the lines that start a statement (outside RULE blocks), for recovery."""
    lines = text.split("\n")
    out: list[tuple[int, list[str]]] = []
    in_block = False
    for i, line in enumerate(lines):
        m = _STMT_START.match(line)
        word = m.group(1).lower() if m else ""
        start = word in ("rule", "let", "every") or (word == "on" and not in_block)
        if word == "rule":
            in_block = True
        elif word in ("let", "every"):
            in_block = False
        if start or not out:
            out.append((i, [line]))
        else:
            out[-1][1].append(line)
        if word == "end":
            in_block = False
    return [(i, "\n".join(ls)) for i, ls in out]


_CACHE: dict[tuple[str, str], tuple[list[A.Statement], list[RuleError]]] = {}
_CACHE_FILES = 256


def parse_file(file: str, text: str) -> tuple[list[A.Statement], list[RuleError]]:
    """Every statement of a file, and every syntax error in it.  An unchanged file is not parsed
    again (a reload after editing one file of many parses that one); the AST is not mutated later."""
    if text.startswith("\ufeff"):  # a byte order mark some editors write
        text = text[1:]
    key = (file, text)
    hit = _CACHE.get(key)
    if hit is None:
        hit = _parse_file(file, text)
        if len(_CACHE) >= _CACHE_FILES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = hit
    return list(hit[0]), list(hit[1])


def _parse_file(file: str, text: str) -> tuple[list[A.Statement], list[RuleError]]:
    lines = text.split("\n")
    try:
        tree = _parser().parse(text, start="start")
        return _Builder(file, 0).statements(tree), []
    except (lark.exceptions.UnexpectedInput, _Fail, RecursionError):
        pass
    stmts: list[A.Statement] = []
    errors: list[RuleError] = []
    for start, chunk in _chunks(text):
        if not chunk.strip() or len(errors) >= _MAX_ERRORS:
            continue
        try:
            tree = _parser().parse(chunk, start="start")
            stmts.extend(_Builder(file, start).statements(tree))
        except lark.exceptions.UnexpectedInput as exc:
            s = _syntax(exc, chunk)
            errors.append(_error(file, lines, s.line + start, s.col, s.message, None, s.length))
        except _Fail as f:
            errors.append(_error(file, lines, f.pos.line, f.pos.col, f.message, f.suggestion, f.pos.length))
        except RecursionError:
            errors.append(_error(file, lines, start + 1, 1, "statement nested too deeply", None))
    return stmts, errors


def _error(
    file: str, lines: list[str], line: int, col: int, message: str, suggestion: str | None, length: int = 1
) -> RuleError:
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    return RuleError(file, line, col, message, suggestion, src, max(length, 1))
