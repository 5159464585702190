"""The persistent outbox: store-and-forward for every sink.

A reading is *accepted* when the record carrying it is committed here (SQLite, WAL mode).  A record
is deleted only when its sink confirmed delivery (MQTT PUBACK, EdgeX 201/409).  Records carry a
sink's ready-made payload: `key` is the MQTT topic or the REST path, `payload` the bytes to send.

Commits run one at a time on a dedicated thread, at most one per `commit_interval` (10 ms),
each taking whatever arrived since the last one in one transaction (group commit: each commit
costs an fsync, about 150 µs of CPU with `synchronous: full`, so 15,000 readings a second cost at
most a hundred transactions, not 15,000).  Handed-over records wait half a `commit_interval`
after the first of them arrived, so that the devices polled together share a commit; records
whose producer waits for the commit are committed within 2 ms.  Producers choose how long
they wait:

- `append()` returns once its records are committed (a peer that is answered "accepted" — a Pico
  board's ack, a CoAP 2.04 — waits for this);
- `put()` hands records over and returns at once (a Modbus poll, whose device is told nothing):
  polling never waits on a commit.  Only while more than `max_pending_bytes` of records wait for a
  commit that is working does `room()` hold such a producer back (backpressure, counted).

When a commit fails (disk full, I/O error, read-only file system) the outbox says so once, with the
path and the free space, and retries by itself (1 s, doubling up to 10 s).  Meanwhile `append()`
fails at once (the peer hears "not accepted" and sends again later), and what `put()` handed over
is kept in memory up to `max_pending_bytes`; beyond that the oldest is dropped and counted (`lost`),
never silently.  A producer hears of its records' loss through `on_lost` (the report filter then
forgets that it published them).  `failing` says why commits fail, for the status topic and metrics.

When the outbox holds `max_records` records, the oldest records are dropped to make room: the
messages they carried are counted per sink (`dropped`), reported on the status topic and in the
metrics.  `depth()` counts records (a bundle is one record).

Messages a sink's peer refused (an MQTT broker's negative PUBACK, a message larger than the
broker's limit, an EdgeX 400/413) are *parked*: moved, in the transaction that deletes their
record, to a table of their own (at most `max_parked` messages, the oldest dropped and counted),
and put back into the outbox at the next start and every `parked_retry` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from picogate._errors import PicogateError

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
CREATE TABLE IF NOT EXISTS parked (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    created_ns INTEGER NOT NULL,
    parked_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""

_TAIL_MAX = 200_000  # records per sink kept in memory so a live sink never reads them back from disk
_ACK_BATCH = 5000  # acknowledgements that start a commit by themselves
_ACK_DELAY = 0.2  # seconds acknowledgements wait for a commit when no new records come
_PROMPT_GAP = 0.002  # seconds between commits while a producer waits for its commit (a peer waits)
_RETRY_MIN, _RETRY_MAX = 1.0, 10.0  # seconds between attempts while commits fail
_REMIND = 60.0  # seconds between reminders in the log while commits fail

# SQLite result codes (`sqlite3.Error.sqlite_errorcode`, primary code in the low byte)
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL = 8, 10, 11, 13
_SQLITE_CANTOPEN, _SQLITE_NOTADB = 14, 26


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


@dataclass(frozen=True, slots=True)
class Refused:
    """One message of a record that the sink's peer refused: it is parked, not re-sent at once."""

    record: Record
    key: str
    payload: bytes
    reason: str


