"""The gateway's own I/O through Adafruit Blinka: GPIO, PWM, I²C sensors and DS18B20s on the
header of the Linux board the gateway runs on (docs/local-io.md).

The source loads on first use (it runs Blinka): a gateway without a `local:` section does not pay
for it, and runs without Blinka installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from picogate.local._attach import PLUGIN, problems
from picogate.local._config import LocalIo, LocalSection
from picogate.local._hw import INSTALL, LocalError
from picogate.local._points import BoardPins, check_pins

if TYPE_CHECKING:
    from picogate.local._source import LocalIoSource

_WHERE = {"LocalIoSource": "_source"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "INSTALL",
    "PLUGIN",
    "BoardPins",
    "LocalError",
    "LocalIo",
    "LocalIoSource",
    "LocalSection",
    "check_pins",
    "problems",
]
