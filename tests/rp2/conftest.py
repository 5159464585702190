"""The rp2 tier: the firmware on the real MicroPython rp2 build (RPI_PICO) on an emulated RP2040.

The emulator and the firmware image come from `../shared/rp2/` beside the checkout (set up in
`.rp2/` by tools/bootstrap.sh through `tools/rp2emu.py setup`). Where that folder is absent (a
user's own clone) every test here is skipped with one reason. One board runs at a time.

* ``flashed`` (session): a blank board given the firmware once by `picogate flash`; its image is
  the start of the other tests (a copy each, about a second to start).
* ``pico(image=..., **options)``: starts an emulated board (tools/rp2emu.py `Pico`: ``.port``,
  ``.ctl()``, ``.board_ms()``, ``.exec()``, ``.wait_output()``, ``.unplug()``/``.replug()``,
  ``.reset()``, ``.stop()``, ``.kill()``); stopped by its pid at the end of the test.

Slow tests (``@pytest.mark.slow``: the whole power-cut matrix) run only with PICOGATE_SLOW=1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

from _rp2 import Flashed, FlashImage, flash  # noqa: E402

import rp2emu  # noqa: E402

HERE = Path(__file__).resolve().parent
SOURCE = rp2emu.find_source()
SKIP = (
    f"rp2 tier: no emulated Pico here ({os.environ.get('PICOGATE_RP2') or ROOT.parent / 'shared' / 'rp2'} "
    "is absent; it holds the rp2 firmware image and the rp2040js runner)"
)
SLOW = os.environ.get("PICOGATE_SLOW") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rp2: runs the firmware on an emulated RP2040 (../shared/rp2)")
    config.addinivalue_line("markers", "slow: long; runs only with PICOGATE_SLOW=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.rp2)
        item.add_marker(pytest.mark.integration)
        if SOURCE is None:
            item.add_marker(pytest.mark.skip(reason=SKIP))
        elif item.get_closest_marker("slow") and not SLOW:
            item.add_marker(pytest.mark.skip(reason="slow (PICOGATE_SLOW=1 runs it)"))


@pytest.fixture(scope="session")
def rp2_ready() -> Path:
    """The emulator's working copy (set up if it is not yet: npm ci from the lock file)."""
    try:
        return rp2emu.setup(quiet=True)
    except rp2emu.PicoError as e:  # ../shared/rp2 is here, so the tier must run: say what is missing
        pytest.fail(f"rp2 tier: the emulator cannot run: {e}", pytrace=False)


@pytest.fixture(scope="session")
def flashed(rp2_ready: Path, tmp_path_factory: pytest.TempPathFactory) -> Flashed:
    """A blank board (MicroPython only) flashed once with `picogate flash`; its saved image."""
    d = tmp_path_factory.mktemp("rp2-flashed")
    board = rp2emu.Pico(None)
    try:
        board.start()
        rec = flash(board.port)
        board.stop()
        assert rec["rc"] == 0, (rec, board.output()[-500:])
        assert rec["result"] == "flashed", rec
        image = d / "picogate.bin"
        image.write_bytes(board.image.read_bytes())
        fs = FlashImage(image)  # as after 10 s of healthy running: no failed boot counted
        fs.write("pg_boots", b"0")
        fs.save()
    finally:
        board.close()
    return Flashed(image, rec)


@pytest.fixture
def pico(rp2_ready: Path, flashed: Flashed) -> Iterator[Callable[..., rp2emu.Pico]]:
    """Factory: ``pico(image=flashed.image, **Pico options)`` → a started board (one at a time)."""
    boards: list[rp2emu.Pico] = []

    def start(image: Path | None = flashed.image, *, wait: bool = True, **kw: Any) -> rp2emu.Pico:
        for b in boards:
            b.stop()
        b = rp2emu.Pico(image, **kw)
        boards.append(b)
        return b.start(wait=wait)

    try:
        yield start
    finally:
        for b in boards:
            b.close()
