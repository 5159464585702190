#!/usr/bin/env python3
"""An emulated Raspberry Pi Pico: the real MicroPython rp2 build (RPI_PICO) on the rp2040js emulator.

    python3 tools/rp2emu.py setup                  # once: copy ../shared/rp2 to .rp2/, npm ci
    python3 tools/rp2emu.py run board.bin          # a board on a serial port until Ctrl-C
    python3 tools/rp2emu.py ctl CTL_SOCK '{"pin": 2, "v": 0}'

The emulator and the firmware come from `../shared/rp2/` beside this checkout (or $PICOGATE_RP2):
`firmware.uf2`, the runner `rp2emu.mjs` and its README. `setup` copies that folder into `.rp2/`
($PICOGATE_RP2_WORK), where `npm ci` installs the runner's packages from its lock file; it does
nothing when that copy is complete and current. `tools/bootstrap.sh` runs it.

`run IMAGE` starts a board whose 2 MiB flash (MicroPython and its filesystem) is the file IMAGE:
created blank (MicroPython only, an empty filesystem) when it does not exist, saved when the board
stops. It prints the board's serial port, on which `picogate flash --port`, `mpremote connect` and
the agent (`port:` in gateway.yaml) work as on a real board, and its control socket (set inputs,
ADC volts, the die temperature, BOOTSEL; reset; read outputs and board time: the runner's
README.md, "Control socket").

In Python (stdlib only; tests/rp2 and bench/fw_rp2.py use it):

    board = Pico(image, realtime=True).start()   # image: a flash image to copy, or None: blank
    board.port, board.ctl(pin=2, v=0), board.board_ms()
    board.wait_output(b"@0 hello ", timeout=30)  # everything the board wrote: board.output()
    board.exec("print(1)")                       # raw REPL (the board must be at its REPL)
    board.unplug(); board.replug()               # the USB cable: the port goes away, comes back
    board.stop()                                 # SIGTERM: the flash image is saved
    board.kill()                                 # SIGKILL: a power cut (flash as last saved)
    board.image                                  # the flash image file (in board.dir)

One board runs at a time in a process (the emulator keeps one CPU core busy). Board time is the
emulator's clock: it runs 4-6 times slower than a real Pico while the CPU is busy, and, unless
`realtime`, jumps over idle time (so it may run ahead of the wall clock). Use `realtime` where a
host compares its clock with the board's (heartbeats, safe timeouts, an agent).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NODE_MIN = 18  # rp2040js's own minimum; the runner's README asks for 20
_KEEP = 1 << 20  # bytes of board output kept for output()
_STAMP = ".picogate-setup"

__all__ = ["NotAvailable", "Pico", "PicoError", "find_source", "setup", "work_dir"]


class PicoError(RuntimeError):
    """The emulated board did not do what was asked (with what it printed last)."""


class NotAvailable(PicoError):
    """No emulator here: ../shared/rp2 is missing, or node is."""


def find_source() -> Path | None:
    """The read-only rp2 folder (firmware.uf2, rp2emu.mjs, ...), or None."""
    env = os.environ.get("PICOGATE_RP2")
    p = Path(env) if env else ROOT.parent / "shared" / "rp2"
    return p.resolve() if (p / "rp2emu.mjs").is_file() and (p / "firmware.uf2").is_file() else None


def work_dir() -> Path:
    """The writable copy of the rp2 folder with its node_modules (.rp2/ in the checkout)."""
    return Path(os.environ.get("PICOGATE_RP2_WORK") or ROOT / ".rp2").resolve()


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise NotAvailable("node is not installed (Debian: apt-get install nodejs npm; node 20 or newer)")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    m = re.match(r"v(\d+)\.", out)
    if m is None or int(m.group(1)) < NODE_MIN:
        raise NotAvailable(
            f"node {out or '?'} is too old for rp2040js (needs {NODE_MIN} or newer; 20 is tested)"
        )
    return node


def _digest(src: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in src.rglob("*") if q.is_file() and "node_modules" not in q.parts):
        h.update(p.relative_to(src).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def setup(*, quiet: bool = False) -> Path:
    """Make the writable copy (files from the source, npm packages from its lock file) unless it is
    there and current. Returns its path. Raises NotAvailable (no source, no node) or PicoError."""
    src = find_source()
    if src is None:
        raise NotAvailable(f"no rp2 emulator folder at {ROOT.parent / 'shared' / 'rp2'} (or $PICOGATE_RP2)")
    _node()
    dst = work_dir()
    digest = _digest(src)
    stamp = dst / _STAMP
    if (
        stamp.is_file()
        and stamp.read_text().strip() == digest
        and (dst / "node_modules" / "rp2040js" / "package.json").is_file()
    ):
        return dst
    npm = shutil.which("npm")
    if npm is None:
        raise NotAvailable("npm is not installed (Debian: apt-get install npm)")
    if not quiet:
        print(f"rp2emu: setting up {dst} from {src}", file=sys.stderr)
    dst.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        stamp.unlink()
    for p in src.iterdir():
        if p.is_file():
            target = dst / p.name
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            shutil.copyfile(p, target)  # contents only: the source is read-only
    env = dict(
        os.environ, npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false"
    )
    r = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=dst, capture_output=True, text=True, env=env, timeout=600
    )
    if r.returncode != 0:
        raise PicoError(f"npm ci in {dst} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    stamp.write_text(digest + "\n")
    return dst


class Pico:
    """One emulated board (see the module docstring). Not thread-safe: one user at a time."""

    _running: Pico | None = None  # one board at a time in this process

    def __init__(
        self,
        image: str | Path | None = None,
        *,
        workdir: str | Path | None = None,
        realtime: bool = False,
        bootsel: bool = False,
        uid: str = "E6614103E7000001",
        uart0: bool = False,
        i2c0: bool = False,
        i2c1: bool = False,
        seed: int | None = None,
        keep_image: bool = False,
        uf2: str | Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.emu = work_dir()
        src = find_source()
        if src is None or not (self.emu / "node_modules").is_dir():
            raise NotAvailable(f"no emulator set up in {self.emu}: run `python3 tools/rp2emu.py setup`")
        self.uf2 = Path(uf2) if uf2 else src / "firmware.uf2"
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rp2-"))  # short socket paths
        self.dir.mkdir(parents=True, exist_ok=True)
        if keep_image and image is not None:
            self.image = Path(image)  # run on this file itself (blank if missing; saved back)
        else:
            self.image = self.dir / "flash.bin"
            if image is not None and Path(image).resolve() != self.image.resolve():
                shutil.copyfile(image, self.image)
        self.port = str(self.dir / "tty")
        self.ctl_path = str(self.dir / "ctl.sock")
        self.uart0_path = str(self.dir / "uart0.sock") if uart0 else None
        self.i2c_paths = {n: str(self.dir / f"i2c{n}.sock") for n, on in ((0, i2c0), (1, i2c1)) if on}
        self.log_path = self.dir / "emu.log"
        self.args = [
            "--uf2",
            str(self.uf2),
            "--flash",
            str(self.image),
            "--ctl-sock",
            self.ctl_path,
            "--uid",
            uid,
        ]
        if realtime:
            self.args.append("--realtime")
        if bootsel:
            self.args.append("--bootsel")
        if seed is not None:
            self.args += ["--seed", str(seed)]
        if self.uart0_path:
            self.args += ["--uart0-sock", self.uart0_path]
        for n, path in self.i2c_paths.items():
            self.args += [f"--i2c{n}-sock", path]
        self.args += extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = bytearray()
        self._out_total = 0
        self._cond = threading.Condition()
        self._wlock = threading.Lock()
        self._master: int | None = None
        self._pending = bytearray()  # for the pty client, not yet written
        self._thread: threading.Thread | None = None
        self._stop = False
        self.dropped = 0  # bytes the board wrote while no client had the port open

    # --- life ---------------------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> Pico:
        """Start the emulator; with `wait`, until the board's USB port is up (the host can talk)."""
        if Pico._running is not None and Pico._running.running:
            raise PicoError(f"another emulated board is running (pid {Pico._running.pid}): one at a time")
        node = _node()
        self._plug()
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [node, str(self.emu / "rp2emu.mjs"), *self.args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                bufsize=0,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the board directly
            )
        finally:
            log.close()
        Pico._running = self
        self._stop = False
        self._thread = threading.Thread(target=self._relay, name=f"rp2emu-{self.proc.pid}", daemon=True)
        self._thread.start()
        if wait:
            self.wait_usb(timeout=timeout)
        return self

    def wait_usb(self, *, boots: int = 1, timeout: float = 60.0) -> None:
        """Until the USB CDC port is configured in the `boots`-th chip start (the runner logs it;
        a blank board prints nothing before a host speaks) and the sockets listen."""
        deadline = time.monotonic() + timeout
        paths = [self.ctl_path, *([self.uart0_path] if self.uart0_path else []), *self.i2c_paths.values()]
        sign = f"USB CDC configured (boot {boots},"
        while True:
            with contextlib.suppress(OSError):
                if sign in self.log_path.read_text(errors="replace") and all(
                    os.path.exists(p) for p in paths
                ):
                    return
            if time.monotonic() > deadline or not self.running:
                why = "the emulator ended" if not self.running else f"not within {timeout:g} s"
                raise PicoError(f"the board's USB did not come up: {why}{self._tail()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """End the emulator by its pid with SIGTERM: it saves the flash image first."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """A power cut: SIGKILL. The image keeps what the emulator last saved (it saves 0.5 s after
        flash writes): the filesystem as it was at some moment before the cut."""
        self._end(signal.SIGKILL, 20.0)

    def wait_flash_saved(self, timeout: float = 30.0) -> None:
        """Until the flash has had no write for 0.6 s: the emulator has saved the image since the
        last one (it saves 0.5 s after a write), so a kill() now loses nothing."""
        deadline = time.monotonic() + timeout
        last = self.ctl()["flash"]
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 0.6:
            if time.monotonic() > deadline:
                raise PicoError(f"the flash is still being written after {timeout:g} s")
            time.sleep(0.1)
            now = self.ctl()["flash"]
            if now != last:
                last, quiet_since = now, time.monotonic()

    def _end(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._stop = True
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if proc is not None:
            for f in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if f is not None:
                        f.close()
        self._unplug()
        if Pico._running is self:
            Pico._running = None

    def close(self) -> None:
        """stop(), and remove the working folder when this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Pico:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the control socket -------------------------------------------------------------------------

    def ctl(self, **msg: Any) -> dict[str, Any]:
        """One request on the control socket (README.md, "Control socket"); its JSON reply."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.ctl_path)
            s.sendall(json.dumps(msg).encode() + b"\n")
            reply: dict[str, Any] = json.loads(s.makefile().readline())
        if not reply.get("ok"):
            raise PicoError(f"ctl {msg}: {reply.get('error')}")
        return reply

    def board_ms(self) -> int:
        """Board time since the chip's last (re)start, in ms."""
        return int(self.ctl()["board_ms"])

    def reset(self) -> None:
        """The RUN pin: the chip restarts (flash kept; the port stays open, as the runner does)."""
        self.ctl(reset=True)

    # --- the USB CDC stream -------------------------------------------------------------------------

    def output(self, since: int = 0) -> bytes:
        """What the board wrote since output position `since` (the last 1 MiB at most)."""
        with self._cond:
            start = max(0, since - (self._out_total - len(self._out)))
            return bytes(self._out[start:])

    def output_pos(self) -> int:
        with self._cond:
            return self._out_total

    def wait_output(self, needle: bytes, *, since: int = 0, timeout: float = 30.0) -> bytes:
        """Wait until the output since `since` contains `needle` (b"": any byte); returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                start = max(0, since - (self._out_total - len(self._out)))
                seen = bytes(self._out[start:])
                if (seen and needle in seen) or (not needle and seen):
                    return seen
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    why = "the emulator ended" if not self.running else f"not within {timeout:g} s"
                    raise PicoError(
                        f"waiting for {needle!r}: {why}; the board wrote {seen[-300:]!r}{self._tail()}"
                    )
                self._cond.wait(min(left, 0.1))

    def write(self, data: bytes) -> None:
        """Bytes into the board's USB CDC input, as if the host sent them."""
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise PicoError("the board is not running")
        with self._wlock:
            proc.stdin.write(data)

    def inject_host(self, data: bytes) -> None:
        """Bytes to the host on the port, as if the board had sent them (line noise)."""
        with self._cond:
            if self._master is not None:
                self._pending += data

    def exec(self, code: str, *, timeout: float = 60.0) -> str:
        """Run `code` at the board's raw REPL (the board must be at its REPL: a blank board, BOOTSEL
        held at boot, maintenance or safe mode) and return what it printed; PicoError with the
        board's traceback when it raised."""
        pos = self.output_pos()
        self.write(b"\r\x03\x03\r\x01")
        self.wait_output(b"raw REPL; CTRL-B to exit\r\n>", since=pos, timeout=timeout)
        pos = self.output_pos()
        self.write(code.encode() + b"\x04")
        seen = self.wait_output(b"\x04>", since=pos, timeout=timeout)
        i = seen.find(b"OK")
        if i < 0:
            raise PicoError(f"the raw REPL did not take the code: {seen[-300:]!r}")
        out, _, rest = seen[i + 2 :].partition(b"\x04")
        err = rest.partition(b"\x04")[0]
        self.write(b"\x02")  # back to the friendly REPL
        if err:
            raise PicoError(f"the board raised: {err.decode(errors='replace').strip()}")
        return out.decode(errors="replace").replace("\r\n", "\n")

    def put(self, path: str, data: bytes) -> None:
        """Write a file on the board's filesystem (raw REPL)."""
        chunks = [data[i : i + 2048] for i in range(0, len(data), 2048)] or [b""]
        code = [f"f = open({path!r}, 'wb')"] + [f"f.write({c!r})" for c in chunks] + ["f.close()"]
        self.exec("\n".join(code))

    def get(self, path: str) -> bytes:
        """Read a file from the board's filesystem (raw REPL)."""
        out = self.exec(f"import binascii\nprint(binascii.hexlify(open({path!r}, 'rb').read()).decode())")
        return bytes.fromhex(out.strip())

    # --- the cable ----------------------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def unplug(self) -> None:
        """Pull the USB cable (the board keeps running, powered otherwise): the port goes away and a
        host that has it open gets an error; what the board writes meanwhile is lost."""
        self._unplug()

    def replug(self) -> None:
        """Plug it in again: the port is back (same path)."""
        if self._master is None:
            self._plug()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # stays with the pty while the master is open: no echo, no CR/LF rewriting
        name = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        tmp = self.port + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(name, tmp)
        os.replace(tmp, self.port)
        with self._cond:
            self._pending.clear()
            self._master = master

    def _unplug(self) -> None:
        with self._cond:
            fd, self._master = self._master, None
            self._pending.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _attached(self, fd: int) -> bool:
        p = select.poll()
        p.register(fd, select.POLLIN)
        return all(not ev & select.POLLHUP for _, ev in p.poll(0))

    def _relay(self) -> None:
        proc = self.proc
        assert proc is not None
        assert proc.stdout is not None
        out = proc.stdout.fileno()
        while not self._stop:
            with self._cond:
                m = self._master
            attached = m is not None and self._attached(m)
            if not attached and self._pending:
                with self._cond:
                    self._pending.clear()
            rl = [out] + ([m] if attached and m is not None else [])
            wl = [m] if attached and m is not None and self._pending else []
            try:
                r, w, _ = select.select(rl, wl, [], 0.02)
            except (OSError, ValueError):
                time.sleep(0.01)  # the master was closed under us (unplug)
                continue
            if out in r:
                try:
                    data = os.read(out, 65536)
                except OSError:
                    data = b""
                if not data:
                    with self._cond:
                        self._cond.notify_all()
                    return  # the emulator ended
                with self._cond:
                    self._out += data
                    self._out_total += len(data)
                    if len(self._out) > _KEEP:
                        del self._out[: len(self._out) - _KEEP]
                    if attached and self._master is not None:
                        self._pending += data
                        if len(self._pending) > _KEEP:  # a client that does not read
                            del self._pending[: len(self._pending) - _KEEP]
                    else:
                        self.dropped += len(data)
                    self._cond.notify_all()
            if m is not None and m in r:
                try:
                    data = os.read(m, 65536)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    data = b""  # EIO: the client closed the port meanwhile
                if data:
                    with contextlib.suppress(OSError, ValueError):
                        self.write(data)
            if m is not None and (m in w or self._pending):
                with self._cond:
                    if self._master == m and self._pending:
                        try:
                            n = os.write(m, self._pending)
                            del self._pending[:n]
                        except (BlockingIOError, OSError):
                            pass

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-5:]
        except OSError:
            return ""
        return "\n  emulator log: " + "\n  ".join(lines) if lines else ""


