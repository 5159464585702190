"""The UF2 bootloader path (a fake drive directory with INFO_UF2.TXT behind a fake sysfs tree, then
a simulated board appearing with the same USB serial) and the errors an operator meets."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _flash import FakeTree, picogate, start_board
from picogate.flash._uf2 import ABSOLUTE, RP2040, RP2350_ARM_S, make_uf2
from picogate.simboard import SimBoard

pytestmark = pytest.mark.integration

UID = "E66141040396312A"
INFO_RP2040 = "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


class Bootloader:
    """A board in BOOTSEL mode: its drive takes a .uf2 file; once the whole file is there the
    drive goes away and the board comes back as a MicroPython serial port (a simulated board
    with bare MicroPython: no Picogate firmware)."""

    def __init__(self, tree: FakeTree, tmp: Path) -> None:
        self.tree = tree
        self.drive = tmp / "RPI-RP2"
        self.drive.mkdir()
        (self.drive / "INFO_UF2.TXT").write_text(INFO_RP2040)
        (self.drive / "INDEX.HTM").write_text("<html></html>")
        tree.add_drive("sda", serial=UID, mount=self.drive)
        self.board_dir = tmp / "fresh"
        self.board: SimBoard | None = None
        self._stop = False
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()

    def _watch(self) -> None:
        while not self._stop:
            for f in self.drive.glob("*.uf2"):
                data = f.read_bytes()
                if len(data) >= 512 and len(data) // 512 == int.from_bytes(data[24:28], "little"):
                    (self.tree.sys / "block" / "sda").unlink()
                    self.board_dir.mkdir()
                    (self.board_dir / "main.py").write_text("print('fresh MicroPython')\n")
                    self.board = start_board(self.board_dir, uid=UID, firmware=False)
                    self.tree.add_tty("ttyACM0", self.board.port, serial=UID)
                    return
            time.sleep(0.02)

    def close(self) -> None:
        self._stop = True
        self._t.join(timeout=5)
        if self.board is not None:
            self.board.stop()


@pytest.fixture
def bootloader(tmp_path: Path) -> Iterator[Bootloader]:
    bl = Bootloader(FakeTree(tmp_path / "tree"), tmp_path)
    try:
        yield bl
    finally:
        bl.close()


def test_bootloader_board_gets_micropython_then_the_firmware(
    bootloader: Bootloader, tmp_path: Path, env: dict[str, str]
) -> None:
    env.update(bootloader.tree.env())
    rows = json.loads(picogate("boards", "--json", env=env).stdout)
    assert rows == [
        {
            "port": None,
            "serial": UID,
            "vid_pid": "2E8A:0003",
            "mode": "bootloader",
            "board": "RP2040",
            "micropython": None,
            "firmware": None,
            "hash": None,
            "drive": str(bootloader.tree.dev / "sda1"),
            "mountpoint": str(bootloader.drive),
            "note": "UF2 bootloader (RPI-RP2)",
        }
    ]
    # a bootloader board without a MicroPython image to give it
    r0 = picogate("flash", "--serial", UID, env=env)
    assert r0.returncode == 1
    assert "pass --micropython FILE.uf2" in r0.stdout

    uf2 = tmp_path / "rp2-pico-v1.29.0.uf2"
    uf2.write_bytes(make_uf2(bytes(range(256)) * 40, RP2040))
    r = picogate("flash", "--serial", UID, "--micropython", str(uf2), "--name", "fresh1", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (res,) = json.loads(r.stdout)
    assert res["result"] == "flashed"
    assert res["uid"] == UID
    assert res["entered_by"] == "REPL"  # bare MicroPython: no link yet
    assert (bootloader.drive / uf2.name).read_bytes() == uf2.read_bytes()
    assert bootloader.board is not None
    assert json.loads((bootloader.board.directory / "pg_id.json").read_text())["name"] == "fresh1"
    assert (bootloader.board.directory / "pg_fw.json").exists()


def test_wrong_uf2_family_is_refused_before_anything_is_copied(
    bootloader: Bootloader, tmp_path: Path, env: dict[str, str]
) -> None:
    env.update(bootloader.tree.env())
    uf2 = tmp_path / "rp2-pico2-v1.29.0.uf2"
    uf2.write_bytes(make_uf2(b"\x00" * 256, ABSOLUTE) + make_uf2(b"\x01" * 1024, RP2350_ARM_S))
    r = picogate("flash", "--all", "--micropython", str(uf2), env=env)
    assert r.returncode == 1
    assert "is for RP2350 (ARM secure)" in r.stdout
    assert "the board is an RP2040" in r.stdout
    assert not list(bootloader.drive.glob("*.uf2"))

    bad = tmp_path / "truncated.uf2"
    bad.write_bytes(make_uf2(b"\x01" * 1024, RP2040)[:-512])
    r2 = picogate("flash", "--all", "--micropython", str(bad), env=env)
    assert r2.returncode == 1
    assert "truncated image" in r2.stdout


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SimBoard]:
    b = start_board(tmp_path / "board")
    try:
        yield b
    finally:
        b.stop()


def _holder(port: str, *argv: str) -> subprocess.Popen[bytes]:
    """A process that keeps `port` open, with `argv` in its command line (as the agent's)."""
    code = (
        "import serial, sys, time; s = serial.Serial(sys.argv[1]); print('open', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, port, *argv], stdout=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline() == b"open\n"
    return p


def test_port_held_by_the_agent_names_it_and_stop_agent_frees_it(
    board: SimBoard, env: dict[str, str]
) -> None:
    agent = _holder(board.port, "picogate", "run", "-c", "gateway.yaml")
    try:
        r = picogate("flash", "--port", board.port, env=env)
        assert r.returncode == 1
        assert f"held by the running Picogate agent (process {agent.pid}" in r.stderr
        assert "--stop-agent" in r.stderr
        r2 = picogate("flash", "--port", board.port, "--stop-agent", "--json", env=env)
        assert r2.returncode == 0, r2.stdout + r2.stderr
        assert json.loads(r2.stdout)[0]["result"] == "flashed"
        assert agent.wait(timeout=10) is not None
    finally:
        agent.kill()
        agent.wait()


def test_port_held_by_another_program_is_not_stopped(board: SimBoard, env: dict[str, str]) -> None:
    other = _holder(board.port, "minicom")
    try:
        r = picogate("flash", "--port", board.port, "--stop-agent", env=env)
        assert r.returncode == 1
        assert f"busy: held by process {other.pid}" in r.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_selection_errors(tmp_path: Path, env: dict[str, str]) -> None:
    tree = FakeTree(tmp_path / "tree")
    env.update(tree.env())
    r = picogate("flash", env=env)
    assert r.returncode == 1
    assert "no board found" in r.stderr
    r = picogate("flash", "--port", str(tmp_path / "nope"), env=env)
    assert r.returncode == 1
    assert "no such port" in r.stderr
    r = picogate("flash", "--serial", "E6614103E7000099", env=env)
    assert r.returncode == 1
    assert "no board with USB serial E6614103E7000099" in r.stderr
    tree.add_tty("ttyACM0", "/dev/null", serial="E661410403960001")
    tree.add_tty("ttyACM1", "/dev/null", serial="E661410403960002")
    r = picogate("flash", env=env)
    assert r.returncode == 1
    assert "2 boards connected" in r.stderr
    assert "choose with --port, --serial, or --all" in r.stderr
    r = picogate("flash", "--all", "--name", "x", env=env)
    assert r.returncode == 1
    assert "--name gives one name to 2 boards" in r.stderr


def test_reinstall_micropython_on_a_running_board(tmp_path: Path, env: dict[str, str]) -> None:
    """`--reinstall-micropython`: the link's `boot` sends the board to its bootloader, its drive
    takes the image, it comes back (its filesystem kept, as a UF2 install keeps littlefs) and gets
    the firmware."""
    tree = FakeTree(tmp_path / "tree")
    env.update(tree.env())
    board = start_board(tmp_path / "board", uid=UID)
    tree.add_tty("ttyACM0", board.port, serial=UID)
    drive = tmp_path / "RPI-RP2"
    stop = threading.Event()

    def usb() -> None:  # what the USB bus does as the board goes to its bootloader and back
        while not stop.is_set() and board.mode != "bootloader":
            time.sleep(0.02)
        if stop.is_set():
            return
        tree.remove("ttyACM0")
        drive.mkdir()
        (drive / "INFO_UF2.TXT").write_text(INFO_RP2040)
        tree.add_drive("sda", serial=UID, mount=drive)
        while not stop.is_set():
            files = list(drive.glob("*.uf2"))
            if files and len(files[0].read_bytes()) == files[0].stat().st_size > 0:
                time.sleep(0.05)
                tree.remove("sda")
                board.replug()
                tree.add_tty("ttyACM0", board.port, serial=UID)
                return
            time.sleep(0.02)

    t = threading.Thread(target=usb, daemon=True)
    t.start()
    try:
        wrong = tmp_path / "pico2.uf2"
        wrong.write_bytes(make_uf2(b"\x01" * 512, RP2350_ARM_S))
        r0 = picogate(
            "flash", "--serial", UID, "--micropython", str(wrong), "--reinstall-micropython", env=env
        )
        assert r0.returncode == 1
        assert "but the board is an RP2040" in r0.stdout
        assert board.mode == "main"  # checked before the board was sent anywhere

        uf2 = tmp_path / "rp2-pico-v1.29.0.uf2"
        uf2.write_bytes(make_uf2(bytes(range(256)) * 8, RP2040))
        r = picogate(
            "flash", "--serial", UID, "--micropython", str(uf2), "--reinstall-micropython", "--json", env=env
        )
        assert r.returncode == 0, r.stdout + r.stderr
        (res,) = json.loads(r.stdout)
        assert res["result"] == "flashed"
        assert (drive / uf2.name).read_bytes() == uf2.read_bytes()
        assert 76 in board.exits  # it went through machine.bootloader()
    finally:
        stop.set()
        t.join(timeout=5)
        board.stop()
