"""The persistent outbox: append/fetch/ack, persistence across close and crash, drop-oldest."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from picogate._outbox import _TAIL_MAX, Envelope, Outbox, OutboxClosed, Record

SINK = "mqtt"


def envs(start: int, n: int, sink: str = SINK) -> list[Envelope]:
    return [Envelope(sink, f"t/{i}", str(i).encode()) for i in range(start, start + n)]


def payloads(records: list[Record]) -> list[int]:
    return [int(r.payload) for r in records]


async def fetch_all(box: Outbox, sink: str = SINK, after: int = 0) -> list[Record]:
    out: list[Record] = []
    while True:
        batch = await box.fetch(sink, after, 7)  # a small limit: exercise paging
        if not batch:
            return out
        out.extend(batch)
        after = batch[-1].id


async def settle(box: Outbox) -> None:
    """Commit now (acks are deleted with the next commit)."""
    await box.flush()


def rows_in_db(path: Path) -> list[tuple[str, bytes]]:
    db = sqlite3.connect(path)
    try:
        return [(s, bytes(p)) for s, p in db.execute("SELECT sink, payload FROM outbox ORDER BY id")]
    finally:
        db.close()


async def test_append_commits_and_fetch_returns_in_order(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        await box.append(envs(0, 5))
        await box.append(envs(5, 5))
        # append() returned: the records are committed, on disk.
        assert [p for _, p in rows_in_db(box.path)] == [str(i).encode() for i in range(10)]
        assert box.depth(SINK) == 10
        recs = await fetch_all(box)
        assert payloads(recs) == list(range(10))
        assert [r.id for r in recs] == sorted(r.id for r in recs)
        assert all(r.qos == 1 and not r.retain and r.sink == SINK for r in recs)
        # fetch honours after_id and limit
        assert payloads(await box.fetch(SINK, recs[3].id, 2)) == [4, 5]


async def test_an_idle_outbox_commits_at_once_and_a_busy_one_groups(tmp_path: Path) -> None:
    """No tick to wait for: an append to an idle outbox is committed at once; records handed over
    within commit_interval of a commit share the next one; a producer that waits for its commit
    (a peer waits for its answer) is served within milliseconds, whatever commit_interval is."""
    async with Outbox(tmp_path / "o.sqlite", commit_interval=1.0) as box:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await box.append(envs(0, 3))
        assert loop.time() - t0 < 0.9  # at once, not after commit_interval
        assert box.commits == 1
        for i in range(3, 25):
            box.put(envs(i, 1))
        await asyncio.sleep(0.5)
        assert box.commits == 1  # grouped: waiting for commit_interval
        async with asyncio.timeout(0.4):
            await box.append(envs(25, 1))  # a waiting producer: no 1 s wait
        assert box.commits == 2  # one transaction for the 22 handed over and the waiting one
        assert loop.time() - t0 < 0.95
        assert [p for _, p in rows_in_db(box.path)] == [str(i).encode() for i in range(26)]


async def test_ack_deletes_and_fetch_skips_acked(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        await box.append(envs(0, 6))
        recs = await box.fetch(SINK, 0, 100)
        box.ack([recs[0], recs[2]])  # out of order acks, too
        assert payloads(await box.fetch(SINK, 0, 100)) == [1, 3, 4, 5]  # at once, before the delete commits
        await settle(box)
        assert box.depth(SINK) == 4
        assert [p for _, p in rows_in_db(box.path)] == [b"1", b"3", b"4", b"5"]
        box.ack(recs)  # acking twice is harmless
        await settle(box)
        assert box.depth(SINK) == 0
        assert await box.fetch(SINK, 0, 100) == []


async def test_sinks_are_separate(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        await box.append([*envs(0, 3, "a"), *envs(100, 2, "b"), *envs(3, 1, "a")])
        assert payloads(await fetch_all(box, "a")) == [0, 1, 2, 3]
        assert payloads(await fetch_all(box, "b")) == [100, 101]
        assert (box.depth("a"), box.depth("b"), box.depth()) == (4, 2, 6)
        box.ack(await fetch_all(box, "a"))
        await settle(box)
        assert (box.depth("a"), box.depth("b")) == (0, 2)


async def test_close_and_reopen_keeps_unacked_in_order(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    async with Outbox(path, commit_interval=0.01) as box:
        await box.append(envs(0, 10))
        box.ack((await box.fetch(SINK, 0, 100))[:4])
        # close() commits the pending acks
    async with Outbox(path, commit_interval=0.01) as box:
        assert box.depth(SINK) == 6
        old = await fetch_all(box)  # from the database: the tail is empty after a restart
        assert payloads(old) == [4, 5, 6, 7, 8, 9]
        await box.append(envs(10, 3))  # new ids follow the old ones
        recs = await fetch_all(box)
        assert payloads(recs) == list(range(4, 13))
        assert [r.id for r in recs] == sorted(r.id for r in recs)
        assert min(r.id for r in recs[-3:]) > max(r.id for r in old)


async def test_fetch_crosses_from_database_into_tail(tmp_path: Path) -> None:
    """After a restart the old records come from SQLite, then the new ones from the memory tail."""
    path = tmp_path / "o.sqlite"
    async with Outbox(path, commit_interval=0.01) as box:
        await box.append(envs(0, 20))
    async with Outbox(path, commit_interval=0.01) as box:
        await box.append(envs(20, 20))
        st = box._sinks[SINK]
        assert st.tail
        assert st.tail[0].id == st.floor
        selects = 0
        real_select = box._select

        def counting_select(*args: object) -> list[Record]:
            nonlocal selects
            selects += 1
            return real_select(*args)  # type: ignore[arg-type]

        box._select = counting_select  # type: ignore[method-assign]
        recs = await fetch_all(box)
        assert payloads(recs) == list(range(40))
        db_reads = selects
        assert db_reads >= 1  # the old records were read back from disk
        # a sink caught up with the tail never touches the database
        await box.append(envs(40, 5))
        assert payloads(await fetch_all(box, after=recs[-1].id)) == list(range(40, 45))
        assert selects == db_reads


async def test_tail_is_bounded_and_overflow_is_read_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import picogate._outbox as outbox_mod

    monkeypatch.setattr(outbox_mod, "_TAIL_MAX", 5)
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        await box.append(envs(0, 12))
        assert len(box._sinks[SINK].tail) == 5
        assert payloads(await fetch_all(box)) == list(range(12))
    assert _TAIL_MAX >= 10_000  # the real bound is generous


async def test_killed_process_keeps_committed_records(tmp_path: Path) -> None:
    """A crash (no close(), no checkpoint) loses nothing that append() confirmed."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, commit_interval=0.01, synchronous="normal")
    await box.open()
    await box.append(envs(0, 50))
    box.ack((await box.fetch(SINK, 0, 10))[:10])
    await settle(box)  # the deletes of 0..9 are committed
    # "kill -9": stop the committer and drop the connection without closing or checkpointing
    assert box._committer is not None
    box._committer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await box._committer
    assert path.with_name(path.name + "-wal").exists()  # the data is (partly) only in the WAL
    copy = tmp_path / "copy.sqlite"  # what a restarted process would find on disk
    for suffix in ("", "-wal"):
        copy.with_name(copy.name + suffix).write_bytes(path.with_name(path.name + suffix).read_bytes())
    async with Outbox(copy, commit_interval=0.01) as again:
        assert again.depth(SINK) == 40
        assert payloads(await fetch_all(again)) == list(range(10, 50))
    box._executor.shutdown(wait=True)


