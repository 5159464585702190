"""The agent's side of one board's link (docs/link-protocol.md): handshake, config push, acks,
resends, duplicates, heartbeats, time mapping, readings, writes, and a board found at its REPL.

`PicoBoard` is the gateway component of one `boards:` entry.  It finds the board's port (by USB
serial number or as configured), opens it and runs a `_Session` over it; when the port goes away,
the board restarts, crashes or sits at its REPL, the board's points go bad and its devices
offline, and it connects and resyncs again by itself.  The session takes any `Transport`, so the
unit tests drive it with a fake one.

Readings are acknowledged only once `emit` has returned (the outbox committed them): a board
keeps what is not acknowledged and sends it again, so nothing the board measured is lost across an
agent restart.  Frames waiting for `emit` are batched: one emit (one commit) serves every frame
that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from picogate import __version__
from picogate._errors import PicogateError
from picogate._model import PointInfo, Quality, Reading, Value
from picogate._outbox import OutboxUnavailable
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import ErrorCode, WriteError, WriteTicket
from picogate.modbus import CodecError, Table, encode
from picogate.pico._boardtext import TextLimiter, escape
from picogate.pico._config import BoardConfig
from picogate.pico._derive import BadValue, BoardPlan, check_value, decode_result, derive
from picogate.pico._link import (
    BOARD,
    HOST,
    FrameError,
    LineSplitter,
    decode,
    parse_ack,
    parse_mb,
    parse_rd,
)
from picogate.pico._link import encode as encode_frame
from picogate.pico._time import TickClock
from picogate.pico._transport import SerialTransport, Transport, find_port

log = logging.getLogger("picogate.pico")

Emit = Callable[[Sequence[Reading]], Awaitable[None]]
StatusChanged = Callable[[DeviceStatus], Awaitable[None]]
Opener = Callable[[str], Transport]

RESEND_AFTER = 0.3
RESENDS = 5
WINDOW = 8
DEDUPE = 32
CFG_CHUNK = 900
_REPL_MARKERS = (b">>> ", b"MicroPython ", b"Traceback (most recent call last):", b"raw REPL; CTRL-B to exit")
_SOFT_RESET = b"\x02\x03\x04\n"  # Ctrl-B (leave raw REPL), Ctrl-C, Ctrl-D (soft reset); LF ends the line


class LinkDown(PicogateError, ConnectionError):
    """The board stopped acknowledging (5 resends) or the session was restarted."""


class ConfigRefused(PicogateError, RuntimeError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e.get('field')}: {e.get('msg')}" for e in errors) or "refused")
        self.errors = errors


@dataclass(slots=True)
class LinkStats:
    frames_in: int = 0
    frames_out: int = 0
    garbage: int = 0
    bad_crc: int = 0
    oversize: int = 0
    resends: int = 0
    not_accepted: int = 0  # frames left unacknowledged because the outbox could not commit them
    duplicates: int = 0
    unknown_ids: int = 0
    bad_bodies: int = 0
    readings: int = 0
    repl_resets: int = 0
    sessions: int = 0
    board_restarts: int = 0
    bad_values: dict[str, int] = field(default_factory=dict)
    """Readings made bad because the board's value was not one of the point's type, by reason
    (not_bool, not_integer, not_number, not_finite, out_of_range, not_a_value, malformed, …)."""
    board: dict[str, Any] = field(default_factory=dict)
    """The board's last heartbeat (q, drop, bad, mem, up, safe)."""


@dataclass(slots=True)
class _Pending:
    seq: int
    line: bytes
    future: asyncio.Future[dict[str, Any]]
    sent_at: float
    tries: int = 0
    deadline: float = float("inf")
    """A write's deadline: it is not sent again after it."""


@dataclass(slots=True)
class _BoardInfo:
    sid: str = ""
    uid: str = ""
    board: str = ""
    fw: str = ""
    hash: str = ""
    cfg: str | None = None
    boots: int = 0
    crash: str | None = None


