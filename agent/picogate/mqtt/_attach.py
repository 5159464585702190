"""Plugs the MQTT broker of `gateway.yaml` into the gateway (see picogate._host): the encoder of
what is published, the sink that delivers it, the command ingress, and the gateway's status topic.
The other plug-ins reach the broker through `host.messages` (the rules' alerts and status)."""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import orjson

from picogate import __version__
from picogate._host import Plugin
from picogate.mqtt._client import MqttClient, tls_context
from picogate.mqtt._config import SECTION, MqttSection, PublishMode, TlsSection
from picogate.mqtt._sink import SINK_NAME, CommandIngress, MqttEncoder, MqttSink
from picogate.mqtt._topics import Topics

if TYPE_CHECKING:
    from picogate._host import Host

log = logging.getLogger("picogate")


def section_tls(tls: TlsSection | None) -> ssl.SSLContext | None:
    """The TLS context of an `mqtt.tls`-shaped section (None: plain TCP)."""
    if tls is None:
        return None
    return tls_context(
        ca_file=str(tls.ca_file) if tls.ca_file else None,
        cert_file=str(tls.cert_file) if tls.cert_file else None,
        key_file=str(tls.key_file) if tls.key_file else None,
        insecure=tls.insecure,
    )


class _Messages:
    """`host.messages` (picogate._host.Messages) on the MQTT sink."""

    sink = SINK_NAME

    def __init__(self, sink: MqttSink, topics: Topics, qos: int) -> None:
        self._sink = sink
        self.root = topics.root
        self.qos = qos

    def topic(self, name: str) -> str:
        return f"{self.root}/{name}"

    def publish_now(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        return self._sink.publish_now(topic, payload, qos=qos, retain=retain)

    @property
    def connection(self) -> object | None:
        return self._sink.client


async def attach(host: Host, cfg: MqttSection) -> None:
    """The encoder and the sink, two parts of the plug-in: a reload that changes the connection
    rebuilds the sink alone (what waits in the outbox is sent by the new one), and a new encoder
    replaces the old one between two readings, so that no reading goes without one."""
    if not cfg.enabled:
        return
    host.state = 0
    _start_encoder(host, cfg)
    _start_sink(host, cfg)


async def update(host: Host, old: MqttSection, new: MqttSection) -> None:
    if not old.enabled or not new.enabled or host.state is None:
        await host.drop_part("sink")
        await host.drop_part(f"encoder-{host.state}")
        host.state = None
        await attach(host, new)
        return
    if _encoding(old) != _encoding(new):
        previous = f"encoder-{host.state}"
        host.state += 1
        _start_encoder(host, new)
        await host.drop_part(previous)  # (nothing to wait for: gone before the next reading)
    await host.drop_part("sink")
    _start_sink(host, new)


def _encoding(cfg: MqttSection) -> tuple[object, ...]:
    return (cfg.base_topic, cfg.publish, cfg.qos, cfg.retain)


def _start_encoder(host: Host, cfg: MqttSection) -> None:
    mode = cfg.publish
    host.part(f"encoder-{host.state}").add_encoder(
        MqttEncoder(
            Topics(cfg.base_topic, host.gateway_id),
            per_point=mode in (PublishMode.POINT, PublishMode.BOTH),
            per_device=mode in (PublishMode.DEVICE, PublishMode.BOTH),
            qos=cfg.qos,
            retain=cfg.retain,
        )
    )


def _start_sink(host: Host, cfg: MqttSection) -> None:
    part = host.part("sink")
    # Read the secret once, now: a missing variable or file is a start-up error, not a reconnect
    # loop.  It is kept in memory only and never logged.
    password = cfg.password() if cfg.username else None
    topics = Topics(cfg.base_topic, host.gateway_id)
    client_id = cfg.client_id_for(host.gateway_id)

    def client(**kwargs: Any) -> MqttClient:
        tls = section_tls(cfg.tls)
        return MqttClient(
            host=cfg.host,
            port=cfg.port,
            client_id=client_id,
            username=cfg.username,
            password=password,
            tls=tls,
            protocol=cfg.protocol,
            keepalive=cfg.keepalive,
            max_inflight=cfg.max_inflight,
            max_packet_size=cfg.max_packet_size,
            **kwargs,
        )

    def status_payload(state: str) -> bytes:
        body: dict[str, Any] = {"state": state, "ts": time.time_ns() // 1_000_000, "version": __version__}
        if state == "online":
            body.update(host.status())
        return orjson.dumps(body)

    def reply(topic: str, payload: bytes) -> None:
        if not sink.publish_now(topic, payload, qos=1):
            log.warning("command result for %s not sent: broker not connected", topic)

    sink = MqttSink(client_factory=client, topics=topics, status_payload=status_payload)
    sink.commands = CommandIngress(topics, host.router, reply=reply)
    part.add_sink(sink, window=4, min_delay=cfg.reconnect.min_delay, max_delay=cfg.reconnect.max_delay)
    part.on_status_change(lambda: sink.publish_status("online"))
    part.provide_messages(_Messages(sink, topics, cfg.qos))


PLUGIN: Plugin[MqttSection] = Plugin("mqtt", SECTION, attach, update=update)
