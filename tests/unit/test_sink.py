"""RunningSink's reconnect pacing: a peer that drops the connection at the first message is not
reconnected to as fast as it answers; a peer back from an outage is used again at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from picogate._outbox import Envelope, Outbox, Record, Refused
from picogate._sink import RunningSink, SinkUnavailable


class ScriptedSink:
    name = "mqtt"

    def __init__(self) -> None:
        self.opens: list[float] = []
        self.fail_opens = 0  # the next open()s that fail
        self.fail_delivers = 1_000_000  # the next deliver()s that lose the connection
        self.lost_at: list[float] = []
        self.delivered: list[bytes] = []
        self.delivered_at = 0.0
        self.done = asyncio.Event()

    async def open(self) -> None:
        self.opens.append(asyncio.get_running_loop().time())
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise SinkUnavailable("refused")

    async def deliver(self, records: Sequence[Record]) -> Sequence[Refused] | None:
        now = asyncio.get_running_loop().time()
        if self.fail_delivers > 0:
            self.fail_delivers -= 1
            self.lost_at.append(now)
            raise SinkUnavailable("the peer closed the connection")
        self.delivered.extend(r.payload for r in records)
        self.delivered_at = now
        self.done.set()
        return None

    async def close(self) -> None:
        pass


async def run_for(sink: RunningSink, seconds: float) -> None:
    task = asyncio.create_task(sink.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_connection_lost_at_each_delivery_slows_down(tmp_path: Path) -> None:
    """Every CONNECT succeeds, every delivery fails: the waits double (a reset at each CONNECT
    reconnected as fast as the peer answered: a storm)."""
    async with Outbox(tmp_path / "o.sqlite") as box:
        await box.append([Envelope("mqtt", "t", b"poison")])
        scripted = ScriptedSink()
        sink = RunningSink(scripted, box, min_delay=0.05, max_delay=1.0)
        await run_for(sink, 1.6)
        # 0.05 · (1, 2, 4, 8, 16) with full jitter (×0.5..1): at most about 8 connects in 1.6 s
        assert 3 <= len(scripted.opens) <= 9, scripted.opens
        gaps = [b - a for a, b in zip(scripted.opens, scripted.opens[1:], strict=False)]
        assert gaps[-1] > 4 * 0.05 * 0.5


async def test_after_an_outage_a_lost_first_delivery_costs_one_short_wait(tmp_path: Path) -> None:
    """Connects failed for a while (their backoff grew to 1.28 s); the peer is back and the first
    delivery is lost (its reply went missing): the next try comes after the shortest wait, not
    after the outage's backoff."""
    async with Outbox(tmp_path / "o.sqlite") as box:
        await box.append([Envelope("mqtt", "t", b"1")])
        scripted = ScriptedSink()
        scripted.fail_opens = 6
        scripted.fail_delivers = 1
        sink = RunningSink(scripted, box, min_delay=0.02, max_delay=5.0)
        task = asyncio.create_task(sink.run())
        try:
            async with asyncio.timeout(10):
                await scripted.done.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert len(scripted.lost_at) == 1
        assert scripted.delivered_at - scripted.lost_at[0] < 0.2