class _Session:
    """One open port.  `run()` returns or raises when the port is gone."""

    def __init__(self, owner: PicoBoard, transport: Transport) -> None:
        self.o = owner
        self.t = transport
        self.splitter = LineSplitter()
        self.seq = 0
        self.pending: dict[int, _Pending] = {}
        self.window = asyncio.Semaphore(WINDOW)
        # The board's seqs acted on, and our acks, kept across reconnects to the same board
        # session (it sends again what it has no ack for): reset when the board restarts.
        self.seen = owner.seen
        self.acked = owner.acked
        self.inbox: asyncio.Queue[tuple[int, str, str | None]] = asyncio.Queue(maxsize=64)
        self.hello_sent_at = 0.0
        self.established = False
        self.last_heard = 0.0
        self.last_hb_sent = 0.0
        self.repl_lines: list[str] = []
        self.repl_since = 0.0
        self.next_repl_reset = 0.0
        self.push_task: asyncio.Task[None] | None = None
        self.board = owner.board_info

    # ------------------------------------------------------------------ sending

    def send(self, type_: str, body: str | None = None) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFFFF
        self.t.write(encode_frame(HOST, seq, type_, body))
        self.o.stats.frames_out += 1
        return seq

    async def request(
        self, type_: str, body: str | None = None, ticket: WriteTicket | None = None
    ) -> dict[str, Any]:
        """Send a reliable frame and wait for its ack's result ({} when it carries none).

        A write's `ticket` is checked right before the frame first goes out (after the wait for
        a slot in the window), and it is not sent again once its deadline has passed."""
        async with self.window:
            if ticket is not None:
                ticket.send()  # WriteError(STALE) once the deadline has passed
            seq = self.seq
            self.seq = (self.seq + 1) & 0xFFFF
            line = encode_frame(HOST, seq, type_, body)
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            pending = _Pending(seq, line, fut, time.monotonic())
            if ticket is not None:
                pending.deadline = ticket.deadline
            self.pending[seq] = pending
            try:
                self.t.write(line)
                self.o.stats.frames_out += 1
                return await fut
            finally:
                self.pending.pop(seq, None)

    def send_hello(self) -> None:
        body = orjson.dumps({"proto": 1, "sid": self.o.sid, "host": f"picogate {__version__}"}).decode()
        self.send("hello", body)
        self.hello_sent_at = time.monotonic()

    def fail_pending(self, why: str) -> None:
        for p in list(self.pending.values()):
            if not p.future.done():
                p.future.set_exception(LinkDown(why))
        self.pending.clear()

    # ------------------------------------------------------------------ the loops

    async def run(self) -> None:
        self.send_hello()
        self.last_heard = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(), name=f"pico-read-{self.o.name}")
                tg.create_task(self._timer_loop(), name=f"pico-timer-{self.o.name}")
                tg.create_task(self._forward_loop(), name=f"pico-forward-{self.o.name}")
        except* ConnectionError as eg:
            raise eg.exceptions[0] from None
        finally:
            if self.push_task is not None:
                self.push_task.cancel()
            self.fail_pending("port closed")

    async def _read_loop(self) -> None:
        while True:
            data = await self.t.read()
            before = self.splitter.oversize
            for line in self.splitter.feed(data):
                await self._line(line)
            self.o.stats.oversize += self.splitter.oversize - before
            pending = self.splitter.pending
            if pending.endswith((b">>> ", b"\n>", b"raw REPL; CTRL-B to exit\r\n>")) or pending == b">":
                self._repl_seen(pending.decode("ascii", "replace").strip())

    async def _timer_loop(self) -> None:
        o = self.o
        hb = o.cfg.heartbeat
        silence = max(3 * hb, 3.0)
        resend_after = o.cfg.resend_after  # RESEND_AFTER unless the board's config says otherwise
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for p in list(self.pending.values()):
                if p.future.done() or now - p.sent_at < resend_after or now >= p.deadline:
                    continue
                if p.tries >= RESENDS:
                    log.warning("%s: no ack after %d resends; handshake again", o.name, RESENDS)
                    await self._lost("no ack from the board")
                    break
                p.tries += 1
                p.sent_at = now
                o.stats.resends += 1
                self.t.write(p.line)
            if self.established and now - self.last_hb_sent >= hb:
                self.send("hb", "{}")
                self.last_hb_sent = now
            o.board_log_summary(now)
            if self.repl_since and now - self.last_heard > 0.5 and now - self.repl_since > 0.3:
                await self._at_repl(now)
            elif self.established and now - self.last_heard > silence:
                log.warning("%s: board silent for %.1fs", o.name, now - self.last_heard)
                await self._lost(f"board silent for {now - self.last_heard:.1f}s")
            elif self.hello_sent_at and now - self.hello_sent_at > max(hb, 1.0):
                self.send_hello()

    async def _lost(self, reason: str) -> None:
        self.established = False
        self.fail_pending(reason)
        if self.push_task is not None:
            self.push_task.cancel()
            self.push_task = None
        await self.o.set_down(reason)
        self.send_hello()

    # ------------------------------------------------------------------ REPL

    def _repl_seen(self, text: str) -> None:
        if not self.repl_since:
            self.repl_since = time.monotonic()
        if text and len(self.repl_lines) < 40:
            self.repl_lines.append(text)

    async def _at_repl(self, now: float) -> None:
        o = self.o
        if now < self.next_repl_reset:
            return
        tb = [ln for ln in self.repl_lines if ln and not ln.startswith(">>>")]
        # The error is the traceback's last line: after "Traceback", not indented, not a banner.
        errors = [
            ln
            for ln in tb
            if not ln.startswith((" ", "\t", "Traceback", "MicroPython", 'Type "help', "raw REPL"))
        ]
        last = errors[-1] if errors else (tb[-1] if tb else "prompt")
        log.warning(
            "%s: the board is at its REPL, not running the application (%s); soft reset in a moment%s",
            o.name,
            escape(last),
            "".join("\n  " + escape(ln) for ln in tb[-12:]),  # each line the board's, escaped
        )
        self.established = False
        self.fail_pending("board at its REPL")
        await o.set_down(f"board at its REPL: {last}")
        self.t.write(_SOFT_RESET)
        o.stats.repl_resets += 1
        self.next_repl_reset = now + o.repl_backoff
        o.repl_backoff = min(o.repl_backoff * 2, 60.0)
        self.repl_since = 0.0
        self.repl_lines.clear()
        self.splitter.clear()
        self.hello_sent_at = now  # the app needs its boot window before a hello makes sense

    # ------------------------------------------------------------------ receiving

    async def _line(self, line: bytes) -> None:
        o = self.o
        try:
            f = decode(line)
        except FrameError as exc:
            if exc.kind == "bad_crc":
                o.stats.bad_crc += 1
            elif exc.kind == "oversize":
                o.stats.oversize += 1
            else:
                o.stats.garbage += 1
            text = line.rstrip(b"\r\n")
            if text.startswith(b"picogate: "):
                o.board_log(logging.INFO, text.decode("utf-8", "replace"), boot=True)
            elif text.startswith(_REPL_MARKERS) or (self.repl_since and text[:1] in (b" ", b"\t")):
                self._repl_seen(text.decode("ascii", "replace"))
            elif self.repl_since and text and not text.startswith((b"@", b"#")):
                self._repl_seen(text.decode("ascii", "replace"))  # the traceback's last line
            return
        if f.marker != BOARD:
            o.stats.garbage += 1  # our own frame echoed (a REPL echoes what it gets)
            return
        o.stats.frames_in += 1
        self.last_heard = time.monotonic()
        self.repl_since = 0.0
        self.repl_lines.clear()
        t = f.type
        try:
            if t == "hello":
                await self._hello(f.body)
            elif t == "ack":
                ack = parse_ack(f.body)
                p = self.pending.get(ack.seq)
                if p is not None and not p.future.done():
                    result = orjson.loads(ack.result) if ack.result else {}
                    p.future.set_result(result if isinstance(result, dict) else {})
            elif t == "hb":
                body = orjson.loads(f.body or "{}")
                if isinstance(body, dict):
                    o.stats.board = body
                    if isinstance(body.get("ticks"), int):
                        o.clock.sample(body["ticks"], o.now_ns())
            elif t in ("rd", "mb", "evt"):
                await self._reliable(f.seq, t, f.body)
            elif t == "log":
                body = orjson.loads(f.body or "{}")
                if not isinstance(body, dict):
                    raise ValueError("log body is not an object")
                lvl = body.get("lvl")
                levels = {"warn": logging.WARNING, "error": logging.ERROR}
                o.board_log(
                    levels.get(lvl, logging.INFO) if isinstance(lvl, str) else logging.INFO, body.get("msg")
                )
            else:
                o.stats.bad_bodies += 1
        except (ValueError, TypeError, AttributeError) as exc:  # orjson.JSONDecodeError is a ValueError
            o.stats.bad_bodies += 1
            log.debug("%s: bad %s frame: %s", o.name, t, exc)

    async def _hello(self, body: str | None) -> None:
        o = self.o
        h = orjson.loads(body or "")
        if not isinstance(h, dict) or not isinstance(h.get("sid"), str):
            raise ValueError("hello without sid")
        answer = bool(self.hello_sent_at)
        new_board = h["sid"] != self.board.sid
        if new_board:
            if self.board.sid:
                o.stats.board_restarts += 1
                log.info("%s: the board restarted (boots %s)", o.name, escape(h.get("boots")))
            self.seen.clear()
            self.acked.clear()
            o.clock.reset()
            self.established = False
            self.fail_pending("the board started a new session")
            if self.push_task is not None:
                self.push_task.cancel()
                self.push_task = None
            if self.board.sid:
                # Its outputs went to their init values and its readings since are lost with
                # its RAM: the points are bad until the new session reports them.
                await o.set_down(f"the board restarted (boots {h.get('boots')}, crash {h.get('crash')})")
        self.board = o.board_info = _BoardInfo(
            sid=h["sid"],
            uid=str(h.get("uid", "")),
            board=str(h.get("board", "")),
            fw=str(h.get("fw", "")),
            hash=str(h.get("hash", "")),
            cfg=h.get("cfg"),
            boots=int(h.get("boots") or 0),
            crash=h.get("crash"),
        )
        if isinstance(h.get("ticks"), int):
            o.clock.sample(h["ticks"], o.now_ns())
        if not answer:
            # A hello we did not ask for: the board (re)started or lost the session (then it
            # sends nothing but hellos until it has ours).  Ours starts the session again; if the
            # board is the same, what is in flight stays valid meanwhile.
            self.send_hello()
            return
        self.hello_sent_at = 0.0
        self.established = True
        o.repl_backoff = 1.0
        o.stats.sessions += 1
        if self.board.crash:
            log.warning("%s: the board's last boot failed: %s", o.name, escape(self.board.crash))
        problem = o.check_identity(self.board)
        if problem:
            log.error("%s: %s", o.name, escape(problem))
            await o.set_down(problem)
            return
        if self.push_task is not None:
            self.push_task.cancel()
        self.push_task = asyncio.create_task(self._push(), name=f"pico-cfg-{o.name}")

    async def _push(self) -> None:
        o = self.o
        text = o.plan.text
        parts = [text[i : i + CFG_CHUNK] for i in range(0, len(text), CFG_CHUNK)] or [""]
        try:
            result: dict[str, Any] = {}
            for i, part in enumerate(parts, 1):
                result = await self.request("cfg", f"{i}/{len(parts)} {part}")
                if not result.get("ok"):
                    raise ConfigRefused(list(result.get("errors") or [{"field": "cfg", "msg": str(result)}]))
        except ConfigRefused as exc:
            log.error("%s: the board refused its configuration: %s", o.name, exc)
            await o.set_down(f"configuration refused: {exc}")
            return
        except LinkDown:
            return
        log.info(
            "%s: configuration %s running (fw %s, %s)",
            o.name,
            result.get("cfg"),
            self.board.fw,
            self.board.board,
        )
        o.session = self
        await o.set_up()
        self.last_hb_sent = time.monotonic()
        with contextlib.suppress(LinkDown):
            await self.request("read", "{}")  # a full report now

    async def _reliable(self, seq: int, type_: str, body: str | None) -> None:
        if not self.established:
            return  # not acknowledged: the board sends it again in the session to come
        if seq in self.seen:
            self.o.stats.duplicates += 1
            ack = self.acked.get(seq)
            if ack is not None:
                self.t.write(ack)
            return
        self.seen.append(seq)
        await self.inbox.put((seq, type_, body))

    async def _forward_loop(self) -> None:
        o = self.o
        while True:
            batch = [await self.inbox.get()]
            while not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            readings: list[Reading] = []
            statuses: list[DeviceStatus] = []
            for seq, type_, body in batch:
                try:
                    if type_ == "rd":
                        readings.extend(o.readings_of(body))
                    elif type_ == "mb":
                        mb_readings, mb_states = o.modbus_results(body)
                        readings.extend(mb_readings)
                        statuses.extend(mb_states)
                    else:
                        o.event(body)
                except (ValueError, TypeError) as exc:
                    o.stats.bad_bodies += 1
                    log.warning("%s: bad %s frame %d: %s", o.name, type_, seq, escape(exc))
                except Exception:  # a frame the decoder did not foresee must not end the session
                    o.stats.bad_bodies += 1
                    log.exception("%s: %s frame %d could not be decoded (dropped)", o.name, type_, seq)
            for st in statuses:
                await o.status_changed(st)
            if readings:
                try:
                    await o.emit(readings)
                except OutboxUnavailable as exc:
                    # Not accepted: no ack, and forget the frames so that the board's resends are
                    # taken again (it keeps them until they are acknowledged).
                    o.stats.not_accepted += len(batch)
                    if o.stats.not_accepted <= len(batch) or o.stats.not_accepted % 100 < len(batch):
                        log.error(
                            "%s: readings not accepted, the board will send them again: %s", o.name, exc
                        )
                    for seq, _, _ in batch:
                        with contextlib.suppress(ValueError):
                            self.seen.remove(seq)
                    continue
                o.stats.readings += len(readings)
            for seq, _, _ in batch:
                ack_seq = self.seq
                self.seq = (self.seq + 1) & 0xFFFF
                line = encode_frame(HOST, ack_seq, "ack", str(seq))
                self.acked[seq] = line
                if len(self.acked) > DEDUPE:
                    self.acked.pop(next(iter(self.acked)))
                self.t.write(line)
                o.stats.frames_out += 1


