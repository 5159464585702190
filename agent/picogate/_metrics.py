"""Prometheus metrics and `/healthz`, two routes of the gateway's HTTP server (`picogate._http`).

Counters that move on every reading are read from the components' own statistics when Prometheus
scrapes (a custom collector), so the hot path pays nothing for them.  Request latency is a real
histogram, observed per Modbus request: a `LoopHistogram`, which counts without a lock (the event
loop's thread only) and is turned into Prometheus samples at the scrape.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

log = logging.getLogger("picogate.metrics")

Collect = Callable[[], Iterable[Any]]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Collector:
    def __init__(self, collect: Collect) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Any]:
        return self._collect()

    def describe(self) -> Iterable[Any]:
        return []


class _Counts:
    """One labelled series of a `LoopHistogram`: a count per bucket (the last for +Inf) and a sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1  # `le`: a bound's own value is in it
        self.sum += value


class LoopHistogram:
    """A labelled histogram observed from the event loop's thread only, for every request: a
    bisect and two additions per observation (prometheus_client's takes a lock and walks the
    buckets in Python); the same series at the scrape.  `labels()` and `remove()` as theirs."""

    def __init__(
        self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = labels
        self.bounds = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], _Counts] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Counts:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = _Counts(self.bounds)
        return series

    def remove(self, *values: str) -> None:
        del self._series[values]

    def collect(self) -> Iterable[Any]:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for values, series in list(self._series.items()):
            cumulative = list(accumulate(series.counts))
            fam.add_metric(list(values), list(zip(les, cumulative, strict=True)), series.sum)
        yield fam

    def describe(self) -> Iterable[Any]:
        return []


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.request_seconds = LoopHistogram(
            "picogate_modbus_request_seconds",
            "Modbus request round trip",
            ["device"],
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            self.registry,
        )
        self.write_seconds = Histogram(
            "picogate_write_seconds",
            "Write round trip through the command router",
            ["origin", "code"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=self.registry,
        )
        self.health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"}

    def add_collector(self, collect: Collect) -> Any:
        """Read `collect` at every scrape; returns a handle for `remove_collector`."""
        collector = _Collector(collect)
        self.registry.register(collector)
        return collector

    def remove_collector(self, collector: Any) -> None:
        self.registry.unregister(collector)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def routes(self) -> list[web.RouteDef]:
        """GET /metrics (Prometheus text format) and GET /healthz (JSON; 503 while failing)."""
        return [web.get("/metrics", self._serve_metrics), web.get("/healthz", self._serve_health)]

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _serve_health(self, request: web.Request) -> web.Response:
        health = self.health()
        status = 503 if health.get("status") == "failing" else 200
        return web.Response(body=orjson.dumps(health) + b"\n", status=status, content_type="application/json")


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
