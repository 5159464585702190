"""Plugs the console into the gateway (see picogate._host): its routes and its authentication on
the gateway's HTTP server (with TLS when `console.tls` is set), the alarm book fed by the rules'
alerts, and the service that samples the trends."""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from picogate._errors import PicogateError
from picogate._host import Plugin
from picogate.console._config import SECTION, ConsoleSection, is_loopback

if TYPE_CHECKING:
    from picogate._host import Host
    from picogate.rules import LiveRules

log = logging.getLogger("picogate.console")


class ConsoleSetupError(PicogateError, ValueError):
    """The console cannot start as configured (reported as `picogate: cannot start: …`)."""


class _ApiHooks(Protocol):
    """What the console sets on the local API (picogate.api.Api): who may write, and the origin
    (the user) of a write in the audit line."""

    may_write: Any
    origin_of: Any


def tls_context(cfg: ConsoleSection) -> ssl.SSLContext | None:
    tls = cfg.tls
    if tls is None:
        return None
    for key, path in (("cert", tls.cert), ("key", tls.key), ("client_ca", tls.client_ca)):
        if path is not None and not path.is_file():
            raise ConsoleSetupError(f"console.tls.{key}: {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, OSError) as exc:
        raise ConsoleSetupError(
            f"console.tls: cannot use the certificate {tls.cert} with the key {tls.key}: {exc}"
        ) from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConsoleSetupError(f"console.tls.client_ca: cannot use {tls.client_ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def attach(host: Host, cfg: ConsoleSection | None) -> None:
    """Nothing without a `console:` section (or with `enabled: false`)."""
    if cfg is None or not cfg.enabled:
        return
    from picogate.console._alarms import AlarmBook, HistoryFile
    from picogate.console._auth import Auth
    from picogate.console._console import Console
    from picogate.console._sessions import LoginLimiter, Sessions
    from picogate.console._users import Users, UsersError
    from picogate.rules import LiveRules

    users = Users(cfg.users)
    try:
        engineers = users.engineers()
    except UsersError as exc:
        raise ConsoleSetupError(str(exc)) from None
    if not engineers:
        if not is_loopback(cfg.bind):
            raise ConsoleSetupError(
                f"console: the gateway serves on {cfg.bind} (metrics.host), beyond this machine, and "
                f"{cfg.users} has no engineer: create one first with "
                f"`picogate users add NAME --role engineer -f {cfg.users}`"
            )
        log.warning(
            "console: %s has no engineer yet: add one with `picogate users add NAME --role engineer -f %s`",
            cfg.users,
            cfg.users,
        )
    context = tls_context(cfg)
    if context is not None:
        host.http.ssl = context
    elif not is_loopback(cfg.bind):
        log.warning(
            "console: served on %s without TLS: passwords and sessions cross the network in clear "
            "(set console.tls: a certificate and its key)",
            cfg.bind,
        )

    def rules() -> LiveRules | None:
        live = host.service("rules")
        return live if isinstance(live, LiveRules) else None

    alarms = AlarmBook(
        HistoryFile(cfg.history_path, max_entries=cfg.alarms.max_entries), max_entries=cfg.alarms.max_entries
    )
    sessions = Sessions(idle=cfg.session.idle, max_age=cfg.session.max_age, clock=time.time)
    limiter = LoginLimiter(burst=cfg.login.burst, window=cfg.login.window, clock=time.monotonic)
    auth = Auth(users, sessions, limiter, secure=context is not None)
    console = Console(host, cfg, alarms=alarms, rules=rules)
    console.sweep = sessions.sweep
    host.http.add_routes([*auth.routes(), *console.routes()])
    host.http_app.add_subapp(console.RULES_PREFIX, console.rules_app())
    host.http.add_middleware(auth.middleware)

    def hear_alerts(service: object) -> None:  # the rules service, and again after a reconfiguration
        if isinstance(service, LiveRules) and alarms.event not in service.alerts.listeners:
            service.alerts.listeners.append(alarms.event)

    host.on_service("rules", hear_alerts)

    def may_write(request: web.Request) -> str | None:
        from picogate.console._auth import user_of
        from picogate.console._users import Role

        who = user_of(request)
        if who is None:
            return "log in first"
        if who[1] < Role.OPERATOR:
            return f"{who[0]} is a {who[1].label}; writing needs an operator"
        return None

    def origin_of(request: web.Request) -> str:
        from picogate.console._auth import user_of

        who = user_of(request)
        return f"console:{who[0]}" if who is not None else f"api:{request.remote or 'local'}"

    def hook_api(api: object) -> None:
        hooks: _ApiHooks = api  # type: ignore[assignment]  # picogate.api.Api, a layer above
        hooks.may_write = may_write
        hooks.origin_of = origin_of

    host.on_service("api", hook_api)
    host.add_component(console)


PLUGIN: Plugin[ConsoleSection | None] = Plugin("console", SECTION, attach)
