"""The write half of a Modbus line against a fake link: per-device bounded queues served in turn,
the deadline checked right before the frame goes out, and no exception leaving the line's task."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from picogate._registry import PointRegistry
from picogate._router import ErrorCode, WriteError, WriteTicket
from picogate.modbus import ModbusTcpDevice
from picogate.modbus._source import ModbusLine, _Write
from picogate.modbus._transport import FailKind, ModbusFailure


class FakeLink:
    """Records the frames that went out; `fail` makes the next write fail (or raise)."""

    def __init__(self) -> None:
        self.connected = True
        self.frames: list[tuple[int, int, list[Any]]] = []
        self.fail: BaseException | None = None
        self.timeout = 1.0
        self.description = "fake"

    def quiet_until(self, unit: int) -> float:
        return 0.0

    async def connect(self) -> None:
        raise ModbusFailure(FailKind.DISCONNECTED, "cannot connect")

    async def write(self, unit: int, table: Any, address: int, values: Any) -> None:
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        self.frames.append((unit, address, list(values)))

    def close(self) -> None:
        pass


def device(name: str, unit: int) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {
            "name": name,
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "unit_id": unit,
            "points": [
                {"name": "sp", "table": "holding", "address": 1, "writable": True},
                {"name": "scaled", "table": "holding", "address": 2, "type": "int16", "scale": 0.1},
            ],
        }
    )


async def _nothing(*_: Any) -> None:
    pass


def make_line() -> tuple[ModbusLine, FakeLink]:
    line = ModbusLine(
        [device("a", 1), device("b", 2)], registry=PointRegistry(), emit=_nothing, status_changed=_nothing
    )
    link = FakeLink()
    line.link = link  # type: ignore[assignment]
    return line, link


def submit(
    line: ModbusLine, dev: str, value: Any, *, point: str = "sp", deadline: float = 10.0
) -> asyncio.Task[None]:
    d = line.devices[dev]
    ticket = WriteTicket(time.monotonic() + deadline, f"{dev}.{point}")
    w = _Write(d, d.infos[point], value, asyncio.get_running_loop().create_future(), ticket)
    return asyncio.create_task(line.submit(w))


async def test_devices_are_served_in_turn() -> None:
    """One device's backlog does not hold up the next device's write."""
    line, link = make_line()
    tasks = [submit(line, "a", 1), submit(line, "a", 2), submit(line, "a", 3), submit(line, "b", 9)]
    await asyncio.sleep(0)
    await line._serve_writes()
    await asyncio.gather(*tasks)
    assert link.frames == [(1, 1, [1]), (2, 1, [9]), (1, 1, [2]), (1, 1, [3])]


async def test_a_full_device_queue_refuses_busy() -> None:
    line, link = make_line()
    line.set_write_queue(2)
    tasks = [submit(line, "a", i) for i in range(3)]
    other = submit(line, "b", 9)
    await asyncio.sleep(0)
    with pytest.raises(WriteError) as exc:
        await tasks[2]
    assert exc.value.code is ErrorCode.BUSY
    await line._serve_writes()
    await asyncio.gather(tasks[0], tasks[1], other)
    assert sorted(link.frames) == [(1, 1, [0]), (1, 1, [1]), (2, 1, [9])]


async def test_a_write_past_its_deadline_is_never_sent() -> None:
    line, link = make_line()
    task = submit(line, "a", 1, deadline=0.01)
    await asyncio.sleep(0.05)  # waiting behind a slow poll, say
    await line._serve_writes()
    with pytest.raises(WriteError) as exc:
        await task
    assert exc.value.code is ErrorCode.STALE
    assert link.frames == []


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (ModbusFailure(FailKind.TIMEOUT, "no reply within 1 s"), ErrorCode.OUTCOME_UNKNOWN),
        (ModbusFailure(FailKind.DISCONNECTED, "connection lost"), ErrorCode.OUTCOME_UNKNOWN),
        (ModbusFailure(FailKind.EXCEPTION, "exception 2", exception_code=2), ErrorCode.DEVICE_ERROR),
    ],
)
async def test_a_sent_write_without_confirmation_is_outcome_unknown(
    failure: Exception, code: ErrorCode
) -> None:
    line, link = make_line()
    link.fail = failure
    task = submit(line, "a", 1)
    await asyncio.sleep(0)
    await line._serve_writes()
    with pytest.raises(WriteError) as exc:
        await task
    assert exc.value.code is code


async def test_no_connection_is_device_offline() -> None:
    line, link = make_line()
    link.connected = False
    task = submit(line, "a", 1)
    await asyncio.sleep(0)
    await line._serve_writes()
    with pytest.raises(WriteError) as exc:
        await task
    assert exc.value.code is ErrorCode.DEVICE_OFFLINE
    assert "nothing written" in str(exc.value)


async def test_an_unforeseen_exception_fails_the_write_not_the_line() -> None:
    line, link = make_line()
    link.fail = KeyError("a bug")
    failing, fine = submit(line, "a", 1), submit(line, "b", 2)
    await asyncio.sleep(0)
    await line._serve_writes()  # does not raise
    with pytest.raises(WriteError) as exc:
        await failing
    assert exc.value.code is ErrorCode.DEVICE_ERROR
    await fine
    assert link.frames == [(2, 1, [2])]


async def test_a_value_that_cannot_be_encoded_is_out_of_range_not_an_exception() -> None:
    """Before: OverflowError escaped `_serve_writes` and ended the line's task (and the agent)."""
    line, link = make_line()
    task = submit(line, "a", 10**400, point="scaled")
    await asyncio.sleep(0)
    await line._serve_writes()
    with pytest.raises(WriteError) as exc:
        await task
    assert exc.value.code is ErrorCode.OUT_OF_RANGE
    assert link.frames == []
