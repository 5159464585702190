"""A directory watch for hot reload (`gateway.yaml`'s directory, the rules directory): an async
iterator of the sets of paths that changed.

    inotify fd (non-blocking) ──loop.add_reader──┐
    or a stat scan every poll_delay ─────────────┴──► group: until `step` passes with no new
                                                      change, or `debounce` since the first
                                                      ──► filter(path) ──► yield {paths}

inotify (through `inotify_simple`, wrapped here) is read by the event loop itself: no thread, and
no wake-up while nothing changes but the one each `timeout` (a second) that yields an empty set, on
which both callers check that the file or directory is still the same one.  The scan is used when
it is asked for (`force_polling`: network file systems, whose changes made elsewhere inotify does
not see) or when inotify cannot be had (not Linux, the kernel's inotify limits reached), which is
logged once; it runs in a thread, as a network file system may be slow to answer.

The watched directory removed or moved away raises `OSError`; watching it again is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import sys
from collections.abc import AsyncGenerator, Callable, Iterable
from pathlib import Path
from typing import Protocol, cast

from picogate._errors import PicogateError

log = logging.getLogger("picogate")

PathFilter = Callable[[str], bool]
"""Which changed paths are reported (the path as a string, under the watched directory)."""

# inotify(7): the kernel's ABI, the same on every Linux architecture
_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_UNMOUNT = 0x2000
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x1000000
_IN_ISDIR = 0x40000000
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
_READ_SIZE = 64 * 1024
_READS_PER_WAKEUP = 64
"""A flood of events does not hold the loop: the reader is level-triggered and is called again."""

_told: set[tuple[str, str]] = set()
"""(directory, reason) already logged: a watch started again does not repeat itself."""


async def watch(
    directory: Path | str,
    *,
    path_filter: PathFilter | None = None,
    recursive: bool = True,
    force_polling: bool = False,
    poll_delay: float = 0.1,
    step: float = 0.02,
    debounce: float = 1.6,
    timeout: float = 1.0,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[set[str], None]:
    """Yield the paths under `directory` that changed and that `path_filter` accepts, a set per
    group of changes: a group ends when no new change came for `step` seconds or `debounce` passed
    since its first.  Yield an empty set after `timeout` seconds without a change; end when `stop`
    is set.  `recursive` also watches the subdirectories (new ones as they appear, symlinked ones
    followed).  Raises OSError when the directory is missing, or once it is removed or moved away.
    Use it under `contextlib.aclosing` when leaving it early (its inotify fd is closed then)."""
    loop = asyncio.get_running_loop()
    root = _absolute(directory)
    batch = _Batch(loop)
    source = _open(root, recursive=recursive, force_polling=force_polling, poll_delay=poll_delay, batch=batch)
    relay: asyncio.Task[bool] | None = None
    if stop is not None:
        relay = asyncio.create_task(stop.wait(), name="watch-stop")
        relay.add_done_callback(lambda _: batch.wake.set())

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    try:
        quiet_until = loop.time() + timeout
        while not stopped():
            if not batch.paths and batch.error is None:
                batch.wake.clear()
                remaining = quiet_until - loop.time()
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await batch.wake.wait()
                if stopped():
                    return
            if batch.error is not None and not batch.paths:
                error, batch.error = batch.error, None
                if not isinstance(error, _Unavailable):
                    raise error
                source.close()  # inotify gave out (its watch limit): scan from now on
                _tell(
                    root, f"{error}; watching it by polling every {poll_delay:g} s instead", logging.WARNING
                )
                source = _Poll(root, recursive=recursive, delay=poll_delay, batch=batch)
                batch.add((root,))  # what changed meanwhile is not known
            if not batch.paths:
                if loop.time() >= quiet_until:
                    yield set()
                    quiet_until = loop.time() + timeout
                continue
            seen = batch.count
            while True:  # group the changes of a burst
                await asyncio.sleep(step)
                if stopped():
                    return
                if batch.error is not None or batch.count == seen or loop.time() - batch.first >= debounce:
                    break
                seen = batch.count
            changed = batch.take()
            accepted = changed if path_filter is None else {p for p in changed if path_filter(p)}
            if accepted:
                yield accepted
            quiet_until = loop.time() + timeout
    finally:
        source.close()
        if relay is not None:
            relay.cancel()


class _Unavailable(PicogateError):
    """inotify cannot be had here (the reason, for the log); the watch polls instead."""


class _Batch:
    """The changes not yet yielded, filled by the source (a reader callback or a scan)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.paths: set[str] = set()
        self.count = 0
        """Changes added since the last `take` (a new one in a step extends the group)."""
        self.first = 0.0
        self.error: Exception | None = None
        self.wake = asyncio.Event()

    def add(self, paths: Iterable[str]) -> None:
        before = self.count
        for path in paths:
            self.paths.add(path)
            self.count += 1
        if self.count != before:
            if before == 0:
                self.first = self.loop.time()
            self.wake.set()

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.wake.set()

    def take(self) -> set[str]:
        paths, self.paths, self.count = self.paths, set(), 0
        return paths


