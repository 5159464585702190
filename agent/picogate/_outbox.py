"""The persistent outbox: store-and-forward for every sink.

A reading is *accepted* when the record carrying it is committed here (SQLite, WAL mode).  A record
is deleted only when its sink confirmed delivery (MQTT PUBACK, EdgeX 201/409).  Records carry a
sink's ready-made payload: `key` is the MQTT topic or the REST path, `payload` the bytes to send.

Writes are group-committed: `append()` returns once the transaction holding its records is
committed, at most `commit_interval` later, so that 15,000 readings a second cost a few dozen
transactions, not 15,000.  A `prompt` append (a peer waits for its answer) starts the next commit
as soon as the committer is free; what arrives meanwhile joins it.  All SQLite work runs on one dedicated thread.

When the outbox holds `max_records` records, the oldest records are dropped to make room: the
messages they carried are counted per sink (`dropped`), reported on the status topic and in the
metrics.  `depth()` counts records (a bundle is one record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger("picogate.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0,
    parts INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_sink_id ON outbox (sink, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_TAIL_MAX = 200_000  # records per sink kept in memory so a live sink never reads them back from disk


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a producer hands the outbox for one sink.

    `parts` = 0: one message, `key` is its address (topic, path).  `parts` = N > 0: a bundle of N
    messages that share the address prefix `key`; `payload` is `suffix NUL body NUL suffix NUL
    body ...` (MQTT forbids NUL in topics, and JSON bodies never contain a raw NUL).  A bundle
    costs one row however many messages it carries, and is deleted when all were confirmed.
    """

    sink: str
    key: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    parts: int = 0


@dataclass(frozen=True, slots=True)
class Record:
    """An envelope once committed: `id` orders records (per sink, and globally)."""

    id: int
    sink: str
    key: str
    payload: bytes
    qos: int
    retain: bool
    created_ns: int
    parts: int = 0

    def messages(self) -> list[tuple[str, bytes]]:
        """The (address, body) pairs this record carries."""
        if not self.parts:
            return [(self.key, self.payload)]
        fields = self.payload.split(b"\x00")
        key = self.key
        return [(key + fields[i].decode(), fields[i + 1]) for i in range(0, len(fields), 2)]


@dataclass(slots=True)
class _SinkState:
    depth: int = 0
    dropped: int = 0
    tail: deque[Record] = field(default_factory=deque)
    floor: int = 0  # every record of this sink with id >= floor is in `tail`
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class OutboxClosed(RuntimeError):
    pass


