"""Plugs the Sparkplug B Edge Node of `gateway.yaml` into the gateway (see picogate._host): the
encoder that keeps readings in the outbox for it, and the sink with its own MQTT connection."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picogate import __version__
from picogate._host import Plugin
from picogate._model import PointInfo, Reading
from picogate._registry import DeviceState, RegistryEvent
from picogate.mqtt import MqttClient, section_tls
from picogate.sparkplug._config import SECTION, SparkplugSection

if TYPE_CHECKING:
    from picogate._host import Host

log = logging.getLogger("picogate.sparkplug")


async def attach(host: Host, cfg: SparkplugSection | None) -> None:
    if cfg is None or not cfg.enabled:
        return
    # the runtime imports protobuf: only a gateway with a `sparkplug:` section loads it
    from picogate.sparkplug._payload import BOOLEAN, STRING, UINT32, UINT64, Topics
    from picogate.sparkplug._session import NodeMetric
    from picogate.sparkplug._sink import BdSeqStore, Server, SparkplugEncoder, SparkplugSink

    password = cfg.password() if cfg.username else None
    client_id = cfg.client_id_for(host.gateway_id)
    topics = Topics(cfg.group_id, cfg.node_id(host.gateway_id))
    registry, pipeline = host.registry, host.pipeline
    bdseq_path = cfg.bdseq_file or (host.data_dir or Path(".")) / "sparkplug-bdseq"

    def client(server: Server, **kwargs: Any) -> MqttClient:
        tls = section_tls(cfg.tls)
        return MqttClient(
            host=server.host,
            port=server.port,
            client_id=client_id,
            username=cfg.username,
            password=password,
            tls=tls,
            protocol=cfg.protocol,
            keepalive=cfg.keepalive,
            max_packet_size=cfg.max_packet_size,
            **kwargs,
        )

    by_device: dict[str, list[PointInfo]] = {}

    def forget(event: RegistryEvent) -> None:
        if event.kind != "device_state":
            by_device.clear()

    def points_of(device: str) -> list[PointInfo]:
        if not by_device:
            for info in registry:
                by_device.setdefault(info.device, []).append(info)
        return by_device.get(device, [])

    def devices() -> list[str]:
        """The devices to give a DBIRTH at the births: those with points that are not offline."""
        points_of("")  # fills the index
        return [
            d
            for d in by_device
            if (status := registry.device(d)) is None or status.state is not DeviceState.OFFLINE
        ]

    def latest(device: str, point: str) -> Reading | None:
        return pipeline.latest.get((device, point))

    def node_metrics() -> list[NodeMetric]:
        status = host.status()
        devices = status.get("devices", {})
        outbox = status.get("outbox", {})
        return [
            NodeMetric("Gateway/Version", STRING, __version__),
            NodeMetric("Gateway/Clock Synced", BOOLEAN, bool(status.get("clock_synced", True))),
            NodeMetric("Gateway/Devices Online", UINT32, int(devices.get("online", 0))),
            NodeMetric("Gateway/Devices Offline", UINT32, int(devices.get("offline", 0))),
            NodeMetric("Gateway/Outbox Parked", UINT64, int(outbox.get("parked", 0))),
            NodeMetric("Gateway/Outbox Lost", UINT64, int(outbox.get("lost", 0))),
        ]

    host.subscribe(forget)
    host.add_encoder(SparkplugEncoder())
    sink = SparkplugSink(
        client_factory=client,
        servers=[Server(s.host, s.port) for s in cfg.servers],
        topics=topics,
        primary_host=cfg.primary_host_id,
        bdseq=BdSeqStore(bdseq_path),
        router=host.router,
        points_of=points_of,
        find=registry.find,
        latest=latest,
        devices=devices,
        node_metrics=node_metrics,
        health_interval=cfg.health_interval,
        v5=cfg.protocol == "5",
        host_wait=cfg.primary_host_wait,
    )
    host.add_sink(sink, window=2, min_delay=cfg.reconnect.min_delay, max_delay=cfg.reconnect.max_delay)
    log.info(
        "sparkplug: Edge Node spBv1.0/%s/…/%s on %s%s",
        topics.group,
        topics.node,
        ", ".join(f"{s.host}:{s.port}" for s in cfg.servers),
        f", primary host {cfg.primary_host_id}" if cfg.primary_host_id else "",
    )


PLUGIN: Plugin[SparkplugSection | None] = Plugin("sparkplug", SECTION, attach)
