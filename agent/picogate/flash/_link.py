"""The two link frames the flasher needs (docs/link-protocol.md): `hello` and `maint`/`reset`.

The agent's link session (picogate.pico) does much more (acks, resends, sessions); the flasher
only says hello, reads the board's hello, and asks for maintenance mode, so it carries this small
codec instead of a session.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Frame", "encode", "parse", "parse_hello"]


@dataclass(frozen=True)
class Frame:
    marker: str
    seq: int
    type: str
    body: str


def encode(seq: int, type_: str, body: str = "", *, marker: str = "#") -> bytes:
    head = f"{marker}{seq} {type_}" + (f" {body}" if body else "")
    return f"{head} {zlib.crc32(head.encode()):08x}\n".encode()


def hello(host: str) -> bytes:
    body = json.dumps({"proto": 1, "sid": os.urandom(4).hex(), "host": host}, separators=(",", ":"))
    return encode(0, "hello", body)


def parse(line: bytes) -> Frame | None:
    """One received line (LF and an optional CR removed or not) → Frame, or None if it is not a
    valid frame (garbage, bad crc, REPL output)."""
    line = line.rstrip(b"\n").rstrip(b"\r")
    if not line or line[:1] not in (b"#", b"@") or any(b < 0x20 or b > 0x7E for b in line):
        return None
    text = line.decode("ascii")
    head, sep, crc = text.rpartition(" ")
    if not sep or len(crc) != 8 or any(c not in "0123456789abcdef" for c in crc):
        return None
    try:
        if int(crc, 16) != zlib.crc32(head.encode()):
            return None
    except ValueError:
        return None
    first, _, rest = head.partition(" ")
    type_, _, body = rest.partition(" ")
    seq_text = first[1:]
    if not seq_text.isdigit() or int(seq_text) > 65535 or len(seq_text) > 5:
        return None
    if not type_.isascii() or not type_.isalpha() or not type_.islower() or len(type_) > 8:
        return None
    return Frame(first[0], int(seq_text), type_, body)


def parse_hello(frame: Frame) -> dict[str, Any] | None:
    if frame.marker != "@" or frame.type != "hello":
        return None
    try:
        doc = json.loads(frame.body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
