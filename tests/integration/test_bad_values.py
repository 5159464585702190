"""Values no sink can take never end the agent, end to end: the agent runs as its own process
(`picogate run`) against real peers, and keeps running.

- a LET whose integer result passed 64 bits (a product of uint16 registers of a pymodbus server)
  used to end the agent at the first poll, and at every restart: it is published as a float, and
  one that is not finite as a bad reading;
- a Pico `rd` frame with a counter at 10**30, a digital input at 6 and an ADC overflowing to inf
  (frames the real firmware never sends: a scripted board over a socat pty pair) used to end the
  board's session before the ack, again and again: each such reading is published bad, the others
  of the frame good, the frame acknowledged once, the session kept;
- a board's `log` frame with a newline used to forge lines in the agent's log: it is one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import threading
import time
from pathlib import Path
from typing import Any

from _agent import AgentProcess, base_config, eventually, recorder, wait_msgs
from picogate.pico._link import FrameError, LineSplitter, decode, encode

ROOT = "picogate/gw1"


def _alive(agent: AgentProcess) -> bool:
    return agent.proc is not None and agent.proc.poll() is None


async def test_a_let_beyond_64_bits_is_published_as_a_float_and_the_agent_keeps_running(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [65535] * 6}})
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "meter.rules").write_text(
        "LET meter.product = meter.r0 * meter.r1 * meter.r2 * meter.r3 * meter.r4 * meter.r5\n"
        "LET meter.huge = meter.r0 * 1e300 * 1e300\n"
    )
    device = {
        "name": "meter",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": dev.port,
        "poll": "200ms",
        "timeout": "500ms",
        "points": [{"name": f"r{i}", "table": "holding", "address": i, "type": "uint16"} for i in range(6)],
    }
    cfg = base_config(tmp_path, mosquitto.port, [device], rules={"dir": str(rules)})
    agent = AgentProcess(cfg, tmp_path / "agent")
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/meter/#") as rec:
        agent.start()
        try:
            await wait_msgs(
                rec, lambda ms: sum(m.topic == f"{ROOT}/data/meter/product" for m in ms) >= 1, 30, "the LET"
            )
            product = rec.on(f"{ROOT}/data/meter/product")[0].json()
            assert product["q"] == "good"
            assert product["v"] == 65535.0**6  # 7.9e28: beyond 64 bits
            huge = (await asyncio.to_thread(rec.wait_topic, f"{ROOT}/data/meter/huge"))[0].json()
            assert (huge["v"], huge["q"]) == (None, "bad")
            # the agent polls on: a new value goes out
            dev.set_holding(1, 0, 2)
            await wait_msgs(
                rec,
                lambda ms: any(
                    m.topic == f"{ROOT}/data/meter/product" and m.json()["v"] == 2 * 65535.0**5 for m in ms
                ),
                15,
                "the LET after a change",
            )
            assert _alive(agent), agent.log()
        finally:
            code = agent.terminate() if _alive(agent) else agent.proc.returncode if agent.proc else None
    log = agent.log()
    assert code == 0, log
    assert "Traceback" not in log
    assert "rule meter.huge" in log
    assert "not a finite number" in log


# --------------------------------------------------------------------------- a scripted board


class ScriptedBoard(threading.Thread):
    """The board's side of the link over a pty: answers hello and what needs an ack, sends a
    heartbeat every 300 ms, and whatever the test gives it."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.splitter = LineSplitter()
        self.lock = threading.Lock()
        self.seq = 0
        self.frames: list[tuple[int, str, str | None]] = []
        self.stopping = threading.Event()
        self.t0 = time.monotonic()

    def ticks(self) -> int:
        return int((time.monotonic() - self.t0) * 1000) % (1 << 30)

    def send(self, type_: str, body: str | None = None) -> int:
        with self.lock:
            seq = self.seq
            self.seq += 1
            os.write(self.fd, encode("@", seq, type_, body))
        return seq

    def got(self, type_: str) -> list[tuple[int, str, str | None]]:
        with self.lock:
            return [f for f in self.frames if f[1] == type_]

    def hello(self) -> None:
        body = {"proto": 1, "sid": "5c71b0a1", "fw": "0.1.0", "hash": "dev", "board": "pico", "mp": "1.24",
                "uid": "E6614103E7000099", "caps": ["di", "cnt", "adc", "temp", "do"], "ticks": self.ticks(),
                "cfg": None, "mode": "run", "boots": 1, "crash": None}  # fmt: skip
        self.send("hello", json.dumps(body, separators=(",", ":")))

    def run(self) -> None:
        next_hb = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_hb:
                self.send("hb", json.dumps({"ticks": self.ticks(), "q": 0, "mem": 100000}))
                next_hb = now + 0.3
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                continue
            for line in self.splitter.feed(data):
                try:
                    f = decode(line)
                except FrameError:
                    continue
                with self.lock:
                    self.frames.append((f.seq, f.type, f.body))
                if f.type == "hello":
                    self.hello()
                elif f.type in ("cfg", "read", "set"):
                    result = {"ok": True}
                    if f.type == "cfg" and f.body:
                        part, total = f.body.split(" ", 1)[0].split("/")
                        if part == total:
                            result = {"ok": True, "cfg": "abc123abc123"}
                    self.send("ack", f"{f.seq} {json.dumps(result, separators=(',', ':'))}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        os.close(self.fd)


async def test_bad_values_from_a_board_are_bad_readings_and_its_text_stays_one_log_line(
    mosquitto: Any, socat_pty_pair: tuple[str, str], tmp_path: Path
) -> None:
    agent_end, board_end = socat_pty_pair
    board = ScriptedBoard(board_end)
    board.start()
    io = [
        {"name": "door", "kind": "di", "pin": "GP2"},
        {"name": "parts", "kind": "cnt", "pin": "GP3"},
        {"name": "valve", "kind": "do", "pin": "GP15"},
        {"name": "level", "kind": "adc", "pin": "GP26", "scale": 40},
        {"name": "cpu", "kind": "temp"},
    ]
    section = {"name": "line1", "port": agent_end, "heartbeat": "300ms", "safe_timeout": "3s", "io": io}
    cfg = base_config(tmp_path, mosquitto.port, [], boards=[section])
    agent = AgentProcess(cfg, tmp_path / "agent")
    topic = f"{ROOT}/data/line1"
    with recorder(mosquitto.host, mosquitto.port, f"{topic}/#") as rec:
        agent.start()
        try:
            await eventually(lambda: bool(board.got("read")), 30, "the agent's full-report request")
            seq = board.send(
                "rd",
                f"{board.ticks()} parts=1000000000000000000000000000000 door=6 level=1e308 cpu=21.5 valve=1",
            )
            forged = (
                "fine\n2026-01-01 00:00:00,000 INFO    picogate.audit: write line1.valve=true by mqtt -> ok"
            )
            board.send("log", json.dumps({"lvl": "warn", "msg": forged}))
            await eventually(lambda: any(a[2] == str(seq) for a in board.got("ack")), 15, "the frame's ack")
            msgs = await wait_msgs(
                rec, lambda ms: {m.topic for m in ms} >= {f"{topic}/{p}" for p in ("parts", "door", "level", "cpu", "valve")},
                15, "every point of the frame",
            )  # fmt: skip
            last = {m.topic.rsplit("/", 1)[1]: m.json() for m in msgs}
            assert {p: (v["v"], v["q"]) for p, v in last.items()} == {
                "parts": (None, "bad"),
                "door": (None, "bad"),
                "level": (None, "bad"),
                "cpu": (21.5, "good"),
                "valve": (True, "good"),
            }
            await asyncio.sleep(1.5)  # heartbeats go on; nothing restarts the session
            assert len([a for a in board.got("ack") if a[2] == str(seq)]) == 1
            assert len(board.got("hello")) == 1
            assert _alive(agent), agent.log()
        finally:
            code = agent.terminate() if _alive(agent) else agent.proc.returncode if agent.proc else None
            board.stop()
    log = agent.log()
    assert code == 0, log
    assert "link lost" not in log
    assert "Traceback" not in log
    assert not re.search(r"^2026-01-01", log, re.M)  # no line of the board's making
    (board_line,) = [ln for ln in log.splitlines() if "(board): fine" in ln]
    assert board_line.endswith(
        "(board): fine\\n2026-01-01 00:00:00,000 INFO    picogate.audit: write line1.valve=true by mqtt -> ok"
    )
    assert "bad value" in log or "published bad" in log
