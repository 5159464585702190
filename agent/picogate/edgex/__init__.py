"""EdgeX Foundry (docs/edgex.md): the plug-in (encoder and sinks, registration, commands, the
device-service API) and `picogate edgex profiles`.

The names below load on first use: `picogate --help` imports this package (for `picogate edgex`)
and must not pay for aiohttp and the gateway's core to print its help.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.edgex._attach import PLUGIN
    from picogate.edgex._cli import add_commands, profiles_of
    from picogate.edgex._config import EdgexSection

_WHERE = {
    "PLUGIN": "_attach",
    "EdgexSection": "_config",
    "add_commands": "_cli",
    "profiles_of": "_cli",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["PLUGIN", "EdgexSection", "add_commands", "profiles_of"]
