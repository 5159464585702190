"""No secret in any output of the real `picogate` command: `config check` (run by the systemd
unit's ExecStartPre, so it lands in journald) and `run`, text and JSON logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SECRET = "Tr0ub4dor-and-3"
NAME_LIKE_SECRET = "Tr0ub4dorAnd3Horses"  # could be a variable's name: only the run can tell


def picogate(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picogate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def write(tmp_path: Path, mqtt: str) -> Path:
    f = tmp_path / "gateway.yaml"
    f.write_text(
        f"gateway: {{data_dir: {tmp_path / 'data'}}}\n"
        "metrics: {enabled: false}\n"
        "clock: {check_sync: false}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: 1\n  username: picogate\n{mqtt}"
    )
    return f


@pytest.mark.parametrize("key", ["passwrd", "pasword", "pw", "mqtt_password"])
def test_misspelled_password_keys(key: str, tmp_path: Path) -> None:
    f = write(tmp_path, f"  {key}: {SECRET}\n")
    check = picogate("config", "check", str(f))
    assert SECRET not in check.stdout + check.stderr
    assert check.returncode == 1
    assert f"mqtt.{key}: unknown key '{key}': put the password in an environment variable" in check.stderr
    for fmt in ("text", "json"):
        run = picogate("--log-format", fmt, "--log-level", "debug", "run", "-c", str(f))
        assert run.returncode == 1
        for out in (check, run):
            assert SECRET not in out.stdout + out.stderr


def test_the_password_where_its_variables_name_belongs(tmp_path: Path) -> None:
    """`password_env: <the password>`: refused by config check when it cannot be a name; when it
    can, the run says the variable is not set without naming it."""
    f = write(tmp_path, f"  password_env: {SECRET}\n")
    check = picogate("config", "check", str(f))
    assert check.returncode == 1
    assert "must be the name of an environment variable" in check.stderr
    assert SECRET not in check.stdout + check.stderr

    f = write(tmp_path, f"  password_env: {NAME_LIKE_SECRET}\n")
    env = {k: v for k, v in os.environ.items() if k != NAME_LIKE_SECRET}
    assert picogate("config", "check", str(f), env=env).returncode == 0
    for fmt in ("text", "json"):
        run = picogate("--log-format", fmt, "run", "-c", str(f), env=env)
        assert run.returncode == 1
        assert "the environment variable it names is not set" in run.stderr
        assert NAME_LIKE_SECRET not in run.stdout + run.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_running_agent_never_logs_its_password(fmt: str, mosquitto: Any, tmp_path: Path) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text(
        f"gateway: {{data_dir: {tmp_path / 'data'}}}\n"
        "metrics: {enabled: false}\n"
        "clock: {check_sync: false}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, username: picogate, password_env: PG_TEST_PW}}\n"
    )
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "picogate",
                "--log-level",
                "debug",
                "--log-format",
                fmt,
                "run",
                "-c",
                str(f),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PG_TEST_PW": SECRET, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 20
        while "up:" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "up:" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert SECRET not in log.read_text()
