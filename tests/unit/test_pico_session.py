"""The agent's side of the link against a scripted board on a fake transport (unit tests; the
real firmware is in tests/integration/test_pico_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from _agent import eventually
from picogate._model import Quality, Reading
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import ErrorCode, WriteError, WriteTicket
from picogate.pico._config import BoardConfig
from picogate.pico._link import FrameError, LineSplitter, decode, encode
from picogate.pico._session import WINDOW, PicoBoard


class FakeBoard:
    """Speaks the board's side: answers hello, acks what `auto_ack` allows, records frames."""

    def __init__(self) -> None:
        self.to_host: asyncio.Queue[bytes] = asyncio.Queue()
        self.frames: list[tuple[int, str, str | None]] = []
        self.raw = bytearray()
        self.seq = 0
        self.sid = "b0a4d001"
        self.auto_ack = True
        self.cfg_result: dict[str, Any] = {"ok": True, "cfg": "abc123abc123"}
        self.set_result: dict[str, Any] = {"ok": True}
        self.splitter = LineSplitter()
        self.closed = False

    def send(self, type_: str, body: str | None = None, seq: int | None = None) -> int:
        if seq is None:
            seq = self.seq
            self.seq += 1
        self.to_host.put_nowait(encode("@", seq, type_, body))
        return seq

    def hello(self, ticks: int = 1000) -> None:
        body = {
            "proto": 1,
            "sid": self.sid,
            "fw": "0.1.0",
            "hash": "dev",
            "board": "pico",
            "mp": "1.24",
            "uid": "E6614103E7000001",
            "caps": ["di"],
            "ticks": ticks,
            "cfg": None,
            "mode": "run",
            "boots": 1,
            "crash": None,
        }
        self.send("hello", json.dumps(body, separators=(",", ":")))

    def got(self, data: bytes) -> None:
        self.raw += data
        for line in self.splitter.feed(data):
            try:
                f = decode(line)
            except FrameError:
                continue  # like the firmware: counted and dropped (Ctrl-B/C/D before a frame)
            self.frames.append((f.seq, f.type, f.body))
            if f.type == "hello":
                self.hello()
            elif f.type in ("cfg", "set", "mbw", "read", "maint") and self.auto_ack:
                if f.type == "cfg":
                    part, total = (f.body or "").split(" ", 1)[0].split("/")
                    result = self.cfg_result if part == total else {"ok": True}
                else:
                    result = self.set_result if f.type == "set" else {"ok": True}
                self.send("ack", f"{f.seq} {json.dumps(result, separators=(',', ':'))}")

    def of_type(self, type_: str) -> list[tuple[int, str, str | None]]:
        return [f for f in self.frames if f[1] == type_]


class FakeTransport:
    def __init__(self, board: FakeBoard) -> None:
        self.board = board

    async def read(self) -> bytes:
        data = await self.board.to_host.get()
        if not data:
            raise ConnectionError("unplugged")
        return data

    def write(self, data: bytes) -> None:
        if self.board.closed:
            raise ConnectionError("unplugged")
        self.board.got(data)

    def close(self) -> None:
        pass


CFG = {
    "name": "b1",
    "port": "/dev/fake",
    "io": [
        {"name": "door", "kind": "di", "pin": 2},
        {"name": "valve", "kind": "do", "pin": 15},
        {"name": "level", "kind": "adc", "pin": 26, "scale": 10},
        *({"name": f"in{i}", "kind": "di", "pin": 3 + i, "description": "x" * 40} for i in range(10)),
    ],
}


class Harness:
    def __init__(self, cfg: dict[str, Any] = CFG, **overrides: Any) -> None:
        self.board = FakeBoard()
        self.registry = PointRegistry()
        self.readings: list[Reading] = []
        self.statuses: list[DeviceStatus] = []
        self.emit_gate = asyncio.Event()
        self.emit_gate.set()
        self.pico = PicoBoard(
            BoardConfig.model_validate({**cfg, **overrides}),
            registry=self.registry,
            emit=self._emit,
            status_changed=self._status,
            opener=lambda port: FakeTransport(self.board),
            now_ns=lambda: 5_000_000_000_000,
        )
        self.pico.register()

    async def _emit(self, rs: Any) -> None:
        await self.emit_gate.wait()
        self.readings.extend(rs)

    async def _status(self, s: DeviceStatus) -> None:
        self.statuses.append(s)

    def state(self) -> DeviceState | None:
        s = self.registry.device("b1")
        return None if s is None else s.state


