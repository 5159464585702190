"""`gateway.yaml`: the `edgex:` section (EdgeX Foundry forwarding, registration and commands)."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from picogate.config import Duration, EnvName, Port, PositiveDuration, Section
from picogate.config import StrictModel as _Model

# EdgeX names travel in topics and URL paths: no '/', '+', '#', '.' (see docs/edgex.md).
_EDGEX_NAME = r"^[A-Za-z0-9_~:;=-]+$"
EdgexName = Annotated[str, Field(pattern=_EDGEX_NAME, max_length=64)]
_URL_RE = re.compile(r"^https?://[^/\s]+(/[^\s]*)?$")


class Transport(enum.StrEnum):
    BUS = "bus"
    REST = "rest"


class BusReconnectSection(_Model):
    min_delay: PositiveDuration = 0.5
    """First wait after a lost connection to the bus broker."""
    max_delay: PositiveDuration = 30.0
    """Longest wait: the wait grows (with jitter) from `min_delay` up to this."""


class BusSection(_Model):
    """The EdgeX message bus (MQTT) broker."""

    host: str = "127.0.0.1"
    port: Port = 1883
    base_topic: EdgexName = "edgex"
    """EdgeX's `MessageBus.BaseTopicPrefix`."""
    client_id: str = ""
    """Default: `picogate-edgex-<gateway id>`."""
    username: str | None = None
    password_env: EnvName | None = None
    """Environment variable holding the bus password."""
    qos: Literal[0, 1] = 1
    protocol: Literal["5", "3.1.1"] = "3.1.1"
    reconnect: BusReconnectSection = BusReconnectSection()


class DeviceServiceSection(_Model):
    """This gateway's own device-service REST API (what core-command calls)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: Port = 59999
    """Port to listen on (EdgeX device services use 599xx)."""
    base_address: str = ""
    """`baseAddress` registered in core-metadata; default: `http://<host>:<port>`."""

    @field_validator("base_address")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not _URL_RE.match(v):
            raise ValueError(f"must be an http:// or https:// URL, not {v!r}")
        return v.rstrip("/")

    def address(self) -> str:
        return self.base_address or f"http://{self.host}:{self.port}"


class EdgexSection(_Model):
    """EdgeX Foundry forwarding, registration and commands."""

    enabled: bool = True
    version: Literal[3, 4] = 3
    """EdgeX major version: 3 sends bus payloads base64-encoded, 4 as JSON objects."""
    service: EdgexName = "picogate"
    """Device-service name in EdgeX (topics, registration)."""
    transports: list[Transport] = Field(default_factory=lambda: [Transport.BUS], min_length=1)
    """Where events go: `bus` (message bus over MQTT), `rest` (core-data), or both."""
    bus: BusSection = BusSection()
    core_data: str = "http://127.0.0.1:59880"
    core_metadata: str = "http://127.0.0.1:59881"
    register_on_start: bool = True
    """Register the device service, profiles and devices in core-metadata on start."""
    device_service: DeviceServiceSection = DeviceServiceSection()
    batch: bool = True
    """One event per device and poll (source: the `batch_command`); else one event per reading."""
    batch_command: EdgexName = "Readings"
    """Name of the device command that groups all of a device's points in a profile."""
    profile_prefix: str = "picogate-"
    """Profile name = prefix + device name."""
    timeout: Duration = 5.0
    """HTTP request timeout for core-data and core-metadata."""
    labels: list[str] = Field(default_factory=lambda: ["picogate"])
    """Labels of the device service and the profiles."""

    @field_validator("core_data", "core_metadata")
    @classmethod
    def _url(cls, v: str) -> str:
        if not _URL_RE.match(v):
            raise ValueError(f"must be an http:// or https:// URL such as http://127.0.0.1:59880, not {v!r}")
        return v.rstrip("/")

    @field_validator("profile_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and not re.match(_EDGEX_NAME, v):
            raise ValueError(f"may only hold A-Z a-z 0-9 _ ~ : ; = -, not {v!r}")
        return v

    @field_validator("transports")
    @classmethod
    def _unique(cls, v: list[Transport]) -> list[Transport]:
        if len(set(v)) != len(v):
            raise ValueError("list each transport once")
        return v

    @model_validator(mode="after")
    def _check(self) -> EdgexSection:
        if self.register_on_start and self.version == 3 and Transport.BUS not in self.transports:
            raise ValueError(
                "register_on_start: true with EdgeX 3 needs the message bus (transports: [bus] or [bus, rest]): "
                "EdgeX 3 asks the device service to validate each new device over the bus; set "
                "register_on_start: false for REST-only forwarding (EdgeX 4 can skip that check)"
            )
        return self

    @property
    def uses_bus(self) -> bool:
        return Transport.BUS in self.transports

    @property
    def uses_rest(self) -> bool:
        return Transport.REST in self.transports


SECTION = Section(
    "edgex", EdgexSection | None, default=None, doc="EdgeX Foundry forwarding (edgex/_config.py)."
)
