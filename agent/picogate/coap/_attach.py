"""Plugs the CoAP server and client into the gateway (see picogate._host)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from picogate._host import Plugin
from picogate._registry import PointRegistry
from picogate.coap._config import SECTION, CoapClientDevice, CoapSection

if TYPE_CHECKING:
    from picogate._host import Host


async def attach(host: Host, section: CoapSection | None) -> None:
    """The server (when `coap.server`) and one client source for the `coap.clients` devices: two
    parts of the plug-in (`host.part`), so that a reload rebuilds only the one that changed."""
    if section is None:
        return
    _start_server(host, section)
    _start_clients(host, section)


async def update(host: Host, old: CoapSection | None, new: CoapSection | None) -> None:
    """Rebuild the server if anything but the clients changed, the clients if they changed."""
    if _server_part(old) != _server_part(new):
        await host.drop_part("server")
        if new is not None:
            _start_server(host, new)
    if _clients(old) != _clients(new):
        await host.drop_part("clients")
        if new is not None:
            _start_clients(host, new)


def _server_part(section: CoapSection | None) -> CoapSection | None:
    return None if section is None else section.model_copy(update={"clients": []})


def _clients(section: CoapSection | None) -> list[CoapClientDevice]:
    return [] if section is None else section.clients


def _start_server(host: Host, section: CoapSection) -> None:
    if not section.server:
        return
    from picogate.coap._points import node_points
    from picogate.coap._server import CoapServer

    part = host.part("server")
    server = CoapServer(section, registry=host.registry, router=host.router, pipeline=host.pipeline)
    server.register()
    part.track_points((p.device, p.name) for p in node_points(section))
    part.add_collector(server.collect)
    part.add_component(server)


def _start_clients(host: Host, section: CoapSection) -> None:
    if not section.clients:
        return
    from picogate.coap._client import CoapClientSource
    from picogate.coap._points import client_points

    part = host.part("clients")
    client = CoapClientSource(section.clients, registry=host.registry, pipeline=host.pipeline)
    client.register()
    part.track_points((p.device, p.name) for p in client_points(section.clients))
    for device in section.clients:
        part.register_writer(device.name, client.writer_for(device.name))
    part.add_collector(client.collect)
    part.add_component(client)


def declare(section: CoapSection | None, registry: PointRegistry) -> None:
    if section is None:
        return
    from picogate.coap._points import client_points, node_points

    for info in node_points(section) + client_points(section.clients):
        registry.add(info)


PLUGIN: Plugin[CoapSection | None] = Plugin("coap", SECTION, attach, declare, update)
