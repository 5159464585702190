"""When a Modbus line sleeps and wakes: the devices of one poll slot share one timer (a fake link
that answers at once; the grid itself is measured by bench/run.py, never asserted here)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from picogate._registry import PointRegistry
from picogate.modbus import ModbusTcpDevice, _source
from picogate.modbus._source import _Alarms, build_lines


class InstantLink:
    connected = True
    description = "instant"
    timeout = 1.0

    def __init__(self) -> None:
        self.reads = 0

    def quiet_until(self, unit: int) -> float:
        return 0.0

    async def read(self, unit: int, table: Any, start: int, count: int) -> list[int]:
        self.reads += 1
        return [self.reads & 0xFFFF] * count

    def close(self) -> None:
        pass


def device(i: int, poll: str) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {
            "name": f"d{i}",
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": 1000 + i,  # a line each, as 500 separate devices
            "poll": poll,
            "points": [{"name": "r", "table": "holding", "address": 0, "type": "uint16"}],
        }
    )


def lines_on(devices: list[ModbusTcpDevice], links: type[InstantLink] = InstantLink) -> list[Any]:
    """The lines of `devices`, each on a link of `links` (readings and states go nowhere)."""

    async def nowhere(_: Any) -> None:
        pass

    lines = build_lines(devices, registry=PointRegistry(), emit=nowhere, status_changed=nowhere)
    for line in lines:
        line.link = links()
    return lines


async def run_for(lines: list[Any], seconds: float) -> None:
    """Run the lines for `seconds`, then stop them and wait for their end."""
    async with asyncio.TaskGroup() as tg:
        for line in lines:
            tg.create_task(line.run())
        await asyncio.sleep(seconds)
        for line in lines:
            line.stop()


async def test_one_timer_per_instant() -> None:
    alarms = _Alarms()
    a, b, c = asyncio.Event(), asyncio.Event(), asyncio.Event()
    at = time.monotonic() + 0.05
    alarms.set(at, a)
    alarms.set(at, b)
    alarms.set(at + 1.0, c)
    assert alarms.timers == 2
    alarms.unset(at + 1.0, c)  # woken early (a write): its timer goes
    assert alarms.timers == 1
    await asyncio.wait_for(asyncio.gather(a.wait(), b.wait()), 5)
    assert alarms.timers == 0
    assert not c.is_set()
    alarms.unset(at, a)  # after the ring: nothing to take back
    assert alarms.timers == 0


async def test_lines_of_one_slot_wake_from_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """40 devices polled every 200 ms are spread over 4 slots of 50 ms: 10 lines wake from each
    slot's timer, rather than a timer set and cancelled per line and poll.  The grid begins with
    these lines, as it does with a gateway's (an earlier test in this process began another)."""
    monkeypatch.setattr(_source, "_EPOCH", [])

    lines = lines_on([device(i, "200ms") for i in range(40)])
    links = [line.link for line in lines]
    loop = asyncio.get_running_loop()
    real_call_later = loop.call_later
    timers = 0

    def counting_call_later(*args: Any, **kw: Any) -> asyncio.TimerHandle:
        nonlocal timers
        timers += 1
        return real_call_later(*args, **kw)

    loop.call_later = counting_call_later  # type: ignore[method-assign]
    try:
        await run_for(lines, 0.5)
    finally:
        del loop.call_later
    polls = sum(link.reads for link in links)
    assert polls >= 40  # every device polled
    assert timers * 5 <= polls  # ~10 lines per timer (a timer per line and poll before)


def test_a_line_sleeps_once_per_poll_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop's timers count in whole milliseconds and may ring up to one early: a line woken
    a little before its instant polls then, instead of setting a timer for the rest (a second
    sleep, timer and task step per poll)."""
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.setattr(_source, "_EPOCH", [])

    async def main() -> tuple[int, int]:
        lines = lines_on([device(i, "50ms") for i in range(20)])
        links = [line.link for line in lines]
        sleeps = 0
        for line in lines:
            real_sleep = line._sleep_until

            async def counting_sleep(at: float, real_sleep: Any = real_sleep) -> None:
                nonlocal sleeps
                sleeps += 1
                await real_sleep(at)

            line._sleep_until = counting_sleep  # type: ignore[method-assign]
        await run_for(lines, 1.0)
        return sum(link.reads for link in links), sleeps

    loop = uvloop.new_event_loop()
    try:
        polls, sleeps = loop.run_until_complete(main())
    finally:
        loop.close()
    assert polls >= 20 * 5  # every device polled, again and again
    assert sleeps <= polls + 20  # one sleep before each poll (and a first one per line)


class TimedLink(InstantLink):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def read(self, unit: int, table: Any, start: int, count: int) -> list[int]:
        self.times.append(time.monotonic())
        return await super().read(unit, table, start, count)


async def test_lines_built_later_poll_on_the_grid_of_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line built after the others (a reload rebuilds the lines whose devices changed) polls
    once at once, then on the grid every line shares (one timer for the instants of both)."""
    monkeypatch.setattr(_source, "_EPOCH", [])

    def start(i: int) -> tuple[Any, TimedLink]:
        (line,) = lines_on([device(i, "200ms")], TimedLink)
        return line, line.link

    async with asyncio.TaskGroup() as tg:
        first, _ = start(0)
        tg.create_task(first.run())
        await asyncio.sleep(0.32)  # 0.12 s after an instant of the grid, 0.08 s before the next
        later, later_link = start(1)
        tg.create_task(later.run())
        await asyncio.sleep(0.13)  # both polled at 0.4 s (first) or just after 0.32 s (later)
        shared = later._alarms is first._alarms and first._alarms.timers == 1  # both sleep until 0.6 s
        await asyncio.sleep(0.55)
        first.stop()
        later.stop()
    epoch = _source._EPOCH[0]
    phases = [round((t - epoch) % 0.2, 3) for t in later_link.times[1:]]
    assert len(phases) >= 2
    assert all(p < 0.05 or p > 0.15 for p in phases), phases  # on the grid, not 0.1 s off it
    assert shared


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_1ms_grid_polls_at_most_1000_times_a_second(
    monkeypatch: pytest.MonkeyPatch, loop_kind: str
) -> None:
    """`poll: 1ms` is a grid, not "as fast as it answers" (`poll: 0`): a device that answers at
    once is polled at most once per millisecond, also where a line woken a little early polls
    at once."""
    monkeypatch.setattr(_source, "_EPOCH", [])
    if loop_kind == "uvloop":
        loop = pytest.importorskip("uvloop").new_event_loop()
    else:
        loop = asyncio.new_event_loop()

    async def main() -> tuple[int, float]:
        (line,) = lines_on([device(0, "1ms")])
        started = time.monotonic()
        await run_for([line], 0.5)
        return line.link.reads, time.monotonic() - started

    try:
        polls, seconds = loop.run_until_complete(main())
    finally:
        loop.close()
    assert polls >= 10  # it polls
    assert polls <= seconds * 1000 + 2  # one per grid instant at most