async def until(cond: Callable[[], Any], timeout: float = 3.0) -> None:
    await eventually(lambda: bool(cond()), within=timeout, interval=0.01)


@contextlib.asynccontextmanager
async def running(cfg: dict[str, Any] = CFG, **overrides: Any) -> AsyncIterator[Harness]:
    h = Harness(cfg, **overrides)
    task = asyncio.create_task(h.pico.run())
    try:
        await until(lambda: h.state() is DeviceState.ONLINE)
        yield h
    finally:
        h.pico.stop()
        async with asyncio.timeout(5):
            await task


async def test_handshake_pushes_the_config_in_parts() -> None:
    async with running() as h:
        cfgs = h.board.of_type("cfg")
        assert [c[2].split(" ")[0] for c in cfgs if c[2]] == ["1/2", "2/2"]
        text = "".join(c[2].split(" ", 1)[1] for c in cfgs if c[2])
        assert json.loads(text) == h.pico.plan.doc
        assert h.board.frames[0][1] == "hello"
        await until(lambda: h.board.of_type("read"))  # asks for a full report once running


async def test_readings_are_acked_after_emit_and_duplicates_not_emitted_twice() -> None:
    async with running() as h:
        h.emit_gate.clear()
        seq = h.board.send("rd", "2000 door=T level=0.25 valve=F in1=? nope=1")
        await asyncio.sleep(0.2)
        assert not [a for a in h.board.of_type("ack") if a[2] == str(seq)]  # not before the commit
        h.emit_gate.set()
        await until(lambda: [a for a in h.board.of_type("ack") if a[2] == str(seq)])
        got = {r.point: r for r in h.readings}
        assert got["door"].value is True
        assert got["level"].value == 2.5  # scaled
        assert got["in1"].quality is Quality.BAD
        # ticks 2000 = the hello's ticks (1000) + 1 s after the hello's arrival
        assert got["door"].ts == 5_000_000_000_000 + 1_000_000_000
        assert h.pico.stats.unknown_ids == 1
        n = len(h.readings)
        h.board.send("rd", "2000 door=T", seq=seq)  # the board did not get our ack: a repeat
        await until(lambda: len([a for a in h.board.of_type("ack") if a[2] == str(seq)]) == 2)
        assert len(h.readings) == n
        assert h.pico.stats.duplicates == 1


async def test_unacknowledged_frames_are_sent_again_with_the_same_seq() -> None:
    async with running() as h:
        h.board.auto_ack = False
        write = asyncio.create_task(h.pico.write("b1", h.registry.get("b1", "valve"), True))
        await until(lambda: len(h.board.of_type("set")) >= 3)
        sets = h.board.of_type("set")
        assert len({s[0] for s in sets}) == 1
        h.board.send("ack", f'{sets[0][0]} {{"ok":true,"v":true}}')
        await write
        assert h.pico.stats.resends >= 2


async def test_five_resends_without_ack_restart_the_handshake() -> None:
    async with running() as h:
        h.board.auto_ack = False
        hellos = len(h.board.of_type("hello"))
        with pytest.raises(WriteError) as exc:
            await h.pico.write("b1", h.registry.get("b1", "valve"), True)
        # sent six times, never acknowledged: the board may have applied it
        assert exc.value.code is ErrorCode.OUTCOME_UNKNOWN
        assert len(h.board.of_type("set")) == 6
        await until(lambda: len(h.board.of_type("hello")) > hellos)


