"""A minimal host side of the link for the firmware's tests (CPython): frame codec and a session
over pyserial. Deliberately small and independent of the agent's implementation."""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import serial


def encode(marker: str, seq: int, typ: str, body: str | None = None) -> bytes:
    head = f"{marker}{seq} {typ}" + ("" if body is None else f" {body}")
    return f"{head} {zlib.crc32(head.encode()):08x}\n".encode()


def decode(line: bytes) -> tuple[str, int, str, str | None] | None:
    line = line.rstrip(b"\n").rstrip(b"\r")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    if len(text) < 13 or text[0] not in "#@" or not all(0x20 <= ord(c) <= 0x7E for c in text):
        return None
    head, _, crc = text.rpartition(" ")
    if len(crc) != 8 or f"{zlib.crc32(head.encode()):08x}" != crc:
        return None
    seq_s, _, rest = head[1:].partition(" ")
    typ, _, body = rest.partition(" ")
    if not seq_s.isdigit():
        return None
    return text[0], int(seq_s), typ, (body if body else None)


@dataclass
class Host:
    """Talks to a board over a serial port: hello, commands with acks, acks for the board's frames."""

    port: str
    sid: str = "0badc0de"
    seq: int = 0
    ser: serial.Serial = field(init=False)
    frames: list[tuple[str, int, str, str | None]] = field(default_factory=list)
    other: list[bytes] = field(default_factory=list)  # lines that were not frames
    acks: dict[int, str | None] = field(default_factory=dict)
    auto_ack: bool = True

    def __post_init__(self) -> None:
        self.ser = serial.Serial(self.port, timeout=0.005)
        self._buf = b""

    def close(self) -> None:
        self.ser.close()

    def send(self, typ: str, body: str | None = None, *, seq: int | None = None) -> int:
        if seq is None:
            seq = self.seq
            self.seq = (self.seq + 1) & 0xFFFF
        self.ser.write(encode("#", seq, typ, body))
        return seq

    def pump(self, seconds: float = 0.05) -> None:
        deadline = time.monotonic() + seconds
        while True:
            data = self.ser.read(max(1, self.ser.in_waiting))
            self._buf += data
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                f = decode(line + b"\n")
                if f is None or f[0] != "@":
                    self.other.append(line)
                    continue
                self.frames.append(f)
                if f[2] == "ack" and f[3] is not None:
                    n, _, res = f[3].partition(" ")
                    self.acks[int(n)] = res or None
                elif f[2] in ("rd", "mb", "evt") and self.auto_ack:
                    self.send("ack", str(f[1]))
            if time.monotonic() >= deadline:
                return

    def wait(self, pred: Any, timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.05)
            r = pred()
            if r:
                return r
        tail = list(self.frames[-10:])
        raise AssertionError(f"timed out waiting for {what}: last frames {tail}, other {self.other[-5:]}")

    def of_type(self, typ: str) -> list[tuple[str, int, str, str | None]]:
        return [f for f in self.frames if f[2] == typ]

    def hello(self, timeout: float = 10.0) -> dict[str, Any]:
        n = len(self.of_type("hello"))
        self.send("hello", json.dumps({"proto": 1, "sid": self.sid, "host": "test"}, separators=(",", ":")))
        f = self.wait(lambda: self.of_type("hello")[n:], timeout, "the board's hello")
        return json.loads(f[0][3])

    def command(self, typ: str, body: str | None = "{}", timeout: float = 10.0) -> dict[str, Any] | None:
        seq = self.send(typ, body)
        self.wait(lambda: seq in self.acks, timeout, f"ack of {typ} #{seq}")
        res = self.acks[seq]
        return None if res is None else json.loads(res)

    def push_config(self, cfg: dict[str, Any] | str, part_size: int = 900) -> dict[str, Any] | None:
        text = cfg if isinstance(cfg, str) else json.dumps(cfg, separators=(",", ":"))
        parts = [text[i : i + part_size] for i in range(0, len(text), part_size)] or [""]
        res = None
        for i, p in enumerate(parts, 1):
            res = self.command("cfg", f"{i}/{len(parts)} {p}")
        return res

    def readings(self) -> dict[str, str]:
        """The latest value of every point seen in rd frames."""
        out: dict[str, str] = {}
        for f in self.of_type("rd"):
            assert f[3] is not None
            for item in f[3].split(" ")[1:]:
                k, _, v = item.partition("=")
                out[k] = v
        return out
