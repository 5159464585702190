"""Who is asking: the console's login, logout and session endpoints, and the middleware that guards
the local API and the console's own API.

- `/console/` (the page and its files), `/metrics` and `/healthz` are open: the page shows its
  login form, Prometheus scrapes as before.
- Everything under `/api/` and `/console/api/` needs a user: the session cookie of a login, or
  HTTP Basic credentials (for scripts and `curl -u`; checked against the same users file, same rate
  limit).  A request that changes something (POST, PUT, DELETE) with the cookie must carry the
  session's CSRF token in `X-CSRF-Token`.
- Each endpoint asks for a role (`need(request, Role.OPERATOR)`): 401 without a user, 403 with a
  lower role.
- Logins, failed logins and logouts are lines on the `picogate.audit` logger, like writes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from picogate.console._sessions import LoginLimiter, Session, Sessions
from picogate.console._users import Role, Users, UsersError, verify_password

audit_log = logging.getLogger("picogate.audit")
log = logging.getLogger("picogate.console")

COOKIE = "picogate_session"
CSRF_HEADER = "X-CSRF-Token"
# Request keys (aiohttp's typed RequestKey where it has one, 3.13 on; plain strings before).
_KEY: Any = getattr(web, "RequestKey", None)
_SESSION: Any = _KEY("picogate_session", object) if _KEY else "picogate.session"
_USER: Any = _KEY("picogate_user", str) if _KEY else "picogate.user"
_ROLE: Any = _KEY("picogate_role", object) if _KEY else "picogate.role"
BASIC_CACHE_S = 60.0
BASIC_CACHE_MAX = 256
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPEN_API = frozenset({"/console/api/login", "/console/api/session"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, **kw: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body) + b"\n", status=status, content_type="application/json", **kw)


def json_error(status: int, code: str, error: str, **kw: Any) -> web.Response:
    return json_response({"error": error, "code": code}, status, **kw)


def user_of(request: web.Request) -> tuple[str, Role] | None:
    user = request.get(_USER)
    role = request.get(_ROLE)
    return (user, role) if isinstance(user, str) and isinstance(role, Role) else None


def need(request: web.Request, role: Role) -> web.Response | None:
    """None when the request's user has `role` (or more); else the answer to give."""
    who = user_of(request)
    if who is None:
        return json_error(401, "unauthorized", "log in first")
    if who[1] < role:
        return json_error(
            403,
            "forbidden",
            f"{who[0]} is a {who[1].label}; this needs an {role.label}"
            if role.label[0] in "aeiou"
            else f"{who[0]} is a {who[1].label}; this needs a {role.label}",
        )
    return None


