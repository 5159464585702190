"""`picogate flash` against the emulated Pico: a blank board, the same firmware again, --verify-only,
another version and --rollback; what each leaves on the board's flash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _rp2 import Flashed, FlashImage, flash, make_version


def test_a_blank_board_is_flashed(flashed: Flashed) -> None:
    r = flashed.result
    assert r["result"] == "flashed", r
    assert r["entered_by"] == "REPL"  # MicroPython only: its REPL answers at once
    assert (r["board"], r["micropython"], r["uid"]) == ("pico", "1.28.0", "E6614103E7000001")
    assert "picogate_fw/app.mpy" in r["uploaded"]
    assert r["hash"]
    assert r["error"] is None


def test_again_up_to_date_then_verify_only(pico: Any, flashed: Flashed) -> None:
    board = pico(realtime=True)
    board.wait_output(b"@0 hello ")  # the application runs (in its boot window Ctrl-C would do)
    rec = flash(board.port)
    assert (rec["rc"], rec["result"], rec["uploaded"]) == (0, "up-to-date", []), rec
    assert rec["entered_by"] == "link maint"  # the application took the link's maint command
    assert rec["hash"] == flashed.hash
    rec = flash(board.port, "--verify-only")
    assert (rec["rc"], rec["result"], rec["hash"]) == (0, "verified", flashed.hash), rec


def test_another_version_then_rollback(pico: Any, flashed: Flashed, tmp_path: Path) -> None:
    fw_b = make_version(tmp_path / "b", "b", every_file=False)  # an update: two files
    board = pico(realtime=True)
    board.wait_output(b"@0 hello ")
    rec = flash(board.port, "--firmware", str(fw_b))
    assert (rec["rc"], rec["result"]) == (0, "flashed"), rec
    hash_b = rec["hash"]
    assert hash_b != flashed.hash
    assert sorted(rec["uploaded"]) == ["picogate_fw/__init__.mpy", "picogate_fw/only_b.mpy"], rec
    assert rec["copied"] > 10  # the unchanged files are copied on the board
    rec = flash(board.port, "--verify-only")  # this picogate builds A: the board runs B
    assert (rec["rc"], rec["result"]) == (1, "mismatch"), rec
    rec = flash(board.port, "--rollback")
    assert (rec["rc"], rec["result"], rec["hash"]) == (0, "rolled-back", flashed.hash), rec
    board.stop()
    fs = FlashImage(board.image)
    assert fs.version() == flashed.hash
    assert fs.version("pg_old") == hash_b  # a second rollback would undo the first
    assert not fs.exists("pg_new")
    assert not fs.exists("pg_commit")
