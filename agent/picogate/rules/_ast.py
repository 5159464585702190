"""The typed AST of the rule language.  Every node carries its position (1-based line and column,
and the length of the text it covers on that line, for the caret)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Pos:
    line: int
    col: int
    length: int = 1


@dataclass(frozen=True, slots=True)
class Num:
    value: float | int
    pos: Pos


@dataclass(frozen=True, slots=True)
class Dur:
    """A duration literal; as a value it is a number of seconds."""

    seconds: float
    text: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class Part:
    """One `{expr}` or `{expr:spec}` inside a string."""

    expr: Expr
    spec: str


@dataclass(frozen=True, slots=True)
class Str:
    """A string literal: text pieces and interpolations, in order."""

    parts: tuple[str | Part, ...]
    pos: Pos

    @property
    def plain(self) -> str | None:
        """The text when there is no interpolation, else None."""
        if all(isinstance(p, str) for p in self.parts):
            return "".join(p for p in self.parts if isinstance(p, str))
        return None


@dataclass(frozen=True, slots=True)
class Name:
    """A bare name (not valid as a value: the checker says so)."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Ref:
    device: str
    point: str
    pos: Pos

    @property
    def key(self) -> str:
        return f"{self.device}.{self.point}"


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" | "not"
    operand: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # == != < <= > >=
    left: Expr
    right: Expr
    pos: Pos  # of the operator


@dataclass(frozen=True, slots=True)
class Chain:
    """Operands joined left to right by operators of one level: `a + b - c`, `a * b / c`,
    `a AND b AND c`, `a OR b` (never comparisons: one per level).  `ops[i]` (at `op_pos[i]`) is the
    operator between `operands[i]` and `operands[i + 1]`; the value is that of
    `((a op b) op c) …`.  One node rather than a left-leaning tree of Binary nodes, so that a long
    sum is one level of nesting, not one per term."""

    operands: tuple[Expr, ...]  # at least two
    ops: tuple[str, ...]  # + - * / % and or
    op_pos: tuple[Pos, ...]
    pos: Pos  # of the first operator


@dataclass(frozen=True, slots=True)
class Kwarg:
    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Call:
    func: str  # lower-case
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]
    pos: Pos  # of the function name


Expr = Num | Dur | Bool | Str | Name | Ref | Unary | Binary | Chain | Call


@dataclass(frozen=True, slots=True)
class Clause:
    """One clause of a rule as written: ON/FOR/CLEAR/THEN/ELSE/EVERY (checked for order and
    repetition by the checker)."""

    kind: str
    value: object  # Expr, Dur or tuple[Call, ...]
    pos: Pos


@dataclass(slots=True)
class Rule:
    name: str | None  # RULE name, None for a one-line rule
    kind: str  # "on" | "every"
    when: Expr | None = None  # ON
    hold: Dur | None = None  # FOR
    clear: Expr | None = None  # CLEAR
    then: tuple[Call, ...] = ()
    orelse: tuple[Call, ...] = ()
    every: Dur | None = None
    pos: Pos = field(default_factory=lambda: Pos(1, 1))
    file: str = ""


@dataclass(slots=True)
class Let:
    target: Ref
    expr: Expr
    unit: str = ""
    pos: Pos = field(default_factory=lambda: Pos(1, 1))
    file: str = ""


Statement = Rule | Let
