"""The gateway's local HTTP server: one aiohttp application, on `metrics.host:metrics.port`
(127.0.0.1:9108 by default), that the gateway owns and the parts fill with their own routes.

    http = HttpServer(host="127.0.0.1", port=9108)
    http.add_routes([web.get("/metrics", serve_metrics)])   # before start(): each part adds its own
    http.add_middleware(authenticate)                       # optional: runs inside the bounds below
    http.ssl = ssl_context                                  # optional: serve HTTPS
    await http.start()
    ...
    await http.close()

It serves `/metrics` and `/healthz` (`picogate._metrics`) and the local API (`/api/v1/…`,
`picogate.api`); an operator console adds its pages, its authentication (a middleware) and TLS
(`ssl`) to the same application through these three seams, without touching the others' routes.

Requests are bounded, and whatever arrives gets a clear answer, never an unhandled exception in
the log:

| what | answer |
|------|--------|
| request line longer than `MAX_REQUEST_LINE` | 414 URI Too Long |
| a header line longer than `MAX_FIELD`, or more than `MAX_HEADERS` headers | 431 Request Header Fields Too Large |
| anything else that is not HTTP/1.x | 400 Bad Request (with aiohttp's reason) |
| a body longer than `MAX_BODY` | 413 Content Too Large |
| unknown path | 404, listing the paths this server has |
| a route that raises | 500; the traceback is logged once, as an error (a bug to report) |

Refusals are logged at debug level and counted (`refused`), so that a scanner cannot fill the log.

aiohttp answers a request it cannot parse with 400 and logs the parser's exception with a
traceback; `_Protocol.handle_error` (aiohttp's documented `RequestHandler`, one method replaced)
answers 414/431/400 instead and logs one line.  aiohttp's parser reports an oversized line with
the limit it exceeded, so the request line and header lines have different limits on purpose.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.typedefs import Middleware

from picogate._metrics import counter

__all__ = ["MAX_BODY", "MAX_FIELD", "MAX_HEADERS", "MAX_REQUEST_LINE", "HttpServer", "new_app"]

log = logging.getLogger("picogate.http")

MAX_REQUEST_LINE = 4096
"""Bytes of the request line's target (path and query)."""
MAX_FIELD = 8190
"""Bytes of one header line (aiohttp's default); must differ from MAX_REQUEST_LINE (see above)."""
MAX_HEADERS = 64
MAX_BODY = 64 * 1024
KEEPALIVE = 15.0
"""Seconds an idle kept-alive connection stays open."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_BODY_KEY = web.AppKey("picogate_max_body", int)


def _text(status: int, reason: str) -> web.Response:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return web.Response(status=status, text=f"{status} {phrase}: {reason}\n")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths get a 404 that says what there is; a route that raises gets a 500 and one
    log line with its traceback; the server goes on."""
    apps = request.match_info.apps  # the innermost application's bound: a sub-application may differ
    limit = (apps[-1] if apps else request.app).get(_MAX_BODY_KEY)
    if limit is not None and request.content_length is not None and request.content_length > limit:
        response = _text(413, f"the body is longer than {limit} bytes")
        response.force_close()  # without reading (or lingering over) what was announced
        return response
    try:
        return await handler(request)
    except web.HTTPNotFound:
        paths = sorted({r.canonical for r in request.app.router.resources()})
        return _text(404, f"no resource {request.path}; this server has {', '.join(paths) or 'none'}")
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return _text(500, "the request failed; see the gateway's log")


def new_app(*, max_body: int = MAX_BODY, routes_refuse_large: bool = False) -> web.Application:
    """An aiohttp application with the bounds and the error handling of the gateway's servers.

    `routes_refuse_large`: a body over `max_body` reaches the route, whose `request.read()` raises
    `HTTPRequestEntityTooLarge` (for a route that answers in its own format and audits the refusal,
    like EdgeX's command PUT); otherwise the middleware answers 413 before the route runs."""
    app = web.Application(client_max_size=max_body, middlewares=[_guard])
    if not routes_refuse_large:
        app[_MAX_BODY_KEY] = max_body
    return app