async def test_a_slow_board_gets_longer_before_a_resend_when_configured() -> None:
    """resend_after (default 0.3 s): a board that takes 2 s to acknowledge (5 resends at 0.3 s
    would have given up at 1.8 s) keeps its link with 1 s."""
    async with running(resend_after="1s") as h:
        h.board.auto_ack = False
        write = asyncio.create_task(h.pico.write("b1", h.registry.get("b1", "valve"), True))
        await asyncio.sleep(2.0)
        sets = h.board.of_type("set")
        assert len(sets) in (2, 3)  # the first, then one a second
        h.board.send("ack", f'{sets[0][0]} {{"ok":true,"v":true}}')
        await write
        assert h.state() is DeviceState.ONLINE


async def test_write_results_carry_the_boards_code() -> None:
    async with running() as h:
        h.board.set_result = {"ok": False, "code": "out_of_range", "msg": "duty 2"}
        with pytest.raises(WriteError) as exc:
            await h.pico.write("b1", h.registry.get("b1", "valve"), True)
        assert exc.value.code is ErrorCode.OUT_OF_RANGE
        assert "duty 2" in str(exc.value)
        (s,) = h.board.of_type("set")
        assert json.loads(s[2] or "") == {"id": "valve", "v": True}


async def test_garbage_and_bad_crc_are_counted_and_dropped() -> None:
    async with running() as h:
        h.board.to_host.put_nowait(b"\x00\x03\xff junk\n@1 rd 1 a=1 00000000\n" + b"z" * 2000 + b"\n")
        h.board.to_host.put_nowait(encode("#", 4, "hb", "{}"))  # an echo of our own frame
        await until(lambda: h.pico.stats.garbage >= 2 and h.pico.stats.bad_crc == 1)
        assert h.pico.stats.oversize == 1
        assert h.state() is DeviceState.ONLINE


async def test_board_restart_gives_a_new_handshake_and_config() -> None:
    async with running() as h:
        await until(lambda: h.board.of_type("read"))
        pushes = len(h.board.of_type("cfg"))
        h.board.sid = "b0a4d002"
        h.board.hello(ticks=5)  # unsolicited: it booted again
        await until(lambda: len(h.board.of_type("cfg")) >= pushes + 2)
        assert h.pico.stats.board_restarts == 1
        states = [s.state for s in h.statuses if s.name == "b1"]
        assert states[-2:] == [DeviceState.OFFLINE, DeviceState.ONLINE]  # bad while it rebooted


async def test_a_repl_prompt_gets_a_soft_reset_and_the_board_goes_offline() -> None:
    async with running() as h:
        await until(lambda: h.board.of_type("read"))
        h.board.to_host.put_nowait(
            b'Traceback (most recent call last):\r\n  File "main.py", line 3\r\nOSError: [Errno 5] EIO\r\n'
            b"MicroPython v1.24.1 on 2024-11-29; Raspberry Pi Pico with RP2040\r\n>>> "
        )
        await until(lambda: b"\x02\x03\x04" in h.board.raw)
        status = h.registry.device("b1")
        assert status is not None
        assert status.state is DeviceState.OFFLINE
        assert "REPL" in status.reason
        assert "OSError" in status.reason
        assert h.pico.stats.repl_resets == 1
        bad = [r for r in h.readings if r.point == "door"]
        assert bad[-1].quality is Quality.BAD
        h.board.hello()  # the application is back
        await until(lambda: h.state() is DeviceState.ONLINE)


async def test_a_refused_config_keeps_the_board_offline_with_the_reason() -> None:
    h = Harness()
    h.board.cfg_result = {"ok": False, "errors": [{"field": "io[2].pin", "msg": "GP26 has no ADC"}]}
    task = asyncio.create_task(h.pico.run())
    try:
        await until(
            lambda: h.state() is DeviceState.OFFLINE and "io[2].pin" in h.registry.device("b1").reason
        )  # type: ignore[union-attr]
    finally:
        h.pico.stop()
        await task


