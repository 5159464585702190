"""The pure parts of the local I/O as data (debounce, edge counters, backoff, w1_slave), and the
bounded worker that runs the blocking driver calls."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from picogate.local import _w1
from picogate.local._inputs import Backoff, Debouncer, EdgeCounter
from picogate.local._worker import DriverTimeout, Worker

# (time, level read) → the debounced level reported (None: nothing new), debounce 20 ms
BOUNCY = [
    (0.000, False, False),  # the first read is taken at once
    (0.010, True, None),  # a bounce...
    (0.020, False, None),  # ...that did not hold
    (0.030, True, None),  # a new level starts
    (0.040, True, None),
    (0.050, True, True),  # held for 20 ms
    (0.060, False, None),
    (0.070, True, None),  # back before it held
    (0.090, True, None),
]


def test_debounce() -> None:
    d = Debouncer(0.02)
    assert [d.update(level, t) for t, level, _ in BOUNCY] == [want for _, _, want in BOUNCY]


def test_no_debounce_takes_every_change() -> None:
    d = Debouncer(0.0)
    assert [d.update(v, 0.0) for v in (True, False, False, True)] == [True, False, None, True]


@pytest.mark.parametrize(
    ("edge", "count"),
    [("rise", 2), ("fall", 2), ("both", 4)],
)
def test_edge_counter(edge: str, count: int) -> None:
    c = EdgeCounter(edge)  # type: ignore[arg-type]
    for level in (False, True, True, False, True, False):
        c.level(level)
    assert c.count == count


def test_edge_counter_makes_up_no_edge_after_a_lost_read() -> None:
    c = EdgeCounter("rise")
    c.level(False)
    c.lost()
    c.level(True)  # unknown what happened meanwhile: not counted
    c.level(False)
    c.level(True)
    assert c.count == 1


def test_backoff_doubles_up_to_its_most_and_resets() -> None:
    b = Backoff(1.0, 5.0)
    assert [b.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    b.ok()
    assert b.failed() == 1.0


GOOD = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"


@pytest.mark.parametrize(
    ("text", "result"),
    [
        (GOOD, 23.125),
        (GOOD.replace("t=23125", "t=-10062"), -10.062),
        (GOOD.replace("YES", "NO"), "CRC check failed"),
        (GOOD.replace("t=23125", "t=85000"), "power-on value"),
        (GOOD.replace("t=23125", "t=127000"), "outside the DS18B20's range"),
        (GOOD.replace("t=23125", ""), "no temperature"),
        ("", "0 lines"),
        ("\x00\xff garbage", "1 lines"),
    ],
)
def test_w1_slave(text: str, result: float | str) -> None:
    if isinstance(result, float):
        assert _w1.parse(text) == result
    else:
        with pytest.raises(_w1.W1Error, match=result):
            _w1.parse(text, where="28-0316a2794eff")


def test_w1_find(tmp_path: Path) -> None:
    with pytest.raises(_w1.W1Error, match="no DS18B20"):
        _w1.find(tmp_path, None)
    (tmp_path / "28-000000000001").mkdir()
    assert _w1.find(tmp_path, None).name == "28-000000000001"
    (tmp_path / "28-000000000002").mkdir()
    with pytest.raises(_w1.W1Error, match=r"2 DS18B20s .*: give rom"):
        _w1.find(tmp_path, None)
    assert _w1.find(tmp_path, "28-000000000002").name == "28-000000000002"
    with pytest.raises(_w1.W1Error, match="no such DS18B20"):
        _w1.find(tmp_path, "28-000000000003")


async def test_worker_runs_calls_off_the_loop_and_returns_their_outcome() -> None:
    w = Worker("bus", timeout=1.0)
    assert await w.call(threading.current_thread) is not threading.current_thread()
    with pytest.raises(ZeroDivisionError):
        await w.call(lambda: 1 / 0)
    assert await w.call(lambda x: x + 1, 41) == 42
    w.close()


async def test_a_hung_call_is_given_up_and_later_calls_are_refused_until_it_returns() -> None:
    w = Worker("i2c SDA/SCL", timeout=0.1)
    gate = threading.Event()
    with pytest.raises(DriverTimeout, match=r"no answer within 0\.1s"):
        await w.call(gate.wait, 10)
    assert w.stuck
    for _ in range(20):  # refused at once: no queue, no new thread
        with pytest.raises(DriverTimeout, match="still running"):
            await w.call(lambda: 1)
    assert [t.name for t in threading.enumerate() if t.name.startswith("picogate-i2c")] == [
        "picogate-i2c SDA/SCL"
    ]
    assert w.timeouts == 1
    gate.set()
    for _ in range(100):
        if not w.stuck:
            break
        await asyncio.sleep(0.01)
    assert await w.call(lambda: "back") == "back"
    w.close()


def _value_or_clean_error(text: str) -> None:
    try:
        value = _w1.parse(text)
    except _w1.W1Error:
        return
    assert -55.0 <= value <= 125.0


@given(st.text(max_size=200))
def test_w1_slave_text_gives_a_value_or_a_clean_error(text: str) -> None:
    _value_or_clean_error(text)


@given(st.binary(max_size=120).map(lambda b: b.decode("latin-1")))
def test_w1_slave_bytes_give_a_value_or_a_clean_error(text: str) -> None:
    _value_or_clean_error(text)
