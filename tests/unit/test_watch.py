"""The directory watch (picogate/_watch.py) on real files in tmp_path, through inotify and by
polling: what each kind of change reports, the directory going away, the quiet second, stop,
grouping, the filter, and the fallback to polling when inotify gives out."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from picogate import _watch
from picogate._watch import watch

WAIT = 5.0
"""The longest a test waits for what it expects (a bound, not a speed)."""


@pytest.fixture(params=["inotify", "polling"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "inotify":  # no quiet fallback: a test in this mode runs on inotify

        def no_polling(*args: object, **kwargs: object) -> None:
            raise AssertionError("the watch polls")

        monkeypatch.setattr(_watch, "_Poll", no_polling)
    return str(request.param)


class Watching:
    """`watch()` running in a task, what it yields in a queue."""

    def __init__(self, directory: Path, mode: str, **options: Any) -> None:
        self.stop = asyncio.Event()
        self.yields: asyncio.Queue[set[str]] = asyncio.Queue()
        self.error: BaseException | None = None
        self.gen = watch(directory, force_polling=mode == "polling", stop=self.stop, **options)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with contextlib.aclosing(self.gen):
                async for changed in self.gen:
                    await self.yields.put(changed)
        except OSError as exc:
            self.error = exc

    async def until(self, path: Path) -> set[str]:
        """Every path reported until `path` is among them."""
        seen: set[str] = set()
        async with asyncio.timeout(WAIT):
            while str(path) not in seen:
                seen |= await self.yields.get()
        return seen

    async def next_change(self) -> set[str]:
        """The next set that is not empty."""
        async with asyncio.timeout(WAIT):
            while not (changed := await self.yields.get()):
                pass
        return changed


@pytest.fixture
async def watching() -> AsyncIterator[Callable[..., Any]]:
    started: list[Watching] = []

    async def start(directory: Path, mode: str, **options: Any) -> Watching:
        w = Watching(directory, mode, **options)
        started.append(w)
        await asyncio.sleep(0.05)  # the watch is set up (and a scan's mtimes are in the past)
        return w

    yield start
    for w in started:
        w.stop.set()
        w.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await w.task


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------- what is reported


async def test_a_write_is_reported(tmp_path: Path, mode: str, watching: Any) -> None:
    write(tmp_path / "a.rules", "one")
    w = await watching(tmp_path, mode)
    write(tmp_path / "a.rules", "two, longer")
    assert str(tmp_path / "a.rules") in await w.until(tmp_path / "a.rules")


async def test_paths_are_reported_under_the_directory_as_named(
    tmp_path: Path, mode: str, watching: Any
) -> None:
    """`rules.dir: ../rules`: the callers' filters compare the paths with the directory as named."""
    (tmp_path / "etc").mkdir()
    named = tmp_path / "etc" / ".." / "rules"
    named.mkdir()
    w = await watching(named, mode)
    write(named / "a.rules", "a")
    await w.until(named / "a.rules")


async def test_a_rename_over_the_file_is_reported(tmp_path: Path, mode: str, watching: Any) -> None:
    write(tmp_path / "gateway.yaml", "one")
    w = await watching(tmp_path, mode)
    write(tmp_path / ".gateway.yaml.swp", "two, longer")
    os.replace(tmp_path / ".gateway.yaml.swp", tmp_path / "gateway.yaml")  # as editors save
    await w.until(tmp_path / "gateway.yaml")


async def test_a_new_file_and_a_removed_one_are_reported(tmp_path: Path, mode: str, watching: Any) -> None:
    write(tmp_path / "old.rules", "old")
    w = await watching(tmp_path, mode)
    write(tmp_path / "new.rules", "new")
    await w.until(tmp_path / "new.rules")
    (tmp_path / "old.rules").unlink()
    await w.until(tmp_path / "old.rules")


@pytest.mark.parametrize("recursive", [True, False])
async def test_the_data_symlink_swap_is_reported(
    tmp_path: Path, mode: str, recursive: bool, watching: Any
) -> None:
    """Kubernetes' ConfigMap volume: `a.rules -> ..data/a.rules`, `..data -> ..v1`; an update
    writes `..v2` and renames a new `..data` symlink over the old one."""
    write(tmp_path / "..v1" / "a.rules", "one")
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "a.rules").symlink_to("..data/a.rules")
    w = await watching(tmp_path, mode, recursive=recursive)
    write(tmp_path / "..v2" / "a.rules", "two, longer")
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    shutil.rmtree(tmp_path / "..v1")
    await w.until(tmp_path / "..data")
    if recursive:  # the new version is watched through the new symlink
        write(tmp_path / "..v2" / "b.rules", "b")
        await w.until(tmp_path / "..v2" / "b.rules")


