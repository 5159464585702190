"""Where the firmware, board definitions and examples are, in a wheel or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`firmware`, `boards` or `examples`: packaged under picogate/_data in a wheel, at the repo root
    in an editable install."""
    packaged = _PKG / "_data" / name
    if packaged.is_dir():
        return packaged
    source = _PKG.parent.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"picogate data folder {name!r} not found (looked in {packaged} and {source})")
