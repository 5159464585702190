"""The Sparkplug test host (tests/integration/spb_host.py, in `.venv-spb`: pysparkplug's codec and
paho-mqtt 1.6, nothing of ours) driven from a test: JSON lines in and out."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPB_PYTHON = ROOT / ".venv-spb" / "bin" / "python"
HOST_SCRIPT = ROOT / "tests" / "integration" / "spb_host.py"


def spb_python() -> Path:
    """The test host's interpreter, or skip (one line) when tools/bootstrap.sh could not make it."""
    if not SPB_PYTHON.exists():
        pytest.skip(".venv-spb missing (tools/bootstrap.sh builds it: pysparkplug, paho-mqtt 1.6)")
    probe = subprocess.run(
        [str(SPB_PYTHON), "-c", "import pysparkplug, paho.mqtt"], capture_output=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(".venv-spb cannot import pysparkplug/paho-mqtt: run tools/bootstrap.sh")
    return SPB_PYTHON


class SpbHost:
    """A primary host on a broker; records every message on `spBv1.0/<group>/#` as decoded by
    pysparkplug's schema (see spb_host.py for the fields)."""

    def __init__(self, port: int, group: str, host_id: str = "scada") -> None:
        self.group, self.host_id = group, host_id
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._acks: list[str] = []
        self.proc = subprocess.Popen(
            [str(spb_python()), str(HOST_SCRIPT), "127.0.0.1", str(port), group, host_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            obj = json.loads(line)
            with self._cond:
                if "ack" in obj:
                    self._acks.append(obj["ack"])
                else:
                    self.messages.append(obj)
                self._cond.notify_all()

    def cmd(self, cmd: str, timeout: float = 15.0, **kw: Any) -> None:
        assert self.proc.stdin is not None
        with self._cond:
            before = len(self._acks)
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._acks) <= before:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
                    raise AssertionError(f"test host did not do {cmd!r}: {err[-2000:]}")
                self._cond.wait(min(left, 0.5))

    def wait_for(
        self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0, what: str = ""
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [
                        (m.get("verb"), m.get("device"), m.get("seq"), m.get("error"))
                        for m in self.messages[-30:]
                    ]
                    raise AssertionError(f"timed out waiting for {what or pred}; last seen: {seen}")
                self._cond.wait(min(left, 0.5))
            return list(self.messages)

    def node_messages(self, node: str) -> list[dict[str, Any]]:
        with self._cond:
            return [m for m in self.messages if m.get("node") == node]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(AssertionError):
                self.cmd("quit", timeout=5)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def metric(msg: dict[str, Any], name: str) -> dict[str, Any]:
    found = [m for m in msg["metrics"] if m["name"] == name]
    assert found, (
        f"no metric {name} in {msg['verb']} {msg.get('device')}: {[m['name'] for m in msg['metrics']]}"
    )
    return found[-1]


def check_seq(msgs: list[dict[str, Any]]) -> None:
    """seq: 0 at each NBIRTH, then +1 (mod 256) over every message of the node but NDEATH."""
    prev: int | None = None
    for m in msgs:
        if m.get("verb") in ("NCMD", "DCMD", None):  # the host's own, and STATE
            continue
        if m.get("verb") == "NDEATH":
            assert m["seq"] is None, m
            prev = None
            continue
        if m.get("verb") == "NBIRTH":
            assert m["seq"] == 0, m
        else:
            assert prev is not None, f"{m['verb']} before any NBIRTH"
            assert m["seq"] == (prev + 1) % 256, (prev, m["verb"], m["seq"])
        prev = m["seq"]