async def test_a_file_in_a_new_subdirectory_is_reported_when_recursive(
    tmp_path: Path, mode: str, watching: Any
) -> None:
    w = await watching(tmp_path, mode, recursive=True)
    (tmp_path / "site").mkdir()
    await asyncio.sleep(0.05)  # a file made after the directory's watch began
    write(tmp_path / "site" / "x.rules", "x")
    await w.until(tmp_path / "site" / "x.rules")
    write(tmp_path / "site" / "deeper" / "y.rules", "y")
    await w.until(tmp_path / "site" / "deeper" / "y.rules")


async def test_a_directory_moved_in_with_files_reports_them(tmp_path: Path, mode: str, watching: Any) -> None:
    (tmp_path / "watched").mkdir()
    write(tmp_path / "elsewhere" / "site" / "x.rules", "x")
    w = await watching(tmp_path / "watched", mode, recursive=True)
    os.rename(tmp_path / "elsewhere" / "site", tmp_path / "watched" / "site")
    await w.until(tmp_path / "watched" / "site" / "x.rules")
    write(tmp_path / "watched" / "site" / "y.rules", "y")  # and it is watched from then on
    await w.until(tmp_path / "watched" / "site" / "y.rules")


async def test_a_subdirectory_is_not_watched_when_not_recursive(
    tmp_path: Path, mode: str, watching: Any
) -> None:
    (tmp_path / "site").mkdir()
    w = await watching(tmp_path, mode, recursive=False)
    write(tmp_path / "site" / "x.rules", "x")
    await asyncio.sleep(0.2)
    write(tmp_path / "marker", "m")
    seen = await w.until(tmp_path / "marker")
    assert str(tmp_path / "site" / "x.rules") not in seen


async def test_symlinked_directories_are_followed_without_looping(
    tmp_path: Path, mode: str, watching: Any
) -> None:
    (tmp_path / "watched").mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "watched" / "shared").symlink_to(tmp_path / "shared")
    (tmp_path / "watched" / "loop").symlink_to(tmp_path / "watched")  # a cycle
    (tmp_path / "shared" / "back").symlink_to(tmp_path / "shared")  # another
    w = await watching(tmp_path / "watched", mode, recursive=True)
    write(tmp_path / "shared" / "x.rules", "x")
    await w.until(tmp_path / "watched" / "shared" / "x.rules")


# --------------------------------------------------------------------------- the directory, time, stop


@pytest.mark.parametrize("how", ["removed", "moved away"])
async def test_the_directory_gone_raises_oserror(tmp_path: Path, mode: str, how: str, watching: Any) -> None:
    write(tmp_path / "rules" / "a.rules", "a")
    w = await watching(tmp_path / "rules", mode)
    if how == "removed":
        shutil.rmtree(tmp_path / "rules")
    else:
        os.rename(tmp_path / "rules", tmp_path / "rules.old")
    async with asyncio.timeout(WAIT):
        await w.task
    assert isinstance(w.error, OSError)


async def test_a_missing_directory_raises_oserror(tmp_path: Path, mode: str) -> None:
    changes = watch(tmp_path / "missing", force_polling=mode == "polling")
    with pytest.raises(OSError):
        await anext(changes)


async def test_a_quiet_second_yields_an_empty_set(tmp_path: Path, mode: str, watching: Any) -> None:
    w = await watching(tmp_path, mode)
    async with asyncio.timeout(WAIT):
        assert await w.yields.get() == set()


async def test_stop_ends_the_iteration(tmp_path: Path, mode: str, watching: Any) -> None:
    w = await watching(tmp_path, mode, timeout=60.0)
    w.stop.set()
    async with asyncio.timeout(WAIT):
        await w.task
    assert w.error is None


async def test_a_burst_of_writes_is_one_yield(tmp_path: Path, mode: str, watching: Any) -> None:
    names = [tmp_path / f"r{i}.rules" for i in range(10)]
    w = await watching(tmp_path, mode, step=0.3, debounce=30.0)
    for path in names:
        write(path, "x")
        await asyncio.sleep(0.01)
    assert await w.next_change() >= {str(p) for p in names}