class _Source(Protocol):
    def close(self) -> None: ...


def _absolute(directory: Path | str) -> str:
    # as the caller names it (not normalized: its filter compares paths with its own), and not
    # resolved (a symlink that a deploy switches is followed)
    return str(Path(directory).absolute())


def _tell(root: str, message: str, level: int) -> None:
    if (root, message) not in _told:
        _told.add((root, message))
        log.log(level, "%s: %s", root, message)


def _open(root: str, *, recursive: bool, force_polling: bool, poll_delay: float, batch: _Batch) -> _Source:
    if force_polling:
        _tell(root, f"watching it by polling every {poll_delay:g} s, as force_polling asks", logging.INFO)
        return _Poll(root, recursive=recursive, delay=poll_delay, batch=batch)
    try:
        return _Inotify(root, recursive=recursive, batch=batch)
    except _Unavailable as exc:
        _tell(root, f"{exc}; watching it by polling every {poll_delay:g} s instead", logging.WARNING)
        return _Poll(root, recursive=recursive, delay=poll_delay, batch=batch)


# --------------------------------------------------------------------------- inotify


class _INotifyFile(Protocol):
    """What is used of `inotify_simple.INotify` (the package has no type hints)."""

    def fileno(self) -> int: ...
    def add_watch(self, path: str, mask: int) -> int: ...
    def rm_watch(self, wd: int) -> None: ...
    def close(self) -> None: ...


_Event = tuple[int, int, int, str]
"""inotify_simple.Event: (wd, mask, cookie, name)."""


def _inotify() -> tuple[_INotifyFile, Callable[[bytes], list[_Event]]]:
    """A non-blocking inotify instance and the parser of what it reads."""
    if not sys.platform.startswith("linux"):
        raise _Unavailable("inotify is only on Linux")
    try:
        import inotify_simple
    except ImportError:
        raise _Unavailable(
            "the inotify_simple package is not installed (pip install inotify_simple)"
        ) from None
    try:
        fd = inotify_simple.INotify(nonblocking=True)
    except OSError as exc:
        if exc.errno == errno.EMFILE:
            raise _Unavailable(
                "the limit of inotify instances is reached "
                "(raise it: sysctl fs.inotify.max_user_instances, or stop other watchers)"
            ) from None
        raise _Unavailable(f"inotify cannot be had ({exc.strerror})") from None
    return cast(_INotifyFile, fd), cast(Callable[[bytes], list[_Event]], inotify_simple.parse_events)


