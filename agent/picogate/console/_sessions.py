"""Sessions and the login rate limit of the console: no I/O, the clock passed in (tested as data).

- A session is a random token (the `picogate_session` cookie, HttpOnly, SameSite=Strict) that
  expires after `idle` seconds without a request and `max_age` seconds after the login, whichever
  comes first.  Each session has its own CSRF token, which every request that changes something
  (POST, PUT, DELETE) must carry in the `X-CSRF-Token` header.  At most `max_sessions` are kept;
  beyond that the least recently used goes.
- The login rate limit counts failed logins per client address and per user name: after `burst`
  failures within `window` seconds, further attempts are refused (429, with how long to wait)
  until the oldest failure leaves the window.  A successful login clears the name's count.
"""

from __future__ import annotations

import collections
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from picogate.console._users import Role

__all__ = ["LoginLimiter", "Session", "Sessions"]


@dataclass(slots=True)
class Session:
    token: str
    user: str
    role: Role
    csrf: str
    created: float
    seen: float
    address: str = ""

    def csrf_ok(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header.encode(), self.csrf.encode())


class Sessions:
    """Live sessions by token (see the module docstring)."""

    def __init__(
        self, *, idle: float, max_age: float, max_sessions: int = 1000, clock: Callable[[], float]
    ) -> None:
        self.idle = idle
        self.max_age = max_age
        self.max_sessions = max_sessions
        self.clock = clock
        self._by_token: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._by_token)

    def create(self, user: str, role: Role, *, address: str = "") -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32), now, now, address)
        self._by_token[session.token] = session
        while len(self._by_token) > self.max_sessions:
            self._by_token.popitem(last=False)
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of `token` (its idle time restarts), None if none or expired."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle or now - session.created > self.max_age:
            del self._by_token[token]
            return None
        session.seen = now
        self._by_token.move_to_end(token)
        return session

    def end(self, token: str | None) -> Session | None:
        return self._by_token.pop(token, None) if token else None

    def end_user(self, user: str) -> int:
        """End every session of `user` (removed or demoted in the users file); how many."""
        gone = [t for t, s in self._by_token.items() if s.user == user]
        for t in gone:
            del self._by_token[t]
        return len(gone)

    def sweep(self) -> None:
        now = self.clock()
        for token in [
            t for t, s in self._by_token.items() if now - s.seen > self.idle or now - s.created > self.max_age
        ]:
            del self._by_token[token]


@dataclass(slots=True)
class _Failures:
    times: collections.deque[float] = field(default_factory=collections.deque)


class LoginLimiter:
    """Failed logins per key (`addr:<ip>`, `user:<name>`) within a sliding window."""

    def __init__(
        self, *, burst: int = 5, window: float = 300.0, max_keys: int = 10_000, clock: Callable[[], float]
    ) -> None:
        self.burst = burst
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._keys: collections.OrderedDict[str, _Failures] = collections.OrderedDict()

    def wait(self, *keys: str) -> float:
        """Seconds until a login for these keys may be tried again (0: now)."""
        now = self.clock()
        longest = 0.0
        for key in keys:
            entry = self._keys.get(key)
            if entry is None:
                continue
            times = entry.times
            while times and now - times[0] >= self.window:
                times.popleft()
            if not times:
                del self._keys[key]
            elif len(times) >= self.burst:
                longest = max(longest, times[0] + self.window - now)
        return longest

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            entry = self._keys.get(key)
            if entry is None:
                entry = self._keys[key] = _Failures()
            entry.times.append(now)
            while len(entry.times) > self.burst:
                entry.times.popleft()
            self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._keys.pop(key, None)
