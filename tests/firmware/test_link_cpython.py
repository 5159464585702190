"""The firmware's frame codec (firmware/picogate_fw/link.py) under CPython too: the shared vectors,
and property tests (hypothesis) that random input is dropped cleanly and that every valid frame
round-trips. The MicroPython run of the same vectors is tests/firmware/mp/mp_link.py."""

from __future__ import annotations

import importlib.util
import json
import zlib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "cases" / "link" / "vectors.json").read_text())


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fw_link", ROOT / "firmware" / "picogate_fw" / "link.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


link = _load()


@pytest.mark.parametrize("case", VECTORS["good"], ids=[c["line"][:30] for c in VECTORS["good"]])
def test_good_vectors(case: dict[str, object]) -> None:
    line = str(case["line"]).encode()
    assert link.decode(line) == (case["marker"], case["seq"], case["type"], case["body"])
    assert link.encode(case["marker"], case["seq"], case["type"], case["body"]) == line.replace(
        b"\r\n", b"\n"
    )


@pytest.mark.parametrize("case", VECTORS["bad"], ids=[str(c["why"]) for c in VECTORS["bad"]])
def test_bad_vectors(case: dict[str, object]) -> None:
    assert link.decode(str(case["line"]).encode()) == case["error"]


@given(st.binary(max_size=1100))
def test_random_bytes_are_dropped_cleanly(data: bytes) -> None:
    r = link.decode(data)
    if not isinstance(r, str):  # only a line that happens to be a valid frame decodes
        head = data.rstrip(b"\n").rstrip(b"\r").rpartition(b" ")[0]
        assert f"{zlib.crc32(head):08x}".encode() == data.rstrip(b"\n").rstrip(b"\r")[-8:]


printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=900)


@given(
    marker=st.sampled_from("#@"),
    seq=st.integers(0, 65535),
    typ=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8),
    body=st.none() | printable.filter(lambda b: b != ""),
)
def test_valid_frames_round_trip(marker: str, seq: int, typ: str, body: str | None) -> None:
    line = link.encode(marker, seq, typ, body)
    assert link.decode(line) == (marker, seq, typ, body)
    assert len(line) > link.MAX_LINE or link.decode(line[:-1]) == (marker, seq, typ, body)
