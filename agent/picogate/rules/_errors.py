"""Errors in rule files: every one carries file, line, column and the source line."""

from __future__ import annotations

from dataclasses import dataclass

from picogate._errors import PicogateError

_SHOWN = 160
"""Characters of a long source line shown around the fault."""


@dataclass(frozen=True, slots=True)
class RuleError:
    """One error (or, with level "warning", a warning) in one rule file.  line and col are
    1-based; length is how many characters the caret underlines (at least 1)."""

    file: str
    line: int
    col: int
    message: str
    suggestion: str | None
    source_line: str
    length: int = 1
    level: str = "error"

    def format(self) -> str:
        """`file:line:col: error: message`, the source line and a caret under the fault (a line
        longer than 160 characters is shown around the fault, cut with "…"; nothing for an
        empty line, or an error about the file as a whole)."""
        head = f"{self.file}:{self.line}:{self.col}: {self.level}: {self.message}"
        if self.suggestion:
            head += f" (did you mean {self.suggestion}?)"
        if not self.source_line.strip():  # about the file as a whole (it could not be read, ...)
            return head
        line = self.source_line.rstrip("\r\n").expandtabs(1)
        col, length = max(self.col, 1), max(self.length, 1)
        if len(line) > _SHOWN:
            start = max(0, min(col - 1 - _SHOWN // 3, len(line) - _SHOWN))
            before = "…" if start else ""
            after = "…" if start + _SHOWN < len(line) else ""
            line = before + line[start : start + _SHOWN] + after
            col = col - start + len(before)
            length = max(1, min(length, _SHOWN + len(before) - col + 1))
        caret = " " * (col - 1) + "^" + "~" * (length - 1)
        return f"{head}\n  {line}\n  {caret}"


class RuleErrors(PicogateError):
    """Every error of every rule file, in file/line order (and the warnings found meanwhile)."""

    def __init__(self, errors: list[RuleError], warnings: list[RuleError] | None = None) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.col))
        self.warnings = sorted(warnings or [], key=lambda e: (e.file, e.line, e.col))
        super().__init__("\n".join(e.format() for e in self.errors) or "no errors")
        if self.errors:
            first = self.errors[0]
            self.where = f"{first.file}:{first.line}:{first.col}"
