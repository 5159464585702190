"""MQTT: our asyncio client and its codec (a protocol library: the EdgeX bus and the demo use it),
and the MQTT plug-in: the topic map, the encoder, the sink, the command ingress (docs/mqtt.md)."""

from picogate.mqtt._attach import PLUGIN, section_tls
from picogate.mqtt._client import (
    IncomingMessage,
    MqttClient,
    MqttLost,
    MqttPublishRefused,
    PublishBatch,
    Will,
    await_acks,
    drop_acks,
    tls_context,
)
from picogate.mqtt._codec import MqttProtocolError
from picogate.mqtt._config import MqttSection, PublishMode, ReconnectSection, TlsSection
from picogate.mqtt._sink import CommandIngress, MqttEncoder, MqttSink
from picogate.mqtt._topics import Topics

__all__ = [
    "PLUGIN",
    "CommandIngress",
    "IncomingMessage",
    "MqttClient",
    "MqttEncoder",
    "MqttLost",
    "MqttProtocolError",
    "MqttPublishRefused",
    "MqttSection",
    "MqttSink",
    "PublishBatch",
    "PublishMode",
    "ReconnectSection",
    "TlsSection",
    "Topics",
    "Will",
    "await_acks",
    "drop_acks",
    "section_tls",
    "tls_context",
]
