"""A simulated Pico: a board directory run by MicroPython's unix port, with its REPL on a pty.

See the package docstring (picogate.simboard) for the behaviour and the API.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from picogate._errors import PicogateError
from picogate._paths import data_dir

__all__ = ["EXIT_BOOTLOADER", "EXIT_RESET", "SimBoard", "SimBoardError", "install_firmware"]

EXIT_RESET = 75
"""Exit status of a simulated `machine.reset()`: the board reboots (USB re-enumerates)."""
EXIT_BOOTLOADER = 76
"""Exit status of a simulated `machine.bootloader()`: the board leaves the serial port (UF2 mode)."""

_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
_SOFT_REBOOT = b"MPY: soft reboot\r\n"
_CONSOLE_KEEP = 256 * 1024

Mode = Literal["off", "main", "repl", "raw", "bootloader"]


class SimBoardError(PicogateError, RuntimeError):
    """The simulated board could not be started or driven (carries the board directory)."""


def _find_micropython() -> str:
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if found is None:
        raise SimBoardError("the MicroPython unix port (`micropython`) is not installed")
    return found


def install_firmware(
    board_dir: str | os.PathLike[str], *, scenario: str | bytes | None = None, clean: bool = True
) -> Path:
    """Copy the firmware sources (main.py, picogate_fw/) into `board_dir` (the board's flash).

    `scenario`: the text of pg_sim.json to write too. `clean` removes a previous picogate_fw/ first.
    Returns the board directory.
    """
    target = Path(board_dir)
    target.mkdir(parents=True, exist_ok=True)
    src = data_dir("firmware")
    pkg = target / "picogate_fw"
    if clean and pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(
        src / "picogate_fw", pkg, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
    )
    shutil.copy2(src / "main.py", target / "main.py")
    if scenario is not None:
        data = scenario.encode() if isinstance(scenario, str) else scenario
        (target / "pg_sim.json").write_bytes(data)
    return target


class SimBoard:
    """A board directory run under `micropython` (unix port), reachable at a stable serial path.

    Thread-based and synchronous; safe to use from asyncio code (no call blocks for long except
    `wait_for_output`, which takes a timeout).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        heapsize: str = "220wK",
        uid: str = "E6614103E7000001",
        board: str = "pico",
        port: str | os.PathLike[str] | None = None,
        usb_reset: bool = True,
        micropython: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise SimBoardError(f"board directory {self.directory} does not exist")
        if len(uid) != 16 or any(c not in "0123456789ABCDEF" for c in uid):
            raise SimBoardError(f"uid must be 16 upper-case hex digits, got {uid!r}")
        self.heapsize = heapsize
        self.uid = uid
        self.board = board
        self.usb_reset = usb_reset
        self._exe = micropython or _find_micropython()
        self._extra_env = dict(env or {})
        self._extra_args = list(extra_args)
        self._own_tmp: str | None = None
        if port is None:
            self._own_tmp = tempfile.mkdtemp(prefix="simboard-")
            self.port = str(Path(self._own_tmp) / "tty")
        else:
            self.port = str(port)
        self.restarts = 0
        """How many times the MicroPython process was started again after the first start."""
        self.exits: list[int] = []
        """Exit status of every process that ended (negative: killed by that signal)."""
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._console = bytearray()
        self._console_total = 0
        self._mode: Mode = "off"
        self._proc: subprocess.Popen[bytes] | None = None
        self._host_master: int | None = None
        self._board_master: int | None = None
        self._board_slave: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._raw = False  # the host put the REPL into raw mode (Ctrl-A) and did not leave it (Ctrl-B)
        self._swallow: bytes | None = None  # board output dropped up to and including this marker
        self._powered = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.dropped = 0
        """Bytes the board wrote while no host had the port open (dropped, as over USB CDC)."""
        self.wdt_resets = 0
        """Times the simulated watchdog expired and reset the board."""
        self._wdt_dir = ""
        self._wdt_path = ""
        self._wdt_r: int | None = None
        self._wdt_w: int | None = None
        self._wdt_timeout: float | None = None  # seconds, once the firmware armed it
        self._wdt_fed = 0.0

    # --- public API ---------------------------------------------------------------------------

    def start(self) -> SimBoard:
        """Create the serial port and boot the board (runs main.py). Returns self."""
        with self._lock:
            if self._threads:
                raise SimBoardError(f"simulated board {self.directory} already started")
            self._board_master, self._board_slave = pty.openpty()
            tty.setraw(self._board_slave)
            self._wdt_dir = tempfile.mkdtemp(prefix="simboard-wdt-")
            self._wdt_path = str(Path(self._wdt_dir) / "wdt")
            os.mkfifo(self._wdt_path)
            self._wdt_r = os.open(self._wdt_path, os.O_RDONLY | os.O_NONBLOCK)
            self._wdt_w = os.open(self._wdt_path, os.O_WRONLY)  # ours: no EOF between processes
            self._plug()
            self._powered = True
        self._threads = [
            threading.Thread(target=self._relay, name=f"simboard-relay-{self.uid}", daemon=True),
            threading.Thread(target=self._supervise, name=f"simboard-proc-{self.uid}", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop the board and remove its port (idempotent)."""
        with self._lock:
            self._stopping = True
            self._powered = False
            self._cond.notify_all()
        self._terminate()
        self._wake()
        for t in self._threads:
            t.join(timeout=10)
        with self._lock:
            self._unplug()
            for fd in (self._board_master, self._board_slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._board_master = self._board_slave = None
        for fd in (self._wake_r, self._wake_w, self._wdt_r, self._wdt_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._wdt_dir:
            shutil.rmtree(self._wdt_dir, ignore_errors=True)
        if self._own_tmp is not None:
            shutil.rmtree(self._own_tmp, ignore_errors=True)
            self._own_tmp = None

    def kill(self) -> None:
        """Kill the MicroPython process (SIGKILL), as a crash or brown-out; the board boots again."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def inject(self, data: bytes, *, to: Literal["board", "host"] = "board") -> None:
        """Put bytes on the link as if the other side had sent them: `to="board"` as if from the host,
        `to="host"` as if from the board (dropped when no host has the port open)."""
        with self._lock:
            if to == "board":
                if self._board_master is not None:
                    self._write_all(self._board_master, data)
            elif to == "host":
                self._to_host(data)
            else:
                raise ValueError(f"inject: to must be 'board' or 'host', got {to!r}")

    def unplug(self, *, power_off: bool = False) -> None:
        """Pull the USB cable: the port path disappears and the host's open port fails. With
        `power_off` the board also stops (a bus-powered board); else it keeps running."""
        with self._lock:
            self._unplug()
            if power_off:
                self._powered = False
        if power_off:
            self._terminate()
        self._wake()

    def replug(self) -> None:
        """Plug the cable back in: the port path exists again; a powered-off board boots."""
        with self._lock:
            if self._host_master is None:
                self._plug()
            if not self._powered:
                self._powered = True
                self._cond.notify_all()
        self._wake()

    @property
    def plugged(self) -> bool:
        return self._host_master is not None

    @property
    def mode(self) -> Mode:
        """`main` (main.py / the application), `repl`, `raw` (raw REPL), `bootloader`, `off`."""
        return self._mode

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def output(self, since: int = 0) -> bytes:
        """What the board wrote (the last 256 KiB), whether or not a host was listening; `since`:
        a position from `output_pos()` to get only what came after it."""
        with self._lock:
            start = max(0, since - (self._console_total - len(self._console)))
            return bytes(self._console[start:])

    def output_pos(self) -> int:
        with self._lock:
            return self._console_total

    def wait_for_output(self, needle: bytes, *, since: int = 0, timeout: float = 10.0) -> bytes:
        """Wait until `needle` appears in the board's output after position `since`; returns that
        output. Raises TimeoutError with the output seen."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = self.output(since)
                if needle in seen:
                    return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{needle!r} not seen from {self.directory} in {timeout} s: {seen[-2000:]!r}"
                    )
                self._cond.wait(min(left, 0.2))

    def wait_restarts(self, n: int, *, timeout: float = 10.0) -> None:
        """Wait until the process has been started again at least `n` times in all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.restarts < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.directory}: {self.restarts} restarts, expected {n}")
                self._cond.wait(min(left, 0.2))

    def __enter__(self) -> SimBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the USB side -------------------------------------------------------------------------

    def _plug(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # persists while the master is open: no echo, no CR/LF rewriting
        name = os.ttyname(slave)
        os.close(slave)
        fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
        link = Path(self.port)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(name)
        tmp.replace(link)
        self._host_master = master

    def _unplug(self) -> None:
        if self._host_master is None:
            return
        with contextlib.suppress(FileNotFoundError):
            Path(self.port).unlink()
        with contextlib.suppress(OSError):
            os.close(self._host_master)
        self._host_master = None

    def _settle_host(self, timeout: float = 1.0) -> None:
        """Before the port goes away (a reset re-enumerates USB): give the host up to `timeout` s to
        read what the board sent last (e.g. the ack of `reset`/`boot`), as a real board's last
        USB packets reach the host before it drops off the bus."""
        if not self._host_attached():
            return
        try:
            fd = os.open(self.port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            deadline = time.monotonic() + timeout
            buf = bytearray(4)
            while time.monotonic() < deadline:
                fcntl.ioctl(fd, termios.FIONREAD, buf)
                if int.from_bytes(buf, sys.byteorder) == 0:
                    return
                time.sleep(0.01)
        except OSError:
            return
        finally:
            os.close(fd)

    def _host_attached(self) -> bool:
        fd = self._host_master
        if fd is None:
            return False
        p = select.poll()
        p.register(fd, select.POLLIN)
        return all(not ev & select.POLLHUP for _, ev in p.poll(0))

    def _to_host(self, data: bytes) -> None:
        self._console += data
        self._console_total += len(data)
        if len(self._console) > _CONSOLE_KEEP:
            del self._console[: len(self._console) - _CONSOLE_KEEP]
        self._cond.notify_all()
        if self._host_attached() and self._host_master is not None:
            try:
                self._write_all(self._host_master, data)
            except OSError:
                self.dropped += len(data)
        else:
            self.dropped += len(data)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 2.0
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OSError(errno.EAGAIN, "peer does not read") from None
                select.select([], [fd], [], 0.05)
                continue
            view = view[n:]

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _relay(self) -> None:
        while not self._stopping:
            with self._lock:
                hm = self._host_master if self._host_attached() else None
                bm = self._board_master
            self._check_wdt()
            rlist = [self._wake_r] + [fd for fd in (hm, bm, self._wdt_r) if fd is not None]
            try:
                ready, _, _ = select.select(rlist, [], [], 0.05)
            except (OSError, ValueError):
                time.sleep(0.01)  # an fd was closed under us (unplug): take the new set
                continue
            for fd in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(fd, 512)
                    continue
                if fd == self._wdt_r:
                    self._wdt_input()
                    continue
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue  # EIO: the host closed its end meanwhile
                if not data:
                    continue
                with self._lock:
                    if fd == bm:
                        self._from_board(data)
                    elif fd == hm and fd == self._host_master:
                        self._from_host(data)

    def _from_host(self, data: bytes) -> None:
        for b in data:  # the host's raw-REPL state, to reboot into it as a real board does
            if b == 0x01:
                self._raw = True
            elif b == 0x02:
                self._raw = False
        if self._board_master is not None and self._mode in ("main", "repl", "raw"):
            self._write_all(self._board_master, data)

    def _from_board(self, data: bytes) -> None:
        if self._swallow is not None:
            self._pending += data
            i = self._pending.find(self._swallow)
            if i < 0:
                return
            data = self._pending[i:]
            self._swallow = None
            self._pending = b""
        self._to_host(data)

    # --- the simulated watchdog (picogate_fw.sim_board.SimWDT writes to a FIFO) ---------------

    def _wdt_input(self) -> None:
        try:
            data = os.read(self._wdt_r, 4096)  # type: ignore[arg-type]
        except (BlockingIOError, OSError):
            return
        with self._lock:
            for line in data.split(b"\n"):
                if line.startswith(b"A") and line[1:].isdigit():  # armed: A<timeout ms>
                    self._wdt_timeout = int(line[1:]) / 1000
                    self._wdt_fed = time.monotonic()
                elif line.startswith(b"F"):
                    self._wdt_fed = time.monotonic()

    def _check_wdt(self) -> None:
        with self._lock:
            t = self._wdt_timeout
            if t is None or self._proc is None or time.monotonic() - self._wdt_fed <= t:
                return
            self._wdt_timeout = None
            self.wdt_resets += 1
            proc = self._proc
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # the watchdog resets the chip

    # --- the process --------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        sim = data_dir("firmware") / "sim"
        env["MICROPYPATH"] = f"{sim}:.frozen:~/.micropython/lib:/usr/lib/micropython"
        env["PICOGATE_UID"] = self.uid
        env["PICOGATE_BOARD"] = self.board
        env["PICOGATE_WDT"] = self._wdt_path
        env.update(self._extra_env)
        return env

    def _spawn(self, kind: Literal["main", "repl", "raw"]) -> subprocess.Popen[bytes]:
        assert self._board_slave is not None
        args = [self._exe, "-X", f"heapsize={self.heapsize}", *self._extra_args]
        if kind == "main":
            args.append("main.py")
        elif kind == "raw":
            # a real board reboots into the raw REPL when soft-reset from it (main.py is not run)
            self._pending = b""
            self._swallow = b"raw REPL; CTRL-B to exit\r\n>"
        return subprocess.Popen(
            args,
            cwd=self.directory,
            stdin=self._board_slave,
            stdout=self._board_slave,
            stderr=self._board_slave,
            env=self._env(),
            close_fds=True,
            start_new_session=True,
        )

    def _supervise(self) -> None:
        kind: Literal["main", "repl", "raw"] = "main"
        first = True
        started = time.monotonic()
        while True:
            with self._cond:
                while not self._powered and not self._stopping:
                    if self._mode != "bootloader":
                        self._mode = "off"
                    self._cond.wait(0.5)
                if self._stopping:
                    self._mode = "off"
                    return
                if not first:
                    self.restarts += 1
                    if time.monotonic() - started < 0.3:
                        self._cond.wait(0.2)  # a crash loop: do not eat the CPU (a board would not mind)
                first = False
                started = time.monotonic()
                if kind == "main" and not (self.directory / "main.py").exists():
                    kind = "repl"  # nothing to run: the board boots to its REPL
                self._proc = self._spawn(kind)
                self._mode = kind
                self._cond.notify_all()
                if kind == "raw":
                    self._write_all(self._board_master, b"\x01")  # type: ignore[arg-type]
            proc = self._proc
            rc = proc.wait()
            with self._cond:
                self.exits.append(rc)
                self._proc = None
                self._wdt_timeout = None  # a reset stops the watchdog
                if self._stopping:
                    self._mode = "off"
                    return
                kind, flush = self._next(kind, rc)
                if flush and self._board_slave is not None:
                    termios.tcflush(self._board_slave, termios.TCIFLUSH)
                self._cond.notify_all()
            if rc in (EXIT_RESET, EXIT_BOOTLOADER):
                self._settle_host()
            if rc == EXIT_RESET and self.usb_reset and self._powered:
                self.unplug()
                time.sleep(0.05)
                self.replug()
            if rc == EXIT_BOOTLOADER:
                with self._lock:
                    self._unplug()
                    self._powered = False
                    self._mode = "bootloader"
                self._wake()

    def _next(self, kind: str, rc: int) -> tuple[Literal["main", "repl", "raw"], bool]:
        """What runs after a process of `kind` ended with `rc`, and whether pending input is lost."""
        if kind == "main" and rc == 0:
            return "repl", False  # main.py returned: the REPL takes over (nothing is reset)
        if kind in ("repl", "raw") and rc == 0:
            # Ctrl-D at the REPL: a soft reset. From the raw REPL a real board stays in it.
            self._to_host(_SOFT_REBOOT)
            return ("raw" if self._raw else "main"), True
        if rc == EXIT_BOOTLOADER:
            self._raw = False
            return "main", True
        self._raw = False  # hard reset, crash or kill: a fresh boot
        return "main", True

    def _terminate(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    _pending: bytes = b""
