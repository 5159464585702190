"""MQTT: topic map, encoder, sink and command ingress."""

from picogate.mqtt._sink import CommandIngress, MqttEncoder, MqttSink
from picogate.mqtt._topics import Topics

__all__ = ["CommandIngress", "MqttEncoder", "MqttSink", "Topics"]
