"""The `picogate` command: clear errors for bad arguments and bad files, no tracebacks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from picogate.cli import main


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() installs its own log handler on the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in err
    assert "Traceback" not in err


def test_config_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text("devices:\n  - {name: b, type: modbus_tcp, host: h, points: [{name: t, ref: 40001}]}\n")
    assert main(["config", "check", str(f)]) == 0
    assert "OK (1 Modbus device; 1 point)" in capsys.readouterr().out


def test_config_check_reports_every_error_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text(
        "devices:\n"
        "  - name: Boiler\n"
        "    type: modbus_tcp\n"
        "    host: x\n"
        "    points:\n"
        "      - {name: t, table: holding, address: 70000}\n"
    )
    assert main(["config", "check", str(f)]) == 1
    err = capsys.readouterr().err
    assert "gateway.yaml:2:11: devices[0].name: must match" in err
    assert "gateway.yaml:6:44: devices[0].points[0].address: must be 0..65535" in err
    assert "2 errors" in err
    assert "Traceback" not in err


def test_config_check_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "/nonexistent/gateway.yaml"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_run_with_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text("mqtt: {port: 0}\n")
    assert main(["run", "-c", str(f)]) == 1
    assert "mqtt.port" in capsys.readouterr().err


def test_run_with_missing_password_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PG_TEST_PW", raising=False)
    f = tmp_path / "gateway.yaml"
    f.write_text(
        f"gateway: {{data_dir: {tmp_path}}}\nmetrics: {{enabled: false}}\n"
        "mqtt: {username: u, password_env: PG_TEST_PW}\n"
    )
    assert main(["run", "-c", str(f)]) == 1
    err = capsys.readouterr().err
    assert "cannot start" in err
    assert "mqtt.password_env: the environment variable it names is not set" in err
    assert "PG_TEST_PW" not in err  # the name may be the password itself, put in the wrong place


def test_run_logs_the_warnings_of_its_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    f = tmp_path / "gateway.yaml"
    f.write_text(
        f"gateway: {{data_dir: {blocker}/sub}}\nmetrics: {{enabled: false}}\n"
        "devices:\n  - {name: plc, type: modbus_tcp, host: 127.0.0.1, poll: 1000}\n"
    )
    assert main(["run", "-c", str(f)]) == 1  # it stops at the data_dir, after the warnings
    err = capsys.readouterr().err
    assert f"{f}:4:58: warning: devices[0].poll: 1000 without a unit is 1000 seconds" in err


def test_run_with_unwritable_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    f = tmp_path / "gateway.yaml"
    f.write_text(f"gateway: {{data_dir: {blocker}/sub}}\nmetrics: {{enabled: false}}\n")
    assert main(["run", "-c", str(f)]) == 1
    assert "cannot start" in capsys.readouterr().err


@pytest.mark.parametrize("width", [40, 60, 80, 100, 200])
def test_demo_commands_fit_the_terminal_and_paste_as_one(width: int) -> None:
    """A try-it command wider than the terminal is continued with ` \\` at its options, never
    wrapped in the middle: pasted into a shell, it is the same command."""
    import shlex

    from picogate.demo._view import _fit_command

    line = '  command:  mosquitto_pub -h 127.0.0.1 -p 54067 -t picogate/demo/cmd/pump/speed_setpoint/set -m \'{"v": 2500, "id": "try2"}\''
    text = _fit_command(line, width).plain
    assert shlex.split(text.replace("\\\n", "")) == shlex.split(line)
    if width >= 60:
        assert all(len(row) <= width for row in text.splitlines())
    if width >= len(line):
        assert text == line
