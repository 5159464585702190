"""The compiled form of a set of rule files: plain data, picklable (it may cross a process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from picogate._model import PointInfo
from picogate.rules._errors import RuleError


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What the gateway needs to know of one rule (or LET)."""

    id: str  # the RULE name, "anon-<hash of the normalized text>", or the LET's device.point
    kind: str  # "on" | "every" | "let"
    file: str
    line: int
    text_hash: str  # hash of the normalized text: unchanged => state kept across a reload
    points: tuple[str, ...]  # device.point keys it references
    text: str = ""  # the rule as written in its file (its lines, without trailing comments and blanks)


@dataclass(slots=True)
class RuleSet:
    """Rules compiled to Python source generated from the AST (never from operator text).

    `source` is the generated code; `consts` holds every string of the operator's text, which the
    generated code reads by name (C<hash>), so no operator text is ever part of the source.  `plan` is what the engine needs to wire it up (see _engine.py).  `code` is
    the source already compiled (marshal bytes: picklable), so that the expensive step can run in
    a worker process and the swap stays short.
    """

    version: str = ""
    files: list[str] = field(default_factory=list)
    rules: list[RuleInfo] = field(default_factory=list)
    lets: list[PointInfo] = field(default_factory=list)
    source: str = ""
    consts: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    code: bytes = b""  # `source` compiled (a tuple of code objects, one per function) and marshalled
    python: str = ""  # sys.implementation.cache_tag of the Python that compiled `code`
    warnings: list[RuleError] = field(default_factory=list)
    """What `rules check` warns about (ON and CLEAR that can both be true): the set loads."""
