"""Plugs EdgeX into the gateway (see picogate._component): an encoder and a sink per transport
(message bus, core-data REST), registration in core-metadata, and the device-service REST API."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from picogate._component import Component
from picogate._secrets import remember
from picogate._sink import RunningSink
from picogate.edgex._commands import Commands, EdgexNames
from picogate.edgex._config import EdgexSection
from picogate.edgex._forward import BUS_SINK, REST_SINK, EdgexBusSink, EdgexEncoder, EdgexRestSink
from picogate.edgex._register import Registrar
from picogate.edgex._server import DeviceServiceApi
from picogate.mqtt._client import MqttClient

if TYPE_CHECKING:
    from picogate._gateway import Gateway
    from picogate.config._schema import GatewayConfig


def names_of(cfg: EdgexSection) -> EdgexNames:
    return EdgexNames(cfg.service, cfg.profile_prefix, cfg.batch_command)


def protocols_for(config: GatewayConfig, device: str) -> dict[str, dict[str, Any]]:
    """The `protocols` of a device in core-metadata (for information: picogate reads the device)."""
    for d in config.devices:
        if d.name != device:
            continue
        if d.type == "modbus_tcp":
            return {"modbus-tcp": {"Address": d.host, "Port": str(d.port), "UnitID": str(d.unit_id)}}
        return {
            "modbus-rtu": {
                "Address": d.port,
                "UnitID": str(d.unit_id),
                "BaudRate": str(d.baudrate),
                "DataBits": str(d.bytesize),
                "StopBits": str(d.stopbits),
                "Parity": d.parity,
            }
        }
    return {"picogate": {"Device": device}}


async def attach(gw: Gateway) -> list[Component]:
    cfg = gw.config.edgex
    if cfg is None or not cfg.enabled:
        return []
    parts = gw.parts
    names = names_of(cfg)
    commands = Commands(gw.registry, gw.router, lambda d, p: gw.pipeline.latest.get((d, p)), names)
    components: list[Component] = []
    bus: EdgexBusSink | None = None

    def known_device(device: dict[str, Any]) -> str:
        name = device.get("name")
        if not isinstance(name, str) or gw.registry.device(name) is None:
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
                client_id=b.client_id or f"picogate-edgex-{gw.config.gateway.id}",
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
        gw.pipeline.encoders.append(EdgexEncoder(BUS_SINK, gw.registry, names, batch=cfg.batch))
        parts.sinks.append(
            RunningSink(
                bus, parts.outbox, window=4, min_delay=b.reconnect.min_delay, max_delay=b.reconnect.max_delay
            )
        )
    if cfg.uses_rest:
        rest = EdgexRestSink(core_data=cfg.core_data, service=cfg.service, timeout=cfg.timeout)
        gw.pipeline.encoders.append(EdgexEncoder(REST_SINK, gw.registry, names, batch=cfg.batch))
        parts.sinks.append(RunningSink(rest, parts.outbox, batch_size=64, window=2))
    ds = cfg.device_service
    if ds.enabled:
        components.append(DeviceServiceApi(commands, host=ds.host, port=ds.port))
    if cfg.register_on_start:
        components.append(
            Registrar(
                registry=gw.registry,
                names=names,
                core_metadata=cfg.core_metadata,
                base_address=ds.address(),
                labels=cfg.labels,
                protocols=lambda device: protocols_for(gw.config, device),
                timeout=cfg.timeout,
                bypass_validation=cfg.version >= 4 and bus is None,
                ready=bus.connected if bus is not None else None,
            )
        )
    return components
