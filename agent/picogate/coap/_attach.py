"""Plugs the CoAP server and client into the gateway (see picogate._host)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picogate._host import Plugin
from picogate._registry import PointRegistry
from picogate.coap._config import SECTION, CoapSection

if TYPE_CHECKING:
    from picogate._host import Host


async def attach(host: Host, section: CoapSection | None) -> None:
    """The server (when `coap.server`) and one client source per `coap.clients` device."""
    if section is None:
        return
    from picogate.coap._client import CoapClientSource
    from picogate.coap._server import CoapServer

    if section.server:
        server = CoapServer(section, registry=host.registry, router=host.router, pipeline=host.pipeline)
        server.register()
        host.add_collector(server.collect)
        host.add_component(server)
    if section.clients:
        client = CoapClientSource(section.clients, registry=host.registry, pipeline=host.pipeline)
        client.register()
        for device in section.clients:
            host.register_writer(device.name, client.writer_for(device.name))
        host.add_collector(client.collect)
        host.add_component(client)


def declare(section: CoapSection | None, registry: PointRegistry) -> None:
    if section is None:
        return
    from picogate.coap._points import client_points, node_points

    for info in node_points(section) + client_points(section.clients):
        registry.add(info)


PLUGIN: Plugin[CoapSection | None] = Plugin("coap", SECTION, attach, declare)
