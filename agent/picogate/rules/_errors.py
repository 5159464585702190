"""Errors in rule files: every one carries file, line, column and the source line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuleError:
    """One error in one rule file.  line and col are 1-based; length is how many characters the
    caret underlines (at least 1)."""

    file: str
    line: int
    col: int
    message: str
    suggestion: str | None
    source_line: str
    length: int = 1

    def format(self) -> str:
        """`file:line:col: error: message`, the source line and a caret under the fault."""
        head = f"{self.file}:{self.line}:{self.col}: error: {self.message}"
        if self.suggestion:
            head += f" (did you mean {self.suggestion}?)"
        line = self.source_line.rstrip("\r\n").expandtabs(1)
        caret = " " * max(self.col - 1, 0) + "^" + "~" * max(self.length - 1, 0)
        return f"{head}\n  {line}\n  {caret}"


class RuleErrors(Exception):
    """Every error of every rule file, in file/line order."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.col))
        super().__init__("\n".join(e.format() for e in self.errors) or "no errors")