class PicoBoard:
    """The gateway component of one board (see the module docstring)."""

    kind: Literal["source", "service"] = "source"

    def __init__(
        self,
        cfg: BoardConfig,
        *,
        registry: PointRegistry,
        emit: Emit,
        status_changed: StatusChanged,
        opener: Opener = SerialTransport,
        now_ns: Callable[[], int] = time.time_ns,
        plan: BoardPlan | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = f"pico-{cfg.name}"
        self.plan = plan or derive(cfg)
        self.registry = registry
        self.emit = emit
        self._status_changed = status_changed
        self._opener = opener
        self.now_ns = now_ns
        self.sid = os.urandom(4).hex()
        self.clock = TickClock()
        self.stats = LinkStats()
        self.session: _Session | None = None
        self.repl_backoff = 1.0
        self._stopping = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()
        self._close_port = asyncio.Event()
        self._mb_failures: dict[str, int] = {}
        self.seen: deque[int] = deque(maxlen=DEDUPE)
        self.acked: dict[int, bytes] = {}  # seq → our ack line, for repeats
        self.board_info = _BoardInfo()
        self.board_text = TextLimiter()
        """The board's log lines: escaped, at most 20 at once and then 1 a second."""
        self._bad_logged: set[tuple[str, str, str]] = set()
        self.port: str | None = None
        self.devices = [cfg.name, *self.plan.devices]

    # ------------------------------------------------------------------ set-up

    def register(self) -> None:
        for info in self.plan.infos:
            self.registry.add(info, replace=True)

    def writers(self) -> dict[str, _Writer]:
        return {d: _Writer(self, d) for d in self.devices}

    # ------------------------------------------------------------------ run

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        backoff = 0.5
        announced = False
        while not self._stopping.is_set():
            if not self._released.is_set():
                await self.set_down("maintenance: the port is left to the flasher")
                released = asyncio.create_task(self._released.wait())
                stopping = asyncio.create_task(self._stopping.wait())
                await asyncio.wait({released, stopping}, return_when=asyncio.FIRST_COMPLETED)
                released.cancel()
                stopping.cancel()
                continue
            self._close_port.clear()
            port = self.cfg.port or await asyncio.to_thread(find_port, self.cfg.serial or "")
            transport: Transport | None = None
            if port is not None:
                try:
                    transport = self._opener(port)
                except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
                    if not announced:
                        log.warning("%s: cannot open %s: %s", self.name, port, exc)
                        announced = True
            elif not announced:
                log.warning("%s: no board with serial number %s on USB", self.name, self.cfg.serial)
                announced = True
            if transport is None:
                await self.set_down("not connected")
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            log.info("%s: opened %s", self.name, port)
            self.port = port
            announced = False
            backoff = 0.5
            session = _Session(self, transport)
            runner = asyncio.create_task(session.run(), name=f"pico-session-{self.cfg.name}")
            stopper = asyncio.create_task(self._stopping.wait())
            closer = asyncio.create_task(self._close_port.wait())
            try:
                await asyncio.wait({runner, stopper, closer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                closer.cancel()
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, Exception):
                    await runner
                if runner.done() and not runner.cancelled() and runner.exception() is not None:
                    lost = runner.exception()
                    log.warning(
                        "%s: link lost: %s",
                        self.name,
                        lost,
                        exc_info=lost if isinstance(lost, BaseExceptionGroup) else None,
                    )
                transport.close()
                self.session = None
            if not self._stopping.is_set() and self._released.is_set():
                await self.set_down("link lost")
                await self._sleep(0.2)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # ------------------------------------------------------------------ state

    def check_identity(self, b: _BoardInfo) -> str:
        if self.cfg.serial and b.uid.upper() != self.cfg.serial.upper():
            return f"port {self.port} has board {b.uid}, not {self.cfg.serial.upper()}"
        if b.board and b.board != self.cfg.board:
            return f"the board says it is a {b.board}; gateway.yaml says {self.cfg.board}"
        return ""

    async def status_changed(self, status: DeviceStatus) -> None:
        await self._status_changed(status)

    async def _set_state(self, device: str, state: DeviceState, reason: str) -> None:
        if self.registry.set_device_state(device, state, reason=reason, ts=self.now_ns()):
            s = self.registry.device(device)
            assert s is not None
            await self._status_changed(DeviceStatus(s.name, s.state, s.reason, s.since_ns, "pico"))

    async def set_up(self) -> None:
        await self._set_state(self.cfg.name, DeviceState.ONLINE, "")
        for d in self.plan.devices:
            if self._mb_failures.get(d, 0) == 0:
                await self._set_state(d, DeviceState.ONLINE, "")

    async def set_down(self, reason: str) -> None:
        """The board is unreachable: every point bad, every device offline (once)."""
        changed = False
        for d in self.devices:
            status = self.registry.device(d)
            if status is None or status.state is not DeviceState.OFFLINE:
                changed = True
            await self._set_state(d, DeviceState.OFFLINE, reason)
        if changed:
            ts = self.now_ns()
            try:
                await self.emit(
                    [Reading(i.device, i.name, None, ts, Quality.BAD, i.unit) for i in self.plan.infos]
                )
            except OutboxUnavailable as exc:
                log.error("%s: its points could not be marked bad: %s", self.name, exc)

    # ------------------------------------------------------------------ frames → readings

    def _ts(self, ticks: int) -> int:
        try:
            return self.clock.to_ns(ticks)
        except ValueError:
            return self.now_ns()

    def readings_of(self, body: str | None) -> list[Reading]:
        """The readings of an `rd` frame.  Each value is checked against its point's type
        (check_value): one that is not of it is that reading's `bad` quality, counted and logged,
        never the frame's or the session's end."""
        ticks, items = parse_rd(body)
        ts = self._ts(ticks)
        out: list[Reading] = []
        board = self.cfg.name
        for item in items:
            if not item.id:
                self._bad_value(board, "?", BadValue("malformed", item.error))
                continue
            m = self.plan.ids.get(item.id)
            if m is None:
                self.stats.unknown_ids += 1
                continue
            if item.error:
                self._bad_value(board, m.point, BadValue("not_a_value", item.error))
                out.append(Reading(board, m.point, None, ts, Quality.BAD, m.unit))
                continue
            if item.value is None:  # the board's own bad quality (?nodev, ?err, …)
                out.append(Reading(board, m.point, None, ts, Quality.BAD, m.unit))
                continue
            v = check_value(m.type, item.value, m.scale, m.offset)
            if isinstance(v, BadValue):
                self._bad_value(board, m.point, v)
                out.append(Reading(board, m.point, None, ts, Quality.BAD, m.unit))
                continue
            out.append(Reading(board, m.point, v, ts, Quality.GOOD, m.unit))
        return out

    def _bad_value(self, device: str, point: str, bad: BadValue) -> None:
        """Count a value refused; log it the first time for this point and reason."""
        stats = self.stats.bad_values
        stats[bad.reason] = stats.get(bad.reason, 0) + 1
        key = (device, point, bad.reason)
        if key not in self._bad_logged and len(self._bad_logged) < 1000:
            self._bad_logged.add(key)
            log.warning(
                "%s: %s.%s: the board's value %s: published bad (reason %s; later ones are only counted)",
                self.name,
                device,
                point,
                escape(bad.message),
                bad.reason,
            )

    def board_log(self, level: int, text: object, *, boot: bool = False) -> None:
        """A line of the board's own text, escaped and rate-limited (pico/_boardtext.py)."""
        now = time.monotonic()
        self.board_log_summary(now)
        if not self.board_text.admit(now):
            return
        if boot:  # main.py's boot messages ("picogate: starting …")
            log.log(level, "%s: %s", self.name, escape(text))
        else:
            log.log(level, "%s (board): %s", self.name, escape(text))

    def board_log_summary(self, now: float) -> None:
        held = self.board_text.summary(now)
        if held is not None:
            log.warning(
                "%s (board): %d log line%s held back in %.0f s (at most %d at once, then %g a second)",
                self.name,
                held[0],
                "" if held[0] == 1 else "s",
                held[1],
                self.board_text.burst,
                self.board_text.rate,
            )

    def modbus_results(self, body: str | None) -> tuple[list[Reading], list[DeviceStatus]]:
        ticks, results = parse_mb(body)
        ts = self._ts(ticks)
        readings: list[Reading] = []
        statuses: list[DeviceStatus] = []
        for bus, idx, status, data in results:
            req = self.plan.requests.get((bus, idx))
            if req is None:
                self.stats.unknown_ids += 1
                continue
            bad: list[tuple[str, BadValue]] = []
            rs, answered = decode_result(req, status, data, ts, bad)
            name = req.device.name
            for point, why in bad:
                self._bad_value(name, point, why)
            readings.extend(rs)
            if answered:
                if self._mb_failures.get(name):
                    log.info("%s: modbus device %s answers again", self.name, name)
                self._mb_failures[name] = 0
                if self.registry.set_device_state(name, DeviceState.ONLINE, ts=ts):
                    statuses.append(self._snapshot(name))
            else:
                n = self._mb_failures.get(name, 0) + 1
                self._mb_failures[name] = n
                if n >= req.device.offline_after and self.registry.set_device_state(
                    name, DeviceState.OFFLINE, reason=f"modbus {status}", ts=ts
                ):
                    log.warning("%s: modbus device %s offline (%s)", self.name, name, status)
                    statuses.append(self._snapshot(name))
        return readings, statuses

    def _snapshot(self, name: str) -> DeviceStatus:
        s = self.registry.device(name)
        assert s is not None
        return DeviceStatus(s.name, s.state, s.reason, s.since_ns, "pico")

    def event(self, body: str | None) -> None:
        e = orjson.loads(body or "{}")
        if not isinstance(e, dict):
            raise ValueError("evt body is not an object")
        level = logging.INFO if e.get("ok", True) else logging.WARNING
        log.log(level, "%s: board event %s", self.name, orjson.dumps(e).decode())

    # ------------------------------------------------------------------ board commands

    async def command(self, kind: Literal["maint", "boot", "reset"]) -> None:
        """Ask the board to enter maintenance mode (its plain REPL, for flashing), to reboot into
        its UF2 bootloader, or to reset.  Returns once the board acknowledged; it then goes away
        and the link is re-established (or not, for maint and boot) like after any reset."""
        session = self.session
        if session is None or not session.established:
            raise ConnectionError(f"board {self.cfg.name} is not connected")
        if kind != "reset":
            self._released.clear()  # leave the port alone: the flasher (or an operator) uses it
        try:
            result = await session.request(kind, "{}")
        except BaseException:
            self._released.set()
            raise
        if not result.get("ok", True):
            self._released.set()
            raise RuntimeError(f"board {self.cfg.name} refused {kind}: {result}")
        if kind != "reset":
            self._close_port.set()

    def resume(self) -> None:
        """Take the board back after maintenance or the bootloader (connect and configure it)."""
        self._released.set()

    @property
    def released(self) -> bool:
        """True while the agent leaves the board's port alone (after `command("maint"/"boot")`)."""
        return not self._released.is_set()

    # ------------------------------------------------------------------ writes

    async def write(
        self, device: str, point: PointInfo, value: Value, ticket: WriteTicket | None = None
    ) -> None:
        session = self.session
        if session is None or not session.established:
            raise WriteError(ErrorCode.DEVICE_OFFLINE, f"board {self.cfg.name} is not connected")
        if device == self.cfg.name:
            fid = point.name
            body = orjson.dumps({"id": fid, "v": value}).decode()
            type_ = "set"
        else:
            enc = self.plan.encodings[(device, point.name)]
            dev = self.plan.devices[device]
            try:
                values = encode(enc, value)
            except CodecError as exc:
                code = ErrorCode.OUT_OF_RANGE if exc.code == "out_of_range" else ErrorCode.BAD_TYPE
                raise WriteError(code, f"{point.key}: {exc}") from exc
            single = len(values) == 1
            fc = (5 if single else 15) if enc.table is Table.COIL else (6 if single else 16)
            body = orjson.dumps(
                {"bus": self.plan.bus_of[device], "u": dev.unit_id, "fc": fc, "a": enc.address, "v": values}
            ).decode()
            type_ = "mbw"
        try:
            result = await session.request(type_, body, ticket)
        except ConnectionError as exc:
            # LinkDown fails frames already sent (their ack did not come); another error is the
            # port failing, maybe in the middle of sending.
            if isinstance(exc, LinkDown) or (ticket is not None and ticket.sent):
                raise WriteError(
                    ErrorCode.OUTCOME_UNKNOWN,
                    f"{point.key}: link lost after the write was sent ({exc}): "
                    "it may or may not have been applied",
                ) from exc
            raise WriteError(ErrorCode.DEVICE_OFFLINE, f"{point.key}: {exc}") from exc
        if not result.get("ok"):
            raw = result.get("code", "device_error")
            message = result.get("msg") or raw
            if raw == "timeout":  # the board sent it to the Modbus device, which did not answer
                raise WriteError(
                    ErrorCode.OUTCOME_UNKNOWN, f"{point.key}: {message}: it may or may not have been applied"
                )
            try:
                code = ErrorCode(raw)
            except (ValueError, TypeError):
                code = ErrorCode.DEVICE_ERROR
            if code is ErrorCode.OK:
                code = ErrorCode.DEVICE_ERROR
            raise WriteError(code, f"{point.key}: {message}")


class _Writer:
    """The command router's handle on one device of a board."""

    def __init__(self, board: PicoBoard, device: str) -> None:
        self._board = board
        self._device = device

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        await self._board.write(self._device, point, value, ticket)


__all__ = ["LinkDown", "LinkStats", "PicoBoard"]
