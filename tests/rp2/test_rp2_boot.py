"""Booting the flashed firmware on the rp2 build: the hello's fields, the 2 s Ctrl-C window (in board
time), BOOTSEL held at boot, safe mode after three failed boots with the traceback kept, the
watchdog resetting a hung application and (slow) left alone by a healthy one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _rp2 import Flashed, FlashImage, wait_hello, wait_until

from picogate import __version__

SLOW = os.environ.get("PICOGATE_SLOW") == "1"


def with_app(src: Path, dst: Path, app_py: str) -> Path:
    """A copy of image `src` whose picogate_fw/app.py (found before app.mpy) is `app_py`."""
    dst.write_bytes(src.read_bytes())
    fs = FlashImage(dst)
    fs.write("picogate_fw/app.py", app_py.encode())
    fs.save()
    return dst


def test_the_hello_reports_the_board(pico: Any, flashed: Flashed) -> None:
    board = pico(uid="E66141040396312A")
    out, hello = wait_hello(board)
    assert out.startswith(b"picogate: starting (Ctrl-C within 2000 ms for the REPL)\r\n")
    assert hello["board"] == "pico"
    assert hello["mp"] == "1.28.0"
    assert hello["mpy"] == 6.3  # .mpy version 6.3: what mpy-cross must write
    assert hello["uid"] == "E66141040396312A"  # machine.unique_id(): the flash's unique id
    assert hello["hash"] == flashed.hash
    assert hello["fw"] == __version__
    assert (hello["mode"], hello["boots"], hello["crash"], hello["cfg"]) == ("run", 1, None, None)
    assert {"di", "cnt", "do", "pwm", "adc", "temp", "ds18b20", "dht22", "sht3x", "mb"} <= set(hello["caps"])
    assert hello["ticks"] >= 2000  # board ms since reset: after the 2 s boot window


def test_ctrl_c_late_in_the_boot_window_gives_the_repl(pico: Any) -> None:
    board = pico(realtime=True)
    board.wait_output(b"picogate: starting")
    t0 = board.board_ms()
    wait_until(lambda: board.board_ms() >= t0 + 1500, 30, "1.5 s of board time")
    board.write(b"\x03")
    out = board.wait_output(b"picogate: boot interrupted: REPL")
    assert b"@0 hello" not in out
    assert board.exec("import os\nprint(open('pg_boots').read())").strip() == "0"  # not a failed boot


def test_ctrl_c_after_the_boot_window_is_a_dropped_byte(pico: Any) -> None:
    board = pico(realtime=True)
    wait_hello(board)
    pos = board.output_pos()
    board.write(b"\x03\x03\r\n\x03")
    board.wait_output(b" hello ", since=pos)  # still the application (no session: hello each second)
    assert b">>>" not in board.output(pos)
    assert board.ctl()["boots"] == 1


def test_bootsel_held_at_boot_gives_maintenance_mode_without_watchdog(pico: Any) -> None:
    board = pico(bootsel=True)
    board.wait_output(b"picogate: maintenance mode (BOOTSEL held): REPL only, no watchdog, no I/O")
    assert board.exec("print(1 + 1)").strip() == "2"
    if SLOW:
        t0 = board.board_ms()
        wait_until(lambda: board.board_ms() > t0 + 10_000, 120, "10 s of board time")  # > the WDT's 8.4 s
        assert board.ctl()["boots"] == 1  # no watchdog reset
    board.ctl(bootsel=False, reset=True)  # released, reset: the application runs
    wait_hello(board, since=board.output_pos())


def test_safe_mode_after_three_failed_boots_keeps_the_traceback(
    pico: Any, flashed: Flashed, tmp_path: Path
) -> None:
    image = with_app(flashed.image, tmp_path / "broken.bin", "raise RuntimeError('broken on purpose')\n")
    board = pico(image)
    board.wait_output(b"safe mode after 3 failed boots: REPL only, no I/O. Last crash: boot 3: ", timeout=90)
    board.wait_output(b"Last crash: boot 3: RuntimeError: broken on purpose\r\n")  # the whole line
    board.wait_output(b">>> ")
    assert board.ctl()["boots"] == 4  # three resets by the firmware (machine.reset())
    crash = board.exec("print(open('pg_crash.txt').read())")
    assert crash.startswith("boot 3: RuntimeError: broken on purpose\nTraceback")
    assert 'File "picogate_fw/app.py"' in crash
    assert board.exec("print(open('pg_boots').read())").strip() == "0"  # the next reset tries again


def test_the_watchdog_resets_a_hung_application(pico: Any, flashed: Flashed, tmp_path: Path) -> None:
    hang = "import time\ndef run(wdt, boots, crash):\n    while True:\n        time.sleep_ms(100)\n"
    board = pico(with_app(flashed.image, tmp_path / "hung.bin", hang))
    board.wait_output(b"safe mode after 3 failed boots: REPL only, no I/O. Last crash: None", timeout=120)
    # a hang leaves no traceback
    board.wait_output(b">>> ")
    assert board.ctl()["boots"] == 4
    assert board.exec("import machine\nprint(machine.reset_cause() == machine.WDT_RESET)").strip() == "True"


@pytest.mark.slow
def test_a_healthy_application_feeds_the_watchdog(pico: Any) -> None:
    board = pico()
    wait_hello(board)
    t0 = board.board_ms()
    wait_until(lambda: board.board_ms() > t0 + 10_000, 120, "10 s of board time")  # > the WDT's 8.4 s
    assert board.ctl()["boots"] == 1
