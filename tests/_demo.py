"""`picogate demo` as a test's peer: a real subprocess, its output read by threads, and the broker
it announces."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

BROKER_LINE = re.compile(r"^demo broker: mqtt://(?P<host>[\d.]+):(?P<port>\d+)$")


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    host: str = ""
    port: int = 0
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)


def _lines(stream: IO[str], into: queue.Queue[str], keep: list[str]) -> None:
    for line in stream:
        keep.append(line)
        into.put(line.rstrip("\n"))


@contextmanager
def running_demo(workdir: Path, duration: float) -> Iterator[Demo]:
    """Start `picogate demo --no-tui` and wait for its broker line.  An AssertionError inside
    stops the demo and is raised again with the demo's stderr; the demo never outlives the block."""
    argv = [sys.executable, "-m", "picogate", "demo", "--no-tui", "--duration", f"{duration:g}"]
    proc = subprocess.Popen(
        [*argv, "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    demo = Demo(proc)
    lines: queue.Queue[str] = queue.Queue()
    readers = [
        threading.Thread(target=_lines, args=(proc.stdout, lines, demo.out), daemon=True),
        threading.Thread(target=_lines, args=(proc.stderr, queue.Queue(), demo.err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 20
        match = None
        while match is None:
            try:
                match = BROKER_LINE.match(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no broker line from the demo; stderr:\n{''.join(demo.err)}")
        demo.host, demo.port = match["host"], int(match["port"])
        try:
            yield demo
        except AssertionError as exc:  # say what the demo logged
            proc.terminate()
            proc.wait(10)
            for reader in readers:
                reader.join(5)
            raise AssertionError(f"{exc}\n--- demo stderr ---\n{''.join(demo.err)[-6000:]}") from exc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for reader in readers:
            reader.join(5)