class _Protocol(web.RequestHandler):  # aiohttp's, one method replaced
    """aiohttp's connection handler; answers requests it cannot parse with 414/431/400."""

    owner: HttpServer

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if exc is not None and not isinstance(exc, HttpProcessingError):
            # A route raised past the middleware (it should not): log it once, answer 500.
            log.error("HTTP request failed", exc_info=exc)
            code, reason = 500, "the request failed; see the gateway's log"
        else:
            code, reason = _refusal(exc, status, max_line=self.max_line_size, max_headers=self.max_headers)
            self.owner.refused[code] += 1
            log.debug("HTTP %d to %s: %s", code, request.remote, reason)
        if request.writer.output_size > 0:  # an answer was already started: only closing is left
            raise ConnectionError("response already started")
        response = _text(code, reason)
        response.force_close()
        return response


def _refusal(exc: BaseException | None, status: int, *, max_line: int, max_headers: int) -> tuple[int, str]:
    """(status, reason) for a request aiohttp could not parse (or a handler that timed out)."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if str(limit) == str(max_line):
            return 414, f"the request line is longer than {max_line} bytes"
        return 431, f"a header line is longer than {limit} bytes"
    if isinstance(exc, BadHttpMessage) and "too many headers" in exc.message.lower():
        return 431, f"more than {max_headers} header lines"
    if isinstance(exc, HttpProcessingError):
        code = exc.code if 400 <= exc.code < 500 else 400
        text = (exc.message or "malformed request").encode("ascii", "backslashreplace").decode()
        return code, text[:200]
    if status == 504:
        return 504, "the request took too long"
    return (status if 400 <= status < 600 else 400), "malformed request"


class HttpServer:
    """One aiohttp application served on `host:port`; routes are added to `app` before `start()`."""

    def __init__(
        self, *, host: str, port: int, name: str = "HTTP server", app: web.Application | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.app = app if app is not None else new_app()
        self.refused: collections.Counter[int] = collections.Counter()
        """Requests refused before they reached a route, by status (414, 431, 400, …)."""
        self.ssl: ssl.SSLContext | None = None
        """Set before `start()` to serve HTTPS with this context (a server certificate and key)."""
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl is not None else 'http'}://{host}:{self.port}"

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        """Add routes (before `start()`); a path another part already serves is an error."""
        self.app.add_routes(routes)

    def add_middleware(self, middleware: Middleware) -> None:
        """Add an aiohttp middleware (before `start()`), e.g. authentication.  It runs inside the
        server's own bounds and error handling (a body too large is refused before it; what it
        raises is answered like what a route raises), around every route, in the order added."""
        self.app.middlewares.append(middleware)

    async def start(self) -> None:
        """Listen; raises OSError (address in use, …)."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        loop = asyncio.get_running_loop()
        aiohttp_server = runner.server
        assert aiohttp_server is not None

        def connection() -> _Protocol:
            protocol = _Protocol(
                aiohttp_server,
                loop=loop,
                access_log=None,  # type: ignore[arg-type]  # None: no access log (typed as Logger)
                keepalive_timeout=KEEPALIVE,
                max_line_size=MAX_REQUEST_LINE,
                max_field_size=MAX_FIELD,
                max_headers=MAX_HEADERS,
            )
            protocol.owner = self
            return protocol

        try:
            self._server = await loop.create_server(
                connection, self.host, self.port, reuse_address=True, ssl=self.ssl
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("%s on %s", self.name, self.url)

    async def close(self) -> None:
        server, self._server = self._server, None
        runner, self._runner = self._runner, None
        if server is not None:
            server.close()
        if runner is not None:
            await runner.cleanup()  # closes the connections, lets requests in progress finish (1 s)
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()

    def collect(self, metric: str = "picogate_http_refused") -> Iterable[Any]:
        yield counter(
            metric,
            "HTTP requests refused before a route (414, 431, 400, …), by status",
            ["code"],
            (([str(code)], n) for code, n in sorted(self.refused.items())),
        )
