"""The rule language: parse, check, compile and run operators' rules (docs/rules.md).

The names below load on first use: `picogate --help` imports this package (for `picogate rules`)
and must not pay for the compiler (lark) to print its help.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.rules._attach import PLUGIN
    from picogate.rules._cli import add_commands, read_replay
    from picogate.rules._compile import compile_rules
    from picogate.rules._engine import Actions, Prepared, RuleEngine
    from picogate.rules._errors import RuleError, RuleErrors
    from picogate.rules._live import LiveRules, live_rules
    from picogate.rules._replay import ReplayLine, replay
    from picogate.rules._ruleset import RuleInfo, RuleSet

_WHERE = {
    "PLUGIN": "_attach",
    "add_commands": "_cli",
    "live_rules": "_live",
    "LiveRules": "_live",
    "compile_rules": "_compile",
    "Actions": "_engine",
    "Prepared": "_engine",
    "RuleEngine": "_engine",
    "RuleError": "_errors",
    "RuleErrors": "_errors",
    "RuleInfo": "_ruleset",
    "RuleSet": "_ruleset",
    "ReplayLine": "_replay",
    "replay": "_replay",
    "read_replay": "_cli",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "PLUGIN",
    "Actions",
    "LiveRules",
    "Prepared",
    "ReplayLine",
    "RuleEngine",
    "RuleError",
    "RuleErrors",
    "RuleInfo",
    "RuleSet",
    "add_commands",
    "compile_rules",
    "live_rules",
    "read_replay",
    "replay",
]
