"""Alarms: the rules' alerts as an operator sees them, with acknowledgement and a history that
survives a restart.

An alarm is one active alert of one rule (`rule`, `severity`, `message`; which are active is
the rules service's `AlertBook`): raised when the rule raises it, gone when the rule clears.  An
operator acknowledges an active alarm ("I have seen it"); the acknowledgement stays with the alarm
until its rule clears, across a restart of the gateway: after a restart the rules raise again the
alarms whose condition still holds, and such an alarm (same rule, severity and text, so the same
id) shows the acknowledgement it had.

Every raise, clear and acknowledgement is one line of JSON appended to the history file
(`console.alarms.history`, by default `<data_dir>/alarms.jsonl`); at start the file is read to
restore the acknowledgements and the recent history.  The file is bounded: once it holds more than
1.25 × `max_entries` lines it is rewritten (atomically) with the newest `max_entries`.

`AlarmBook` itself does no I/O but through its `HistoryFile`; `event()` takes the events as data.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Active", "AlarmBook", "HistoryFile", "alarm_id"]

log = logging.getLogger("picogate.console")

Key = tuple[str, str, str]
"""(rule, severity, message)"""


@dataclass(frozen=True, slots=True)
class Active:
    """An active alert as the rules service reports it."""

    rule: str
    severity: str
    message: str
    since: int
    """When it was raised (ns since the epoch)."""

    @property
    def key(self) -> Key:
        return (self.rule, self.severity, self.message)


def alarm_id(key: Key) -> str:
    """A stable id for an alarm: the same alert of the same rule has the same id after a restart."""
    return hashlib.sha256("\0".join(key).encode()).hexdigest()[:12]


class HistoryFile:
    """Append-only JSON lines, bounded (see the module docstring)."""

    def __init__(self, path: Path, *, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self._lines = 0
        self._file: Any = None

    def read(self) -> list[dict[str, Any]]:
        """Every entry that parses (a torn last line after a crash is skipped)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        entries = []
        for line in raw.splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        self._lines = len(entries)
        if self._lines > self.max_entries:
            entries = entries[-self.max_entries :]
            self._rewrite(entries)
        return entries

    def append(self, entry: dict[str, Any]) -> None:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(orjson.dumps(entry) + b"\n")
            self._file.flush()
        except OSError as exc:
            log.error("console: alarm history %s: cannot write: %s", self.path, exc.strerror or exc)
            return
        self._lines += 1

    def compact(self, entries: Callable[[], list[dict[str, Any]]]) -> None:
        """Rewrite with `entries()` (the newest `max_entries`) once the file grew past 1.25 × that."""
        if self._lines > self.max_entries * 5 // 4:
            self._rewrite(entries()[-self.max_entries :])

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        self.close()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join(orjson.dumps(e) + b"\n" for e in entries))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("console: alarm history %s: cannot rewrite: %s", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
            return
        self._lines = len(entries)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class AlarmBook:
    """Acknowledgements and the history of alarms (see the module docstring).  Which alarms are
    active is the rules service's (`active`, given to `view` and `acknowledge`); this adds who
    acknowledged them and when, and keeps the history.

    `history` holds the newest `max_entries` entries in memory too (the page's history view), each
    `{"ts": ms, "event": "raised"|"cleared"|"acked", "id", "rule", "severity", "message", "by"?}`.
    """

    def __init__(
        self, history: HistoryFile | None, *, max_entries: int, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.file = history
        self.clock = clock
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=max_entries)
        self.acks: dict[Key, tuple[str, int]] = {}
        """Who acknowledged an alarm and when (ns), until it clears."""
        self.max_acks = max_entries
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        if history is not None:
            self._restore(history.read())

    def _restore(self, entries: Iterable[dict[str, Any]]) -> None:
        for e in entries:
            self.history.append(e)
            try:
                key: Key = (str(e["rule"]), str(e["severity"]), str(e["message"]))
            except KeyError:
                continue
            event = e.get("event")
            if event == "cleared":
                self._clear_rule(key[0])
            elif event == "acked":
                ts = e.get("ts")
                self.acks[key] = (str(e.get("by", "")), int(ts) * 1_000_000 if isinstance(ts, int) else 0)

    # ------------------------------------------------------------------ events

    def event(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        """An alert of a rule (`state` "active" or "cleared"), as the rules raise and clear them.  A
        cleared alert clears every alarm of its rule (the rules service's model of active alerts)."""
        if state == "active":
            self._record("raised", (rule, severity, message), ts)
        else:
            self._clear_rule(rule)
            self._record("cleared", (rule, severity, message), ts)

    def _clear_rule(self, rule: str) -> None:
        for key in [k for k in self.acks if k[0] == rule]:
            del self.acks[key]

    def acknowledge(self, wanted: str, user: str, active: Iterable[Active]) -> Active | None:
        """Acknowledge the active alarm whose id is `wanted` (again: keeps the first); None if no
        active alarm has that id."""
        for a in active:
            key = a.key
            if alarm_id(key) != wanted:
                continue
            if key not in self.acks:
                now = self.clock()
                self.acks[key] = (user, now)
                while len(self.acks) > self.max_acks:
                    del self.acks[next(iter(self.acks))]
                self._record("acked", key, now, by=user)
            return a
        return None

    def view(self, active: Iterable[Active]) -> list[dict[str, Any]]:
        """The active alarms as the console shows them, the newest first."""
        out: list[dict[str, Any]] = []
        for a in active:
            by, at = self.acks.get(a.key, ("", 0))
            out.append(
                {
                    "id": alarm_id(a.key),
                    "rule": a.rule,
                    "severity": a.severity,
                    "message": a.message,
                    "since": a.since // 1_000_000,
                    "acknowledged": bool(by),
                    "acked_by": by or None,
                    "acked_at": at // 1_000_000 if at else None,
                }
            )
        out.sort(key=lambda x: x["since"], reverse=True)
        return out

    def _record(self, event: str, key: Key, ts: int, *, by: str = "") -> None:
        entry: dict[str, Any] = {
            "ts": ts // 1_000_000,
            "event": event,
            "id": alarm_id(key),
            "rule": key[0],
            "severity": key[1],
            "message": key[2],
        }
        if by:
            entry["by"] = by
        self.history.append(entry)
        if self.file is not None:
            self.file.append(entry)
            self.file.compact(lambda: list(self.history))
        for listener in list(self.listeners):
            listener(entry)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