async def test_full_outbox_drops_oldest_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    async with Outbox(path, max_records=10, commit_interval=0.01) as box:
        await box.append(envs(0, 8))
        assert box.dropped(SINK) == 0
        await box.append(envs(8, 5))
        assert box.dropped(SINK) == 3
        assert box.depth(SINK) == 10
        assert payloads(await fetch_all(box)) == list(range(3, 13))
        await box.append(envs(13, 25))  # more than fits in one go
        assert box.dropped(SINK) == 28
        assert box.depth(SINK) == 10
        assert payloads(await fetch_all(box)) == list(range(28, 38))
        assert len(rows_in_db(path)) == 10
    async with Outbox(path, max_records=10, commit_interval=0.01) as box:
        assert box.dropped(SINK) == 28  # the count survives a restart
        assert box.depth(SINK) == 10


async def test_drop_counts_per_sink_and_spares_acked(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", max_records=6, commit_interval=0.01) as box:
        await box.append([*envs(0, 3, "a"), *envs(100, 3, "b")])
        box.ack(await fetch_all(box, "a"))  # delivered: freeing room, not dropped
        await box.append(envs(3, 3, "a"))
        assert (box.dropped("a"), box.dropped("b")) == (0, 0)
        await box.append(envs(200, 2, "c"))  # the oldest live records are b's
        assert (box.dropped("a"), box.dropped("b"), box.dropped("c")) == (0, 2, 0)
        assert payloads(await fetch_all(box, "b")) == [102]
        assert payloads(await fetch_all(box, "a")) == [3, 4, 5]
        assert box.depth() == 6


async def test_in_flight_record_dropped_then_acked(tmp_path: Path) -> None:
    """A record handed to a sink, dropped for room, then acknowledged: the counts stay right."""
    async with Outbox(tmp_path / "o.sqlite", max_records=4, commit_interval=0.01) as box:
        await box.append(envs(0, 4))
        inflight = await box.fetch(SINK, 0, 2)
        await box.append(envs(4, 3))  # drops 0, 1, 2
        box.ack(inflight)
        await settle(box)
        assert box.depth(SINK) == 4
        assert payloads(await fetch_all(box)) == [3, 4, 5, 6]


async def test_wait_wakes_on_commit(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.01) as box:
        box.register_sink(SINK)
        wake = box.wakeup(SINK)
        wake.clear()
        waiter = asyncio.create_task(wake.wait())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await box.append(envs(0, 1))
        async with asyncio.timeout(1):
            await waiter


async def test_append_after_close_is_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", commit_interval=0.01)
    await box.open()
    await box.close()
    await box.close()  # idempotent
    with pytest.raises(OutboxClosed):
        await box.append(envs(0, 1))


async def test_group_commit(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.05) as box:
        before = box.commits
        await asyncio.gather(*(box.append(envs(i, 1)) for i in range(100)))
        assert box.commits - before <= 2  # 100 appends, one or two transactions
        assert box.appended == 100
        assert sorted(payloads(await fetch_all(box))) == list(range(100))


async def test_handed_over_records_join_the_timed_commit_without_waking_it(tmp_path: Path) -> None:
    """The devices of one poll slot hand over their records one after the other: the first times
    the commit, the others join it without waking the committer (in scenario a that was 24 of 25
    needless wake-ups per slot); a producer that waits still wakes it."""
    async with Outbox(tmp_path / "o.sqlite", commit_interval=0.2) as box:
        await box.append(envs(0, 1))  # the committer is idle again
        box.put(envs(1, 1))
        await asyncio.sleep(0.01)  # it wakes and waits for the commit's time
        assert not box._kick.is_set()
        for i in range(2, 25):
            box.put(envs(i, 1))
        assert not box._kick.is_set()
        await box.flush()
        assert box.commits == 2
        assert [p for _, p in rows_in_db(box.path)] == [str(i).encode() for i in range(25)]
        box.put(envs(25, 1))
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(box.append(envs(26, 1)))
        await asyncio.sleep(0)
        assert box._kick.is_set() or waiting.done()
        await waiting
