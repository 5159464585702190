"""docs/flashing.md: the tray example loads, the log example has the log's fields, and every
message in the troubleshooting table is one the code gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

from picogate.flash._factory import FactoryRun, _log_record
from picogate.flash._flash import FlashOptions, FlashResult
from picogate.flash._tray import load_tray

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "flashing.md").read_text()
SOURCES = "\n".join(p.read_text() for p in (ROOT / "agent" / "picogate" / "flash").glob("*.py"))


def _block(lang: str) -> str:
    (m,) = re.finditer(rf"```{lang}\n(.*?)```", DOC, re.S)
    return m.group(1)


def test_tray_example_loads(tmp_path: Path) -> None:
    f = tmp_path / "tray.yaml"
    f.write_text(_block("tray"))
    tray = load_tray(f)
    assert tray.gateway == "line1"
    assert tray.name_for("E66141040396312A", 1) == "press1"
    assert tray.name_for("E661410403ABCDEF", 3) == "io_abcdef"


def test_log_example_has_the_fields_of_a_record() -> None:
    doc = json.loads(_block("json"))
    rec = _log_record(FlashResult(port="/dev/x"), FactoryRun(targets=[], opts=FlashOptions()))
    assert set(doc) == set(rec)


def test_troubleshooting_messages_are_the_codes() -> None:
    table = DOC[DOC.index("## When it goes wrong") : DOC.index("## Why an interrupted")]
    messages = re.findall(r"^\| `([^`]+)` \|", table, re.M)
    assert len(messages) >= 10
    for msg in messages:
        # the longest literal piece between placeholders (N, X, …) must be in the code
        pieces = [p.strip() for p in re.split(r"…|\bN\b|\bX\b|\bY\b|\(|\)", msg)]
        longest = max(pieces, key=len)
        assert longest in SOURCES, f"{msg!r}: {longest!r} not found in agent/picogate/flash"
