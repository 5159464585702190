"""A full disk under the outbox: the agent keeps running and polling, says "disk full" with the
path and the free space (log, status topic, metrics), keeps what it had committed, holds what it
polls meanwhile in memory, and goes on by itself once space is freed.

The disk is a real one: a small tmpfs mounted for the test (root only; skipped elsewhere), filled
with a file while the broker is down, so that the outbox has to grow and cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_outage import GatedCounter, has_value, meter, received, subscriber

from _agent import AgentProcess, base_config, eventually, wait_msgs
from _peers import free_port


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last block with one file; return it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in (65536, 4096, 512):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
    finally:
        os.close(fd)
    return filler


def failing_status(messages: list[Any]) -> list[str]:
    """The outbox's `failing` in each status message since the outage began (online ones)."""
    out = []
    for m in messages:
        if m.topic == "picogate/gw1/status":
            body = m.json()
            if body.get("state") == "online" and "outbox" in body:
                out.append(body["outbox"].get("failing", ""))
    return [f for i, f in enumerate(out) if f or any(out[:i])]


def metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_disk_full_keeps_the_agent_running_and_recovers_by_itself(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    broker = make_mosquitto(persistence=True)
    dev = await modbus_tcp_server({1: None})
    counter = GatedCounter(dev, width=40, period=0.05)
    metrics_port = free_port()
    with small_disk(tmp_path / "disk") as disk:
        cfg = base_config(
            tmp_path,
            broker.port,
            [meter(dev.port, points=[{"name": "n", "table": "holding", "address": 0}])],
            outbox={"path": str(disk / "outbox.sqlite"), "synchronous": "full"},
            metrics={"enabled": True, "port": metrics_port},
        )
        # 40 registers change together: a payload big enough to fill the disk soon
        cfg["devices"][0]["points"] += [
            {"name": f"r{i}", "table": "holding", "address": i} for i in range(1, 40)
        ]
        agent = AgentProcess(cfg, tmp_path / "agent")
        try:
            with subscriber(broker, "disk-sub") as rec:
                agent.start()
                await has_value(rec, 0, 20)
                async with counter.counting():
                    await eventually(lambda: counter.value >= 5, 15, "values flowing")
                    await asyncio.to_thread(broker.stop)  # the outbox must now grow
                    filler = await asyncio.to_thread(fill, disk)
                    await eventually(lambda: "disk full" in agent.log(), 30, "the agent saying 'disk full'")
                    at_full = counter.value
                    await eventually(lambda: counter.value >= at_full + 10, 20, "polling goes on")
                    assert agent.proc is not None
                    assert agent.proc.poll() is None, agent.log()[-3000:]
                    assert metric(metrics_port, "picogate_outbox_failing") == 1.0
                    log = agent.log()
                    assert str(disk) in log
                    assert "MB free" in log
                    assert "no transaction is active" not in log
                    # the broker is back first: the status topic says what is wrong
                    await asyncio.to_thread(broker.start)
                    await wait_msgs(rec, lambda ms: failing_status(ms) != [], 20, "status: disk full")
                    filler.unlink()  # space is back
                    await eventually(lambda: "commits work again" in agent.log(), 30, "the agent recovering")
                    assert metric(metrics_port, "picogate_outbox_failing") == 0.0
                    await wait_msgs(
                        rec, lambda ms: failing_status(ms)[-1:] == [""], 20, "status: commits work"
                    )
                    at_free = counter.value
                    await eventually(lambda: counter.value >= at_free + 5, 20, "values after")
                last = counter.value
                await has_value(rec, last, 30)
                got = set(received(rec))
        finally:
            agent.stop()
    assert agent.proc is not None
    assert agent.proc.returncode in (-9, 0), agent.log()[-3000:]
    # Nothing was lost: what was committed before, what was held in memory during the outage of
    # the disk (well below outbox.max_pending_mb), and what came after.
    missing = sorted(set(range(last + 1)) - got)
    assert not missing, f"missing {len(missing)} values: {missing[:20]}"
    assert "Traceback" not in agent.log()