# --- command line -------------------------------------------------------------------------------------


def _cmd_setup(args: argparse.Namespace) -> int:
    print(setup(quiet=args.quiet))
    return 0


def _cmd_ctl(args: argparse.Namespace) -> int:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(args.sock)
        s.sendall(json.dumps(json.loads(args.request)).encode() + b"\n")
        print(s.makefile().readline().strip())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    setup(quiet=False)
    image = Path(args.image).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="rp2-"))
    board = Pico(
        image,
        workdir=workdir,
        keep_image=True,
        realtime=args.realtime,
        bootsel=args.bootsel,
        uid=args.uid,
        uart0=args.uart0,
        i2c0=args.sht3x is not None,
    )
    extra: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        board.start()
        print(f"rp2emu: board running (emulator pid {board.pid}), flash image {image}")
        print(f"  port   {board.port}    (picogate flash --port …; mpremote connect …; gateway.yaml port:)")
        print(
            f'  ctl    {board.ctl_path}    (python3 tools/rp2emu.py ctl {board.ctl_path} \'{{"pin": 2, "v": 0}}\')'
        )
        if args.uart0:
            uart_pty = str(workdir / "uart0")
            extra.append(
                subprocess.Popen(
                    ["socat", f"PTY,link={uart_pty},raw,echo=0", f"UNIX-CONNECT:{board.uart0_path}"],
                    stderr=subprocess.DEVNULL,
                )
            )
            print(f"  uart0  {uart_pty}    (a pty: put a Modbus RTU slave on it)")
        if args.sht3x is not None:
            src = find_source()
            assert src is not None
            extra.append(
                subprocess.Popen(
                    [sys.executable, str(src / "i2c_models.py"), board.i2c_paths[0], "--sht3x", args.sht3x],
                    stdin=subprocess.DEVNULL,
                )
            )
            print(f"  i2c0   an SHT3x at {args.sht3x} on GP4 (SDA) / GP5 (SCL)")
        print("Ctrl-C stops it (the image is saved).", flush=True)
        while not stop.is_set() and board.running:
            stop.wait(0.2)
    finally:
        for p in extra:
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        board.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="copy ../shared/rp2 to .rp2/ and npm ci there (when not done yet)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_setup)
    r = sub.add_parser("run", help="run a board on a flash image (created blank when missing)")
    r.add_argument("image", help="the board's 2 MiB flash image, e.g. board.bin")
    r.add_argument("--realtime", action="store_true", help="board time never runs ahead of the wall clock")
    r.add_argument("--bootsel", action="store_true", help="hold BOOTSEL at start (maintenance mode)")
    r.add_argument("--uid", default="E6614103E7000001", help="machine.unique_id() (16 hex digits)")
    r.add_argument("--uart0", action="store_true", help="UART0 on a pty (socat)")
    r.add_argument("--sht3x", metavar="ADDR", help="an SHT3x model on I2C0 (GP4/GP5), e.g. 0x44")
    r.set_defaults(func=_cmd_run)
    c = sub.add_parser("ctl", help="one request on a board's control socket")
    c.add_argument("sock")
    c.add_argument("request", help='JSON, e.g. \'{"adc": 0, "v": 1.25}\'')
    c.set_defaults(func=_cmd_ctl)
    args = ap.parse_args(argv)
    try:
        return int(args.func(args))
    except PicoError as e:
        print(f"rp2emu: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
