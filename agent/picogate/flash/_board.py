"""One board's serial port: the link hello, maintenance mode, the raw REPL, files, reset.

The raw REPL is driven by mpremote's `SerialTransport`, used as a library rather than by running
the `mpremote` command once per file: one open port and one raw-REPL session for the whole flash
(a subprocess per step costs a Python start and a new raw-REPL entry each time, and it cannot
report progress per chunk). mpremote's transport API is not stable, so it is used here only:
`exec`, `eval`, `fs_writefile`, `exec_raw_no_follow` (pinned `mpremote>=1.24`). We open the port
ourselves (pyserial, exclusive, with a read timeout) so that a busy or forbidden port gives its
real errno and a silent board a timeout instead of a hang.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial
from mpremote import transport_serial as _transport_serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from picogate.flash import _link
from picogate.flash._errors import BoardNotAnswering, FlashError, PortBusy, PortPermission
from picogate.flash._ports import port_holders

__all__ = ["BoardConn", "Probe"]

_log = logging.getLogger("picogate.flash")


def _mpremote_print(*args: object, **_kw: object) -> None:
    _log.debug("mpremote: %s", " ".join(str(a) for a in args))


# mpremote prints what it received when it gives up (e.g. "could not enter raw repl"): on our stdout
# that would break `--json`; the error it raises says what happened, the bytes go to the debug log.
_transport_serial.print = _mpremote_print

_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_REPL_SIGNS = (
    b">>> ",
    b"raw REPL; CTRL-B",
    b"MicroPython v",
    b"picogate: maintenance",
    b"picogate: safe mode",
    b"picogate: boot interrupted",
    b"Traceback (most recent call last)",
)
_BOOT_SIGN = b"picogate: starting"

Log = Callable[[str], None]


@dataclass
class Probe:
    """What the board said when we opened its port."""

    state: str  # "app" (speaks the link), "repl", "boot" (in its boot window), "silent"
    hello: dict[str, Any] | None = None
    seen: bytes = b""


@dataclass
class _Serial:
    """Our own pyserial handle wrapped as mpremote's transport (no second open)."""

    ser: serial.Serial
    device: str
    transport: SerialTransport = field(init=False)

    def __post_init__(self) -> None:
        t = SerialTransport.__new__(SerialTransport)
        t.in_raw_repl = False
        t.use_raw_paste = True
        t.device_name = self.device
        t.mounted = False
        t.serial = self.ser
        t.is_pty = False
        self.transport = t


