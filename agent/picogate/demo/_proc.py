"""Child processes of the demo (mosquitto, socat) and free loopback ports.

Children run in their own session, so the Ctrl-C that the terminal sends to the demo's process
group does not reach them: the demo stops the gateway first (which flushes its outbox to the
broker) and only then ends the broker and the pty pair.  They get SIGTERM if the demo itself dies
(`PR_SET_PDEATHSIG`), so no broker outlives a `kill -9`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO

from picogate._errors import PicogateError

LOOPBACK = "127.0.0.1"

_PR_SET_PDEATHSIG = 1


class DemoError(PicogateError, RuntimeError):
    """Something the demo needs is missing or would not start; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


async def port_open(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _pdeathsig() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        prctl = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # runs in the child between fork and exec: only the prctl(2) call
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class ChildProcess:
    """One child with its output in a log file: start → wait until ready → terminate (then kill).

    Start it from the event loop's thread: the parent-death signal fires when the *thread* that
    forked the child ends, so a child started from a worker thread would die with that thread.
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                start_new_session=True,  # out of reach of the terminal's Ctrl-C
                preexec_fn=_pdeathsig(),
            )
        except OSError as exc:
            self._close_log()
            raise DemoError(f"cannot start {self.name} ({self.argv[0]}): {exc.strerror or exc}") from exc

    async def wait_ready(
        self, ready: Callable[[], bool | Awaitable[bool]], what: str, *, within: float
    ) -> None:
        """Poll `ready` until true; fail at once if the child exits, and after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            result = ready()
            if result if isinstance(result, bool) else await result:
                return
            if not self.running:
                code = self.proc.returncode if self.proc is not None else None
                self.stop()
                raise DemoError(
                    f"{self.name} exited (code {code}) before {what}; its log {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise DemoError(
                    f"{self.name} did not get ready ({what}) within {within:g} s; its log {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                )
            await asyncio.sleep(0.05)

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL.  Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=timeout)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def executable(name: str, *fallbacks: str) -> str | None:
    """`name` on PATH, or the first of `fallbacks` that is executable (Debian puts mosquitto in /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    return None
