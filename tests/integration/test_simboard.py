"""picogate.simboard: a board directory on MicroPython's unix port behind a stable serial port.

The board here runs a tiny echo application (not the firmware) so that these tests check the
wrapper alone: restarts, the REPL after main.py returns, raw-REPL soft reset as mpremote expects,
unplug/replug, kill, injection, and bytes dropped while no host listens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from picogate.simboard import SimBoard, SimBoardError

pytestmark = pytest.mark.integration

ECHO_APP = r"""
import sys, select, termios, os
termios.setraw(0)
sys.stdout.write("APP " + os.getenv("PICOGATE_UID") + "\n")
p = select.poll()
p.register(sys.stdin.buffer, select.POLLIN)
b = bytearray(1)
mv = memoryview(b)
line = bytearray()
while True:
    if p.poll(100):
        sys.stdin.buffer.readinto(mv)
        if b[0] != 10:
            line.append(b[0])
            continue
        s = bytes(line)
        line = bytearray()
        if s == b"repl":
            break
        if s == b"reset":
            sys.exit(75)
        if s == b"boot":
            sys.exit(76)
        if s == b"crash":
            raise ValueError("boom")
        sys.stdout.write("echo:" + s.decode() + "\n")
"""


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SimBoard]:
    d = tmp_path / "board"
    d.mkdir()
    (d / "main.py").write_text(ECHO_APP)
    b = SimBoard(d, uid="E6614103E70000AA").start()
    try:
        b.wait_for_output(b"APP E6614103E70000AA\n")
        yield b
    finally:
        b.stop()


def _open(b: SimBoard) -> serial.Serial:
    return serial.Serial(b.port, timeout=5)


def _write_until_error(s: serial.Serial) -> None:
    for _ in range(50):
        s.write(b"x\n")
        time.sleep(0.02)


def _readline(s: serial.Serial, want: bytes) -> bytes:
    for _ in range(20):  # bounded: skip other lines (e.g. a boot line) until the one we want
        line = s.readline()
        if not line:
            break
        if want in line:
            return line
    raise AssertionError(f"{want!r} not read from the port")


def test_echo_through_stable_port_and_dropped_while_no_host(board: SimBoard) -> None:
    assert board.dropped > 0  # the boot line came while nobody had the port open
    with _open(board) as s:
        s.write(b"hello\n")
        assert _readline(s, b"echo:") == b"echo:hello\n"  # no echo of our input, no CR added


def test_main_returning_gives_the_repl_and_ctrl_d_boots_main_again(board: SimBoard) -> None:
    with _open(board) as s:
        pos = board.output_pos()
        s.write(b"repl\n")
        board.wait_for_output(b">>> ", since=pos)
        assert board.mode == "repl"
        pos = board.output_pos()
        s.write(b"6*7\r")
        board.wait_for_output(b"42", since=pos)
        pos = board.output_pos()
        s.write(b"\x04")  # soft reset at the friendly REPL: main.py runs again
        out = board.wait_for_output(b"APP ", since=pos)
        assert b"MPY: soft reboot\r\n" in out
        assert board.mode == "main"
        assert board.restarts == 2


def test_raw_repl_soft_reset_comes_back_in_raw_repl(board: SimBoard) -> None:
    with _open(board) as s:
        pos = board.output_pos()
        s.write(b"repl\n")
        board.wait_for_output(b">>> ", since=pos)
        pos = board.output_pos()
        s.write(b"\r\x01")
        board.wait_for_output(b"raw REPL; CTRL-B to exit\r\n>", since=pos)
        pos = board.output_pos()
        s.write(b"\x04")  # what mpremote sends for a soft reset
        out = board.wait_for_output(b"MPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>", since=pos)
        assert b"MicroPython" not in out  # the new process's banner is not shown in raw mode
        assert board.mode == "raw"
        pos = board.output_pos()
        s.write(b"import machine; print(machine.unique_id().hex())\x04")
        board.wait_for_output(b"OKe6614103e70000aa", since=pos)


def test_kill_reboots_and_hard_reset_reenumerates(board: SimBoard) -> None:
    pos = board.output_pos()
    board.kill()
    board.wait_for_output(b"APP ", since=pos)
    assert board.exits[-1] < 0
    s = _open(board)
    pos = board.output_pos()
    s.write(b"reset\n")
    board.wait_for_output(b"APP ", since=pos)
    assert board.exits[-1] == 75
    with pytest.raises(serial.SerialException):  # the port went away under the host (USB reset)
        _write_until_error(s)
    s.close()
    with _open(board) as s2:
        s2.write(b"again\n")
        assert _readline(s2, b"echo:") == b"echo:again\n"


def test_crash_reboots(board: SimBoard) -> None:
    with _open(board) as s:
        pos = board.output_pos()
        s.write(b"crash\n")
        out = board.wait_for_output(b"APP ", since=pos)
        assert b"ValueError: boom" in out
        assert board.exits[-1] == 1


def test_unplug_replug_and_inject(board: SimBoard) -> None:
    s = _open(board)
    board.unplug()
    assert not os.path.exists(board.port)
    with pytest.raises(serial.SerialException):
        _write_until_error(s)
    s.close()
    with pytest.raises(serial.SerialException):
        serial.Serial(board.port)
    board.replug()
    with _open(board) as s2:
        board.inject(b"from-host\n", to="board")
        assert _readline(s2, b"echo:") == b"echo:from-host\n"
        board.inject(b"from-board\n", to="host")
        assert _readline(s2, b"from-") == b"from-board\n"


def test_power_off_unplug_and_bootloader(board: SimBoard) -> None:
    board.unplug(power_off=True)
    assert board.pid is None
    pos = board.output_pos()
    board.replug()
    board.wait_for_output(b"APP ", since=pos)
    with _open(board) as s:
        s.write(b"boot\n")
        for _ in range(100):
            if board.mode == "bootloader":
                break
            time.sleep(0.05)
    assert board.mode == "bootloader"
    assert not os.path.exists(board.port)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SimBoardError, match="does not exist"):
        SimBoard(tmp_path / "nope")
    with pytest.raises(SimBoardError, match="uid"):
        SimBoard(tmp_path, uid="xyz")


def test_without_main_py_the_board_sits_at_its_repl(tmp_path: Path) -> None:
    with SimBoard(tmp_path) as b:
        b.wait_for_output(b">>> ")
        assert b.restarts == 0
        assert b.mode == "repl"
