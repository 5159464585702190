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


_SERVICE_SOURCES = {
    "picogate.service": Path("tools") / "systemd" / "picogate.service",
    "99-picogate.rules": Path("tools") / "99-picogate.rules",
}


def service_file(name: str) -> Path:
    """`picogate.service` (the systemd unit) or `99-picogate.rules` (the udev rules): packaged
    under picogate/_data/service in a wheel, under tools/ in an editable install."""
    packaged = _PKG / "_data" / "service" / name
    if packaged.is_file():
        return packaged
    source = _PKG.parent.parent / _SERVICE_SOURCES[name]
    if source.is_file():
        return source
    raise FileNotFoundError(f"picogate file {name!r} not found (looked in {packaged} and {source})")
