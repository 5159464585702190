"""The rule language: parse, check, compile and run operators' rules (docs/rules.md)."""

from picogate.rules._compile import compile_rules
from picogate.rules._engine import Actions, Prepared, RuleEngine
from picogate.rules._errors import RuleError, RuleErrors
from picogate.rules._ruleset import RuleInfo, RuleSet

__all__ = [
    "Actions",
    "Prepared",
    "RuleEngine",
    "RuleError",
    "RuleErrors",
    "RuleInfo",
    "RuleSet",
    "compile_rules",
]
