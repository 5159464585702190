"""A small client of the local API for `picogate watch` and `picogate write`: where the running
gateway listens (`--url`, or `metrics.host:metrics.port` of its gateway.yaml), and one request at a
time (urllib: no event loop, no proxy for what is local)."""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from picogate._errors import PicogateError

if TYPE_CHECKING:
    from picogate.config import CoreConfig

DEFAULT_URL = "http://127.0.0.1:9108"
API = "/api/v1"


class GatewayUnreachable(PicogateError, ConnectionError):
    """No gateway answers at the address (or what answers is not a Picogate local API)."""

    def __init__(self, url: str, why: str, *, maybe_sent: bool = False) -> None:
        super().__init__(
            f"no gateway answers at {url} ({why}). Is it running (`picogate run`, or "
            "`systemctl status picogate`)? Its address is metrics.host:metrics.port in its gateway.yaml "
            "(metrics.enabled must be true): pass that file with -c, or the address with --url",
            where=url,
        )
        self.url = url
        self.why = why
        self.maybe_sent = maybe_sent
        """The request may have reached the gateway (no answer, the connection lost): a write
        may or may not have been applied."""


def url_of(cfg: CoreConfig) -> str:
    """The local API's address from a gateway's configuration (a wildcard address: this machine)."""
    host = cfg.metrics.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.metrics.port}"


class ApiClient:
    """GET and POST JSON on the local API at `url` (e.g. http://127.0.0.1:9108)."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.headers: dict[str, str] = {}
        """Sent with every request: with the operator console on, PICOGATE_USER and
        PICOGATE_PASSWORD in the environment give HTTP Basic credentials of a console user."""
        user, password = os.environ.get("PICOGATE_USER"), os.environ.get("PICOGATE_PASSWORD")
        if user and password is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def get(self, path: str) -> Any:
        status, body = self._request(urllib.request.Request(self.url + API + path, headers=self.headers))
        if status != 200:
            raise GatewayUnreachable(self.url, f"GET {API}{path} answered {status}: {_error_of(body)}")
        return body

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        """(HTTP status, the JSON answer)."""
        request = urllib.request.Request(
            self.url + API + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **self.headers},
        )
        return self._request(request)

    def _request(self, request: urllib.request.Request) -> tuple[int, Any]:
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            not_sent = isinstance(reason, ConnectionRefusedError | socket.gaierror)
            if isinstance(reason, ConnectionRefusedError):
                why = "connection refused"
            elif isinstance(reason, TimeoutError | socket.timeout):
                why = f"no answer within {self.timeout:g} s"
            else:
                why = str(reason) or type(reason).__name__
            raise GatewayUnreachable(self.url, why, maybe_sent=not not_sent) from None
        try:
            return status, json.loads(data)
        except ValueError:
            text = data[:80].decode("utf-8", "replace").strip()
            raise GatewayUnreachable(
                self.url, f"it answered {status} {text!r}, which is not the local API of Picogate"
            ) from None


def _error_of(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return str(body)[:200]
