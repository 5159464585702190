"""`picogate service status` asks the running gateway (a real `picogate run`, with mosquitto) for
its health, through the configuration the installed unit names."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from _agent import AgentProcess, base_config
from _peers import MosquittoBroker, free_port

pytestmark = pytest.mark.integration


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picogate", "service", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_status_reports_the_running_gateways_health(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    port = free_port()
    cfg = base_config(
        tmp_path, mosquitto.port, [], metrics={"enabled": True, "host": "127.0.0.1", "port": port}
    )
    root = tmp_path / "root"
    # The service installed into a directory, its unit naming our configuration file.
    config = tmp_path / "agent" / "gateway.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "picogate",
            "service",
            "install",
            "--root",
            str(root),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # `--config` is where the unit reads it; in the installation that is root/<path>.
    installed = root / str(config).lstrip("/")
    assert installed.is_file()  # the default configuration, written since there was none
    installed.write_text(yaml.safe_dump(cfg))

    out = _status("--root", str(root))
    assert out.returncode == 3  # nothing answers yet
    assert f"health:     http://127.0.0.1:{port}/healthz: no answer" in out.stdout

    agent = AgentProcess(cfg, tmp_path / "agent").start()
    try:
        deadline = time.monotonic() + 30
        while True:
            out = _status("--root", str(root))
            if f"http://127.0.0.1:{port}/healthz: ok" in out.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert f"health:     http://127.0.0.1:{port}/healthz: ok" in out.stdout, out.stdout + agent.log()
        assert f"config:     {installed}: OK" in out.stdout
        assert out.returncode == 3  # healthy, but systemd does not run it here: not "running"
    finally:
        agent.stop()
