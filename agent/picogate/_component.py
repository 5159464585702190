"""Parts that plug into the gateway: Pico boards, CoAP, rules, EdgeX.

Each plug-in package has an `_attach.py` with

    async def attach(gw: Gateway) -> list[Component]

called once while the gateway is built, after the Modbus lines and the MQTT sink, in the order
pico → coap → rules → edgex (so that the rules see every source's points, and EdgeX every point,
LET points included).  `attach` registers what it has with the shared parts (`gw.registry`,
`gw.router`, `gw.pipeline.processors` / `.encoders`, `gw.parts.sinks`, `gw.parts.metrics`) and
returns the long-running pieces the gateway must run.
"""

from __future__ import annotations

from typing import Literal, Protocol


class Component(Protocol):
    """A long-running piece of a plug-in, run by the gateway in its task group.

    `kind` decides the shutdown order: "source" components are asked to `stop()` together with the
    Modbus lines, before the outbox is drained (so nothing new is accepted while draining);
    "service" components (servers, the rule engine's timers, command listeners) are stopped after
    the drain.  `run()` runs until it returns after `stop()` or is cancelled.
    """

    name: str
    kind: Literal["source", "service"]

    async def run(self) -> None: ...

    def stop(self) -> None: ...