class Outbox:
    def __init__(
        self,
        path: str | Path,
        *,
        max_records: int = 2_000_000,
        synchronous: Literal["full", "normal"] = "full",
        commit_interval: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self.max_records = max_records
        self.synchronous = synchronous
        self.commit_interval = commit_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._sinks: dict[str, _SinkState] = {}
        self._pending: list[Envelope] = []
        self._pending_waiters: list[asyncio.Future[None]] = []
        self._acks: list[tuple[str, int]] = []
        self._acked_ids: set[int] = set()  # acknowledged, delete not yet committed
        self._kick = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False
        self._next_id = 1
        self.commits = 0
        self.appended = 0

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open_db)
        self._committer = asyncio.create_task(self._commit_loop(), name="outbox-commit")

    def _open_db(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-16000")  # 16 MB page cache
        db.executescript(_SCHEMA)
        for sink, depth in db.execute("SELECT sink, COUNT(*) FROM outbox GROUP BY sink"):
            self._state(sink).depth = depth
        for name, value in db.execute("SELECT name, value FROM counters WHERE name LIKE 'dropped:%'"):
            self._state(name.split(":", 1)[1]).dropped = value
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        self._next_id = (row[0] if row else 0) + 1
        for st in self._sinks.values():
            st.floor = self._next_id
        self._db = db

    async def close(self) -> None:
        """Commit what is pending and close.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._kick.set()
        if self._committer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_db)
        self._executor.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ producers

    def _state(self, sink: str) -> _SinkState:
        st = self._sinks.get(sink)
        if st is None:
            st = self._sinks[sink] = _SinkState(floor=self._next_id)
        return st

    async def append(self, envelopes: Sequence[Envelope], *, prompt: bool = False) -> None:
        """Return once `envelopes` are committed (accepted).

        `prompt`: a peer is waiting on this commit for its answer (a CoAP 2.04): commit as soon as
        the committer is free instead of on its next tick.  Appends made while a commit runs share
        the next one, so a busy stream of prompt appends costs one transaction per commit time,
        not one per append.
        """
        if self._closed:
            raise OutboxClosed("outbox is closed")
        if not envelopes:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.extend(envelopes)
        self._pending_waiters.append(fut)
        if prompt or len(self._pending) >= 5000:
            self._kick.set()
        await fut

    # ------------------------------------------------------------------ consumers

    def register_sink(self, sink: str) -> None:
        self._state(sink)

    def depth(self, sink: str | None = None) -> int:
        if sink is None:
            return sum(st.depth for st in self._sinks.values())
        return self._state(sink).depth

    def dropped(self, sink: str | None = None) -> int:
        if sink is None:
            return sum(st.dropped for st in self._sinks.values())
        return self._state(sink).dropped

    def wakeup(self, sink: str) -> asyncio.Event:
        """The event set whenever something new is committed for `sink`; its reader clears it
        (before looking, so that nothing committed after the look is missed)."""
        return self._state(sink).wakeup

    async def fetch(self, sink: str, after_id: int, limit: int) -> list[Record]:
        """Up to `limit` unacknowledged records of `sink` with id > after_id, in id order."""
        st = self._state(sink)
        acked = self._acked_ids
        if after_id + 1 >= st.floor:
            out: list[Record] = []
            for rec in st.tail:
                if rec.id > after_id and rec.id not in acked:
                    out.append(rec)
                    if len(out) >= limit:
                        break
            return out
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._executor, self._select, sink, after_id, limit + len(acked))
        return [r for r in rows if r.id not in acked][:limit]

    def _select(self, sink: str, after_id: int, limit: int) -> list[Record]:
        assert self._db is not None
        cur = self._db.execute(
            "SELECT id, sink, key, payload, qos, retain, created_ns, parts FROM outbox "
            "WHERE sink = ? AND id > ? ORDER BY id LIMIT ?",
            (sink, after_id, limit),
        )
        return [Record(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5]), r[6], r[7]) for r in cur]

    def ack(self, records: Iterable[Record]) -> None:
        """Mark records delivered; they are deleted with the next commit."""
        for rec in records:
            if rec.id not in self._acked_ids:
                self._acked_ids.add(rec.id)
                self._acks.append((rec.sink, rec.id))
        self._trim_tails()
        if len(self._acks) >= 5000:
            self._kick.set()

    def _trim_tails(self) -> None:
        for st in self._sinks.values():
            tail = st.tail
            while tail and tail[0].id in self._acked_ids:
                st.floor = tail.popleft().id + 1

    # ------------------------------------------------------------------ the committer

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        # A steady tick kicks the committer every commit_interval (one timer, not a timeout
        # context per commit: at hundreds of prompt commits a second that cost showed).
        tick: asyncio.TimerHandle | None = None

        def on_tick() -> None:
            nonlocal tick
            self._kick.set()
            tick = loop.call_later(self.commit_interval, on_tick)

        tick = loop.call_later(self.commit_interval, on_tick)
        try:
            while True:
                await self._kick.wait()
                self._kick.clear()
                if self._pending or self._acks:
                    await self._commit_once(loop)
                if self._closed and not self._pending:
                    return
        finally:
            tick.cancel()

    async def _commit_once(self, loop: asyncio.AbstractEventLoop) -> None:
        pending, self._pending = self._pending, []
        waiters, self._pending_waiters = self._pending_waiters, []
        acks, self._acks = self._acks, []
        created = time.time_ns()
        depth = self.depth()
        try:
            first_id, deleted, dropped = await loop.run_in_executor(
                self._executor, self._commit, pending, acks, created, depth
            )
        except Exception as exc:  # disk full, I/O error: the producers hear about it
            log.error("outbox commit failed: %s", exc)
            self._acks = acks + self._acks
            for w in waiters:
                if not w.done():
                    w.set_exception(exc)
            return
        self.commits += 1
        self.appended += len(pending)
        for sink, n in deleted.items():
            self._sinks[sink].depth -= n
        self._acked_ids.difference_update(rid for _, rid in acks)
        touched: set[str] = set()
        for i, env in enumerate(pending):
            st = self._state(env.sink)
            rec = Record(
                first_id + i, env.sink, env.key, env.payload, env.qos, env.retain, created, env.parts
            )
            st.tail.append(rec)
            st.depth += 1
            touched.add(env.sink)
        for sink, (messages, max_id, records) in dropped.items():
            st = self._state(sink)
            st.depth -= records
            st.dropped += messages
            while st.tail and st.tail[0].id <= max_id:
                st.tail.popleft()
            st.floor = max(st.floor, max_id + 1)
            log.warning(
                "outbox full: dropped the %d oldest messages (%d records) of sink %s", messages, records, sink
            )
        for sink in touched:
            st = self._sinks[sink]
            while len(st.tail) > _TAIL_MAX:
                st.floor = st.tail.popleft().id + 1
            st.wakeup.set()
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _commit(
        self, pending: list[Envelope], acks: list[tuple[str, int]], created: int, depth: int
    ) -> tuple[int, dict[str, int], dict[str, tuple[int, int, int]]]:
        db = self._db
        assert db is not None
        deleted: dict[str, int] = {}
        dropped: dict[str, tuple[int, int, int]] = {}  # sink → (messages, highest id, records)
        db.execute("BEGIN IMMEDIATE")
        try:
            by_sink: dict[str, list[tuple[int]]] = {}
            for sink, rid in acks:
                by_sink.setdefault(sink, []).append((rid,))
            for sink, ids in by_sink.items():
                cur = db.executemany("DELETE FROM outbox WHERE id = ?", ids)
                if cur.rowcount > 0:
                    deleted[sink] = cur.rowcount
            first_id = self._next_id
            if pending:
                db.executemany(
                    "INSERT INTO outbox (sink, key, payload, qos, retain, parts, created_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(e.sink, e.key, e.payload, e.qos, int(e.retain), e.parts, created) for e in pending],
                )
                row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
                last = row[0]
                first_id = last - len(pending) + 1
                self._next_id = last + 1
                total = depth - sum(deleted.values()) + len(pending)
                excess = total - self.max_records
                if excess > 0:
                    for sink, messages, max_id, records in db.execute(
                        "SELECT sink, SUM(MAX(parts, 1)), MAX(id), COUNT(*) FROM "
                        "(SELECT sink, id, parts FROM outbox ORDER BY id LIMIT ?) GROUP BY sink",
                        (excess,),
                    ).fetchall():
                        dropped[sink] = (messages, max_id, records)
                    db.execute(
                        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                        (excess,),
                    )
                    for sink, (n, _, _) in dropped.items():
                        db.execute(
                            "INSERT INTO counters (name, value) VALUES (?, ?) "
                            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                            (f"dropped:{sink}", n),
                        )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return first_id, deleted, dropped
