"""compile_rules: parse, check against the points, generate code."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from picogate._model import PointInfo
from picogate.rules._ruleset import RuleSet


def compile_rules(files: Mapping[str, str], points: Iterable[PointInfo] | None) -> RuleSet:
    """Parse, check against the points, generate code.  Pure: plain data in and out (a worker
    process may run it).  `points` None skips the checks that need the gateway's points.
    Raises RuleErrors with every error of every file."""
    return RuleSet(files=sorted(files))