async def test_unplug_marks_points_bad_and_reconnects() -> None:
    async with running() as h:
        hellos = len(h.board.of_type("hello"))
        h.board.to_host.put_nowait(b"x" * 1100 + b"\n")
        await until(lambda: h.pico.stats.oversize == 1)
        h.board.to_host.put_nowait(b"")  # the port went away
        await until(lambda: h.state() is DeviceState.OFFLINE)
        assert all(r.quality is Quality.BAD for r in h.readings[-13:])
        await until(lambda: h.state() is DeviceState.ONLINE)
        assert len(h.board.of_type("hello")) > hellos
        h.board.to_host.put_nowait(b"x" * 1100 + b"\n")
        await until(lambda: h.pico.stats.oversize == 2)  # counters go on across sessions


async def test_silence_takes_the_board_offline() -> None:
    cfg = dict(CFG, heartbeat="100ms", safe_timeout="1s")
    h = Harness()
    h.pico = PicoBoard(
        BoardConfig.model_validate(cfg),
        registry=h.registry,
        emit=h._emit,
        status_changed=h._status,
        opener=lambda port: FakeTransport(h.board),
    )
    task = asyncio.create_task(h.pico.run())
    try:
        await until(lambda: h.state() is DeviceState.ONLINE)
        h.board.auto_ack = False
        h.board.hello = lambda ticks=0: None  # type: ignore[method-assign]  # dead, no answers
        await until(lambda: h.state() is DeviceState.OFFLINE, timeout=6)
        assert "silent" in h.registry.device("b1").reason  # type: ignore[union-attr]
    finally:
        h.pico.stop()
        await task


