"""A power cut inside the flasher's journaled commit and rollback, on the rp2 build: the board's next
boot finishes the commit or undoes it (firmware/main.py's `_recover`), runs one whole version whose
files are its manifest's, and reports that version's hash in its hello.

The state a cut leaves is made by running the flasher's own board script, its first k steps
(`_deploy.commit_script(last=k)`), at the board's REPL, then killing the emulator (SIGKILL, once it
has saved the flash). Two versions: A (the session's firmware) running and B (every module changed,
one file only B has) staged in pg_new/, both as `.mpy` the way `picogate flash` builds them. CI runs
a representative subset of the cut points (below); every one runs with PICOGATE_SLOW=1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _rp2 import Flashed, FlashImage, make_version, wait_hello

from picogate.flash import _deploy
from picogate.flash._build import build_firmware

COMMIT_STEPS = len(_deploy.commit_steps())
ROLLBACK_STEPS = len(_deploy.rollback_steps())
JOURNAL_AT = 4  # steps up to and including writing pg_commit (commit and rollback alike)
assert _deploy.commit_steps()[JOURNAL_AT - 1].startswith("_put('pg_commit'")
assert _deploy.rollback_steps()[JOURNAL_AT - 1].startswith("_put('pg_commit'")

# CI's subset: nothing written yet, the journal alone, the new main.py in, the new package in and
# the old manifest out, pg_new/ removed; the rollback's journal alone and its main.py back
COMMIT_CI = (0, 4, 6, 9, 11)
ROLLBACK_CI = (4, 10)


@dataclass(frozen=True)
class Staged:
    staged: Path  # A running, B complete in pg_new/
    committed: Path  # B running, A in pg_old/
    a: str
    b: str


@pytest.fixture(scope="module")
def staged(rp2_ready: Path, flashed: Flashed, tmp_path_factory: pytest.TempPathFactory) -> Staged:
    """The flashed image with B written into pg_new/ (on the host: the upload is not under test
    here), and that image after the board's own full commit."""
    import rp2emu

    d = tmp_path_factory.mktemp("rp2-cut")
    image = d / "staged.bin"
    image.write_bytes(flashed.image.read_bytes())
    fs = FlashImage(image)
    fw = build_firmware(6, source=make_version(d / "b", "b"))  # mpy 6.x: MicroPython 1.28 rp2
    for path, data in fw.files.items():
        fs.write(f"{_deploy.NEW}/{path}", data)
    fs.write(f"{_deploy.NEW}/pg_fw.json", fw.manifest())
    fs.save()
    board = rp2emu.Pico(image, bootsel=True)
    try:
        board.start()
        board.wait_output(b"maintenance mode (BOOTSEL held)")
        assert "committed" in board.exec(_deploy.commit_script())
        board.stop()
        committed = d / "committed.bin"
        committed.write_bytes(board.image.read_bytes())
    finally:
        board.close()
    assert FlashImage(committed).version() == fw.hash
    return Staged(image, committed, flashed.hash, fw.hash)


def cut_then_boot(pico: Any, image: Path, script: str) -> tuple[bytes, dict[str, Any], FlashImage]:
    """Run `script` at the REPL of a board started from `image`, cut the power there, boot it until
    the application's hello; the flash's files after that boot."""
    board = pico(image, bootsel=True)
    board.wait_output(b"maintenance mode (BOOTSEL held)")
    board.exec(script)
    board.wait_flash_saved()
    board.kill()  # the power cut: the flash as the script left it
    board = pico(board.image)
    out, hello = wait_hello(board)
    board.stop()
    return out, hello, FlashImage(board.image)


def check_commit(pico: Any, s: Staged, cut: int) -> None:
    out, hello, fs = cut_then_boot(pico, s.staged, _deploy.commit_script(last=cut))
    want = s.a if cut < JOURNAL_AT else s.b
    assert (fs.version(), hello["hash"]) == (want, want), out
    assert not fs.exists(_deploy.JOURNAL)
    if JOURNAL_AT <= cut < COMMIT_STEPS:
        assert b"firmware commit interrupted by a reset was finished" in out
    if cut >= JOURNAL_AT:
        assert not fs.exists("pg_new")
        assert fs.version("pg_old") == s.a  # `picogate flash --rollback` finds A
    elif cut == 0:
        assert fs.version("pg_new") == s.b  # untouched: the next flash only commits it


def check_rollback(pico: Any, s: Staged, cut: int) -> None:
    out, hello, fs = cut_then_boot(pico, s.committed, _deploy.rollback_script(last=cut))
    want, kept = (s.b, s.a) if cut < JOURNAL_AT else (s.a, s.b)
    assert (fs.version(), hello["hash"]) == (want, want), out
    assert not fs.exists(_deploy.JOURNAL)
    if JOURNAL_AT <= cut < ROLLBACK_STEPS:
        assert b"firmware rollback interrupted by a reset was finished" in out
    assert fs.version("pg_old") == kept
    assert not fs.exists("pg_new") or cut < JOURNAL_AT


@pytest.mark.parametrize("cut", COMMIT_CI)
def test_power_cut_in_the_commit(pico: Any, staged: Staged, cut: int) -> None:
    check_commit(pico, staged, cut)


@pytest.mark.parametrize("cut", ROLLBACK_CI)
def test_power_cut_in_the_rollback(pico: Any, staged: Staged, cut: int) -> None:
    check_rollback(pico, staged, cut)


@pytest.mark.slow
@pytest.mark.parametrize("cut", [c for c in range(COMMIT_STEPS + 1) if c not in COMMIT_CI])
def test_power_cut_in_the_commit_every_step(pico: Any, staged: Staged, cut: int) -> None:
    check_commit(pico, staged, cut)


@pytest.mark.slow
@pytest.mark.parametrize("cut", [c for c in range(ROLLBACK_STEPS + 1) if c not in ROLLBACK_CI])
def test_power_cut_in_the_rollback_every_step(pico: Any, staged: Staged, cut: int) -> None:
    check_rollback(pico, staged, cut)
