"""The operator console (docs/console.md): pages, alarms, trends, the rule editor and users, served
by the gateway on its local HTTP server next to the local API; and `picogate users`.

The names below load on first use: `picogate --help` imports this package (for `picogate users`)
and must not pay for aiohttp or argon2 to print its help.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.console._attach import PLUGIN, ConsoleSetupError
    from picogate.console._cli import add_commands
    from picogate.console._config import ConsoleSection
    from picogate.console._users import Role, User, Users, UsersError

_WHERE = {
    "PLUGIN": "_attach",
    "ConsoleSetupError": "_attach",
    "add_commands": "_cli",
    "ConsoleSection": "_config",
    "Role": "_users",
    "User": "_users",
    "Users": "_users",
    "UsersError": "_users",
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
    "ConsoleSection",
    "ConsoleSetupError",
    "Role",
    "User",
    "Users",
    "UsersError",
    "add_commands",
]
