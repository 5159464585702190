"""Sparkplug B: the gateway as a Sparkplug 3.0 Edge Node (docs/sparkplug.md): births and deaths,
DDATA by exception with seq and aliases, NCMD rebirth, DCMD writes through the command router, the
primary host's STATE, store and forward with `is_historical`.

The runtime (the session, the sink, the payload codec) loads on first use (it imports protobuf): a
gateway without a `sparkplug:` section does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from picogate.sparkplug._attach import PLUGIN
from picogate.sparkplug._config import ServerSection, SparkplugSection

if TYPE_CHECKING:
    from picogate.sparkplug._payload import SparkplugPayloadError
    from picogate.sparkplug._session import EdgeSession, NodeMetric
    from picogate.sparkplug._sink import BdSeqStore, SparkplugEncoder, SparkplugSink

_WHERE = {
    "SparkplugPayloadError": "_payload",
    "EdgeSession": "_session",
    "NodeMetric": "_session",
    "BdSeqStore": "_sink",
    "SparkplugEncoder": "_sink",
    "SparkplugSink": "_sink",
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
    "BdSeqStore",
    "EdgeSession",
    "NodeMetric",
    "ServerSection",
    "SparkplugEncoder",
    "SparkplugPayloadError",
    "SparkplugSection",
    "SparkplugSink",
]
