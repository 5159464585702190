"""`gateway.yaml`: the `console:` section, the operator console served by the gateway.

    console:
      users: /etc/picogate/users.json     # managed with `picogate users add|passwd|remove`
      session: {idle: 30m, max_age: 12h}
      tls: {cert: /etc/picogate/console.crt, key: /etc/picogate/console.key}

The console is served on the gateway's local HTTP server (`metrics.host:metrics.port`), so
`metrics.enabled` must stay true.  See docs/console.md.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PrivateAttr, model_validator

from picogate.config import CoreConfig, PositiveDuration, Section, parse_duration
from picogate.config import StrictModel as _Model


class SessionSection(_Model):
    idle: PositiveDuration = 1800.0
    """A session ends after this long without a request (the page asks every few seconds)."""
    max_age: PositiveDuration = 43200.0
    """A session ends this long after its login, whatever happens."""


class LoginSection(_Model):
    burst: Annotated[int, Field(ge=1, le=100)] = 5
    """Failed logins allowed per client address and per user name within `window`."""
    window: PositiveDuration = 300.0
    """The window in which failed logins count; after `burst` of them, logins wait until the oldest leaves it."""


class TlsSection(_Model):
    cert: Path
    """The server certificate (PEM; a chain after it is sent too)."""
    key: Path
    """Its private key (PEM)."""
    client_ca: Path | None = None
    """Ask browsers for a client certificate signed by this CA (PEM) and refuse those without one."""


class AlarmsSection(_Model):
    history: Path | None = None
    """The alarm history (raised, cleared, acknowledged); default: `<gateway.data_dir>/alarms.jsonl`."""
    max_entries: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    """Entries kept (the file is rewritten with the newest ones when it grows past 1.25 × this)."""


class TrendSection(_Model):
    step: Annotated[float, BeforeValidator(parse_duration), Field(ge=1, le=3600)] = 10.0
    """How often each point's last value is sampled for its trend."""
    samples: Annotated[int, Field(ge=10, le=100_000)] = 720
    """Samples kept per point (720 at 10 s: the last 2 hours)."""
    max_points: Annotated[int, Field(ge=1, le=1_000_000)] = 5000
    """Points with a trend at most (12 bytes a sample: 720 × 5,000 ≈ 43 MB at most)."""


class ConsoleSection(_Model):
    """The operator console (docs/console.md)."""

    enabled: bool = True
    """Serve the console; `false` keeps the section but serves none (and the API needs no login)."""
    users: Path = Path("/etc/picogate/users.json")
    """The users file (`picogate users add|passwd|remove`)."""
    session: SessionSection = SessionSection()
    """How long a login lasts; see `console.session`."""
    login: LoginSection = LoginSection()
    """The limit on failed logins; see `console.login`."""
    tls: TlsSection | None = None
    """Serve HTTPS (the whole local HTTP server: console, API, metrics)."""
    alarms: AlarmsSection = AlarmsSection()
    """The alarm history on disk; see `console.alarms`."""
    trend: TrendSection = TrendSection()
    """The recent history of every point (trends, replays); see `console.trend`."""

    _data_dir: Path = PrivateAttr(default=Path("/var/lib/picogate"))
    _bind: str = PrivateAttr(default="127.0.0.1")

    @model_validator(mode="after")
    def _session_ages(self) -> ConsoleSection:
        if self.session.idle > self.session.max_age:
            raise ValueError("session.idle is longer than session.max_age")
        return self

    @property
    def history_path(self) -> Path:
        return self.alarms.history or self._data_dir / "alarms.jsonl"

    @property
    def bind(self) -> str:
        """The address the console is served on (`metrics.host`)."""
        return self._bind


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check(value: Any, config: CoreConfig) -> None:
    if value is None or not value.enabled:
        return
    if not config.metrics.enabled:
        raise ValueError(
            "console: the console is served on the gateway's HTTP server: set metrics.enabled: true "
            "(or console.enabled: false)"
        )
    value._data_dir = config.gateway.data_dir
    value._bind = config.metrics.host


SECTION = Section(
    "console",
    ConsoleSection | None,
    default=None,
    doc="The operator console in a browser (console/_config.py, docs/console.md).",
    check=_check,
)
