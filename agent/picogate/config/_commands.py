"""`gateway.yaml`: the `commands:` section: how every write is bounded, whoever asks for it.

    commands:
      deadline:                  # counted from when the gateway received the write
        mqtt: 10s
        edgex: 10s
        coap: 5s
        rules: 5s
      queue_per_device: 32       # writes waiting for one device; more are refused `busy`
      max_pending: 256           # commands in progress per ingress (MQTT, EdgeX, CoAP); more: `busy`
      max_payload: 65536         # bytes of one command
      rate_limit: {burst: 10, interval: 1s}     # per point: 10 at once, then one a second
      points:
        boiler.setpoint: {burst: 2, interval: 1m}

See docs/mqtt.md (commands and their result codes) and docs/configuration.md.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from picogate._model import NAME_PATTERN
from picogate.config._base import Duration, PositiveDuration, _Model

_NAME = NAME_PATTERN.strip("^$")
_POINT_KEY = re.compile(rf"^{_NAME}\.{_NAME}$")


class DeadlineSection(_Model):
    """How long a write may take to be sent, per origin, from when the gateway received it."""

    mqtt: PositiveDuration = 10.0
    """MQTT `…/set` commands (a command's `ts` can shorten this, never extend it)."""
    edgex: PositiveDuration = 10.0
    """EdgeX SET commands (message bus and REST)."""
    coap: PositiveDuration = 5.0
    """CoAP PUT to `/p/<device>/<point>`."""
    rules: PositiveDuration = 5.0
    """A rule's `set()`."""
    other: PositiveDuration = 10.0
    """Writes from anywhere else (tools, tests)."""


class RateLimitSection(_Model):
    """Writes to one point: up to `burst` at once, then one per `interval`."""

    burst: Annotated[int, Field(ge=1, le=1000)] = 10
    """Writes a point takes at once."""
    interval: Duration = 1.0
    """Then one write per this long (0: no limit).  A write that must wait is held back until its
    turn, or refused `rate_limited` if its turn comes after its deadline."""


class CommandsSection(_Model):
    """Deadlines, queues, sizes and rate limits of writes (from MQTT, EdgeX, CoAP and rules)."""

    deadline: DeadlineSection = DeadlineSection()
    """Per origin; see `commands.deadline`."""
    queue_per_device: Annotated[int, Field(ge=1, le=10_000)] = 32
    """Writes in progress or waiting for one device, at most; more are refused `busy`."""
    max_pending: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Commands in progress per ingress (MQTT, EdgeX, CoAP), at most; more are refused `busy`."""
    max_payload: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 65536
    """Bytes of one command (an MQTT `set` message, an EdgeX SET), at most; more: `bad_request`."""
    rate_limit: RateLimitSection = RateLimitSection()
    """Of every point; see `commands.rate_limit`."""
    points: dict[str, RateLimitSection] = Field(default_factory=dict)
    """`device.point` → its own rate limit (`burst`, `interval`), instead of `rate_limit`."""

    @field_validator("points")
    @classmethod
    def _point_keys(cls, points: dict[str, RateLimitSection]) -> dict[str, RateLimitSection]:
        for key in points:
            if not _POINT_KEY.match(key):
                raise ValueError(
                    f"{key!r} is not device.point (e.g. boiler.setpoint: {{burst: 2, interval: 1m}})"
                )
        return points
