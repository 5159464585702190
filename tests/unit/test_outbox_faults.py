"""The outbox when things go wrong: a full disk (SQLite's own SQLITE_FULL, through its page limit),
messages a peer refused (parked), backpressure, a damaged file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from _agent import eventually
from picogate._outbox import Envelope, Outbox, OutboxError, OutboxUnavailable, Record, Refused

SINK = "mqtt"


def envs(start: int, n: int, size: int = 0) -> list[Envelope]:
    pad = b" " * size
    return [Envelope(SINK, f"t/{i}", str(i).encode() + pad, retain=True) for i in range(start, start + n)]


async def fetch_all(box: Outbox) -> list[Record]:
    out: list[Record] = []
    after = 0
    while batch := await box.fetch(SINK, after, 50):
        out.extend(batch)
        after = batch[-1].id
    return out


def values(records: list[Record]) -> list[int]:
    return [int(r.payload.split()[0]) for r in records]


async def on_db(box: Outbox, sql: str) -> None:
    """Run a statement on the outbox's own connection, on its thread (a test's hand on the disk)."""
    db = box._db
    assert db is not None
    await asyncio.get_running_loop().run_in_executor(box._executor, db.execute, sql)


async def fill_disk(box: Outbox) -> None:
    """SQLite refuses to grow the file beyond max_page_count with SQLITE_FULL, as on a full disk."""
    db = box._db
    assert db is not None
    pages = await asyncio.get_running_loop().run_in_executor(
        box._executor, lambda: db.execute("PRAGMA page_count").fetchone()[0]
    )
    await on_db(box, f"PRAGMA max_page_count={pages}")


async def free_disk(box: Outbox) -> None:
    await on_db(box, "PRAGMA max_page_count=1073741823")


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    await eventually(cond, timeout)


# --------------------------------------------------------------------------- disk full


async def test_disk_full_says_so_and_refuses_waiting_appends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite has rolled back by itself after SQLITE_FULL: the error is "disk full" with the path
    and the free space, not "cannot rollback - no transaction is active"."""
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        await box.append(envs(0, 2))
        await fill_disk(box)
        with caplog.at_level(logging.ERROR, "picogate.outbox"), pytest.raises(OutboxUnavailable) as err:
            await box.append(envs(2, 50, size=4000))
        assert "disk full" in str(err.value)
        assert str(box.path) in str(err.value)
        assert "MB free" in str(err.value)
        assert "no transaction" not in caplog.text
        assert "disk full" in caplog.text
        assert box.failing.startswith("disk full")
        # while commits fail, a waiting append is refused at once (its peer sends again later)
        with pytest.raises(OutboxUnavailable):
            await box.append(envs(52, 1))
        assert values(await fetch_all(box)) == [0, 1]  # what was committed stays
        await free_disk(box)
        box.put(envs(53, 1))
        await wait_for(lambda: not box.failing)
        await wait_for(lambda: box.depth(SINK) == 3)
        assert values(await fetch_all(box)) == [0, 1, 53]


async def test_disk_full_keeps_polled_readings_in_memory_and_commits_them_when_space_returns(
    tmp_path: Path,
) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        await box.append(envs(0, 1))
        await fill_disk(box)
        lost: list[int] = []
        for i in range(1, 6):
            box.put(envs(i, 1, size=9000), on_lost=lambda i=i: lost.append(i))
            await asyncio.sleep(0.01)
        await wait_for(lambda: box.failing != "")
        assert box.depth(SINK) == 1
        assert box.pending == 5
        assert box.lost() == 0
        assert lost == []
        await free_disk(box)  # the outbox retries by itself
        await wait_for(lambda: box.depth(SINK) == 6)
        assert box.failing == ""
        assert values(await fetch_all(box)) == [0, 1, 2, 3, 4, 5]  # in order
        assert lost == []
        assert box.lost() == 0