class BoardConn:
    """A board behind `port`. Not thread-safe; one per board."""

    def __init__(self, port: str, *, log: Log | None = None, timeout: float = 5.0) -> None:
        self.port = port
        self.log: Log = log or (lambda _msg: None)
        self.timeout = timeout
        self._s: _Serial | None = None
        self.in_raw = False

    # --- opening -------------------------------------------------------------------------------

    def open(self, *, wait: float = 0.0) -> None:
        """Open the port exclusively; wait up to `wait` s for it to appear (after a reset)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._open_once()
                return
            except FlashError as e:
                if isinstance(e, (PortBusy, PortPermission)) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.05)

    def _open_once(self) -> None:
        holders = port_holders(self.port)
        if holders:
            pid, cmd = holders[0]
            raise self._busy(pid, cmd)
        try:
            ser = serial.Serial(
                self.port, 115200, timeout=self.timeout, exclusive=True, write_timeout=self.timeout
            )
        except serial.SerialException as e:
            code = e.errno
            if code in (errno.EACCES, errno.EPERM):
                raise PortPermission(
                    "permission denied. Add yourself to the serial group (Debian/Ubuntu: "
                    "`sudo usermod -aG dialout $USER`, then log in again) or install "
                    "tools/99-picogate.rules (docs/flashing.md; `sudo picogate service install` "
                    "installs them too)",
                    where=self.port,
                ) from None
            if code in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in str(e):
                holders = port_holders(self.port)
                raise (self._busy(*holders[0]) if holders else self._busy(None, "")) from None
            if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
                raise FlashError("no such port (unplugged?)", where=self.port) from None
            raise FlashError(f"cannot open: {e}", where=self.port) from None
        self._s = _Serial(ser, self.port)
        self.in_raw = False

    def _busy(self, pid: int | None, cmd: str) -> PortBusy:
        agent = "picogate" in cmd and " run" in f" {cmd}"
        who = f"process {pid} ({cmd.strip()[:80]})" if pid else "another process"
        if agent:
            return PortBusy(
                f"busy: held by the running Picogate agent ({who}). Stop it first "
                "(`sudo systemctl stop picogate`) or pass --stop-agent",
                where=self.port,
                pid=pid,
                agent=True,
            )
        if pid:
            msg = f"busy: held by process {pid} ({cmd.strip()[:80]}); close it and try again"
        else:
            msg = "busy: held by another process; close it and try again"
        return PortBusy(msg, where=self.port, pid=pid)

    def close(self) -> None:
        if self._s is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._s.ser.close()
            self._s = None
        self.in_raw = False

    def __enter__(self) -> BoardConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ser(self) -> serial.Serial:
        if self._s is None:
            raise FlashError("port not open", where=self.port)
        return self._s.ser

    @property
    def transport(self) -> SerialTransport:
        if self._s is None:
            raise FlashError("port not open", where=self.port)
        return self._s.transport

    # --- low-level I/O ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.ser.write(data)
        except (OSError, serial.SerialException) as e:
            raise FlashError(f"write failed (unplugged?): {e}", where=self.port) from None

    def _read_some(self, wait: float) -> bytes:
        try:
            n = self.ser.in_waiting
            if n:
                return bytes(self.ser.read(n))
        except (OSError, serial.SerialException) as e:
            raise FlashError(f"read failed (unplugged?): {e}", where=self.port) from None
        time.sleep(wait)
        return b""

    def _drain(self) -> bytes:
        out = b""
        for _ in range(100):
            chunk = self._read_some(0)
            if not chunk:
                break
            out += chunk
        return out

    # --- what is the board doing? -------------------------------------------------------------------

    def probe(self, timeout: float = 1.5, *, interrupt: bool = True) -> Probe:
        """Say hello on the link and look at the answer: the application's hello, a REPL, the boot
        window (with `interrupt`, Ctrl-C is sent at once then), or nothing."""
        seen = self._drain()
        buf = seen
        deadline = time.monotonic() + timeout
        next_hello = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_hello:
                self._write(_link.hello("picogate-flash"))
                next_hello = now + 0.5
            chunk = self._read_some(0.02)
            if not chunk:
                continue
            seen += chunk
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                frame = _link.parse(line)
                if frame is not None and (doc := _link.parse_hello(frame)) is not None:
                    return Probe("app", doc, seen)
            if interrupt and _BOOT_SIGN in seen:
                self._write(b"\x03")
                return Probe("boot", None, seen)
            if interrupt and any(s in seen for s in _REPL_SIGNS):
                return Probe("repl", None, seen)
        return Probe("silent", None, seen)

    def request(self, type_: str, *, tries: int = 5) -> dict[str, Any] | None:
        """Send a reliable host frame (`maint`, `reset`, `boot`) and wait for its ack (resent with
        the same seq every 300 ms, as the protocol says). Returns the ack's result or None."""
        seq = 1
        frame = _link.encode(seq, type_, "{}")
        buf = b""
        for _ in range(tries):
            self._write(frame)
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                chunk = self._read_some(0.01)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    f = _link.parse(line)
                    if f is None or f.marker != "@" or f.type != "ack":
                        continue
                    acked, _, result = f.body.partition(" ")
                    if acked == str(seq):
                        try:
                            doc = json.loads(result) if result else {"ok": True}
                        except ValueError:
                            doc = {"ok": False}
                        return doc if isinstance(doc, dict) else {"ok": False}
        return None

    def wait_reboot(self, *, gone_within: float = 3.0, back_within: float = 15.0) -> None:
        """After a reset: close, wait for the port to go away (USB re-enumeration) and come back,
        then open it again."""
        self.close()
        deadline = time.monotonic() + gone_within
        while time.monotonic() < deadline and os.path.exists(self.port):
            time.sleep(0.02)
        self.open(wait=back_within)

    def wait_gone(self, within: float = 3.0) -> None:
        """After a reset: close and wait (up to `within` s) for the port to go away."""
        self.close()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and os.path.exists(self.port):
            time.sleep(0.02)

    # --- the raw REPL -------------------------------------------------------------------------------

    def enter_raw(self, *, attempts: int = 4) -> None:
        """Interrupt whatever runs (Ctrl-C) and enter the raw REPL (Ctrl-A), without soft reset
        (mpremote's `resume`: a soft reset would run main.py again)."""
        seen = b""
        for _ in range(attempts):
            self._write(b"\r\x03\x03")
            time.sleep(0.05)
            seen += self._drain()
            self._write(b"\r\x01")
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                seen += self._read_some(0.01)
                i = seen.rfind(_RAW_BANNER)
                if i >= 0:
                    # leave the '>' prompt unread: mpremote's exec checks for it
                    rest = seen[i + len(_RAW_BANNER) :]
                    if rest not in (b"", b">"):
                        continue
                    self.transport.in_raw_repl = True
                    self.in_raw = True
                    self.transport.read_until = _bounded_reads(
                        SerialTransport.read_until.__get__(self.transport), prompt_read=rest == b">"
                    )
                    return
        raise BoardNotAnswering(f"no raw REPL (Ctrl-C, Ctrl-A gave {seen[-200:]!r})", where=self.port)

    def interrupt_boot(self, wait: float, *, on_wait: Log | None = None) -> None:
        """The fallback when the link does not answer: send Ctrl-C continuously for `wait` seconds,
        so that the board's next boot (reset it: button, replug) stops in its 2 s boot window."""
        if on_wait is not None:
            on_wait(
                f"{self.port}: the board does not answer on the link; reset it (RESET button or "
                f"replug) — sending Ctrl-C for its boot window for up to {wait:.0f} s"
            )
        deadline = time.monotonic() + wait
        seen = b""
        while time.monotonic() < deadline:
            try:
                if self._s is None:
                    self.open()
                self._write(b"\x03")
                seen += self._read_some(0.05)
            except FlashError:
                self.close()  # the board re-enumerates while it resets
                time.sleep(0.1)
                continue
            if any(s in seen for s in _REPL_SIGNS):
                return
        raise BoardNotAnswering(
            f"no answer: neither the link's hello nor a REPL within {wait:.0f} s "
            f"(saw {seen[-120:]!r}). Is it a Pico running MicroPython? Hold BOOTSEL while plugging "
            "it in and flash MicroPython with --micropython FILE.uf2",
            where=self.port,
        )

    def exec(self, code: str, *, timeout: float = 10.0) -> bytes:
        try:
            out, err = self.transport.exec_raw(code, timeout=timeout)
        except TransportError as e:
            raise BoardNotAnswering(f"raw REPL failed: {e}", where=self.port) from None
        except (OSError, serial.SerialException) as e:
            raise FlashError(f"lost the board: {e}", where=self.port) from None
        if err:
            lines = err.decode(errors="replace").strip().splitlines()
            raise FlashError(f"board error: {lines[-1] if lines else '?'}", where=self.port)
        return bytes(out)

    def exec_json(self, code: str, *, timeout: float = 10.0) -> Any:
        out = self.exec(code, timeout=timeout)
        try:
            return json.loads(out)
        except ValueError:
            raise FlashError(f"unexpected answer from the board: {out[-200:]!r}", where=self.port) from None

    def write_file(self, path: str, data: bytes, progress: Callable[[int], None] | None = None) -> None:
        cb = (lambda done, _total: progress(done)) if progress is not None else None
        try:
            self.transport.fs_writefile(path, data, chunk_size=1024, progress_callback=cb)
        except TransportExecError as e:
            raise FlashError(f"writing {path} failed: {e.error_output.strip()}", where=self.port) from None
        except TransportError as e:
            raise BoardNotAnswering(
                f"writing {path}: the board stopped answering ({e}); did it reset or lose power?",
                where=self.port,
            ) from None
        except (OSError, serial.SerialException) as e:
            raise FlashError(f"lost the board while writing {path}: {e}", where=self.port) from None

    def reset(self) -> None:
        """Hard reset (machine.reset()): the board boots its application."""
        # the board may go away while we wait for "OK": that is the reset
        with contextlib.suppress(TransportError, OSError, serial.SerialException):
            self.transport.exec_raw_no_follow("import machine\nmachine.reset()")
        self.close()

    def bootloader(self) -> None:
        """machine.bootloader() from the raw REPL: the board leaves for its UF2 bootloader."""
        with contextlib.suppress(TransportError, OSError, serial.SerialException):
            self.transport.exec_raw_no_follow("import machine\nmachine.bootloader()")
        self.close()

    def wait_hello(self, timeout: float) -> dict[str, Any]:
        """Wait for the application's hello (saying hello every 0.5 s)."""
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            try:
                if self._s is None:
                    self.open()
                p = self.probe(timeout=min(1.0, max(0.1, deadline - time.monotonic())), interrupt=False)
            except FlashError:
                self.close()
                time.sleep(0.1)
                continue
            seen = (seen + p.seen)[-400:]
            if p.state == "app" and p.hello is not None:
                return p.hello
        raise BoardNotAnswering(
            f"the application did not say hello within {timeout:.0f} s after the reset (saw {seen[-200:]!r})",
            where=self.port,
        )


def _bounded_reads(read_until: Callable[..., bytes], *, prompt_read: bool) -> Callable[..., bytes]:
    """mpremote's reads time out only between characters: a board that rebooted and chats (hello
    frames every second) would keep a read for the raw REPL's prompt waiting forever. Every read
    gets an overall bound too. And when we already consumed the raw REPL's '>' prompt
    (`prompt_read`), the first read for it gets it back."""
    pending = [prompt_read]

    def wrapped(
        min_num_bytes: int,
        ending: bytes,
        timeout: float = 10,
        data_consumer: Callable[[bytes], None] | None = None,
        timeout_overall: float | None = None,
    ) -> bytes:
        if pending[0] and ending == b">":
            pending[0] = False
            return b">"
        if timeout_overall is not None:
            overall = timeout_overall
        else:  # the prompt follows at once; an exec's output may take its timeout
            overall = 10.0 if ending == b">" else max(20.0, 2 * (timeout or 10))
        return read_until(
            min_num_bytes, ending, timeout=timeout, data_consumer=data_consumer, timeout_overall=overall
        )

    return wrapped
