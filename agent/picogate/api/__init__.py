"""The gateway's local API (docs/api.md): JSON endpoints for devices, points, rules, alerts and
writes on the gateway's HTTP server, and the commands that use it, `picogate watch` and
`picogate write`.

The names below load on first use: `picogate --help` imports this package (for its commands) and
must not pay for aiohttp to print its help.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.api._cli import add_commands
    from picogate.api._model import (
        WriteLog,
        alerts_json,
        device_json,
        json_error,
        json_response,
        point_json,
        rules_json,
        write_json,
    )
    from picogate.api._server import API_PREFIX, STATUS_OF_CODE, Api, is_loopback

_WHERE = {
    "add_commands": "_cli",
    "WriteLog": "_model",
    "alerts_json": "_model",
    "device_json": "_model",
    "point_json": "_model",
    "rules_json": "_model",
    "write_json": "_model",
    "API_PREFIX": "_server",
    "STATUS_OF_CODE": "_server",
    "Api": "_server",
    "is_loopback": "_server",
    "json_error": "_model",
    "json_response": "_model",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "API_PREFIX",
    "STATUS_OF_CODE",
    "Api",
    "WriteLog",
    "add_commands",
    "alerts_json",
    "device_json",
    "is_loopback",
    "json_error",
    "json_response",
    "point_json",
    "rules_json",
    "write_json",
]