class OutboxError(PicogateError, RuntimeError):
    """The outbox cannot be opened or written; the message names the file and what to do."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message, where=str(path))
        self.path = path


class OutboxClosed(OutboxError):
    def __init__(self, path: Path) -> None:
        super().__init__(path, f"outbox {path} is closed")


class OutboxUnavailable(OutboxError):
    """A commit failed (disk full, I/O error): the records were not accepted."""


LostCallback = Callable[[], None]


@dataclass(slots=True)
class _Batch:
    """Envelopes handed over together, waiting for a commit."""

    envelopes: Sequence[Envelope]
    size: int  # bytes, for the bound on what waits in memory
    waiter: asyncio.Future[None] | None = None
    on_lost: LostCallback | None = None


@dataclass(slots=True)
class _SinkState:
    depth: int = 0
    dropped: int = 0  # messages dropped because the outbox was full (persistent)
    lost: int = 0  # messages never committed (commits failed and memory ran out)
    parked: int = 0  # messages refused by the peer, waiting in the parked table
    parked_dropped: int = 0  # parked messages dropped because the parked table was full
    unsettled: int = 0  # acknowledged records whose delete is not committed yet
    tail: deque[Record] = field(default_factory=deque)
    floor: int = 0  # every record of this sink with id >= floor is in `tail`
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


def _size(envelopes: Sequence[Envelope]) -> int:
    return sum(len(e.payload) + len(e.key) + 64 for e in envelopes)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class Outbox:
    def __init__(
        self,
        path: str | Path,
        *,
        max_records: int = 2_000_000,
        synchronous: Literal["full", "normal"] = "full",
        commit_interval: float = 0.01,
        max_pending_bytes: int = 64 * 1024 * 1024,
        max_parked: int = 100_000,
        parked_retry: float = 600.0,
    ) -> None:
        self.path = Path(path)
        self.max_records = max_records
        self.synchronous = synchronous
        self.commit_interval = commit_interval
        """The shortest time between the starts of two commits (an idle outbox commits at once)."""
        self.max_pending_bytes = max_pending_bytes
        self.max_parked = max_parked
        self.parked_retry = parked_retry
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._sinks: dict[str, _SinkState] = {}
        self._pending: deque[_Batch] = deque()
        self._pending_bytes = 0
        self._waiting = 0  # pending batches whose producer waits for the commit
        self._first_put = 0.0  # when the oldest pending batch arrived
        self._acks: list[tuple[str, int]] = []
        self._acked_ids: set[int] = set()  # acknowledged, delete not yet committed
        self._parks: list[tuple[str, Refused]] = []  # parked with the next commit
        self._requeue_parked = False
        self._kick = asyncio.Event()
        self._ack_timer: asyncio.TimerHandle | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._flushed: list[asyncio.Future[None]] = []
        self._committer: asyncio.Task[None] | None = None
        self._closed = False
        self._next_id = 1
        self.commits = 0
        self.appended = 0
        self.commit_failures = 0
        self.backpressure_waits = 0
        self.failing = ""
        """Why commits fail now ("" while they work): for the status topic, health and metrics."""
        self._failing_since = 0.0
        self._last_remind = 0.0
        self._retry_delay = _RETRY_MIN
        self._lost_while_failing = 0
        self._last_attempt = 0.0
        self.listeners: list[Callable[[], None]] = []
        """Called when `failing` or a parked count changes (the gateway republishes its status)."""

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._open_db)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._committer = asyncio.create_task(self._commit_loop(), name="outbox-commit")

    def _open_db(self) -> None:
        try:
            self._open_db_or_raise()
        except sqlite3.Error as exc:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            raise self._open_error(exc) from None
        except OSError as exc:
            raise OutboxError(
                self.path,
                f"cannot create the folder of the outbox {self.path}: {exc.strerror or exc}. "
                "Check gateway.data_dir (or outbox.path) in gateway.yaml and that the user running "
                "picogate may write there.",
            ) from None

    def _open_error(self, exc: sqlite3.Error) -> OutboxError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        path = self.path
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return OutboxError(
                path,
                f"the outbox {path} is damaged ({exc}). Stop picogate, move it aside "
                f"(mv {path} {path}.damaged, and its -wal and -shm files) and start again: a new, "
                "empty outbox is created; the records in the damaged file cannot be sent.",
            )
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or not _writable(path):
            return OutboxError(
                path,
                f"cannot open the outbox {path} for writing ({exc}). Check that {path.parent} and the "
                f"files in it are writable by the user running picogate, that the file system is not "
                "mounted read-only, and gateway.data_dir (or outbox.path) in gateway.yaml.",
            )
        if code == _SQLITE_FULL:
            return OutboxError(path, f"cannot open the outbox {path}: {self._full_message()}")
        return OutboxError(path, f"cannot open the outbox {path}: {exc}")

    def _open_db_or_raise(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-16000")  # 16 MB page cache
        db.executescript(_SCHEMA)
        # Messages parked in an earlier run go back into the outbox (the cause may have been
        # fixed: a broker's ACL or packet size limit), after what is already waiting.
        self._requeue(db)
        for sink, depth in db.execute("SELECT sink, COUNT(*) FROM outbox GROUP BY sink"):
            self._state(sink).depth = depth
        for name, value in db.execute(
            "SELECT name, value FROM counters WHERE name LIKE 'dropped:%' OR name LIKE 'parked_dropped:%'"
        ):
            kind, sink = name.split(":", 1)
            if kind == "dropped":
                self._state(sink).dropped = value
            else:
                self._state(sink).parked_dropped = value
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        self._next_id = (row[0] if row else 0) + 1
        for st in self._sinks.values():
            st.floor = self._next_id

    def _requeue(self, db: sqlite3.Connection) -> int:
        """Move every parked message back into the outbox (retain off: a newer value may have
        been retained meanwhile).  Runs inside a transaction of its own or the caller's."""
        own = not db.in_transaction
        if own:
            db.execute("BEGIN IMMEDIATE")
        try:
            n = db.execute(
                "INSERT INTO outbox (sink, key, payload, qos, retain, parts, created_ns) "
                "SELECT sink, key, payload, qos, 0, 0, created_ns FROM parked ORDER BY id"
            ).rowcount
            db.execute("DELETE FROM parked")
            if own:
                db.execute("COMMIT")
        except BaseException:
            if own and db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if n > 0:
            log.info("outbox: %d parked messages put back to be sent again", n)
        return n

    async def close(self) -> None:
        """Commit what is pending and close.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._kick.set()
        if self._committer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_db)
        self._executor.shutdown(wait=True)
        if self._pending:  # only when the last commits failed
            lost = self.pending
            for b in self._pending:
                self._lose(b)
            log.error(
                "outbox %s: closed with %d messages that could not be committed (%s)",
                self.path,
                lost,
                self.failing,
            )
            self._pending.clear()
        for fut in self._flushed:
            if not fut.done():
                fut.set_result(None)

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
        """Return once `envelopes` are committed (accepted); raise OutboxUnavailable if the commit
        failed (nothing of them was accepted: the caller tells its peer so).

        `prompt` is accepted for compatibility: every commit now starts as soon as the previous
        one ended."""
        del prompt
        if self._closed:
            raise OutboxClosed(self.path)
        if not envelopes:
            return
        if self.failing:
            raise OutboxUnavailable(self.path, f"outbox {self.path}: {self.failing}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting += 1
        self._enqueue(_Batch(envelopes, _size(envelopes), fut))
        await fut

    def put(self, envelopes: Sequence[Envelope], *, on_lost: LostCallback | None = None) -> None:
        """Hand `envelopes` over for the next commit and return at once.  If they can never be
        committed (commits fail and the memory bound is reached) `on_lost` is called."""
        if self._closed:
            raise OutboxClosed(self.path)
        if envelopes:
            self._enqueue(_Batch(envelopes, _size(envelopes), None, on_lost))

    async def room(self) -> None:
        """Wait while more than `max_pending_bytes` wait for a commit that works (backpressure
        for `put()` producers).  While commits fail it returns at once: polling goes on."""
        if not self._room.is_set():
            self.backpressure_waits += 1
            await self._room.wait()

    @property
    def pending(self) -> int:
        """Messages handed over and not yet committed."""
        return sum(sum(e.parts or 1 for e in b.envelopes) for b in self._pending)

    def _enqueue(self, batch: _Batch) -> None:
        first = not self._pending
        if first:
            self._first_put = time.monotonic()
        self._pending.append(batch)
        self._pending_bytes += batch.size
        if self._pending_bytes > self.max_pending_bytes:
            if self.failing:
                self._shed()
            else:
                self._room.clear()
        # Wake the committer only when this changes when it commits: the first batch of a commit,
        # or a producer that waits.  The rest of a slot's polls (24 of 25 in scenario a) join the
        # commit already timed, without waking it for nothing.
        if first or batch.waiter is not None:
            self._kick.set()

    def _shed(self) -> None:
        """Commits fail and memory is full: drop the oldest batches that nobody waits for."""
        kept: deque[_Batch] = deque()
        while self._pending and self._pending_bytes > self.max_pending_bytes:
            b = self._pending.popleft()
            if b.waiter is not None:
                kept.append(b)
                continue
            self._pending_bytes -= b.size
            self._lose(b)
        kept.extend(self._pending)
        self._pending = kept

    def _lose(self, b: _Batch) -> None:
        for e in b.envelopes:
            n = e.parts or 1
            self._state(e.sink).lost += n
            self._lost_while_failing += n
        if b.on_lost is not None:
            try:
                b.on_lost()
            except Exception:
                log.exception("outbox: on_lost callback failed")

    # ------------------------------------------------------------------ consumers

    def register_sink(self, sink: str) -> None:
        self._state(sink)

    def sinks(self) -> list[str]:
        return list(self._sinks)

    def depth(self, sink: str | None = None) -> int:
        """Records waiting for their sink (acknowledged ones no longer count, even before their
        delete is committed)."""
        if sink is None:
            return sum(max(0, st.depth - st.unsettled) for st in self._sinks.values())
        st = self._state(sink)
        return max(0, st.depth - st.unsettled)

    def dropped(self, sink: str | None = None) -> int:
        if sink is None:
            return sum(st.dropped for st in self._sinks.values())
        return self._state(sink).dropped

    def lost(self, sink: str | None = None) -> int:
        if sink is None:
            return sum(st.lost for st in self._sinks.values())
        return self._state(sink).lost

    def parked(self, sink: str | None = None) -> int:
        if sink is None:
            return sum(st.parked for st in self._sinks.values())
        return self._state(sink).parked

    def parked_dropped(self, sink: str | None = None) -> int:
        if sink is None:
            return sum(st.parked_dropped for st in self._sinks.values())
        return self._state(sink).parked_dropped

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
        """Mark records delivered; they are deleted with the next commit (at most 0.2 s later
        when nothing else is committed)."""
        for rec in records:
            if rec.id not in self._acked_ids:
                self._acked_ids.add(rec.id)
                self._acks.append((rec.sink, rec.id))
                self._state(rec.sink).unsettled += 1
        self._trim_tails()
        if len(self._acks) >= _ACK_BATCH:
            self._kick.set()
        elif self._acks and self._ack_timer is None and not self._closed:
            self._ack_timer = asyncio.get_running_loop().call_later(_ACK_DELAY, self._ack_due)

    def _ack_due(self) -> None:
        self._ack_timer = None
        self._kick.set()

    def park(self, sink: str, refused: Iterable[Refused]) -> None:
        """Move refused messages to the parked table with the next commit; acknowledge their
        records (`ack`) after this call, so that both happen in one transaction."""
        items = [(sink, r) for r in refused]
        if items:
            self._parks.extend(items)
            self._kick.set()

    def retry_parked(self) -> None:
        """Put every parked message back into the outbox with the next commit."""
        if self.parked() or self._parks:
            self._requeue_parked = True
            self._kick.set()

    async def flush(self) -> None:
        """Start a commit of whatever waits (acknowledgements included) and return when it ended."""
        if self._closed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushed.append(fut)
        self._kick.set()
        await fut

    def _trim_tails(self) -> None:
        for st in self._sinks.values():
            tail = st.tail
            while tail and tail[0].id in self._acked_ids:
                st.floor = tail.popleft().id + 1

    # ------------------------------------------------------------------ the committer

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_retry = time.monotonic()
        while True:
            await self._kick.wait()
            self._kick.clear()
            if self.failing and not self._closed:
                # Wait out the retry delay (a close cuts it short), then try again.
                wait = self._retry_at - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            while not self._closed:
                                self._kick.clear()
                                await self._kick.wait()
            else:
                await self._spacing()
            if self.parked_retry > 0 and time.monotonic() - last_retry >= self.parked_retry:
                last_retry = time.monotonic()
                if self.parked():
                    self._requeue_parked = True
            if self._pending or self._acks or self._parks or self._requeue_parked or self._flushed:
                await self._commit_once(loop)
            if self.failing and not self._closed:
                self._kick.set()  # come back after the retry delay
            if self._closed and (not self._pending or self.failing):
                return

    async def _spacing(self) -> None:
        """Group commits (each costs an fsync).  Records only handed over (a poll) are committed
        commit_interval / 2 after the first of them arrived (what arrives meanwhile, e.g. the rest
        of the devices polled in the same slot, joins), and at most once per commit_interval.
        Records whose producer waits for the commit (a peer waits for its answer) are committed
        after at most _PROMPT_GAP."""
        while not self._closed and not self._flushed and len(self._acks) < _ACK_BATCH:
            if self._waiting:
                at = self._last_attempt + min(_PROMPT_GAP, self.commit_interval)
            elif self._pending:
                at = max(
                    self._last_attempt + self.commit_interval, self._first_put + self.commit_interval / 2
                )
            else:
                at = self._last_attempt + self.commit_interval
            wait = at - time.monotonic()
            if wait <= 0:
                return
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._kick.wait()

    @property
    def _retry_at(self) -> float:
        return self._last_attempt + self._retry_delay

    async def _commit_once(self, loop: asyncio.AbstractEventLoop) -> None:
        batches, self._pending = self._pending, deque()
        pending_bytes, self._pending_bytes = self._pending_bytes, 0
        self._waiting = 0
        acks, self._acks = self._acks, []
        parks, self._parks = self._parks, []
        requeue, self._requeue_parked = self._requeue_parked, False
        flushed, self._flushed = self._flushed, []
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        pending: list[Envelope] = []
        for b in batches:
            pending.extend(b.envelopes)
        created = time.time_ns()
        depth = sum(st.depth for st in self._sinks.values())  # rows in the table
        self._last_attempt = time.monotonic()
        try:
            first_id, deleted, dropped, parked, requeued = await loop.run_in_executor(
                self._executor, self._commit, pending, acks, parks, requeue, created, depth
            )
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc, batches, pending_bytes, acks, parks, requeue)
            for fut in flushed:
                if not fut.done():
                    fut.set_result(None)
            return
        if self.failing:
            self._recovered()
        self.commits += 1
        self.appended += len(pending)
        for sink, n in deleted.items():
            self._sinks[sink].depth -= n
        for sink, _ in acks:
            self._sinks[sink].unsettled -= 1
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
        if parked or requeued:
            self._apply_parked(parked, requeued, touched)
        for sink in touched:
            st = self._sinks[sink]
            while len(st.tail) > _TAIL_MAX:
                st.floor = st.tail.popleft().id + 1
            st.wakeup.set()
        if not self._room.is_set() and self._pending_bytes <= self.max_pending_bytes:
            self._room.set()
        for b in batches:
            if b.waiter is not None and not b.waiter.done():
                b.waiter.set_result(None)
        for fut in flushed:
            if not fut.done():
                fut.set_result(None)

    def _apply_parked(
        self, parked: dict[str, tuple[int, int]], requeued: dict[str, tuple[int, int]], touched: set[str]
    ) -> None:
        for sink, (added, dropped) in parked.items():
            st = self._state(sink)
            st.parked += added - dropped
            st.parked_dropped += dropped
            if dropped:
                log.error(
                    "outbox: the parked table of sink %s is full: dropped its %d oldest messages",
                    sink,
                    dropped,
                )
        for sink, (records, end) in requeued.items():
            st = self._state(sink)
            st.parked = 0
            st.depth += records
            # The requeued records are not in memory: the sink reads them (and what came before
            # them) from the database; only records committed after them are in the tail.
            st.floor = max(st.floor, end)
            while st.tail and st.tail[0].id < st.floor:
                st.tail.popleft()
            touched.add(sink)
        for listener in self.listeners:
            listener()

    def _failed(
        self,
        exc: sqlite3.Error | OSError,
        batches: deque[_Batch],
        pending_bytes: int,
        acks: list[tuple[str, int]],
        parks: list[tuple[str, Refused]],
        requeue: bool,
    ) -> None:
        self.commit_failures += 1
        self._acks = acks + self._acks
        self._parks = parks + self._parks
        self._requeue_parked = self._requeue_parked or requeue
        reason = self._describe(exc)
        first = not self.failing
        if first:
            self._failing_since = time.monotonic()
            self._lost_while_failing = 0
            self._retry_delay = _RETRY_MIN
        else:
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        changed = reason != self.failing
        self.failing = reason
        # Whoever waits for its answer hears "not accepted" now (its peer sends again later);
        # what was only handed over waits in memory, before what arrived meanwhile.
        kept: deque[_Batch] = deque()
        for b in batches:
            if b.waiter is not None:
                pending_bytes -= b.size
                if not b.waiter.done():
                    b.waiter.set_exception(OutboxUnavailable(self.path, f"outbox {self.path}: {reason}"))
                if b.on_lost is not None:
                    b.on_lost()
            else:
                kept.append(b)
        kept.extend(self._pending)
        self._pending = kept
        self._pending_bytes += pending_bytes
        self._shed()
        self._room.set()  # polling goes on while commits fail
        now = time.monotonic()
        if first or changed:
            log.error(
                "outbox %s: commits fail: %s. Readings are kept in memory (up to %s) and committed "
                "as soon as this is fixed; beyond that the oldest are dropped and counted. Retrying "
                "by itself.",
                self.path,
                reason,
                _mb(self.max_pending_bytes),
            )
            self._last_remind = now
            for listener in self.listeners:
                listener()
        elif now - self._last_remind >= _REMIND:
            self._last_remind = now
            log.error(
                "outbox %s: commits still fail (%s) since %.0f s: %d messages wait in memory, %d lost",
                self.path,
                reason,
                now - self._failing_since,
                self.pending,
                self._lost_while_failing,
            )

    def _recovered(self) -> None:
        log.warning(
            "outbox %s: commits work again after %.0f s (%d messages could not be kept meanwhile "
            "and were lost)",
            self.path,
            time.monotonic() - self._failing_since,
            self._lost_while_failing,
        )
        self.failing = ""
        self._retry_delay = _RETRY_MIN
        for listener in self.listeners:
            listener()

    def _full_message(self) -> str:
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return f"the disk holding {self.path.parent} is full"
        return f"disk full ({_mb(free)} free in {self.path.parent})"

    def _describe(self, exc: sqlite3.Error | OSError) -> str:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL or (isinstance(exc, OSError) and exc.errno == 28):
            return self._full_message()
        if code == _SQLITE_READONLY:
            return f"the outbox file became read-only ({exc})"
        if code == _SQLITE_IOERR:
            return f"I/O error writing the outbox ({exc}); check the disk (dmesg)"
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return f"the outbox file is damaged ({exc}); stop picogate and move it aside"
        return str(exc) or type(exc).__name__

    def _commit(
        self,
        pending: list[Envelope],
        acks: list[tuple[str, int]],
        parks: list[tuple[str, Refused]],
        requeue: bool,
        created: int,
        depth: int,
    ) -> tuple[
        int,
        dict[str, int],
        dict[str, tuple[int, int, int]],
        dict[str, tuple[int, int]],
        dict[str, tuple[int, int]],
    ]:
        """One transaction: park refused messages, delete acknowledged records, put parked
        messages back (on request), insert the new records, drop the oldest beyond
        `max_records`.  Returns the first new id and what changed per sink."""
        db = self._db
        assert db is not None
        deleted: dict[str, int] = {}
        dropped: dict[str, tuple[int, int, int]] = {}  # sink → (messages, highest id, records)
        parked: dict[str, tuple[int, int]] = {}  # sink → (parked, dropped from the parked table)
        requeued: dict[str, tuple[int, int]] = {}  # sink → (records, first id)
        try:
            db.execute("BEGIN IMMEDIATE")
            if parks:
                self._insert_parked(db, parks, parked)
            by_sink: dict[str, list[tuple[int]]] = {}
            for sink, rid in acks:
                by_sink.setdefault(sink, []).append((rid,))
            for sink, ids in by_sink.items():
                cur = db.executemany("DELETE FROM outbox WHERE id = ?", ids)
                if cur.rowcount > 0:
                    deleted[sink] = cur.rowcount
            if requeue:
                rows = db.execute("SELECT sink, COUNT(*) FROM parked GROUP BY sink").fetchall()
                if self._requeue(db):
                    end = self._seq(db) + 1  # the requeued records have ids below `end`
                    for sink, n in rows:
                        requeued[sink] = (n, end)
                    depth += sum(n for _, n in rows)
            first_id = self._next_id
            if pending:
                db.executemany(
                    "INSERT INTO outbox (sink, key, payload, qos, retain, parts, created_ns) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(e.sink, e.key, e.payload, e.qos, int(e.retain), e.parts, created) for e in pending],
                )
                last = self._seq(db)
                first_id = last - len(pending) + 1
                total = depth - sum(deleted.values()) + len(pending)
                excess = total - self.max_records
                if excess > 0:
                    self._drop_oldest(db, excess, dropped)
            db.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after SQLITE_FULL and some I/O errors: a ROLLBACK of
            # ours would fail with "no transaction is active" and hide the real error.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        if pending or requeue:
            self._next_id = self._seq(db) + 1
        return first_id, deleted, dropped, parked, requeued

    @staticmethod
    def _seq(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        return int(row[0]) if row else 0

    def _insert_parked(
        self, db: sqlite3.Connection, parks: list[tuple[str, Refused]], parked: dict[str, tuple[int, int]]
    ) -> None:
        now = time.time_ns()
        db.executemany(
            "INSERT INTO parked (sink, key, payload, qos, created_ns, parked_ns, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(s, r.key, r.payload, r.record.qos, r.record.created_ns, now, r.reason[:500]) for s, r in parks],
        )
        for s, _ in parks:
            added, d = parked.get(s, (0, 0))
            parked[s] = (added + 1, d)
        total = db.execute("SELECT COUNT(*) FROM parked").fetchone()[0]
        excess = total - self.max_parked
        if excess > 0:
            for sink, n in db.execute(
                "SELECT sink, COUNT(*) FROM (SELECT sink FROM parked ORDER BY id LIMIT ?) GROUP BY sink",
                (excess,),
            ).fetchall():
                added, d = parked.get(sink, (0, 0))
                parked[sink] = (added, d + n)
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    (f"parked_dropped:{sink}", n),
                )
            db.execute(
                "DELETE FROM parked WHERE id IN (SELECT id FROM parked ORDER BY id LIMIT ?)", (excess,)
            )

    def _drop_oldest(
        self, db: sqlite3.Connection, excess: int, dropped: dict[str, tuple[int, int, int]]
    ) -> None:
        for sink, messages, max_id, records in db.execute(
            "SELECT sink, SUM(MAX(parts, 1)), MAX(id), COUNT(*) FROM "
            "(SELECT sink, id, parts FROM outbox ORDER BY id LIMIT ?) GROUP BY sink",
            (excess,),
        ).fetchall():
            dropped[sink] = (messages, max_id, records)
        db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (excess,))
        for sink, (n, _, _) in dropped.items():
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (f"dropped:{sink}", n),
            )


def _writable(path: Path) -> bool:
    import os

    target = path if path.exists() else path.parent
    return os.access(target, os.W_OK)