class Auth:
    """Sessions, the login limit and the middleware (see the module docstring)."""

    def __init__(self, users: Users, sessions: Sessions, limiter: LoginLimiter, *, secure: bool) -> None:
        self.users = users
        self.sessions = sessions
        self.limiter = limiter
        self.secure = secure
        self.logins = 0
        self.failures = 0
        self._verifying = asyncio.Semaphore(2)
        self._basic_ok: dict[bytes, float] = {}
        """Basic credentials verified in the last BASIC_CACHE_S (a digest of the name, the password
        and the stored hash: a changed password or user misses it), so that a script asking every
        second does not pay argon2 every time."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/console/api/login", self._login),
            web.post("/console/api/logout", self._logout),
            web.get("/console/api/session", self._session),
        ]

    # ------------------------------------------------------------------ the middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not (path.startswith("/api/") or path == "/api" or path.startswith("/console/api/")):
            return await handler(request)
        if path in _OPEN_API:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is not None:
                self._mark(request, session.user, session.role, session)
            return await handler(request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            try:
                user = self.users.get(session.user)
            except UsersError as exc:
                log.error("console: %s", exc)
                return json_error(503, "users_file", "the users file cannot be read; see the gateway's log")
            if user is None or user.role != session.role:  # removed or changed on the command line
                self.sessions.end_user(session.user)
                return json_error(
                    401, "unauthorized", "your session ended (your user was changed); log in again"
                )
            if request.method in _UNSAFE and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
                return json_error(
                    403, "csrf", f"missing or wrong {CSRF_HEADER} header (reload the page and try again)"
                )
            self._mark(request, session.user, session.role, session)
            return await handler(request)
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            refusal = await self._basic(request, basic[6:])
            if refusal is not None:
                return refusal
            return await handler(request)
        return json_error(
            401, "unauthorized", "log in first (the console's login, or HTTP Basic credentials)"
        )

    def _mark(self, request: web.Request, user: str, role: Role, session: Session | None) -> None:
        request[_USER] = user
        request[_ROLE] = role
        if session is not None:
            request[_SESSION] = session

    async def _basic(self, request: web.Request, token: str) -> web.Response | None:
        try:
            name, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return json_error(400, "bad_request", "the Authorization header is not valid Basic credentials")
        try:
            known = self.users.get(name)
        except UsersError:
            known = None
        now = time.monotonic()
        digest = b""
        if known is not None:
            digest = hashlib.sha256(f"{name}\0{password}\0{known.hash}".encode()).digest()
            if self._basic_ok.get(digest, 0.0) > now:
                self._mark(request, name, known.role, None)
                return None
        role = await self._check(request, name, password)
        if isinstance(role, web.Response):
            return role
        if digest:
            if len(self._basic_ok) >= BASIC_CACHE_MAX:
                self._basic_ok = {k: t for k, t in self._basic_ok.items() if t > now}
                if len(self._basic_ok) >= BASIC_CACHE_MAX:
                    self._basic_ok.clear()
            self._basic_ok[digest] = now + BASIC_CACHE_S
        self._mark(request, name, role, None)
        return None

    async def _check(self, request: web.Request, name: str, password: str) -> Role | web.Response:
        """The role of `name` if `password` is right; else the refusal (401 or 429), audited."""
        address = request.remote or "?"
        keys = (f"addr:{address}", f"user:{name[:64]}")
        wait = self.limiter.wait(*keys)
        if wait > 0:
            audit_log.warning("login refused for %r from %s: too many failed logins", name[:64], address)
            return json_error(
                429,
                "too_many_logins",
                f"too many failed logins; try again in {int(wait) + 1} s",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        try:
            user = self.users.get(name)
        except UsersError as exc:
            log.error("console: %s", exc)
            return json_error(503, "users_file", "the users file cannot be read; see the gateway's log")
        async with self._verifying:  # argon2 takes 64 MiB each: two at a time at most
            ok = await asyncio.to_thread(verify_password, user.hash if user else None, password)
        if not ok or user is None:
            self.failures += 1
            self.limiter.failed(*keys)
            audit_log.warning(
                "login failed for %r from %s: %s",
                name[:64],
                address,
                "wrong password" if user else "no such user",
            )
            return json_error(401, "unauthorized", "wrong user name or password")
        self.limiter.succeeded(keys[1])
        return user.role

    # ------------------------------------------------------------------ the endpoints

    async def _login(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":  # a form of another site cannot log anyone in
            return json_error(
                415, "unsupported_media_type", 'send {"user": "...", "password": "..."} as application/json'
            )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return json_error(400, "bad_request", 'send {"user": "...", "password": "..."} as JSON')
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("user"), str)
            or not isinstance(body.get("password"), str)
        ):
            return json_error(400, "bad_request", 'send {"user": "...", "password": "..."} as JSON')
        name, password = body["user"].strip(), body["password"]
        role = await self._check(request, name, password)
        if isinstance(role, web.Response):
            return role
        session = self.sessions.create(name, role, address=request.remote or "")
        self.logins += 1
        audit_log.info("login %s (%s) from %s", name, role.label, request.remote or "?")
        response = json_response({"user": name, "role": role.label, "csrf": session.csrf})
        response.set_cookie(
            COOKIE,
            session.token,
            httponly=True,
            samesite="Strict",
            secure=self.secure,
            path="/",
            max_age=int(self.sessions.max_age),
        )
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        session = request.get(_SESSION)
        if isinstance(session, Session):
            self.sessions.end(session.token)
            audit_log.info("logout %s from %s", session.user, request.remote or "?")
        response = json_response({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def _session(self, request: web.Request) -> web.Response:
        session = request.get(_SESSION)
        if not isinstance(session, Session):
            return json_error(401, "unauthorized", "log in first")
        return json_response(
            {
                "user": session.user,
                "role": session.role.label,
                "csrf": session.csrf,
                "expires": int((session.created + self.sessions.max_age) * 1000),
            }
        )
