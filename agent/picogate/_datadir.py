"""One agent per data directory: an exclusive lock on `<data_dir>/picogate.lock`.

Two agents on one `data_dir` would share the outbox, both write the devices and take each other's
broker session (same client id) in turn.  The gateway takes this lock before it touches anything
else; a second agent finds it held and refuses to start, naming the directory and the PID that
holds it.

The lock is `flock(2)` on the open file: the kernel drops it when the process ends, however it ends
(kill -9, power cut), so a stale lock cannot keep the next start out.  The file stays (it holds the
PID of the last agent that ran); removing it while an agent runs would let a second one in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from picogate._errors import PicogateError

__all__ = ["LOCK_FILE", "DataDirInUse", "DataDirLock"]

LOCK_FILE = "picogate.lock"


class DataDirInUse(PicogateError):
    """Another agent holds the data directory's lock."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        super().__init__(directory, pid)
        self.directory = directory
        self.pid = pid
        self.where = str(directory)

    def __str__(self) -> str:
        holder = f"PID {self.pid}" if self.pid is not None else "PID unknown"
        stop = "systemctl stop picogate" + (f", or kill {self.pid}" if self.pid is not None else "")
        return (
            f"data directory {self.directory} (gateway.data_dir) is in use by another picogate agent "
            f"({holder}): two agents on one data directory would both write the devices and take "
            f"each other's broker session. Stop the other agent first ({stop}), or give this one "
            "its own gateway.data_dir and gateway.id"
        )


class DataDirLock:
    """`acquire()` before the gateway starts, `release()` when it has stopped."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise DataDirInUse (another agent has it) or OSError (cannot create
        the directory or the file)."""
        if self._fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a child process (the rules compiler) must not inherit it and outlive us.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirInUse(self.directory, pid) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock is what counts; the PID only helps the message of a second agent
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
