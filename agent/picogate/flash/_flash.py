"""Flashing one board: get in, build, upload what changed, commit, identity, reset, verify."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from picogate.flash import _deploy
from picogate.flash._board import BoardConn
from picogate.flash._build import Firmware, build_firmware
from picogate.flash._errors import FlashError

__all__ = ["Builder", "FlashOptions", "FlashResult", "Progress", "flash_board"]

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage text, and bytes done of total (0, 0 when not counting)."""


class Builder:
    """Builds the firmware once per .mpy version, shared by the boards of a factory run."""

    def __init__(self, *, source: Path | None = None, cache: Path | None = None) -> None:
        self.source = source
        self.cache = cache
        self._lock = threading.Lock()
        self._built: dict[int, Firmware] = {}

    def __call__(self, mpy: int) -> Firmware:
        with self._lock:
            fw = self._built.get(mpy & 0xFF)
            if fw is None:
                fw = build_firmware(mpy, source=self.source, cache=self.cache)
                self._built[mpy & 0xFF] = fw
            return fw


@dataclass
class FlashOptions:
    name: str | None = None
    gateway: str | None = None
    verify_only: bool = False
    rollback: bool = False
    boot_wait: float = 20.0  # the Ctrl-C fallback: how long to wait for the operator's reset
    hello_timeout: float = 30.0
    builder: Builder = field(default_factory=Builder)


@dataclass
class FlashResult:
    port: str
    result: str = "failed"  # "flashed", "up-to-date", "verified", "mismatch", "rolled-back", "failed"
    uid: str | None = None
    board: str | None = None
    micropython: str | None = None
    hash: str | None = None
    version: str | None = None
    name: str | None = None
    uploaded: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    copied: int = 0
    entered_by: str = ""
    error: str | None = None
    duration: float = 0.0
    upload_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result in ("flashed", "up-to-date", "verified", "rolled-back")

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _mpy_from_hello(hello: dict[str, Any]) -> int:
    text = str(hello.get("mpy", "6"))
    major, _, sub = text.partition(".")
    try:
        return int(major) | (int(sub or 0) << 8)
    except ValueError:
        return 6


def _get_in(conn: BoardConn, result: FlashResult, opts: FlashOptions, progress: Progress) -> None:
    """From whatever the board does to its raw REPL, with no application running."""
    progress("connecting", 0, 0)
    probe = conn.probe()
    if probe.hello is None and probe.state in ("repl", "boot"):
        try:
            conn.enter_raw(attempts=2)
            result.entered_by = "REPL" if probe.state == "repl" else "Ctrl-C in the boot window"
            return
        except FlashError:
            # what looked like a REPL was old output: is the application running after all?
            probe = conn.probe(timeout=3.0, interrupt=False)
            if probe.hello is None:
                raise
    if probe.hello is not None:
        _via_link(conn, result, opts, progress, probe.hello)
        return
    try:
        conn.enter_raw(attempts=1)  # a REPL that stays quiet (left in raw mode by someone)
        result.entered_by = "raw REPL"
        return
    except FlashError:
        pass
    conn.interrupt_boot(opts.boot_wait, on_wait=lambda msg: progress(msg, 0, 0))
    result.entered_by = "Ctrl-C in the boot window"
    conn.enter_raw()


def _via_link(
    conn: BoardConn, result: FlashResult, opts: FlashOptions, progress: Progress, hello: dict[str, Any]
) -> None:
    """The application runs: the link's `maint` (reset into maintenance mode, no watchdog, no I/O);
    an application that does not take it is reset and caught in its boot window."""
    result.uid = hello.get("uid")
    progress("maintenance mode", 0, 0)
    ack = conn.request("maint")
    if ack is not None and ack.get("ok"):
        result.entered_by = "link maint"
        conn.wait_reboot()
        conn.enter_raw()
        return
    conn.request("reset", tries=2)
    conn.close()
    conn.interrupt_boot(opts.boot_wait)
    result.entered_by = "reset + Ctrl-C in the boot window"
    conn.enter_raw()


def _identity(opts: FlashOptions, info: dict[str, Any]) -> str | None:
    """The pg_id.json text to write, or None to leave it."""
    if opts.name is None and opts.gateway is None:
        return None
    try:
        current = json.loads(info.get("id") or "{}")
    except ValueError:
        current = {}
    if not isinstance(current, dict):
        current = {}
    doc = dict(current)
    if opts.name is not None:
        doc["name"] = opts.name
    if opts.gateway is not None:
        doc["gateway"] = opts.gateway
    if doc == current:
        return None
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def flash_board(
    port: str,
    opts: FlashOptions,
    *,
    progress: Progress | None = None,
    conn_factory: Callable[[str], BoardConn] = BoardConn,
) -> FlashResult:
    """Flash (or verify, or roll back) the board at `port`. Never raises: the result says."""
    prog: Progress = progress or (lambda _s, _d, _t: None)
    result = FlashResult(port=port, name=opts.name)
    t0 = time.monotonic()
    conn = conn_factory(port)
    try:
        conn.open()
        if opts.verify_only:
            _verify_only(conn, result, opts, prog)
        else:
            _flash(conn, result, opts, prog)
    except FlashError as e:
        result.result = "failed"
        result.error = str(e)
        if conn.in_raw:  # we stopped its application: let it run again (best effort)
            with contextlib.suppress(FlashError):
                conn.reset()
    finally:
        conn.close()
        result.duration = round(time.monotonic() - t0, 3)
    prog(result.result, 1, 1)
    return result


