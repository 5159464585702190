"""The Modbus request histogram: observed without a lock on the hot path, scraped exactly as
prometheus_client's own histogram renders the same observations."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from picogate._metrics import LoopHistogram, Metrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def test_the_loop_histogram_renders_as_prometheus_clients() -> None:
    theirs_reg, ours_reg = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    theirs = Histogram("x_seconds", "Round trip", ["device"], buckets=BUCKETS, registry=theirs_reg)
    ours = LoopHistogram("x_seconds", "Round trip", ["device"], BUCKETS, ours_reg)
    rnd = random.Random(7)
    # bounds themselves (`le` includes them), between them, beyond the last, zero
    values = [*BUCKETS, 0.0, 7.5, *(rnd.uniform(0, 6) for _ in range(500))]
    for v in values:
        device = rnd.choice(["boiler", "pump"])
        theirs.labels(device).observe(v)
        ours.labels(device).observe(v)
    expected = [line for line in generate_latest(theirs_reg).decode().splitlines() if "_created" not in line]
    assert generate_latest(ours_reg).decode().splitlines() == expected


def test_a_removed_series_leaves_the_scrape() -> None:
    metrics = Metrics()
    metrics.request_seconds.labels("boiler").observe(0.003)
    metrics.request_seconds.labels("pump").observe(0.003)
    metrics.request_seconds.remove("pump")
    text = metrics.render().decode()
    assert 'picogate_modbus_request_seconds_bucket{device="boiler",le="0.005"} 1.0' in text
    assert 'device="pump"' not in text
