"""CoAP: the server nodes report to, and the client that reads devices serving CoAP (docs/coap.md).

The server and the client load on first use (they import aiocoap): a gateway without a `coap:`
section does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from picogate.coap._attach import PLUGIN
from picogate.coap._config import CoapSection

if TYPE_CHECKING:
    from picogate.coap._client import CoapClientSource
    from picogate.coap._once import CoapDeviceReading, CoapPointReading, read_once
    from picogate.coap._server import CoapServer

_WHERE = {
    "CoapClientSource": "_client",
    "CoapServer": "_server",
    "CoapDeviceReading": "_once",
    "CoapPointReading": "_once",
    "read_once": "_once",
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
    "CoapClientSource",
    "CoapDeviceReading",
    "CoapPointReading",
    "CoapSection",
    "CoapServer",
    "read_once",
]
