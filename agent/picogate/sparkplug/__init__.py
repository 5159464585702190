"""Sparkplug B: the gateway as a Sparkplug 3.0 Edge Node (docs/sparkplug.md): births and deaths,
DDATA by exception with seq and aliases, NCMD rebirth, DCMD writes through the command router, the
primary host's STATE, store and forward with `is_historical`."""

from picogate.sparkplug._attach import PLUGIN
from picogate.sparkplug._config import ServerSection, SparkplugSection
from picogate.sparkplug._payload import SparkplugPayloadError
from picogate.sparkplug._session import EdgeSession, NodeMetric
from picogate.sparkplug._sink import BdSeqStore, SparkplugEncoder, SparkplugSink

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
