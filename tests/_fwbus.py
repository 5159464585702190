"""Host side of the firmware Modbus master tests and benchmark.

* ``run_master(tty, cfg, ...)`` runs ``picogate_fw.mb_master`` on the MicroPython unix port
  (tests/firmware/mp/mb_harness.py) against a host tty and returns what it reported.
* ``RtuRelay`` sits between two ttys (the master's side of one socat pty pair and the client end
  of the pymodbus server's pair) and copies bytes both ways, corrupting, dropping or adding bytes
  on demand: a noisy RS-485 line under test control.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import termios
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
HARNESS = REPO / "tests/firmware/mp/mb_harness.py"


def micropython() -> str:
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if found is None:
        raise RuntimeError("the MicroPython unix port (`micropython`) is not installed")
    return found


@dataclass
class MasterRun:
    results: list[dict[str, Any]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)
    de: list[int] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    output: str = ""

    def of(self, req: int) -> list[dict[str, Any]]:
        return [r for r in self.results if r["req"] == req]

    def statuses(self, req: int) -> list[str]:
        return [r["st"] for r in self.of(req)]


def _write_spec(workdir: Path, spec: dict[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "mb_spec.json"
    path.write_text(json.dumps(spec))
    return path


async def run_master(
    tty_path: str,
    cfg: dict[str, Any],
    workdir: Path,
    *,
    ms: int = 1000,
    max_tx: int = 0,
    writes: Sequence[dict[str, Any]] = (),
    read_now: Sequence[dict[str, Any]] = (),
    quiet: bool = False,
    heapsize: str = "220wK",
    timeout: float = 60.0,
) -> MasterRun:
    """Run the master for ``ms`` milliseconds (or ``max_tx`` transactions) on MicroPython."""
    spec = _write_spec(
        workdir,
        {
            "tty": tty_path,
            "cfg": cfg,
            "ms": ms,
            "max_tx": max_tx,
            "writes": list(writes),
            "read_now": list(read_now),
            "quiet": quiet,
        },
    )
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}:.frozen")
    proc = await asyncio.create_subprocess_exec(
        micropython(),
        "-X",
        f"heapsize={heapsize}",
        str(HARNESS),
        str(spec),
        cwd=workdir,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    run = MasterRun(output=text)
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if "req" in item:
            run.results.append(item)
        elif "w" in item:
            run.writes.append(item)
        elif "de" in item:
            run.de = item["de"]
        elif "stats" in item:
            run.stats = item["stats"]
    if proc.returncode != 0 or not run.stats:
        raise AssertionError(f"the master on MicroPython failed (exit {proc.returncode}):\n{text}")
    return run


def _open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


Mangle = Callable[[bytes], bytes]


class RtuRelay:
    """Copies bytes between ``master_side`` and ``slave_side`` (two host ttys).

    ``reply_filter(chunk) -> bytes`` rewrites what the slaves send back (per read chunk: pymodbus
    writes each reply at once, so a chunk is a reply); ``flip_replies(unit, count)`` flips one
    bit in the CRC-covered body of the next ``count`` replies from ``unit`` (-1: every one).
    ``inject(data)`` puts bytes on the line towards the master (noise, a late reply).
    """

    def __init__(self, master_side: str, slave_side: str) -> None:
        self.master_side = master_side
        self.slave_side = slave_side
        self._fds: tuple[int, int] | None = None
        self.flips: dict[int, int] = {}
        self.flipped = 0
        self.requests = 0
        self.replies = 0

    def flip_replies(self, unit: int, count: int = -1) -> None:
        self.flips[unit] = count

    def _mangle(self, chunk: bytes) -> bytes:
        left = self.flips.get(chunk[0], 0) if chunk else 0
        if not left or len(chunk) < 4:
            return chunk
        self.flips[chunk[0]] = left - 1 if left > 0 else -1
        self.flipped += 1
        data = bytearray(chunk)
        data[2] ^= 0x04  # byte count or exception code: the CRC no longer matches
        return bytes(data)

    def start(self) -> RtuRelay:
        loop = asyncio.get_running_loop()
        m = _open_raw(self.master_side)
        s = _open_raw(self.slave_side)
        self._fds = (m, s)
        loop.add_reader(m, self._copy, m, s, False)
        loop.add_reader(s, self._copy, s, m, True)
        return self

    def _copy(self, src: int, dst: int, reply: bool) -> None:
        try:
            chunk = os.read(src, 4096)
        except (BlockingIOError, OSError):
            return
        if reply:
            self.replies += 1
            chunk = self._mangle(chunk)
        else:
            self.requests += 1
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, chunk)

    def inject(self, data: bytes) -> None:
        assert self._fds is not None
        os.write(self._fds[0], data)

    def stop(self) -> None:
        if self._fds is None:
            return
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            loop.remove_reader(fd)
            os.close(fd)
        self._fds = None