def _verify_only(conn: BoardConn, result: FlashResult, opts: FlashOptions, prog: Progress) -> None:
    """Compare without writing: the hash in the application's hello, or, for a board at its REPL
    (maintenance or safe mode), its manifest and the files' hashes. A running or booting board is
    never interrupted."""
    prog("connecting", 0, 0)
    probe = conn.probe(timeout=3.0, interrupt=False)
    if probe.hello is None and b"picogate: starting" in probe.seen:
        probe = conn.probe(timeout=5.0, interrupt=False)  # it was booting: its hello follows
    if probe.hello is not None:
        hello = probe.hello
        result.uid = hello.get("uid")
        result.board = hello.get("board")
        result.micropython = hello.get("mp")
        result.version = hello.get("fw")
        fw = opts.builder(_mpy_from_hello(hello))
        result.hash = hello.get("hash")
        if hello.get("hash") == fw.hash:
            result.result = "verified"
        else:
            result.result = "mismatch"
            result.error = f"the board runs firmware {hello.get('hash')}, this picogate builds {fw.hash}"
        return
    if not any(sign in probe.seen for sign in (b">>> ", b"raw REPL", b"MicroPython v")):
        raise FlashError(
            "neither the application's hello nor a REPL: nothing to verify against "
            f"(saw {probe.seen[-120:]!r})",
            where=conn.port,
        )
    conn.enter_raw(attempts=2)
    info = conn.exec_json(_deploy.INFO, timeout=30)
    with contextlib.suppress(FlashError, OSError):
        conn.ser.write(b"\r\x02")  # back to the friendly REPL, as it was
    conn.in_raw = False  # nothing to undo: the board was at its REPL already
    result.uid = info.get("uid")
    result.board = _deploy.board_name(info)
    result.micropython = info.get("mp")
    fw = opts.builder(int(info.get("mpy") or 0))
    result.hash = _deploy.manifest_hash(info)
    plan = _deploy.make_plan(fw, info)
    if plan.up_to_date:
        result.result = "verified"
        result.error = "the files are right, but the board is at its REPL, not running the application"
    else:
        differ = sorted(
            p
            for p in set(fw.hashes) | set(info.get("live") or {})
            if (info.get("live") or {}).get(p) != fw.hashes.get(p)
        )
        result.result = "mismatch"
        result.error = (
            f"the board (at its REPL) has firmware {result.hash or 'none'}, this picogate builds {fw.hash}; "
            f"files that differ: {', '.join(differ) or 'none (manifest only)'}"
        )


def _flash(conn: BoardConn, result: FlashResult, opts: FlashOptions, prog: Progress) -> None:
    _get_in(conn, result, opts, prog)
    prog("reading the board", 0, 0)
    info = conn.exec_json(_deploy.INFO, timeout=30)
    result.uid = info.get("uid") or result.uid
    result.board = _deploy.board_name(info)
    result.micropython = info.get("mp")
    if not info.get("hashlib"):
        raise FlashError(
            "the board's MicroPython has no hashlib.sha256; flash a current MicroPython", where=conn.port
        )
    if opts.rollback:
        prog("rolling back", 0, 0)
        conn.exec(_deploy.rollback_script())
        result.result = "rolled-back"
        expect = _deploy.manifest_hash({"manifest": info.get("old")}) or "dev"
    else:
        prog("building", 0, 0)
        fw = opts.builder(int(info.get("mpy") or 0))
        result.version = fw.version
        expect = fw.hash
        plan = _deploy.make_plan(fw, info)
        if plan.up_to_date:
            result.result = "up-to-date"
            if plan.clean_staging:
                conn.exec(_deploy.clean_staging_script())
        else:
            _apply(conn, fw, plan, result, prog)
            result.result = "flashed"
    id_text = _identity(opts, info)
    if result.name is None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            result.name = json.loads(id_text or info.get("id") or "{}").get("name")
    if id_text is not None:
        conn.exec(_deploy.write_text_script("pg_id.json", id_text))
    prog("resetting", 0, 0)
    conn.reset()
    conn.wait_gone()
    prog("verifying", 0, 0)
    hello = conn.wait_hello(opts.hello_timeout)
    result.hash = hello.get("hash")
    result.version = hello.get("fw") or result.version
    if expect is not None and hello.get("hash") != expect:
        raise FlashError(
            f"verification failed: after the reset the board reports firmware {hello.get('hash')}, "
            f"expected {expect}",
            where=conn.port,
        )
    if result.uid and hello.get("uid") and hello.get("uid") != result.uid:
        raise FlashError(f"another board answered after the reset (uid {hello.get('uid')})", where=conn.port)


def _apply(conn: BoardConn, fw: Firmware, plan: _deploy.Plan, result: FlashResult, prog: Progress) -> None:
    prog("staging", 0, 0)
    conn.exec(_deploy.stage_script(plan), timeout=30)
    total = sum(len(fw.files[p]) for p in plan.upload) + len(fw.manifest())
    done = 0
    t0 = time.monotonic()
    for path in plan.upload:
        data = fw.files[path]
        base = done
        stage = f"uploading {path}"
        prog(stage, done, total)

        def on_chunk(n: int, base: int = base, stage: str = stage) -> None:
            prog(stage, base + n, total)

        conn.write_file(f"{_deploy.NEW}/{path}", data, on_chunk)
        done += len(data)
        result.uploaded.append(path)
    conn.write_file(f"{_deploy.NEW}/pg_fw.json", fw.manifest())
    done += len(fw.manifest())
    result.upload_seconds = round(time.monotonic() - t0, 3)
    result.uploaded_bytes = done
    result.copied = len(plan.copy)
    prog("committing", done, total)
    out = conn.exec(_deploy.commit_script(), timeout=30)
    if b"committed" not in out:
        raise FlashError(f"commit did not complete: {out[-200:]!r}", where=conn.port)