def test_find_port_by_usb_serial_number(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from picogate.pico import _transport

    ports = [
        SimpleNamespace(vid=0x2E8A, pid=0x0005, serial_number="E66141040396312A", device="/dev/ttyACM1"),
        SimpleNamespace(vid=0x2E8A, pid=0x0003, serial_number="E661410403963199", device="/dev/ttyACM2"),
        SimpleNamespace(vid=None, pid=None, serial_number=None, device="/dev/ttyS0"),
        SimpleNamespace(vid=0x2E8A, pid=0x0005, serial_number="e661410403963100", device="/dev/ttyACM0"),
    ]
    monkeypatch.setattr(_transport.list_ports, "comports", lambda: ports)
    assert _transport.find_port("E66141040396312A") == "/dev/ttyACM1"
    assert _transport.find_port("E661410403963100") == "/dev/ttyACM0"  # case does not matter
    assert _transport.find_port("E661410403963199") is None  # not MicroPython's pid (BOOTSEL mode)
    assert _transport.find_port("0000000000000000") is None


async def test_board_commands_are_acknowledged_and_refused_when_not_connected() -> None:
    async with running() as h:
        await until(lambda: h.pico.session is not None)
        await h.pico.command("maint")
        assert h.board.of_type("maint")
    with pytest.raises(ConnectionError, match="not connected"):
        await h.pico.command("reset")


async def test_maintenance_leaves_the_port_alone_until_resumed() -> None:
    async with running() as h:
        await until(lambda: h.pico.session is not None)
        await h.pico.command("maint")
        assert h.pico.released
        await until(lambda: h.state() is DeviceState.OFFLINE)
        assert "maintenance" in h.registry.device("b1").reason  # type: ignore[union-attr]
        hellos = len(h.board.of_type("hello"))
        await asyncio.sleep(0.5)
        assert len(h.board.of_type("hello")) == hellos  # no reconnect meanwhile
        h.pico.resume()
        await until(lambda: h.state() is DeviceState.ONLINE)


async def test_a_frame_sent_again_after_a_reconnect_is_not_emitted_twice() -> None:
    async with running() as h:
        seq = h.board.send("rd", "2000 door=T")
        await until(lambda: [a for a in h.board.of_type("ack") if a[2] == str(seq)])
        n = len([r for r in h.readings if r.point == "door" and r.quality is Quality.GOOD])
        h.board.to_host.put_nowait(b"")  # unplugged before the board had our ack
        await until(lambda: h.state() is DeviceState.OFFLINE)
        await until(lambda: h.state() is DeviceState.ONLINE)  # same board session (sid)
        h.board.send("rd", "2000 door=T", seq=seq)  # it sends what it has no ack for
        await until(lambda: len([a for a in h.board.of_type("ack") if a[2] == str(seq)]) == 2)
        assert len([r for r in h.readings if r.point == "door" and r.quality is Quality.GOOD]) == n
        assert h.pico.stats.board_restarts == 0


# --------------------------------------------------------------------------- values and board text

TYPED = {
    "name": "b1",
    "port": "/dev/fake",
    "io": [
        {"name": "door", "kind": "di", "pin": 2},
        {"name": "valve", "kind": "do", "pin": 15},
        {"name": "parts", "kind": "cnt", "pin": 3},
        {"name": "level", "kind": "adc", "pin": 26, "scale": 10},
        {"name": "cpu", "kind": "temp"},
    ],
}


def acked(h: Harness, seq: int) -> bool:
    return any(a[2] == str(seq) for a in h.board.of_type("ack"))


async def test_a_bad_value_makes_that_reading_bad_never_the_frame_or_the_session() -> None:
    """A counter at 10**30 used to reach the MQTT encoder, whose failure ended the board's session
    before the ack: the board sent the frame again and again and the link flapped; a digital input
    at 6, a counter at -3.25 and an ADC overflowing to inf went out as good readings."""
    async with running(TYPED) as h:
        await until(lambda: h.board.of_type("read"))
        sessions = h.pico.stats.sessions
        seq = h.board.send(
            "rd", "3000 parts=1000000000000000000000000000000 door=6 level=1e308 cpu=21.5 valve=1 junk"
        )
        await until(lambda: acked(h, seq))
        got = {r.point: r for r in h.readings if r.ts == h.readings[-1].ts}
        assert {p: (r.value, r.quality) for p, r in got.items()} == {
            "parts": (None, Quality.BAD),
            "door": (None, Quality.BAD),
            "level": (None, Quality.BAD),  # 1e308 × 10
            "cpu": (21.5, Quality.GOOD),
            "valve": (True, Quality.GOOD),  # 1 is true
        }
        seq = h.board.send("rd", "4000 parts=-3.25 door=T level=0.25 cpu=1e999")
        await until(lambda: acked(h, seq))
        got = {r.point: r for r in h.readings if r.ts == h.readings[-1].ts}
        assert {p: (r.value, r.quality) for p, r in got.items()} == {
            "parts": (None, Quality.BAD),
            "door": (True, Quality.GOOD),
            "level": (2.5, Quality.GOOD),
            "cpu": (None, Quality.BAD),  # not a number at all
        }
        seq = h.board.send("rd", "5000 parts=4294967295 cpu=20")
        await until(lambda: acked(h, seq))
        assert [(r.point, r.value) for r in h.readings[-2:]] == [("parts", 4294967295), ("cpu", 20.0)]
        assert isinstance(h.readings[-1].value, float)
        assert h.pico.stats.bad_values == {
            "out_of_range": 1,
            "not_bool": 1,
            "not_finite": 1,
            "malformed": 1,
            "not_integer": 1,
            "not_a_value": 1,
        }
        assert h.pico.stats.sessions == sessions  # the same session all along
        assert h.state() is DeviceState.ONLINE
        assert h.pico.stats.bad_bodies == 0
        from picogate.pico._metrics import collector

        (family,) = [f for f in collector([h.pico])() if f.name == "picogate_pico_bad_values"]
        assert {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")} == {
            k: float(v) for k, v in h.pico.stats.bad_values.items()
        }


async def test_a_board_log_line_is_escaped_onto_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """A newline in a board's `log` frame used to forge log lines of its own, audit lines too."""
    caplog.set_level(logging.INFO, logger="picogate.pico")
    async with running(TYPED) as h:
        forged = "ok\n2026-01-01 00:00:00,000 INFO    picogate.audit: write b1.valve=true by mqtt -> ok\x1b[2K\u2028"
        h.board.send("log", json.dumps({"lvl": "warn", "msg": forged}))
        h.board.to_host.put_nowait(b"picogate: starting\x1b[31m red\r\n")  # a boot line (not a frame)
        await until(lambda: len([r for r in caplog.records if "(board)" in r.getMessage()]) >= 1)
        await until(lambda: any("picogate: starting" in r.getMessage() for r in caplog.records))
        (line,) = [r for r in caplog.records if "(board)" in r.getMessage()]
        text = line.getMessage()
        assert "\n" not in text
        assert "\x1b" not in text
        assert "\u2028" not in text
        assert text == (
            "pico-b1 (board): ok\\n2026-01-01 00:00:00,000 INFO    picogate.audit: write b1.valve=true by mqtt "
            "-> ok\\x1b[2K\\u2028"
        )
        assert line.levelno == logging.WARNING
        (boot,) = [r.getMessage() for r in caplog.records if "picogate: starting" in r.getMessage()]
        assert boot == "pico-b1: picogate: starting\\x1b[31m red"


async def test_a_flood_of_board_log_lines_is_held_back_and_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="picogate.pico")
    async with running(TYPED) as h:
        for i in range(200):
            h.board.send("log", json.dumps({"lvl": "info", "msg": f"line {i}"}))
        await until(lambda: any("held back" in r.getMessage() for r in caplog.records), timeout=5)
        logged = [r for r in caplog.records if "(board): line" in r.getMessage()]
        assert 20 <= len(logged) <= 23  # the burst, and what 1 a second let through meanwhile
        (summary,) = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
        held = int(summary.split("(board): ", 1)[1].split(" ", 1)[0])
        assert held + len(logged) == 200
        assert "(at most 20 at once, then 1 a second)" in summary
        assert (h.pico.board_text.logged_total, h.pico.board_text.held_total) == (len(logged), held)
        assert h.state() is DeviceState.ONLINE


