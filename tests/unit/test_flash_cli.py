"""`picogate flash` / `picogate boards` argument errors (no board needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from picogate.cli import main


@pytest.fixture(autouse=True)
def _no_boards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICOGATE_SYSFS", str(tmp_path / "sys"))
    monkeypatch.setenv("PICOGATE_DEVFS", str(tmp_path / "dev"))
    monkeypatch.setenv("PICOGATE_MOUNTS", str(tmp_path / "mounts"))


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--verify-only", "--rollback"], 2, "--verify-only and --rollback exclude each other"),
        (["--parallel", "0"], 2, "--parallel must be 1..32, got 0"),
        (["--name", "bad name!"], 2, "--name 'bad name!': names are a lower-case letter"),
        (["--gateway", "x/y"], 2, "--gateway 'x/y': names are"),
        (["--micropython", "nope.uf2"], 1, "nope.uf2: no such file"),
        (["--firmware", "/nonexistent"], 1, "/nonexistent: no firmware there"),
        (["--config", "/nonexistent/tray.yaml"], 1, "/nonexistent/tray.yaml: cannot read"),
        ([], 1, "no board found"),
        (["--all"], 1, "no board found"),
    ],
)
def test_flash_argument_errors(
    args: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flash", *args]) == status
    assert message in capsys.readouterr().err


def test_bad_tray_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tray = tmp_path / "tray.yaml"
    tray.write_text("parallel: many\n")
    assert main(["flash", "--all", "--config", str(tray)]) == 1
    assert "tray.yaml: parallel: Input should be a valid integer" in capsys.readouterr().err


def test_boards_with_nothing_connected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boards"]) == 0
    assert "no boards found" in capsys.readouterr().out
    assert main(["boards", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
