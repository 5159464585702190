"""Plugs EdgeX into the gateway (see picogate._host): an encoder and a sink per transport
(message bus, core-data REST), registration in core-metadata, and the device-service REST API."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from picogate._host import Plugin
from picogate._secrets import remember
from picogate.edgex._commands import Commands, EdgexNames
from picogate.edgex._config import SECTION, EdgexSection
from picogate.edgex._forward import BUS_SINK, REST_SINK, EdgexBusSink, EdgexEncoder, EdgexRestSink
from picogate.edgex._register import Registrar
from picogate.edgex._server import DeviceServiceApi
from picogate.mqtt import MqttClient

if TYPE_CHECKING:
    from picogate._host import Host


def names_of(cfg: EdgexSection) -> EdgexNames:
    return EdgexNames(cfg.service, cfg.profile_prefix, cfg.batch_command)


async def attach(host: Host, cfg: EdgexSection | None) -> None:
    if cfg is None or not cfg.enabled:
        return
    names = names_of(cfg)
    latest = host.pipeline.latest
    commands = Commands(host.registry, host.router, lambda d, p: latest.get((d, p)), names)
    bus: EdgexBusSink | None = None

    def known_device(device: dict[str, Any]) -> str:
        name = device.get("name")
        if not isinstance(name, str) or host.registry.device(name) is None:
            return (
                f"device {name!r} is not defined in picogate's gateway.yaml ({cfg.service} serves only those)"
            )
        if device.get("profileName") != names.profile(name):
            return f"device {name} must use profile {names.profile(name)}, not {device.get('profileName')!r}"
        return ""

    if cfg.uses_bus:
        b = cfg.bus
        password = os.environ.get(b.password_env) if b.password_env else None
        if b.password_env and password is None:
            # The name is not repeated: it may be the password itself, put where the name belongs.
            raise ValueError(
                "edgex.bus.password_env: the environment variable it names is not set: set it in the "
                "agent's environment; password_env holds the variable's name, the variable the password"
            )
        if password is not None:
            remember([password])

        def client(**kwargs: Any) -> MqttClient:
            return MqttClient(
                host=b.host,
                port=b.port,
                client_id=b.client_id or f"picogate-edgex-{host.gateway_id}",
                username=b.username,
                password=password,
                protocol=b.protocol,
                **kwargs,
            )

        bus = EdgexBusSink(
            client_factory=client,
            base_topic=b.base_topic,
            version=cfg.version,
            qos=b.qos,
            names=names,
            commands=commands,
            known_device=known_device,
        )
        encoder = EdgexEncoder(BUS_SINK, host.registry, names, batch=cfg.batch)
        host.on_stop(encoder.unsubscribe)
        host.add_encoder(encoder)
        host.add_sink(bus, window=4, min_delay=b.reconnect.min_delay, max_delay=b.reconnect.max_delay)
    if cfg.uses_rest:
        rest = EdgexRestSink(core_data=cfg.core_data, service=cfg.service, timeout=cfg.timeout)
        encoder = EdgexEncoder(REST_SINK, host.registry, names, batch=cfg.batch)
        host.on_stop(encoder.unsubscribe)
        host.add_encoder(encoder)
        host.add_sink(rest, batch_size=64, window=2)
    ds = cfg.device_service
    if ds.enabled:
        host.add_component(DeviceServiceApi(commands, host=ds.host, port=ds.port))
    if cfg.register_on_start:
        registry = host.registry
        registrar = Registrar(
            registry=registry,
            names=names,
            core_metadata=cfg.core_metadata,
            base_address=ds.address(),
            labels=cfg.labels,
            protocols=lambda device: registry.device_address(device) or {"picogate": {"Device": device}},
            timeout=cfg.timeout,
            bypass_validation=cfg.version >= 4 and bus is None,
            ready=bus.connected if bus is not None else None,
        )
        host.on_stop(registrar.unsubscribe)
        host.add_component(registrar)


PLUGIN: Plugin[EdgexSection | None] = Plugin("edgex", SECTION, attach)
