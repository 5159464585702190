"""Plugs the CoAP server and client into the gateway (see picogate._component)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picogate._component import Component

if TYPE_CHECKING:
    from picogate._gateway import Gateway


async def attach(gw: Gateway) -> list[Component]:
    """The server (when `coap.server`) and one client source per `coap.clients` device."""
    section = gw.config.coap
    if section is None:
        return []
    from picogate.coap._client import CoapClientSource
    from picogate.coap._server import CoapServer

    components: list[Component] = []
    if section.server:
        server = CoapServer(section, registry=gw.registry, router=gw.router, pipeline=gw.pipeline)
        server.register()
        gw.parts.metrics.add_collector(server.collect)
        components.append(server)
    if section.clients:
        client = CoapClientSource(section.clients, registry=gw.registry, pipeline=gw.pipeline)
        client.register()
        for device in section.clients:
            gw.router.register_writer(device.name, client.writer_for(device.name))
        gw.parts.metrics.add_collector(client.collect)
        components.append(client)
    return components
