"""The gateway's MQTT path under network faults: a fault-injecting proxy (tests/_fault_proxy.py)
between the agent and a real mosquitto cuts the connection mid-packet (both directions), splits
and delays segments, and stalls each side's reader, under a steady stream of readings.  Checked
at a subscriber on the broker itself: no accepted reading lost, none reordered per point, and
duplicates only where QoS 1 documents them (docs/mqtt.md: what was in flight when a connection
dropped is sent again), i.e. each point's messages form at most one increasing run per
connection the gateway made."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from _agent import base_config, eventually, recorder, running_gateway, wait_msgs
from _fault_proxy import FaultProxy
from picogate._outbox import Envelope

POINTS = ("a", "b", "c")


def runs(values: list[int]) -> int:
    """How many strictly increasing runs `values` is made of."""
    return 1 + sum(1 for x, y in itertools.pairwise(values) if y <= x)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_no_reading_lost_or_reordered_through_cuts_splits_and_stalls(
    mosquitto: Any, tmp_path: Path, protocol: str
) -> None:
    proxy = await FaultProxy(mosquitto.port).start()
    gw_root = f"picogate/faults{protocol.replace('.', '')}"
    cfg = base_config(tmp_path, proxy.port, [], mqtt={"protocol": protocol, "keepalive": "5s"})
    cfg["gateway"]["id"] = gw_root.split("/")[1]
    sent: dict[str, list[int]] = {p: [] for p in POINTS}
    try:
        with recorder(mosquitto.host, mosquitto.port, f"{gw_root}/data/#") as rec:
            async with running_gateway(cfg) as gw:
                sink = gw.parts.sinks[0]
                stop = asyncio.Event()

                async def stream() -> None:
                    """~150 readings/s over three points, each accepted (committed) in turn."""
                    n = 0
                    while not stop.is_set():
                        n += 1
                        envelopes = [
                            Envelope("mqtt", f"{gw_root}/data/s/{p}", json.dumps({"v": n}).encode(), 1, False)
                            for p in POINTS
                        ]
                        await gw.parts.pipeline.post(envelopes)  # returns once committed: accepted
                        for p in POINTS:
                            sent[p].append(n)
                        await asyncio.sleep(0.02)

                task = asyncio.create_task(stream())
                try:
                    await asyncio.sleep(1.0)
                    proxy.split, proxy.delay = True, 0.0005  # tiny segments, each a little late
                    await asyncio.sleep(2.0)
                    proxy.split, proxy.delay = False, 0.0
                    for direction in ("up", "down", "up"):  # cut mid-stream, so mid-packet
                        cuts, connects = proxy.cuts, sink.stats.connects
                        proxy.cut(direction, after=137)
                        await eventually(lambda c=cuts: proxy.cuts > c, 10, f"a cut {direction}")
                        await eventually(lambda c=connects: sink.stats.connects > c, 10, "a reconnect")
                        await asyncio.sleep(0.5)
                    for direction in ("up", "down"):  # a reader that stops for a while
                        proxy.stall(direction)
                        await asyncio.sleep(1.5)
                        proxy.resume(direction)
                        await asyncio.sleep(0.5)
                finally:
                    stop.set()
                    await task
                await eventually(lambda: gw.parts.outbox.depth("mqtt") == 0, 30, "the outbox drained")
                connects = sink.stats.connects
                last = {p: sent[p][-1] for p in POINTS}
                await wait_msgs(
                    rec,
                    lambda ms: all(
                        any(m.topic.endswith(f"/{p}") and m.json()["v"] == last[p] for m in ms)
                        for p in POINTS
                    ),
                    20,
                    "the last readings at the subscriber",
                )
    finally:
        await proxy.stop()
    assert proxy.cuts == 3
    assert connects >= 4
    for p in POINTS:
        got = [m.json()["v"] for m in rec.on(f"{gw_root}/data/s/{p}")]
        assert sorted(set(got)) == sent[p], f"{p}: lost {sorted(set(sent[p]) - set(got))[:20]}"
        assert runs(got) <= connects, f"{p}: {runs(got)} increasing runs over {connects} connections"
        duplicates = len(got) - len(set(got))
        assert duplicates <= (connects - 1) * sink.window * sink.batch_size
