"""A Modbus point as the registry knows it: configuration → `PointInfo` (pure).

Used by the pollers (modbus/_source.py) and for the Modbus devices behind a Pico board
(pico/_derive.py), and by `declare` (the points a configuration declares, nothing started).
"""

from __future__ import annotations

from typing import Protocol

from picogate._model import PointInfo, PointType
from picogate.modbus._codec import Encoding
from picogate.modbus._config import PointConfig


class DeviceLike(Protocol):
    """What a point takes from its device: a Modbus device of `devices:` or one behind a board."""

    @property
    def name(self) -> str: ...

    @property
    def max_silence(self) -> float: ...


def engineering_type(enc: Encoding) -> PointType:
    """The type of the value a point delivers: a scaled integer register is a float."""
    if enc.type.is_integer and (enc.scale != 1.0 or enc.offset != 0.0):
        return PointType.FLOAT64
    return enc.type


_ATTRS: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
_ATTRS_MAX = 65_536


def _encoding_attrs(enc: Encoding) -> dict[str, str]:
    """A point's encoding as `PointInfo.attrs`.  Points laid out alike (the same register of many
    devices of one model) share one dict: 15,000 points would otherwise hold 15,000 dicts and
    their strings, about 6 MB.  `PointInfo.attrs` is for information and never changed."""
    items = [
        ("table", enc.table.value),
        ("address", str(enc.address)),
        ("type", enc.type.value),
        ("order", enc.order.value),
        ("scale", repr(enc.scale)),
        ("offset", repr(enc.offset)),
    ]
    if enc.bit is not None:
        items.append(("bit", str(enc.bit)))
    if enc.count:
        items.append(("count", str(enc.count)))
    key = tuple(items)
    attrs = _ATTRS.get(key)
    if attrs is None:
        if len(_ATTRS) >= _ATTRS_MAX:
            _ATTRS.clear()
        attrs = _ATTRS[key] = dict(items)
    return attrs


def point_info(
    device: DeviceLike,
    p: PointConfig,
    enc: Encoding,
    *,
    origin: str = "modbus",
    attrs: dict[str, str] | None = None,
) -> PointInfo:
    """A Modbus point as the registry knows it (a device polled here, or one behind a Pico board:
    `origin` "pico", with the board's `attrs`); `attrs` default to the point's encoding."""
    if attrs is None:
        attrs = _encoding_attrs(enc)
    return PointInfo(
        device=device.name,
        name=p.name,
        type=engineering_type(enc),
        unit=p.unit,
        writable=p.writable,
        min=p.min,
        max=p.max,
        description=p.description,
        deadband=p.deadband.value,
        deadband_percent=p.deadband.percent,
        max_silence=p.max_silence if p.max_silence is not None else device.max_silence,
        origin=origin,
        attrs=attrs,
    )