# --------------------------------------------------------------------------- write deadlines


def ticket(seconds: float) -> WriteTicket:
    return WriteTicket(time.monotonic() + seconds, "b1.valve")


async def test_a_write_is_not_sent_after_its_deadline() -> None:
    """Waiting for a slot in the window past its deadline: refused stale, never sent; and a write
    already sent is not sent again once its deadline has passed."""
    async with running() as h:
        h.board.auto_ack = False
        valve = h.registry.get("b1", "valve")
        # one write sent, with a short deadline: sent once, never again after its deadline
        first = asyncio.create_task(h.pico.write("b1", valve, True, ticket(0.05)))
        await asyncio.sleep(0.8)  # more than two resend periods
        assert len(h.board.of_type("set")) == 1
        first.cancel()
        # the window full of writes waiting for acks: a write behind them goes stale unsent
        blockers = [asyncio.create_task(h.pico.write("b1", valve, False, ticket(60))) for _ in range(WINDOW)]
        await until(lambda: len({f[0] for f in h.board.of_type("set")}) == 1 + WINDOW)
        late = asyncio.create_task(h.pico.write("b1", valve, True, ticket(0.1)))
        await asyncio.sleep(0.3)
        seq = h.board.of_type("set")[1][0]
        h.board.send("ack", f'{seq} {{"ok":true}}')  # a slot frees up, after the deadline
        with pytest.raises(WriteError) as exc:
            async with asyncio.timeout(2):
                await late
        assert exc.value.code is ErrorCode.STALE
        assert len({f[0] for f in h.board.of_type("set")}) == 1 + WINDOW  # resends, but no new frame
        for b in blockers:
            b.cancel()
        await asyncio.gather(first, *blockers, return_exceptions=True)


async def test_a_modbus_write_the_device_did_not_answer_is_outcome_unknown() -> None:
    async with running() as h:
        h.board.set_result = {"ok": False, "code": "timeout", "msg": "no reply from unit 3"}
        with pytest.raises(WriteError) as exc:
            await h.pico.write("b1", h.registry.get("b1", "valve"), True, ticket(5))
        assert exc.value.code is ErrorCode.OUTCOME_UNKNOWN
        assert "no reply from unit 3" in str(exc.value)