async def test_disk_full_beyond_the_memory_bound_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01, max_pending_bytes=40_000) as box:
        await box.append(envs(0, 1))
        await fill_disk(box)
        lost: list[int] = []
        box.put(envs(1, 1, size=9000), on_lost=lambda: lost.append(1))
        await wait_for(lambda: box.failing != "")
        for i in range(2, 12):  # about 60 kB more than the 40 kB bound
            box.put(envs(i, 1, size=9000), on_lost=lambda i=i: lost.append(i))
            await box.room()  # never blocks while commits fail: polling goes on
        assert lost
        assert lost == sorted(lost)
        assert lost[0] == 1
        assert box.lost(SINK) == len(lost)
        await free_disk(box)
        await wait_for(lambda: box.depth(SINK) == 1 + 11 - len(lost))
        assert values(await fetch_all(box)) == [0, *range(len(lost) + 1, 12)]


async def test_acknowledgements_survive_a_failed_commit(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        await box.append(envs(0, 4))
        await fill_disk(box)
        box.put(envs(4, 20, size=9000))
        await wait_for(lambda: box.failing != "")
        box.ack((await fetch_all(box))[:2])  # delivered meanwhile
        assert values(await fetch_all(box)) == [2, 3]  # not handed out again
        await free_disk(box)
        await wait_for(lambda: box.depth(SINK) == 22)
        assert values(await fetch_all(box)) == list(range(2, 24))


# --------------------------------------------------------------------------- parked messages


def refuse(rec: Record, why: str = "not authorised") -> Refused:
    return Refused(rec, rec.key, rec.payload, why)


async def test_refused_messages_are_parked_with_the_ack_and_come_back_at_the_next_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite"
    async with Outbox(path, commit_interval=0.01) as box:
        await box.append(envs(0, 5))
        recs = await fetch_all(box)
        box.park(SINK, [refuse(recs[1]), refuse(recs[3], "too large")])
        box.ack(recs)
        await box.flush()
        assert (box.depth(SINK), box.parked(SINK)) == (0, 2)
        db = sqlite3.connect(path)
        assert db.execute("SELECT key, reason FROM parked ORDER BY id").fetchall() == [
            ("t/1", "not authorised"),
            ("t/3", "too large"),
        ]
        db.close()
    async with Outbox(path, commit_interval=0.01) as box:
        assert (box.depth(SINK), box.parked(SINK)) == (2, 0)
        again = await fetch_all(box)
        assert values(again) == [1, 3]
        assert not any(r.retain for r in again)  # a newer value may have been retained meanwhile


async def test_parked_messages_are_tried_again_while_running(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01, parked_retry=0.2) as box:
        await box.append(envs(0, 3))
        recs = await fetch_all(box)
        box.park(SINK, [refuse(recs[0])])
        box.ack(recs)
        await box.flush()
        assert box.parked(SINK) == 1
        await box.append(envs(3, 1))  # new records after the parking
        recs = await fetch_all(box)
        box.ack(recs)
        await asyncio.sleep(0.25)
        box.put(envs(4, 1))  # any commit after parked_retry takes the parked ones along
        await wait_for(lambda: box.parked(SINK) == 0 and box.depth(SINK) == 2)
        assert values(await fetch_all(box)) == [0, 4]


async def test_parked_table_is_bounded(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01, max_parked=3) as box:
        await box.append(envs(0, 5))
        recs = await fetch_all(box)
        box.park(SINK, [refuse(r) for r in recs])
        box.ack(recs)
        await box.flush()
        assert (box.parked(SINK), box.parked_dropped(SINK)) == (3, 2)


# --------------------------------------------------------------------------- backpressure


async def test_put_returns_at_once_and_room_waits_only_when_too_much_waits(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01, max_pending_bytes=10_000) as box:
        box.put(envs(0, 1))
        await box.room()  # below the bound: no wait
        assert box.backpressure_waits == 0
        box.put(envs(1, 10, size=2000))  # 20 kB waiting: the producer is held back
        async with asyncio.timeout(5):
            await box.room()
        assert box.backpressure_waits == 1
        await wait_for(lambda: box.depth(SINK) == 11)


# --------------------------------------------------------------------------- opening


async def test_a_damaged_outbox_is_named_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(OutboxError) as err:
        async with Outbox(path):
            pass
    text = str(err.value)
    assert str(path) in text
    assert "damaged" in text
    assert "move it aside" in text
    assert "file is not a database" in text
