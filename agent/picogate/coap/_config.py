"""`gateway.yaml`: the CoAP server (nodes report to the gateway) and client (the gateway polls or
observes devices that serve CoAP themselves).  See docs/coap.md."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from picogate._model import PointType
from picogate.config import Name, Port, PositiveDuration, Section
from picogate.config import StrictModel as _Model


class CoapPoint(_Model):
    type: PointType = PointType.FLOAT64
    """Value type; a reported value that does not fit is refused with 4.00."""
    unit: str = ""
    """Unit; a SenML record with another unit is refused with 4.00."""
    description: str = ""


class CoapNode(_Model):
    """A node that POSTs its readings to `/r/<name>`."""

    name: Name
    points: dict[Name, CoapPoint] = Field(min_length=1)


class CoapResource(_Model):
    """One resource of a device that serves CoAP, read as one point."""

    point: Name
    path: str
    """Path on the device, e.g. `/sensors/temp`."""
    type: PointType = PointType.FLOAT64
    unit: str = ""
    writable: bool = False
    """Writes to the point are sent as PUT to `path`."""
    observe: bool = False
    """Observe (RFC 7641) instead of polling."""
    interval: PositiveDuration = 10.0
    """Poll period (and, with `observe`, the delay before observing again after a loss)."""

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.startswith("/") or any(c in path for c in "?# \t"):
            raise ValueError(f"must be a path such as /sensors/temp (no query, no spaces), not {path!r}")
        return path


class CoapClientDevice(_Model):
    """A device that serves CoAP; the gateway reads its resources."""

    name: Name
    host: str
    port: Port = 5683
    timeout: PositiveDuration = 5.0
    """How long a GET or PUT may take (CoAP retransmits inside this)."""
    resources: list[CoapResource] = Field(min_length=1)

    @field_validator("resources")
    @classmethod
    def _unique_points(cls, resources: list[CoapResource]) -> list[CoapResource]:
        seen: set[str] = set()
        for i, r in enumerate(resources):
            if r.point in seen:
                raise ValueError(f"resources[{i}].point: {r.point!r} is used twice")
            seen.add(r.point)
        return resources


class CoapOscore(_Model):
    """An OSCORE (RFC 8613) security context shared with one node: its reports must be protected."""

    node: Name
    """A node of `coap.nodes`."""
    context: Path
    """Directory of the context, as aiocoap reads it: `settings.json` (and `secret.json`) with
    `sender-id_hex`, `recipient-id_hex`, `secret_hex` (or `_ascii`); the gateway writes
    `sequence.json` there."""


class CoapSection(_Model):
    """The CoAP server and client."""

    server: bool = True
    """Run the CoAP server (nodes POST readings, GET/observe/PUT points)."""
    bind: str = "127.0.0.1"
    """Address the server listens on (UDP): the gateway itself only, by default; the node network's
    interface address (or `0.0.0.0`, every interface) to take reports from nodes."""
    port: Port = 5683
    auto_register: bool = False
    """Accept readings of devices and points not declared under `nodes` (type from the value)."""
    writes: Literal["protected", "open", "off"] = "protected"
    """Who may write points with PUT: `protected`: a request protected by an `oscore` context, or
    from the gateway itself (loopback) while none is configured; `open`: anyone who reaches the
    port (unless `oscore` is configured); `off`: nobody."""
    max_payload: int = Field(default=1024, ge=64, le=65536)
    """Largest request payload in bytes; larger gets 4.13."""
    nodes: list[CoapNode] = Field(default_factory=list)
    """Nodes that report to the server, with their points."""
    clients: list[CoapClientDevice] = Field(default_factory=list)
    """Devices that serve CoAP, polled or observed by the gateway."""
    oscore: list[CoapOscore] = Field(default_factory=list)
    """OSCORE contexts of nodes; with any, PUT needs OSCORE too (needs `aiocoap[oscore]`)."""

    @model_validator(mode="after")
    def _unique_devices(self) -> CoapSection:
        seen: set[str] = set()
        names = [("nodes", i, n.name) for i, n in enumerate(self.nodes)]
        names += [("clients", i, c.name) for i, c in enumerate(self.clients)]
        for kind, i, name in names:
            if name in seen:
                raise ValueError(f"{kind}[{i}].name: {name!r} is used twice in coap")
            seen.add(name)
        nodes = {n.name for n in self.nodes}
        for i, o in enumerate(self.oscore):
            if o.node not in nodes:
                raise ValueError(f"oscore[{i}].node: {o.node!r} is not one of coap.nodes")
        if len({o.node for o in self.oscore}) != len(self.oscore):
            raise ValueError("oscore: a node has two contexts")
        return self


SECTION = Section("coap", CoapSection | None, default=None, doc="CoAP server and client (coap/_config.py).")
