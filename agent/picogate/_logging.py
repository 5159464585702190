"""Logs: plain text for a terminal, JSON lines (one object per line) for journald/Loki.

Whatever a record carries (a board's text, a command's value, an exception from a peer), it is
written as exactly one line, and never dropped:

- **text**: control characters in the message (newlines, carriage returns, escape sequences, …)
  are shown escaped (`\\n`, `\\x1b`), so no text from outside can start a line that looks like a
  record of its own (a forged audit line).  A traceback follows its record on lines that start
  with `  | `.
- **json**: orjson escapes everything; a record that orjson refuses (a value nested deeper than its
  limit of 254 levels, an integer beyond 64 bits, a lone surrogate, an object whose `str()` fails)
  or a line longer than `MAX_LINE` is written again in a bounded, safe form (depth, items and text
  cut, marked with `"log_truncated": true`), so that every write keeps its audit line.

Both pass the finished line through `picogate._secrets.redact`: no known secret is ever written.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

from picogate._secrets import redact

__all__ = ["MAX_LINE", "JsonFormatter", "TextFormatter", "escape_text", "setup_logging"]

MAX_LINE = 32 * 1024
"""Longest line written for a record (journald splits longer lines: `LineMax=`, 48K)."""

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_MAX_DEPTH = 16
_MAX_ITEMS = 64
_MAX_TEXT = 1024
_INT64 = (-(2**63), 2**64 - 1)


def escape_text(text: str) -> str:
    """`text` on one line: every control character (and U+2028/U+2029) shown as an escape."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_escape_one, text)


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def _message(record: logging.LogRecord) -> str:
    """The record's message; a call whose arguments do not fit its format still says something."""
    try:
        return record.getMessage()
    except Exception as exc:
        return (
            f"{_cut(repr(record.msg))} with arguments {_cut(repr(record.args))} ({type(exc).__name__}: {exc})"
        )


def _cut(text: str, limit: int = _MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more characters)"


class TextFormatter(logging.Formatter):
    """`2024-05-01 12:00:00,123 INFO    picogate.audit: message`, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        message = _cut(escape_text(_message(record)), MAX_LINE)
        line = f"{self.formatTime(record, self.datefmt)} {record.levelname:<7} {record.name}: {message}"
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        elif record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            line += "".join(f"\n  | {escape_text(part)}" for part in block.splitlines())
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `msg`, the record's extras (`audit`, …)
    and `exc` (the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(_message(record)),
        }
        for key, value in vars(record).items():
            if key not in _STD:
                out[key] = value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        try:
            line = orjson.dumps(out, default=str).decode()
        except Exception as exc:  # deep nesting, big ints, surrogates, a failing __str__: see below
            return self._bounded(out, f"{type(exc).__name__}: {exc}")
        if len(line) > MAX_LINE:
            return self._bounded(out, f"longer than {MAX_LINE} characters")
        return redact(line)

    def _bounded(self, out: dict[str, Any], why: str) -> str:
        """The record again, depth, items and text cut so that it always encodes."""
        safe = {str(k): _safe(v, 0) for k, v in out.items()}
        for key in ("msg", "exc"):  # ours, and what says what happened: cut much later
            if isinstance(out.get(key), str):
                safe[key] = _text(out[key], MAX_LINE // 4)
        safe["log_truncated"] = True
        safe["log_truncated_why"] = _safe(why, 0)
        line = orjson.dumps(safe).decode()
        if len(line) > MAX_LINE:  # many extras, each within bounds: keep what identifies the record
            keep = ("ts", "level", "logger", "msg", "log_truncated", "log_truncated_why")
            line = orjson.dumps({k: safe[k] for k in keep if k in safe}).decode()
        return redact(line)


def _safe(value: Any, depth: int) -> Any:
    """A JSON-safe copy of `value`: at most `_MAX_DEPTH` levels, `_MAX_ITEMS` items per level,
    `_MAX_TEXT` characters per text, integers within 64 bits, text valid UTF-8."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else _text(_int_text(value))
    if isinstance(value, str):
        return _text(value)
    if depth >= _MAX_DEPTH:
        return f"<{type(value).__name__} nested deeper than {_MAX_DEPTH} levels>"
    if isinstance(value, dict):
        items = list(value.items())
        safe = {_text(str(k)): _safe(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            safe["…"] = f"{len(items) - _MAX_ITEMS} more items"
        return safe
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        cut = [_safe(v, depth + 1) for v in seq[:_MAX_ITEMS]]
        if len(seq) > _MAX_ITEMS:
            cut.append(f"… {len(seq) - _MAX_ITEMS} more items")
        return cut
    try:
        return _text(str(value))
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # more digits than int_max_str_digits
        return f"<integer of {value.bit_length()} bits>"


def _text(text: str, limit: int = _MAX_TEXT) -> str:
    text = _cut(text, limit)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (bytes decoded with surrogateescape, …)
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymodbus", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if noisy != "asyncio" else logging.WARNING)
