"""The firmware's Modbus RTU master (picogate_fw.mb_master) on real MicroPython, across socat pty
pairs, against pymodbus RTU servers holding known values (tests/_peers.py)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent.parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _fwbus import RtuRelay, run_master  # noqa: E402
from _peers import ModbusRtuPeer, SocatPtyPair  # noqa: E402

StartRtu = Callable[..., Awaitable[ModbusRtuPeer]]

HR = [250, 1, 0, 65535, 4660, 7, 8, 9, 10, 11]
IR = [100, 200, 300]
CO = [True, False, True, True, False, False, False, False, True, True]
DI = [False, True, True, False, False, True, False, True, True]


def _bus(reqs: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"bus": 0, "baud": 115200, "timeout_ms": 150, "retries": 1, "backoff_ms": 2000}
    cfg.update(kw)
    cfg["reqs"] = reqs
    return cfg


def _words(values: list[int]) -> str:
    return "".join(f"{v:04x}" for v in values)


def _bits(values: list[bool]) -> str:
    out = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            out[i // 8] |= 1 << (i % 8)
    return out.hex()


async def test_reads_of_every_function_code(modbus_rtu_server: StartRtu, tmp_path: Path) -> None:
    peer = await modbus_rtu_server({3: {"hr": HR, "ir": IR, "co": CO, "di": DI}})
    reqs = [
        {"u": 3, "fc": 3, "a": 0, "n": 10, "every_ms": 100},
        {"u": 3, "fc": 4, "a": 1, "n": 2, "every_ms": 100},
        {"u": 3, "fc": 1, "a": 0, "n": 10, "every_ms": 100},
        {"u": 3, "fc": 2, "a": 1, "n": 8, "every_ms": 100},
    ]
    run = await run_master(peer.device, _bus(reqs), tmp_path, ms=60000, max_tx=12)
    expected = [_words(HR), _words(IR[1:3]), _bits(CO), _bits(DI[1:9])]
    for i, data in enumerate(expected):
        got = run.of(i)
        assert got, f"no result for req {i}: {run.output}"
        assert {(r["st"], r["data"]) for r in got} == {("ok", data)}, i
    assert run.stats["timeout"] == 0
    assert run.stats["crc"] == 0
    assert run.de[:4] == [0, 1, 0, 1]  # DE low at start, high to send, low after


async def test_writes_of_every_function_code(modbus_rtu_server: StartRtu, tmp_path: Path) -> None:
    peer = await modbus_rtu_server({5: {"hr": [0] * 20, "co": [False] * 20}})
    writes = [
        {"at": 0, "u": 5, "fc": 6, "a": 1, "v": [4242]},
        {"at": 0, "u": 5, "fc": 16, "a": 10, "v": [1, 2, 65535]},
        {"at": 0, "u": 5, "fc": 5, "a": 3, "v": [True]},
        {"at": 0, "u": 5, "fc": 15, "a": 8, "v": [1, 0, 1, 1, 0, 0, 1, 1, 1]},
    ]
    reqs = [
        {"u": 5, "fc": 3, "a": 0, "n": 13, "every_ms": 50},
        {"u": 5, "fc": 1, "a": 0, "n": 17, "every_ms": 50},
    ]
    run = await run_master(peer.device, _bus(reqs), tmp_path, ms=60000, max_tx=10, writes=writes)
    assert [(w["w"], w["st"]) for w in sorted(run.writes, key=lambda w: w["w"])] == [
        (0, "ok"),
        (1, "ok"),
        (2, "ok"),
        (3, "ok"),
    ]
    assert peer.get_holding(5, 0, 13) == [0, 4242, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 65535]
    assert peer.get_coils(5, 0, 17) == [False] * 3 + [True] + [False] * 4 + [True, False, True, True, False, False,
                                                                             True, True, True]  # fmt: skip
    assert [(w.function_code, w.address) for w in peer.writes] == [(6, 1), (16, 10), (5, 3), (15, 8)]
    # writes go ahead of the polls: the last polls already see every written value
    last = run.of(0)[-1]
    assert last["data"] == _words([0, 4242, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 65535])


async def test_exception_replies(modbus_rtu_server: StartRtu, tmp_path: Path) -> None:
    peer = await modbus_rtu_server({2: {"hr": [1, 2, 3], "size": 10, "invalid": {"hr": {2}}}})
    reqs = [
        {"u": 2, "fc": 3, "a": 0, "n": 2, "every_ms": 100},
        {"u": 2, "fc": 3, "a": 1, "n": 2, "every_ms": 100},  # touches the hole at 2
        {"u": 2, "fc": 4, "a": 8, "n": 5, "every_ms": 100},  # past the table's end
    ]
    writes = [{"at": 0, "u": 2, "fc": 6, "a": 2, "v": [7]}, {"at": 0, "u": 2, "fc": 16, "a": 9, "v": [1, 2]}]
    run = await run_master(peer.device, _bus(reqs), tmp_path, ms=60000, max_tx=8, writes=writes)
    assert set(run.statuses(0)) == {"ok"}
    assert {(r["st"], r["data"]) for r in run.of(1)} == {("exc", 2)}
    assert {(r["st"], r["data"]) for r in run.of(2)} == {("exc", 2)}
    assert sorted((w["st"], w["code"]) for w in run.writes) == [("exc", 2), ("exc", 2)]
    assert run.stats["retry"] == 0  # an exception is an answer: not retried
    assert peer.writes == []


async def test_silent_slave_is_backed_off_and_the_others_keep_polling(
    modbus_rtu_server: StartRtu, tmp_path: Path
) -> None:
    peer = await modbus_rtu_server({1: {"hr": HR}, 2: {"hr": HR, "silent": True}})
    reqs = [
        {"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 100},
        {"u": 2, "fc": 3, "a": 0, "n": 10, "every_ms": 100},
    ]
    cfg = _bus(reqs, timeout_ms=100, retries=1, backoff_ms=5000)
    run = await run_master(peer.device, cfg, tmp_path, ms=3000)
    dead = run.statuses(1)
    alive = run.statuses(0)
    assert dead
    assert set(dead) == {"timeout"}
    assert set(alive) == {"ok"}
    # backed off 250, 500, 1000, 2000 ms after each failure: a handful of tries in 3 s instead of
    # one every 100 ms, each tried twice (retries 1)
    assert len(dead) <= 6
    assert peer.requests[2] == 2 * len(dead)
    assert run.stats["backoff"] == len(dead)
    # the live slave is polled far more often than the dead one
    assert len(alive) >= 3 * len(dead)


async def test_without_backoff_a_silent_slave_takes_its_turns(
    modbus_rtu_server: StartRtu, tmp_path: Path
) -> None:
    """The counterpart of the test above: backoff_ms 0 keeps polling the dead slave."""
    peer = await modbus_rtu_server({1: {"hr": HR}, 2: {"silent": True}})
    reqs = [
        {"u": 1, "fc": 3, "a": 0, "n": 1, "every_ms": 50},
        {"u": 2, "fc": 3, "a": 0, "n": 1, "every_ms": 50},
    ]
    run = await run_master(peer.device, _bus(reqs, timeout_ms=50, retries=0, backoff_ms=0), tmp_path, ms=1500)
    assert run.stats["backoff"] == 0
    assert len(run.statuses(1)) >= 8
    assert peer.requests[2] == len(run.statuses(1))


async def test_timeouts_and_retries(modbus_rtu_server: StartRtu, tmp_path: Path) -> None:
    peer = await modbus_rtu_server({4: {"silent": True}})
    reqs = [{"u": 4, "fc": 3, "a": 0, "n": 1, "every_ms": 10}]
    run = await run_master(
        peer.device, _bus(reqs, timeout_ms=40, retries=2, backoff_ms=0), tmp_path, max_tx=3, ms=60000
    )
    assert run.statuses(0) == ["timeout"] * 3
    assert peer.requests[4] == 9  # three transactions of 1 + 2 retries
    assert run.stats["retry"] == 6


async def test_late_reply_is_not_taken_for_the_next_answer(
    modbus_rtu_server: StartRtu, tmp_path: Path
) -> None:
    """A slave answering after the timeout: its reply is drained as stray bytes before the next
    request, never reported as the answer to it."""
    peer = await modbus_rtu_server({1: {"hr": [11, 12], "delay": 0.15}, 2: {"hr": [21, 22]}})
    reqs = [
        {"u": 1, "fc": 3, "a": 0, "n": 2, "every_ms": 400},
        {"u": 2, "fc": 3, "a": 0, "n": 2, "every_ms": 100},
    ]
    cfg = _bus(reqs, timeout_ms=60, retries=0, backoff_ms=0)
    run = await run_master(peer.device, cfg, tmp_path, ms=1500)
    assert set(run.statuses(0)) == {"timeout"}
    assert {r["data"] for r in run.of(1) if r["st"] == "ok"} == {_words([21, 22])}
    assert run.stats["stray"] > 0 or run.stats["crc"] > 0


async def test_corrupted_replies_are_crc_errors_and_retried(
    modbus_rtu_server: StartRtu, tmp_path: Path
) -> None:
    peer = await modbus_rtu_server({1: {"hr": HR}, 3: {"hr": [5, 6, 7]}})
    line = SocatPtyPair(tmp_path / "line").start()
    relay = RtuRelay(line.path_b, peer.device).start()
    try:
        relay.flip_replies(3, -1)  # every reply of unit 3 is corrupted
        relay.flip_replies(1, 1)  # only the first reply of unit 1: its retry gets through
        reqs = [
            {"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 100},
            {"u": 3, "fc": 3, "a": 0, "n": 3, "every_ms": 100},
        ]
        run = await run_master(line.path_a, _bus(reqs, retries=1, backoff_ms=0), tmp_path, ms=60000, max_tx=6)
    finally:
        relay.stop()
        line.stop()
    assert set(run.statuses(1)) == {"crc"}
    assert {(r["st"], r["data"]) for r in run.of(0)} == {("ok", _words(HR))}
    n3 = len(run.statuses(1))
    assert run.stats["bad_frames"] == 2 * n3 + 1
    assert run.stats["retry"] == n3 + 1
    assert peer.requests[3] == 2 * n3


async def test_noise_on_the_line_is_drained(modbus_rtu_server: StartRtu, tmp_path: Path) -> None:
    peer = await modbus_rtu_server({1: {"hr": HR}})
    line = SocatPtyPair(tmp_path / "line").start()
    relay = RtuRelay(line.path_b, peer.device).start()
    try:
        reqs = [{"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 50}]
        task = asyncio.create_task(run_master(line.path_a, _bus(reqs), tmp_path, ms=1500))
        await asyncio.sleep(0.7)
        relay.inject(b"\x03\xff\x00garbage")  # 0x03 too: nothing but a byte to drop
        run = await task
    finally:
        relay.stop()
        line.stop()
    # drained between transactions, or (if it landed in a reply) a corrupt reply that was retried
    assert run.stats["stray"] == 10 or run.stats["bad_frames"] == 1
    assert set(run.statuses(0)) == {"ok"}
    assert len(run.statuses(0)) >= 5


@pytest.mark.parametrize(
    ("cfg", "error"),
    [
        ({"reqs": [{"u": 0, "fc": 3, "a": 0, "n": 1}]}, "mb.reqs[0].u: 0 is not a unit id 1..247"),
        ({"reqs": [{"u": 1, "fc": 3, "a": 0, "n": 126}]}, "mb.reqs[0].n: 126 is not 1..125 for fc 3"),
        ({"reqs": [{"u": 1, "fc": 6, "a": 0, "n": 1}]}, "mb.reqs[0].fc: 6 is not a read (1, 2, 3, 4)"),
        ({"parity": "X", "reqs": []}, "mb.parity: 'X' is not N, E or O"),
        ({"timeout_ms": 0, "reqs": []}, "mb.timeout_ms: 0 is not 1..60000"),
    ],
)
async def test_bad_bus_config_names_the_field(
    socat_pty_pair: tuple[str, str], tmp_path: Path, cfg: dict[str, Any], error: str
) -> None:
    with pytest.raises(AssertionError, match=rf"ValueError: {_re(error)}"):
        await run_master(socat_pty_pair[0], cfg, tmp_path, ms=10)


def _re(text: str) -> str:
    import re

    return re.escape(text)