class _Inotify:
    """The watch as inotify events, read by the event loop when the fd is readable."""

    def __init__(self, root: str, *, recursive: bool, batch: _Batch) -> None:
        self.root = root
        self.recursive = recursive
        self.batch = batch
        self.ino, self.parse = _inotify()
        self.fd = self.ino.fileno()
        self.paths: dict[int, str] = {}
        """wd → the directory's path (the first one it was found at, when symlinks lead to it twice)."""
        self.wds: dict[str, int] = {}
        self.inodes: dict[tuple[int, int], int] = {}
        try:
            self.root_wd = self._add(root)  # OSError: missing, not a directory
            if recursive:
                self._add_tree(root)
            batch.loop.add_reader(self.fd, self._on_readable)
        except BaseException:
            self.ino.close()
            raise

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(Exception):  # (the loop may be closed already)
                self.batch.loop.remove_reader(self.fd)
            self.ino.close()
            self.fd = -1

    def _add(self, path: str) -> int:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        try:
            wd = self.ino.add_watch(path, _MASK)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _Unavailable(
                    "the inotify watch limit is reached "
                    "(raise it: sysctl fs.inotify.max_user_watches, or watch fewer directories)"
                ) from None
            raise
        self.paths.setdefault(wd, path)
        self.wds[path] = wd
        self.inodes[key] = wd
        return wd

    def _add_tree(self, top: str) -> set[str]:
        """Watch `top`'s subdirectories not watched yet (symlinks followed, each directory once);
        the paths found under it."""
        found: set[str] = set()
        walked: set[tuple[int, int]] = set()
        todo = [top]
        while todo:
            directory = todo.pop()
            try:
                st = os.stat(directory)
                key = (st.st_dev, st.st_ino)
                if key in walked or not stat.S_ISDIR(st.st_mode):
                    continue
                walked.add(key)
                if key not in self.inodes:
                    self._add(directory)
                with os.scandir(directory) as entries:
                    for entry in entries:
                        found.add(entry.path)
                        if entry.is_dir():  # (follows a symlink)
                            todo.append(entry.path)
            except _Unavailable:
                raise
            except OSError:  # gone meanwhile, or not readable: its own events tell
                continue
        return found

    def _drop_tree(self, top: str) -> None:
        """Stop watching `top` and what is under it (moved away, or replaced)."""
        prefix = top + os.sep
        for path in [p for p in self.wds if p == top or p.startswith(prefix)]:
            wd = self.wds.pop(path)
            if wd != self.root_wd and wd not in self.wds.values():
                self._forget(wd)
                with contextlib.suppress(OSError):
                    self.ino.rm_watch(wd)

    def _forget(self, wd: int) -> None:
        self.paths.pop(wd, None)
        for path in [p for p, w in self.wds.items() if w == wd]:
            del self.wds[path]
        for key in [k for k, w in self.inodes.items() if w == wd]:
            del self.inodes[key]

    def _on_readable(self) -> None:
        events: list[_Event] = []
        for _ in range(_READS_PER_WAKEUP):  # drain: the reader is level-triggered
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self.close()
                self.batch.fail(exc)
                return
            if not data:
                break
            events.extend(self.parse(data))
        try:
            self._handle(events)
        except _Unavailable as exc:
            self.batch.fail(exc)

    def _handle(self, events: list[_Event]) -> None:
        changed: set[str] = set()
        try:
            for wd, mask, _cookie, name in events:
                if mask & _IN_Q_OVERFLOW:  # events were lost: the whole directory may have changed
                    changed.add(self.root)
                    if self.recursive:
                        changed |= self._add_tree(self.root)
                    continue
                if wd == self.root_wd and mask & (
                    _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED | _IN_UNMOUNT
                ):
                    self.close()
                    self.batch.fail(
                        FileNotFoundError(
                            errno.ENOENT, "the watched directory was removed or moved away", self.root
                        )
                    )
                    return
                base = self.paths.get(wd)
                if base is None:
                    continue
                if mask & _IN_IGNORED:  # a subdirectory removed (its parent reports it)
                    self._forget(wd)
                    continue
                if not name:  # a subdirectory's own DELETE_SELF, MOVE_SELF, ATTRIB: its parent tells
                    continue
                path = os.path.join(base, name)
                changed.add(path)
                if not self.recursive:
                    continue
                if mask & (_IN_MOVED_FROM | _IN_DELETE | _IN_MOVED_TO | _IN_CREATE):
                    self._drop_tree(path)  # (a directory or a symlink to one, moved away or replaced)
                if mask & (_IN_MOVED_TO | _IN_CREATE) and (mask & _IN_ISDIR or os.path.isdir(path)):
                    changed |= self._add_tree(path)
        finally:
            self.batch.add(changed)


# --------------------------------------------------------------------------- polling

_Signature = tuple[int, ...]


class _Poll:
    """The watch as a stat scan of the directory every `delay` seconds.  The first scan runs at
    once (a missing directory raises here); the next ones in the loop's default executor, one at
    a time, so that a slow network file system never holds the event loop."""

    def __init__(self, root: str, *, recursive: bool, delay: float, batch: _Batch) -> None:
        self.root = root
        self.recursive = recursive
        self.delay = delay
        self.batch = batch
        self.seen = self._scan()  # OSError: missing, not a directory
        self.task: asyncio.Task[None] | None = batch.loop.create_task(self._run(), name="watch-poll")

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        loop = self.batch.loop
        while True:
            await asyncio.sleep(self.delay)
            try:
                now = await loop.run_in_executor(None, self._scan)
            except OSError as exc:
                self.batch.fail(exc)
                return
            seen = self.seen
            self.batch.add({p for p, sig in now.items() if seen.get(p) != sig} | (seen.keys() - now.keys()))
            self.seen = now

    def _scan(self) -> dict[str, _Signature]:
        """Every path under the root → what would tell a change (what a symlink names, and what
        it leads to); the root itself by its identity (replaced by another directory)."""
        st = os.stat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "the watched path is not a directory", self.root)
        found: dict[str, _Signature] = {self.root: (st.st_dev, st.st_ino)}
        walked = {(st.st_dev, st.st_ino)}
        todo = [self.root]
        while todo:
            directory = todo.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError:
                if directory == self.root:
                    raise
                continue
            for entry in entries:
                try:
                    own = entry.stat(follow_symlinks=False)
                    sig: _Signature = (own.st_ino, own.st_mode, own.st_size, own.st_mtime_ns)
                    target = own
                    if stat.S_ISLNK(own.st_mode):
                        target = entry.stat()
                        sig += (target.st_dev, target.st_ino, target.st_size, target.st_mtime_ns)
                except OSError:  # gone meanwhile, or a dangling symlink
                    found[entry.path] = (-1,)
                    continue
                found[entry.path] = sig
                if self.recursive and stat.S_ISDIR(target.st_mode):
                    key = (target.st_dev, target.st_ino)
                    if key not in walked:
                        walked.add(key)
                        todo.append(entry.path)
        return found
