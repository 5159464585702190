"""Prometheus metrics and `/healthz`, served by a small asyncio HTTP endpoint.

Counters that move on every reading are read from the components' own statistics when Prometheus
scrapes (a custom collector), so the hot path pays nothing for them.  Request latency is a real
histogram, observed per Modbus request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("picogate.metrics")

Collect = Callable[[], Iterable[Any]]


class _Collector:
    def __init__(self, collect: Collect) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Any]:
        return self._collect()

    def describe(self) -> Iterable[Any]:
        return []


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.request_seconds = Histogram(
            "picogate_modbus_request_seconds",
            "Modbus request round trip",
            ["device"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "picogate_write_seconds",
            "Write round trip through the command router",
            ["origin", "code"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=self.registry,
        )
        self.health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"}

    def add_collector(self, collect: Collect) -> None:
        self.registry.register(_Collector(collect))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def counter(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Any:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for values, v in samples:
        fam.add_metric(values, v)
    return fam


def gauge(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> Any:
    fam = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in samples:
        fam.add_metric(values, v)
    return fam


class MetricsServer:
    """GET /metrics (Prometheus text format) and GET /healthz (JSON)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"only GET\n"
            elif path == "/metrics":
                status, ctype, body = (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            elif path == "/healthz":
                health = self.metrics.health()
                ok = health.get("status") != "failing"
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "application/json", orjson.dumps(health) + b"\n"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, OSError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
