"""DS18B20 temperature sensors through the kernel's 1-Wire driver (w1-gpio, w1-therm).

Blinka's `onewireio` is a stub; on a Raspberry Pi the kernel drives the bus (`dtoverlay=w1-gpio`)
and lists each sensor as `/sys/bus/w1/devices/28-<serial>/`.  Reading its `w1_slave` starts a
conversion and blocks for it (about 750 ms at 12 bits), so it runs off the event loop like a
driver call.  `parse()` is pure.
"""

from __future__ import annotations

import re
from pathlib import Path

from picogate._errors import PicogateError

__all__ = ["W1Error", "find", "parse", "read"]

_T = re.compile(r"\bt=(-?\d+)\s*$")
POWER_ON = 85000
"""The scratchpad's value after power-on, before any conversion: 85.000 °C."""


class W1Error(PicogateError, OSError):
    """A DS18B20 could not be read: not there, CRC failed, no conversion."""


def parse(text: str, *, where: str = "") -> float:
    """°C from the two lines of `w1_slave`:

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125
    """
    lines = text.strip().splitlines()
    if len(lines) != 2:
        raise W1Error(f"{where}: w1_slave has {len(lines)} lines, not 2", where=where)
    if not lines[0].rstrip().endswith("YES"):
        raise W1Error(f"{where}: CRC check failed ({lines[0].strip()!r})", where=where)
    m = _T.search(lines[1])
    if m is None:
        raise W1Error(f"{where}: no temperature in {lines[1].strip()!r}", where=where)
    milli = int(m.group(1))
    if milli == POWER_ON:
        raise W1Error(f"{where}: 85.000 °C is the power-on value (no conversion took place)", where=where)
    if not -55000 <= milli <= 125000:
        raise W1Error(f"{where}: {milli / 1000:g} °C is outside the DS18B20's range", where=where)
    return milli / 1000


def find(root: Path, rom: str | None) -> Path:
    """The sensor's folder: `root/<rom>`, or the only `28-*` there when `rom` is None."""
    if rom is not None:
        path = root / rom
        if not path.is_dir():
            raise W1Error(
                f"{path}: no such DS18B20 (is w1-gpio enabled and the sensor wired?)", where=str(path)
            )
        return path
    found = sorted(p for p in root.glob("28-*") if p.is_dir())
    if len(found) != 1:
        what = (
            "no DS18B20"
            if not found
            else f"{len(found)} DS18B20s ({', '.join(p.name for p in found)}): give rom"
        )
        raise W1Error(f"{root}: {what}", where=str(root))
    return found[0]


def read(root: Path, rom: str | None) -> float:
    """Blocking: one conversion of the sensor (°C)."""
    path = find(root, rom)
    try:
        text = (path / "w1_slave").read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise W1Error(f"{path}: {exc.strerror or exc}", where=str(path)) from exc
    return parse(text, where=str(path))