async def test_a_burst_that_goes_on_is_cut_by_debounce(tmp_path: Path, mode: str, watching: Any) -> None:
    w = await watching(tmp_path, mode, step=0.3, debounce=0.5)
    got: set[str] | None = None
    async with asyncio.timeout(WAIT):
        for i in range(10_000):  # writes closer together than step, until something is yielded
            write(tmp_path / "busy.rules", "x" * (i % 50))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    got = await w.yields.get()
            if got:
                break
    assert got == {str(tmp_path / "busy.rules")}


async def test_the_filter_is_applied(tmp_path: Path, mode: str, watching: Any) -> None:
    w = await watching(tmp_path, mode, path_filter=lambda p: p.endswith(".rules"))
    write(tmp_path / "notes.txt", "n")
    write(tmp_path / "a.rules", "a")
    seen = await w.until(tmp_path / "a.rules")
    assert seen == {str(tmp_path / "a.rules")}


@pytest.mark.parametrize("force_polling", [False, True])
def test_it_runs_on_uvloop(tmp_path: Path, force_polling: bool) -> None:
    """`picogate run` runs on uvloop: its add_reader, timers and executor."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> set[str]:
        async with contextlib.aclosing(watch(tmp_path, force_polling=force_polling, timeout=0.05)) as changes:
            async with asyncio.timeout(WAIT):
                async for changed in changes:
                    if changed:
                        return changed
                    write(tmp_path / "a.rules", "a")
        return set()

    assert uvloop.run(main()) == {str(tmp_path / "a.rules")}


# --------------------------------------------------------------------------- inotify's limits


async def test_the_watch_limit_falls_back_to_polling_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, watching: Any
) -> None:
    import inotify_simple

    def full(self: object, path: str, mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(inotify_simple.INotify, "add_watch", full)
    monkeypatch.setattr(_watch, "_told", set())
    caplog.set_level(logging.INFO, logger="picogate")
    w = await watching(tmp_path, "inotify")
    write(tmp_path / "a.rules", "a")
    await w.until(tmp_path / "a.rules")
    told = [r for r in caplog.records if "polling" in r.getMessage()]
    assert len(told) == 1
    assert told[0].levelno == logging.WARNING
    assert str(tmp_path) in told[0].getMessage()
    assert "fs.inotify.max_user_watches" in told[0].getMessage()
    shown = told[0].getMessage().replace(str(tmp_path), "/etc/picogate/rules")
    assert shown in (Path(__file__).parents[2] / "docs" / "operations.md").read_text(), (
        "docs/operations.md's example"
    )


async def test_force_polling_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_watch, "_told", set())
    caplog.set_level(logging.INFO, logger="picogate")
    for _ in range(2):  # a watch started again (the directory replaced) does not say it again
        async with contextlib.aclosing(watch(tmp_path, force_polling=True, timeout=0.05)) as changes:
            async for _changed in changes:
                break
    told = [r.getMessage() for r in caplog.records if "polling" in r.getMessage()]
    assert len(told) == 1
    assert "force_polling" in told[0]


async def test_a_queue_overflow_reports_the_directory(tmp_path: Path) -> None:
    batch = _watch._Batch(asyncio.get_running_loop())
    source = _watch._Inotify(str(tmp_path), recursive=True, batch=batch)
    try:
        source._handle([(-1, _watch._IN_Q_OVERFLOW, 0, "")])
    finally:
        source.close()
    assert str(tmp_path) in batch.take()


async def test_the_inotify_fd_is_closed_when_the_iteration_ends(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    async with contextlib.aclosing(watch(tmp_path, timeout=0.05)) as changes:
        async for _ in changes:
            assert len(set(os.listdir("/proc/self/fd")) - before) >= 1  # the inotify fd
            break
    assert set(os.listdir("/proc/self/fd")) - before == set()


# --------------------------------------------------------------------------- what the agent loads


def test_the_watches_load_neither_anyio_nor_watchfiles() -> None:
    """The config and rules watches cost no anyio or watchfiles (7 MB of a gateway's memory, and a
    thread taking the GIL every 20 ms)."""
    code = (
        "import sys, picogate._reload, picogate.rules, picogate.rules._live; "
        "print(sorted(m for m in ('anyio', 'watchfiles') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
