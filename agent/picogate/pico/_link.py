"""The host's frame codec for the Pico link protocol v1 (docs/link-protocol.md).  Pure, no I/O.

    frame = marker seq SP type [SP body] SP crc LF      (printable ASCII, at most 1024 bytes)

`decode(line)` returns a `Frame` or raises `FrameError` whose `kind` is the counter the receiver
bumps (`garbage`, `bad_crc`, `oversize`).  `LineSplitter` cuts a byte stream into lines and drops
over-long ones without storing them.  The shared vectors (tests/cases/link/vectors.json) are
passed by this codec and by the firmware's.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Literal, NamedTuple

from picogate._errors import PicogateError

__all__ = [
    "BOARD",
    "HOST",
    "MAX_LINE",
    "Frame",
    "FrameError",
    "LineSplitter",
    "RdItem",
    "decode",
    "encode",
    "parse_ack",
    "parse_rd",
]

HOST = "#"
BOARD = "@"
MAX_LINE = 1024
"""Bytes of a line, LF included."""

ErrorKind = Literal["garbage", "bad_crc", "oversize"]

_FRAME_RE = re.compile(rb"^([#@])(0|[1-9][0-9]{0,4}) ([a-z]{1,8})(?: ([\x20-\x7e]*))? ([0-9a-f]{8})$")


class FrameError(PicogateError, ValueError):
    """A line that is not a valid frame; `kind` names the counter it goes to."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


@dataclass(frozen=True, slots=True)
class Frame:
    marker: str
    seq: int
    type: str
    body: str | None = None


def encode(marker: str, seq: int, type_: str, body: str | None = None) -> bytes:
    """The line (with LF) for a frame.  Raises ValueError for what no receiver would accept."""
    if marker not in (HOST, BOARD):
        raise ValueError(f"marker must be '#' or '@', not {marker!r}")
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"seq {seq} is not 0..65535")
    if not re.fullmatch(r"[a-z]{1,8}", type_):
        raise ValueError(f"frame type {type_!r} must be 1-8 lower-case letters")
    head = f"{marker}{seq} {type_}" if body is None else f"{marker}{seq} {type_} {body}"
    raw = head.encode("ascii")  # raises UnicodeEncodeError (a ValueError) for non-ASCII
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise ValueError("a frame holds printable ASCII only")
    line = raw + b" %08x\n" % zlib.crc32(raw)
    if len(line) > MAX_LINE:
        raise ValueError(f"frame of {len(line)} bytes is longer than {MAX_LINE}")
    return line


def decode(line: bytes) -> Frame:
    """Parse one line (with or without its LF; a CR before the LF is removed)."""
    if len(line) > MAX_LINE:
        raise FrameError("oversize", f"line of {len(line)} bytes is longer than {MAX_LINE}")
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    m = _FRAME_RE.match(line)
    if m is None:
        raise FrameError("garbage", "not a frame")
    marker, seq, type_, body, crc = m.groups()
    if int(seq) > 0xFFFF:
        raise FrameError("garbage", f"seq {int(seq)} is out of range")
    if zlib.crc32(line[: m.start(5) - 1]) != int(crc, 16):
        raise FrameError("bad_crc", "crc does not match")
    return Frame(marker.decode(), int(seq), type_.decode(), None if body is None else body.decode())


