"""The points that the `coap:` section declares, as the server and the client register them."""

from __future__ import annotations

from picogate._model import PointInfo
from picogate.coap._config import CoapClientDevice, CoapSection


def url(device: CoapClientDevice, path: str) -> str:
    host = f"[{device.host}]" if ":" in device.host else device.host
    return f"coap://{host}:{device.port}{path}"


def node_points(section: CoapSection) -> list[PointInfo]:
    """The points of the nodes that report to the server."""
    return [
        PointInfo(node.name, pname, p.type, p.unit, description=p.description, origin="coap")
        for node in section.nodes
        for pname, p in node.points.items()
    ]


def client_points(devices: list[CoapClientDevice]) -> list[PointInfo]:
    """The points of the devices the client reads (one per resource)."""
    return [
        PointInfo(
            d.name,
            r.point,
            r.type,
            r.unit,
            writable=r.writable,
            origin="coap",
            attrs={"url": url(d, r.path), "mode": "observe" if r.observe else "poll"},
        )
        for d in devices
        for r in d.resources
    ]
