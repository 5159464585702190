"""`gateway.yaml`: the `mqtt:` section, the broker the readings go to and commands come from
(docs/mqtt.md)."""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from picogate._secrets import remember
from picogate.config import EnvName, Port, PositiveDuration, Section, StrictModel

_Model = StrictModel


class TlsSection(_Model):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    """Skip hostname and certificate checks (testing only)."""

    @model_validator(mode="after")
    def _key_with_cert(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        return self


class PublishMode(enum.StrEnum):
    POINT = "point"  # one message per point: <base>/<gw>/data/<device>/<point>
    DEVICE = "device"  # one message per device per poll: <base>/<gw>/data/<device>
    BOTH = "both"


def _number_as_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


class ReconnectSection(_Model):
    min_delay: PositiveDuration = 0.5
    max_delay: PositiveDuration = 30.0


class MqttSection(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: str | None = None
    """Default: `picogate-<gateway id>`."""
    username: str | None = None
    password_env: EnvName | None = None
    """Name of an environment variable holding the password."""
    password_file: Path | None = None
    """A file whose first line is the password (e.g. a systemd credential)."""
    tls: TlsSection | None = None
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(_number_as_text)] = "5"  # YAML reads 5 as int
    qos: Literal[0, 1] = 1
    base_topic: Annotated[str, Field(pattern=r"^[^#+\s]+(/[^#+\s]+)*$")] = "picogate"
    retain: bool = True
    """Retain the last value of each point (and of each device message)."""
    publish: PublishMode = PublishMode.POINT
    keepalive: PositiveDuration = 30.0
    command_ttl: PositiveDuration | None = None
    """Deprecated: the old name of `commands.deadline.mqtt` (used as such when that is not given)."""
    reconnect: ReconnectSection = ReconnectSection()
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 1000
    """QoS 1 messages sent but not yet acknowledged, at most (65,519 at most in effect: a few
    packet ids are kept for subscriptions)."""
    max_packet_size: Annotated[int, Field(ge=128, le=268_435_460)] = 1_048_576
    """Largest MQTT packet, in bytes, the gateway sends or accepts. Set it to the broker's limit
    under MQTT 3.1.1 (MQTT 5 brokers announce theirs): a larger message is then parked, not sent
    to a broker that would close the connection."""

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSection:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def password(self) -> str | None:
        """Read the secret now; it is never stored in the config object nor logged.

        Neither the variable's name nor the file's path is repeated in an error: either may be the
        password itself, written where its name belongs."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(
                    "mqtt.password_env: the environment variable it names is not set: set it in the "
                    "agent's environment (systemd: Environment= or EnvironmentFile=); password_env holds "
                    "the variable's name, the variable holds the password"
                )
            remember([value])
            return value
        if self.password_file:
            try:
                value = self.password_file.read_text(encoding="utf-8").splitlines()[0]
            except OSError as exc:
                raise ValueError(
                    f"mqtt.password_file: cannot read the file it names: {exc.strerror or type(exc).__name__}"
                ) from None
            except (IndexError, UnicodeDecodeError):
                raise ValueError(
                    "mqtt.password_file: cannot read a password from the file it names: it is empty or "
                    "not UTF-8 text (its first line must be the password)"
                ) from None
            remember([value])
            return value
        return None

    def client_id_for(self, gateway_id: str) -> str:
        return self.client_id or f"picogate-{gateway_id}"


SECTION = Section(
    "mqtt",
    MqttSection,
    default=MqttSection(),
    doc="The MQTT broker the readings go to and commands come from (mqtt/_config.py).",
    renamed={"command_ttl": "commands.deadline.mqtt"},
)
