"""One agent per data directory: a second `picogate run` on the same data_dir refuses to start,
before it touches the broker; kill -9 of the first leaves no stale lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _agent import AgentProcess, base_config
from picogate._datadir import LOCK_FILE, DataDirInUse, DataDirLock


def _wait_up(agent: AgentProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while " up: " not in agent.log():
        assert agent.proc is not None
        assert agent.proc.poll() is None, agent.log()
        assert time.monotonic() < deadline, f"agent not up within {timeout} s:\n{agent.log()}"
        time.sleep(0.1)


def _connections(broker: Any, client_id: str) -> int:
    return broker.log_text().count(f" as {client_id} ")


def test_a_second_agent_on_the_same_data_dir_refuses_to_start(mosquitto: Any, tmp_path: Path) -> None:
    cfg = base_config(tmp_path, mosquitto.port, [])
    data_dir = Path(cfg["gateway"]["data_dir"])
    first = AgentProcess(cfg, tmp_path / "first").start()
    second = AgentProcess(cfg, tmp_path / "second")
    third = AgentProcess(cfg, tmp_path / "third")
    try:
        _wait_up(first)
        assert first.proc is not None
        # "up" comes before the MQTT session: wait (bounded) for the broker to log its connect
        deadline = time.monotonic() + 20
        while _connections(mosquitto, "picogate-gw1") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _connections(mosquitto, "picogate-gw1") == 1

        second.start()
        assert second.proc is not None
        assert second.proc.wait(30) != 0
        message = second.log()
        assert "cannot start" in message
        assert str(data_dir) in message
        assert f"PID {first.proc.pid}" in message
        assert "Stop the other agent first" in message
        assert "Traceback" not in message
        # It gave up before the broker: the first agent's session was never taken over.
        time.sleep(0.5)
        assert _connections(mosquitto, "picogate-gw1") == 1
        assert first.proc.poll() is None

        # kill -9 leaves no stale lock: the next start works at once.
        first.kill9()
        third.start()
        _wait_up(third)
        assert third.terminate() == 0
    finally:
        for agent in (first, second, third):
            agent.stop()


def test_the_lock_is_per_directory_and_released_on_exit(tmp_path: Path) -> None:
    a = DataDirLock(tmp_path / "a")
    a.acquire()
    try:
        with pytest.raises(DataDirInUse) as exc:
            DataDirLock(tmp_path / "a").acquire()
        assert exc.value.directory == tmp_path / "a"
        assert exc.value.pid == os.getpid()
        b = DataDirLock(tmp_path / "b")  # another directory: no conflict
        b.acquire()
        b.release()
    finally:
        a.release()
    again = DataDirLock(tmp_path / "a")
    again.acquire()
    again.release()
    assert (tmp_path / "a" / LOCK_FILE).exists()


def test_a_lock_held_by_a_killed_process_is_free(tmp_path: Path) -> None:
    code = (
        "import sys, time; from picogate._datadir import DataDirLock; "
        f"DataDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        lock = DataDirLock(tmp_path)
        with pytest.raises(DataDirInUse) as exc:
            lock.acquire()
        assert exc.value.pid == holder.pid
        holder.kill()
        holder.wait(10)
        lock.acquire()
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
