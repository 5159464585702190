"""`gateway.yaml`: the `sparkplug:` section, the Sparkplug B Edge Node (docs/sparkplug.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from picogate._secrets import remember
from picogate.config import EnvName, Port, PositiveDuration, Section, StrictModel
from picogate.mqtt import ReconnectSection, TlsSection

SparkplugId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^+/#\s]+$")]
"""A group, edge node or host id: UTF-8 without `+`, `/`, `#` (and, here, without white space)."""


def _number_as_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


class ServerSection(StrictModel):
    host: str = "127.0.0.1"
    """MQTT server host."""
    port: Port = 1883
    """MQTT server port."""


class SparkplugSection(StrictModel):
    enabled: bool = True
    """Run the Edge Node at all (the section's presence alone turns it on)."""
    group_id: SparkplugId
    """The Sparkplug Group ID: the `<group_id>` level of every topic."""
    edge_node_id: SparkplugId | None = None
    """Default: the gateway's id (`gateway.id`)."""
    primary_host_id: SparkplugId | None = None
    """The primary host application's id: the Edge Node publishes only while its STATE
    (`spBv1.0/STATE/<id>`) says online, and keeps what it produced meanwhile for later (sent with
    `is_historical`).  None: publish whenever connected to a server."""
    primary_host_wait: PositiveDuration = 30.0
    """With more than one server: how long to wait on a server for the primary host's online
    STATE before trying the next one (with one server the Edge Node waits as long as it takes)."""
    servers: Annotated[list[ServerSection], Field(min_length=1, default_factory=lambda: [ServerSection()])]
    """MQTT servers, tried in turn: after a failed connect, a lost connection, the primary host
    going offline, or Node Control/Next Server."""
    client_id: str | None = None
    """Default: `picogate-spb-<gateway id>`."""
    username: str | None = None
    """User name to log in with."""
    password_env: EnvName | None = None
    """Name of an environment variable holding the password."""
    password_file: Path | None = None
    """A file whose first line is the password."""
    tls: TlsSection | None = None
    """TLS, as `mqtt.tls` (`ca_file`, `cert_file`, `key_file`, `insecure`)."""
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(_number_as_text)] = "5"
    """MQTT version."""
    keepalive: PositiveDuration = 30.0
    """MQTT keepalive: how soon the server notices a dead Edge Node and publishes its NDEATH."""
    reconnect: ReconnectSection = ReconnectSection()
    """Delays between connection attempts, as `mqtt.reconnect`."""
    max_packet_size: Annotated[int, Field(ge=128, le=268_435_460)] = 1_048_576
    """Largest MQTT packet sent or accepted, in bytes."""
    health_interval: PositiveDuration = 10.0
    """How often the node's health metrics (`Gateway/…`) are checked; an NDATA goes out when one
    changed."""
    bdseq_file: Path | None = None
    """Where the birth/death sequence number (bdSeq) is kept across restarts. Default:
    `<data_dir>/sparkplug-bdseq`."""

    @model_validator(mode="after")
    def _one_password_source(self) -> SparkplugSection:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def node_id(self, gateway_id: str) -> str:
        return self.edge_node_id or gateway_id

    def client_id_for(self, gateway_id: str) -> str:
        return self.client_id or f"picogate-spb-{gateway_id}"

    def password(self) -> str | None:
        """Read the secret now; it is never stored in the config object nor logged."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(
                    "sparkplug.password_env: the environment variable it names is not set: set it in "
                    "the agent's environment; password_env holds the variable's name, the variable "
                    "holds the password"
                )
            remember([value])
            return value
        if self.password_file:
            try:
                value = self.password_file.read_text(encoding="utf-8").splitlines()[0]
            except OSError as exc:
                raise ValueError(
                    "sparkplug.password_file: cannot read the file it names: "
                    f"{exc.strerror or type(exc).__name__}"
                ) from None
            except (IndexError, UnicodeDecodeError):
                raise ValueError(
                    "sparkplug.password_file: cannot read a password from the file it names: it is "
                    "empty or not UTF-8 text (its first line must be the password)"
                ) from None
            remember([value])
            return value
        return None


SECTION = Section(
    "sparkplug",
    SparkplugSection | None,
    default=None,
    doc="A Sparkplug B Edge Node on its own MQTT connection (sparkplug/_config.py, docs/sparkplug.md).",
)
