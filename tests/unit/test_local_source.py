"""The local I/O source against fake pins (unit tests; the real Blinka runs in
tests/integration/test_local_io.py): inputs that fail and come back, writes on a hung GPIO call,
an output that cannot be opened, a driver that raises what it should not."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from _agent import eventually
from picogate import ErrorCode, PointRegistry, Quality, Reading, WriteError
from picogate._router import WriteTicket
from picogate.local import LocalIoSource, LocalSection


class FakePin:
    def __init__(self, level: bool = True) -> None:
        self.level = level
        self.broken: BaseException | None = None
        self.written: list[Any] = []
        self.gate = threading.Event()
        self.gate.set()
        self.deinited = False

    @property
    def value(self) -> bool:
        if self.broken is not None:
            raise self.broken
        return self.level

    @value.setter
    def value(self, v: bool) -> None:
        self.gate.wait(10)
        self.written.append(v)

    @property
    def duty_cycle(self) -> int:
        return int(self.written[-1]) if self.written else 0

    @duty_cycle.setter
    def duty_cycle(self, v: int) -> None:
        self.value = v  # type: ignore[assignment]

    def deinit(self) -> None:
        self.deinited = True


class FakeHardware:
    pins: dict[str, FakePin] = {}  # noqa: RUF012
    refuse: set[str] = set()  # noqa: RUF012

    def _pin(self, name: str) -> FakePin:
        if name in self.refuse:
            raise OSError(16, "Device or resource busy")
        return self.pins.setdefault(name, FakePin())

    def digital_in(self, name: str, pull: str | None) -> FakePin:
        return self._pin(name)

    def digital_out(self, name: str, level: bool) -> FakePin:
        pin = self._pin(name)
        pin.written.append(level)
        return pin

    def pwm(self, name: str, freq: int, duty: float) -> FakePin:
        pin = self._pin(name)
        pin.written.append(round(duty * 65535))
        return pin


@pytest.fixture(autouse=True)
def _fresh() -> None:
    FakeHardware.pins = {}
    FakeHardware.refuse = set()


@asynccontextmanager
async def running(section: dict[str, Any]) -> AsyncIterator[tuple[LocalIoSource, list[Reading]]]:
    readings: list[Reading] = []

    async def emit(batch: list[Reading], *, wait: bool = True) -> None:
        readings.extend(batch)

    async def status(_s: Any) -> None:
        pass

    cfg = LocalSection.model_validate({"name": "io", "sample": "5ms", "timeout": "200ms", **section})
    source = LocalIoSource(
        cfg,
        registry=PointRegistry(),
        emit=emit,
        status_changed=status,
        hardware=FakeHardware,  # type: ignore[arg-type]
    )
    source.register()
    task = asyncio.create_task(source.run())
    try:
        yield source, readings
    finally:
        source.stop()
        async with asyncio.timeout(5):
            await task


def of(readings: list[Reading], point: str) -> list[tuple[Any, Quality]]:
    return [(r.value, r.quality) for r in readings if r.point == point]


def ticket() -> WriteTicket:
    return WriteTicket(time.monotonic() + 5, "io.x")


async def test_an_input_that_fails_goes_bad_once_and_comes_back_and_the_others_go_on() -> None:
    io = [
        {"name": "door", "kind": "di", "pin": "D4", "debounce": 0},
        {"name": "run", "kind": "di", "pin": "D5", "debounce": 0},
        {"name": "parts", "kind": "cnt", "pin": "D6", "debounce": 0, "every": "50ms"},
    ]
    async with running({"io": io}) as (source, readings):
        await eventually(lambda: of(readings, "door") and of(readings, "run"), what="first readings")
        FakeHardware.pins["D4"].broken = OSError(5, "Input/output error")
        FakeHardware.pins["D6"].broken = OSError(5, "Input/output error")
        await eventually(lambda: (None, Quality.BAD) in of(readings, "door"), what="bad")
        await eventually(lambda: (None, Quality.BAD) in of(readings, "parts"), what="bad")
        FakeHardware.pins["D5"].level = False
        await eventually(
            lambda: of(readings, "run")[-1] == (False, Quality.GOOD), what="the other pin read on"
        )
        FakeHardware.pins["D4"].broken = FakeHardware.pins["D6"].broken = None
        FakeHardware.pins["D4"].level = False
        await eventually(lambda: of(readings, "door")[-1] == (False, Quality.GOOD), what="back")
        await eventually(lambda: of(readings, "parts")[-1] == (0, Quality.GOOD), what="back")
    assert of(readings, "door") == [(True, Quality.GOOD), (None, Quality.BAD), (False, Quality.GOOD)]
    assert of(readings, "parts").count((None, Quality.BAD)) == 1
    assert source.stats.failures["error"] >= 2


async def test_a_driver_raising_systemexit_ends_nothing() -> None:
    io = [{"name": "door", "kind": "di", "pin": "D4"}]
    async with running({"io": io}) as (_source, readings):
        await eventually(lambda: of(readings, "door"), what="first reading")
        FakeHardware.pins["D4"].broken = SystemExit(3)
        await eventually(lambda: (None, Quality.BAD) in of(readings, "door"), what="bad")
        FakeHardware.pins["D4"].broken = None
        await eventually(lambda: of(readings, "door")[-1] == (True, Quality.GOOD), what="back")


async def test_writes_on_a_hung_gpio_call() -> None:
    """The first write hangs in the driver: outcome unknown.  A write meanwhile is refused as not
    written; once the call returns, writes work again.  At stop, the safe value goes last."""
    io = [{"name": "relay", "kind": "do", "pin": "D5", "safe": False}]
    async with running({"io": io}) as (source, readings):
        await eventually(lambda: of(readings, "relay"), what="opened")
        info = source.infos[0]
        pin = FakeHardware.pins["D5"]
        pin.gate.clear()
        with pytest.raises(WriteError) as first:
            await source.write(info, True, ticket())
        assert first.value.code is ErrorCode.OUTCOME_UNKNOWN
        with pytest.raises(WriteError) as second:
            await source.write(info, False, ticket())
        assert second.value.code is ErrorCode.DEVICE_OFFLINE
        assert "not written" in str(second.value)
        pin.gate.set()
        await eventually(lambda: not source.gpio.stuck, what="call returned")
        await source.write(info, True, ticket())
    assert pin.written == [False, True, True, False]  # init, the hung one, the last, safe
    assert of(readings, "relay")[-1] == (False, Quality.GOOD)
    assert pin.deinited
    with pytest.raises(WriteError) as after:
        await source.write(info, True, ticket())
    assert after.value.code is ErrorCode.DEVICE_OFFLINE


async def test_an_output_that_cannot_be_opened() -> None:
    FakeHardware.refuse = {"D6"}
    io = [
        {"name": "lamp", "kind": "do", "pin": "D6"},
        {"name": "fan", "kind": "pwm", "pin": "D12", "init": 0.5},
    ]
    async with running({"io": io}) as (source, readings):
        await eventually(lambda: of(readings, "lamp") and of(readings, "fan"), what="opened")
        assert of(readings, "lamp") == [(None, Quality.BAD)]
        assert of(readings, "fan") == [(0.5, Quality.GOOD)]
        with pytest.raises(WriteError) as exc:
            await source.write(source.infos[0], True, ticket())
        assert exc.value.code is ErrorCode.DEVICE_OFFLINE
        assert "Device or resource busy" in str(exc.value)
        FakeHardware.refuse = set()
        await eventually(lambda: of(readings, "lamp")[-1] == (False, Quality.GOOD), what="opened on retry")
        await source.write(source.infos[0], True, ticket())
    assert FakeHardware.pins["D6"].written == [False, True]


async def test_blinka_that_cannot_start_leaves_the_device_offline_and_its_points_bad() -> None:
    readings: list[Reading] = []

    async def emit(batch: list[Reading], *, wait: bool = True) -> None:
        readings.extend(batch)

    async def status(_s: Any) -> None:
        pass

    def no_board() -> Any:
        raise NotImplementedError("Board not supported")

    cfg = LocalSection.model_validate({"name": "io", "io": [{"name": "door", "kind": "di", "pin": "D4"}]})
    registry = PointRegistry()
    source = LocalIoSource(cfg, registry=registry, emit=emit, status_changed=status, hardware=no_board)
    source.register()
    task = asyncio.create_task(source.run())
    await eventually(lambda: bool(readings), what="bad readings")
    device = registry.device("io")
    assert device is not None
    assert device.state.value == "offline"
    assert "Board not supported" in device.reason
    assert of(readings, "door") == [(None, Quality.BAD)]
    source.stop()
    async with asyncio.timeout(5):
        await task