class LineSplitter:
    """Cuts a byte stream into lines of at most MAX_LINE bytes.

    `feed(data)` returns the complete lines (with their LF).  A line that grows past MAX_LINE is
    dropped: its bytes are discarded up to the next LF and `oversize` is incremented.  `pending`
    is the start of the line not yet ended (what a REPL prompt such as `>>> ` leaves).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False
        self.oversize = 0

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def clear(self) -> None:
        self._buf.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                if not self._skipping:
                    self._buf += data[start:]
                    if len(self._buf) >= MAX_LINE:
                        self._buf.clear()
                        self._skipping = True
                        self.oversize += 1
                return lines
            if self._skipping:
                self._skipping = False
            else:
                self._buf += data[start : nl + 1]
                if len(self._buf) > MAX_LINE:
                    self.oversize += 1
                else:
                    lines.append(bytes(self._buf))
                self._buf.clear()
            start = nl + 1


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    result: str | None


def parse_ack(body: str | None) -> Ack:
    """`17` or `17 {"ok":true}` → Ack(17, '{"ok":true}').  Raises ValueError."""
    if not body:
        raise ValueError("ack without a seq")
    seq, _, result = body.partition(" ")
    if not seq.isdigit() or int(seq) > 0xFFFF:
        raise ValueError(f"ack of a bad seq {seq!r}")
    return Ack(int(seq), result or None)


RdValue = bool | int | float | None
"""None: bad quality (the reason, if any, goes with it)."""

_INT_RE = re.compile(r"-?[0-9]+")  # (a frame is at most 1024 bytes: int() takes any of them)


def parse_value(text: str) -> tuple[RdValue, str]:
    """One `rd` value: `T`/`F`, an int, a decimal number, or `?`/`?reason` (bad quality).
    Raises ValueError for anything else (NaN and infinities included)."""
    if text == "T":
        return True, ""
    if text == "F":
        return False, ""
    if text.startswith("?"):
        return None, text[1:]
    if _INT_RE.fullmatch(text):
        return int(text), ""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad value {text[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"bad value {text[:40]!r}")
    return value, ""


class RdItem(NamedTuple):
    """One `id=value` of an `rd` frame."""

    id: str
    """Empty when the item is not `id=value` at all."""
    value: RdValue
    reason: str = ""
    """The board's reason for a bad value (`?nodev` → "nodev")."""
    error: str = ""
    """Why the text is not a value (the reading is bad); empty when it is one."""


def parse_rd(body: str | None) -> tuple[int, list[RdItem]]:
    """`<ticks> id=value ...` → (ticks, items).  Raises ValueError when the body has no ticks; an
    item that is not a value is returned with its `error` (one bad item never costs the others)."""
    if not body:
        raise ValueError("rd without ticks")
    parts = body.split(" ")
    if not parts[0].isdigit() or len(parts[0]) > 12:
        raise ValueError(f"rd ticks {parts[0][:20]!r} is not a number")
    items: list[RdItem] = []
    for part in parts[1:]:
        key, eq, text = part.partition("=")
        if not eq or not key:
            items.append(RdItem("", None, "", f"item {part[:40]!r} is not id=value"))
            continue
        try:
            value, reason = parse_value(text)
        except ValueError as exc:
            items.append(RdItem(key, None, "", str(exc)))
            continue
        items.append(RdItem(key, value, reason))
    return int(parts[0]), items


MbResult = tuple[int, int, str, bytes | int | None]
"""(bus, request index, status, data bytes for ok / exception code for exc / None)."""


def parse_mb(body: str | None) -> tuple[int, list[MbResult]]:
    """`<ticks> 0.0 ok 00fa 0.1 exc 2 1.0 timeout 1.1 crc` → (ticks, results).  Raises ValueError."""
    if not body:
        raise ValueError("mb without ticks")
    parts = body.split(" ")
    if not parts[0].isdigit():
        raise ValueError(f"mb ticks {parts[0]!r} is not a number")
    out: list[MbResult] = []
    i = 1
    while i < len(parts):
        ref = parts[i]
        bus, dot, req = ref.partition(".")
        if not (dot and bus.isdigit() and req.isdigit()) or i + 1 >= len(parts):
            raise ValueError(f"mb result {ref!r} is not bus.req status")
        status = parts[i + 1]
        i += 2
        data: bytes | int | None = None
        if status in ("ok", "exc"):
            if i >= len(parts):
                raise ValueError(f"mb result {ref} {status} without its data")
            arg = parts[i]
            i += 1
            if status == "ok":
                try:
                    data = bytes.fromhex(arg)
                except ValueError:
                    raise ValueError(f"mb result {ref}: {arg!r} is not hex") from None
            elif arg.isdigit():
                data = int(arg)
            else:
                raise ValueError(f"mb result {ref}: exception code {arg!r} is not a number")
        elif status not in ("timeout", "crc"):
            raise ValueError(f"mb result {ref}: unknown status {status!r}")
        out.append((int(bus), int(req), status, data))
    return int(parts[0]), out
