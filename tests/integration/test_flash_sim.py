"""`picogate flash` and `picogate boards` against simulated boards (picogate.simboard: the real
firmware on MicroPython's unix port behind a pty), through the real upload path (raw REPL,
mpremote's transport), the link's hello and maint."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _flash import FakeTree, picogate, start_board
from picogate.flash._build import build_firmware
from picogate.flash._flash import Builder, FlashOptions, flash_board
from picogate.simboard import SimBoard

pytestmark = pytest.mark.integration


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(c))
    monkeypatch.setenv("PICOGATE_SYSFS", str(tmp_path / "no-sys"))
    return c


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SimBoard]:
    b = start_board(tmp_path / "board")
    try:
        yield b
    finally:
        b.stop()


def _hello_hash(port: str) -> str | None:
    from picogate.flash._board import BoardConn

    with BoardConn(port) as c:
        c.open(wait=5)
        return c.wait_hello(15).get("hash")


def _old_firmware(tmp_path: Path) -> Path:
    """The shipped firmware with another version number: another hash (a board's last version)."""
    from picogate._paths import data_dir

    src = tmp_path / "old-fw"
    shutil.copytree(data_dir("firmware"), src, ignore=shutil.ignore_patterns("__pycache__", "sim"))
    init = src / "picogate_fw" / "__init__.py"
    init.write_text(init.read_text().replace('VERSION = "', 'VERSION = "0.0.9-old-'))
    for module in (src / "picogate_fw").glob("*.py"):  # every compiled file differs
        module.write_text(module.read_text() + "\n_OLD_BUILD = 1\n")
    return src


def test_flash_clean_board_then_unchanged_uploads_nothing(board: SimBoard, cache: Path) -> None:
    r = picogate("flash", "--port", board.port, "--name", "press1", "--gateway", "line1", "--json")
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(r.stdout)
    fw = build_firmware(2822, cache=cache / "picogate" / "mpy")
    assert res["result"] == "flashed"
    assert res["hash"] == fw.hash
    assert res["entered_by"] == "link maint"
    assert res["uid"] == "E6614103E7000001"
    assert res["board"] == "pico"
    d = board.directory
    # the package is .mpy only (the source install's .py files are gone with the old version)
    assert sorted(p.name for p in (d / "picogate_fw").iterdir()) == sorted(
        Path(p).name for p in fw.files if p.startswith("picogate_fw/")
    )
    manifest = json.loads((d / "pg_fw.json").read_text())
    assert manifest["hash"] == fw.hash
    assert manifest["files"] == fw.hashes
    assert json.loads((d / "pg_id.json").read_text()) == {"name": "press1", "gateway": "line1"}
    assert (d / "pg_old" / "picogate_fw" / "app.py").exists()  # the previous version, for rollback
    assert not (d / "pg_new").exists()
    assert _hello_hash(board.port) == fw.hash

    r2 = picogate("flash", "--port", board.port, "--json")
    assert r2.returncode == 0, r2.stderr
    (res2,) = json.loads(r2.stdout)
    assert res2["result"] == "up-to-date"
    assert res2["uploaded"] == []
    assert res2["uploaded_bytes"] == 0
    assert res2["hash"] == fw.hash
    assert json.loads((d / "pg_id.json").read_text())["name"] == "press1"  # identity kept

    r3 = picogate("flash", "--port", board.port, "--verify-only", "--json")
    assert r3.returncode == 0
    assert json.loads(r3.stdout)[0]["result"] == "verified"

    rows = json.loads(picogate("boards", "--port", board.port, "--json").stdout)
    assert rows[0]["mode"] == "app"
    assert rows[0]["hash"] == fw.hash
    assert rows[0]["serial"] == "E6614103E7000001"

    # a board at its REPL (maintenance mode) is checked file by file, and left at its REPL
    (d / "pg_maint").write_text("1")
    pos = board.output_pos()
    board.kill()
    board.wait_for_output(b"picogate: maintenance mode", since=pos, timeout=10)
    (row,) = json.loads(picogate("boards", "--port", board.port, "--json").stdout)
    assert (row["mode"], row["hash"], row["firmware"], row["board"]) == ("repl", fw.hash, fw.version, "pico")
    r4 = picogate("flash", "--port", board.port, "--verify-only", "--json")
    assert r4.returncode == 0, r4.stdout + r4.stderr
    (res4,) = json.loads(r4.stdout)
    assert res4["result"] == "verified"
    assert "at its REPL" in res4["error"]
    with (d / "picogate_fw" / "app.mpy").open("ab") as f:
        f.write(b"\0")  # a damaged file
    r5 = picogate("flash", "--port", board.port, "--verify-only", "--json")
    assert r5.returncode == 1
    (res5,) = json.loads(r5.stdout)
    assert res5["result"] == "mismatch"
    assert "files that differ: picogate_fw/app.mpy" in res5["error"]
    assert board.mode == "repl"


def _flash_killed_midway(port: str, staged: Path, *, at_least: int) -> None:
    """Run `picogate flash` and SIGKILL it once `at_least` files are in pg_new/ (cable pulled)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "picogate", "flash", "--port", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if staged.is_dir() and len(list(staged.iterdir())) >= at_least:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the flash finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)


def test_interrupted_upload_keeps_the_last_good_firmware_and_a_reflash_recovers(
    board: SimBoard, tmp_path: Path, cache: Path
) -> None:
    old = _old_firmware(tmp_path)
    r = picogate("flash", "--port", board.port, "--firmware", str(old), "--json")
    assert r.returncode == 0, r.stderr
    old_hash = json.loads(r.stdout)[0]["hash"]
    new_hash = build_firmware(2822, cache=cache / "picogate" / "mpy").hash
    assert old_hash != new_hash

    staged = board.directory / "pg_new" / "picogate_fw"
    _flash_killed_midway(board.port, staged, at_least=2)
    assert (board.directory / "pg_new").is_dir()
    assert json.loads((board.directory / "pg_fw.json").read_text())["hash"] == old_hash
    pos = board.output_pos()
    board.kill()  # power cycle: the board boots its last good firmware
    assert _hello_hash(board.port) == old_hash
    assert b"boot interrupted" not in board.output(pos)

    # killed again, and flashed again at once (the board sits in its raw REPL, maybe mid-paste)
    before = len(list(staged.iterdir()))
    assert before < 6
    _flash_killed_midway(board.port, staged, at_least=before + 2)
    r2 = picogate("flash", "--port", board.port, "--json")
    assert r2.returncode == 0, r2.stderr
    (res,) = json.loads(r2.stdout)
    assert res["result"] == "flashed"
    assert res["entered_by"] in ("REPL", "raw REPL")
    assert res["hash"] == new_hash
    n_files = len([p for p in build_firmware(2822, cache=cache / "picogate" / "mpy").files if p != "main.py"])
    assert len(res["uploaded"]) < n_files  # what had arrived before the kill was kept
    assert not (board.directory / "pg_new").exists()

    # and back: the previous version is on the board
    r3 = picogate("flash", "--port", board.port, "--rollback", "--json")
    assert r3.returncode == 0, r3.stderr
    assert json.loads(r3.stdout)[0]["hash"] == old_hash


def test_board_that_ignores_the_link_is_caught_in_its_boot_window(tmp_path: Path, cache: Path) -> None:
    d = tmp_path / "deaf"
    b = start_board(d)
    # an application that never answers (and has Ctrl-C off, as the real one)
    (d / "picogate_fw" / "app.py").write_text(
        "import time\ndef run(wdt, boots, crash):\n    while True:\n        time.sleep(1)\n"
    )
    b.kill()
    try:
        b.wait_for_output(b"picogate: starting", timeout=10)
        time.sleep(1.0)  # past its boot window: the application runs
        asked: list[str] = []

        def progress(stage: str, done: int, total: int) -> None:
            if "reset it" in stage and not asked:
                asked.append(stage)
                threading.Timer(0.5, b.kill).start()  # the operator presses RESET

        res = flash_board(b.port, FlashOptions(boot_wait=20, builder=Builder(cache=cache)), progress=progress)
        assert asked, "the operator was not asked to reset the board"
        assert res.ok, res.error
        assert res.entered_by == "Ctrl-C in the boot window"
        assert res.hash == build_firmware(2822, cache=cache).hash
    finally:
        b.stop()


def test_factory_three_boards_in_parallel_with_log(tmp_path: Path, cache: Path) -> None:
    tree = FakeTree(tmp_path / "tree")
    boards = [start_board(tmp_path / f"b{i}", uid=f"E66141040396312{i}") for i in range(3)]
    # a fourth port where nothing answers (a pty whose other end nobody reads): it fails, the others do not
    silent_master, silent_slave = pty.openpty()
    silent_name = os.ttyname(silent_slave)
    os.close(silent_slave)
    try:
        for i, b in enumerate(boards):
            tree.add_tty(f"ttyACM{i}", b.port, serial=b.uid)
        tree.add_tty("ttyACM9", silent_name, serial="E661410403963999")
        tray = tmp_path / "tray.yaml"
        tray.write_text(
            "gateway: line1\nparallel: 4\nlog: factory.jsonl\nname: 'io_{serial_short}'\n"
            "boards:\n  E661410403963120: press\n  E661410403963130: oven\n"  # the oven's board is not here
        )
        rows = json.loads(picogate("boards", "--json", env=tree.env()).stdout)
        assert sorted(r["serial"] for r in rows) == [
            "E661410403963120",
            "E661410403963121",
            "E661410403963122",
            "E661410403963999",
        ]
        assert {r["vid_pid"] for r in rows} == {"2E8A:0005"}
        r = picogate("flash", "--all", "--config", str(tray), "--boot-wait", "1", env=tree.env())
        assert r.returncode == 1, r.stdout + r.stderr  # one board failed
        assert "3 of 4 boards ok, 1 failed" in r.stdout
        assert (
            f"picogate: warning: {tray}: boards: E661410403963130 (oven) is none of the 4 board(s) found, "
            "so this name is not given (`picogate boards` lists them)"
        ) in r.stderr
        log = [json.loads(line) for line in (tmp_path / "factory.jsonl").read_text().splitlines()]
        assert len(log) == 4
        by_uid = {rec["uid"]: rec for rec in log}
        for b in boards:
            rec = by_uid[b.uid]
            assert rec["result"] == "flashed"
            assert rec["ok"]
            assert rec["config"] == "tray"
            assert rec["board"] == "pico"
            assert rec["micropython"] == "1.29.0"
            assert len(rec["hash"]) == 12
            assert rec["duration"] > 0
        names = {b.uid: json.loads((b.directory / "pg_id.json").read_text()) for b in boards}
        assert names["E661410403963120"] == {"name": "press", "gateway": "line1"}
        assert names["E661410403963121"]["name"] == "io_963121"
        bad = by_uid["E661410403963999"]
        assert not bad["ok"]
        assert "no answer" in bad["error"]
    finally:
        os.close(silent_master)
        for b in boards:
            b.stop()


def test_power_lost_mid_upload_then_a_reflash_recovers(board: SimBoard, cache: Path) -> None:
    """The board loses power in the middle of the upload (bus-powered, cable pulled): the flash fails
    with a clear error, the board boots what it had, and the next flash completes."""
    killed: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("uploading") and total and done > total // 3 and not killed:
            killed.append(done)
            board.unplug(power_off=True)
            threading.Timer(0.5, board.replug).start()

    res = flash_board(board.port, FlashOptions(builder=Builder(cache=cache)), progress=progress)
    assert killed
    assert not res.ok
    assert res.error
    assert _hello_hash(board.port) == "dev"  # the source install it had: no manifest
    res2 = flash_board(board.port, FlashOptions(builder=Builder(cache=cache)))
    assert res2.ok, res2.error
    assert res2.hash == build_firmware(2822, cache=cache).hash
