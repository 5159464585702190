"""From a board's `gateway.yaml` section to what the board runs and what the gateway publishes.

Pure, no I/O: `derive(cfg)` gives the I/O configuration JSON pushed to the board (the shape in
docs/link-protocol.md), the `PointInfo`s of the board's own points (a device named after the
board) and of each Modbus device behind it, how each firmware id maps to a point, and the
Modbus requests (planned by the agent's planner, `modbus/_planner.py`) with the point each result
word belongs to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from picogate._model import PointInfo, PointType, Quality, Reading, Value
from picogate.modbus import CodecError, Encoding, PointConfig, Request, decode, plan, point_info
from picogate.pico._config import TWO_VALUES, BoardConfig, BoardDevice, IoPoint

__all__ = ["BadValue", "BoardPlan", "IoMap", "MbRequest", "check_value", "derive"]


@dataclass(frozen=True, slots=True)
class IoMap:
    """A firmware id → the point it reports (its type, and the scaling of an ADC)."""

    point: str
    unit: str
    scale: float = 1.0
    offset: float = 0.0
    type: PointType = PointType.FLOAT64


class BadValue(NamedTuple):
    """Why a value the board reported is not one of its point's type: `reason` is the metric's
    label, `message` the log's."""

    reason: str
    message: str


def check_value(ptype: PointType, value: object, scale: float = 1.0, offset: float = 0.0) -> Value | BadValue:
    """A value from the board as its point's type takes it (an ADC's scaled), as Modbus readings
    are: a bool point takes true/false or 1/0, an integer point an integer within its type (a
    counter: 0..4294967295), a float point a finite number, a string point a string.  Anything
    else is a BadValue (the reading is published bad)."""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if ptype is PointType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return BadValue("not_bool", f"{shown} is not true/false (T, F, 1 or 0)")
    if ptype is PointType.STRING:
        if isinstance(value, str):
            return value
        return BadValue("not_string", f"{shown} is not a string")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return BadValue("not_number", f"{shown} is not a number")
    limits = ptype.int_range
    if limits is not None:
        if not isinstance(value, int):
            return BadValue("not_integer", f"{shown} is not a whole number")
        if not limits[0] <= value <= limits[1]:
            return BadValue(
                "out_of_range", f"{shown} is outside {ptype.value}'s range {limits[0]}..{limits[1]}"
            )
        return value
    try:
        number = float(value)
        if scale != 1.0 or offset != 0.0:
            number = round(number * scale + offset, 6)
    except OverflowError:
        return BadValue("out_of_range", f"{shown} is beyond float64's range")
    if not math.isfinite(number):
        return BadValue("not_finite", f"{shown} is not a finite number (scaled: {number})")
    return number


@dataclass(frozen=True, slots=True)
class MbRequest:
    """One entry of a bus's `reqs`: the device it polls and the plan's request."""

    device: BoardDevice
    request: Request[str]
    encodings: dict[str, Encoding]


@dataclass(slots=True)
class BoardPlan:
    doc: dict[str, object]
    """The I/O configuration pushed to the board."""
    text: str
    """`doc` as the compact JSON sent (its SHA-256 prefix is the board's `cfg` hash)."""
    infos: list[PointInfo]
    ids: dict[str, IoMap]
    requests: dict[tuple[int, int], MbRequest] = field(default_factory=dict)
    """(bus, index in its reqs) → the request."""
    devices: dict[str, BoardDevice] = field(default_factory=dict)
    """Modbus devices behind the board, by name."""
    encodings: dict[tuple[str, str], Encoding] = field(default_factory=dict)
    """(device, point) → encoding, for writes."""
    bus_of: dict[str, int] = field(default_factory=dict)
    """Modbus device name → bus index."""


MAX_CONFIG = 16 * 1024
"""Bytes of configuration JSON a board accepts (docs/link-protocol.md)."""

_UNITS = {"adc": "V", "temp": "°C", "ds18b20": "°C"}


def _period_ms(seconds: float) -> int:
    """A period in seconds → whole milliseconds for the board, at least 1."""
    return max(1, round(seconds * 1000))


def _io_entry(p: IoPoint) -> dict[str, object]:
    e: dict[str, object] = {"id": p.name, "k": p.kind}
    if p.kind in ("di", "cnt", "do", "pwm", "adc", "ds18b20", "dht22"):
        e["pin"] = p.pin
    if p.kind in ("di", "cnt"):
        e["pull"] = p.pull
    if p.kind == "di":
        e["deb_ms"] = round(p.debounce * 1000)
        e["inv"] = p.invert
    if p.kind == "cnt":
        e["edge"] = p.edge
    if p.kind in ("do", "pwm"):
        if p.kind == "pwm":
            e["freq"] = p.freq
            e["init"] = float(p.init or 0.0)
            e["safe"] = None if p.safe is None else float(p.safe)
        else:
            e["init"] = bool(p.init)
            e["safe"] = p.safe
    if p.kind == "adc":
        e["os"] = p.oversample
    if p.kind == "ds18b20":
        e["rom"] = p.rom.upper() if p.rom else None
    if p.kind == "sht3x":
        e.update({"i2c": p.i2c, "sda": p.sda, "scl": p.scl, "addr": p.addr})
    if p.kind in ("cnt", "adc", "temp", "ds18b20", "dht22", "sht3x"):
        e["every_ms"] = _period_ms(p.every)
    return e


def _io_infos(cfg: BoardConfig, p: IoPoint) -> list[tuple[str, PointInfo, IoMap]]:
    silence = p.max_silence if p.max_silence is not None else cfg.max_silence
    attrs: dict[str, str] = {"kind": str(p.kind), "board": str(cfg.board)}
    if p.pin is not None:
        attrs["pin"] = f"GP{p.pin}"

    def info(
        name: str,
        ptype: PointType,
        unit: str,
        *,
        writable: bool = False,
        lo: float | None = None,
        hi: float | None = None,
    ) -> PointInfo:
        return PointInfo(
            device=cfg.name,
            name=name,
            type=ptype,
            unit=unit,
            writable=writable,
            min=lo,
            max=hi,
            description=p.description,
            deadband=p.deadband.value,
            deadband_percent=p.deadband.percent,
            max_silence=silence,
            origin="pico",
            attrs=attrs,
        )

    if p.kind in TWO_VALUES:
        return [
            (p.name + suffix, info(p.name + suffix, PointType.FLOAT64, unit), IoMap(p.name + suffix, unit))
            for suffix, unit in zip(TWO_VALUES[p.kind], ("°C", "%RH"), strict=True)
        ]
    unit = p.unit or _UNITS.get(p.kind, "")
    writable = p.kind in ("do", "pwm") and p.writable
    if p.kind in ("di", "do"):
        point = info(p.name, PointType.BOOL, unit, writable=writable)
    elif p.kind == "cnt":
        point = info(p.name, PointType.UINT32, unit)
    elif p.kind == "pwm":
        point = info(p.name, PointType.FLOAT64, unit, writable=writable, lo=0.0, hi=1.0)
    else:
        point = info(p.name, PointType.FLOAT64, unit)
    scale, offset = (p.scale, p.offset) if p.kind == "adc" else (1.0, 0.0)
    return [(p.name, point, IoMap(p.name, unit, scale, offset, point.type))]


def _mb_info(cfg: BoardConfig, dev: BoardDevice, bus: int, pc: PointConfig, enc: Encoding) -> PointInfo:
    attrs = {
        "board": cfg.name,
        "bus": str(bus),
        "unit_id": str(dev.unit_id),
        "table": enc.table.value,
        "address": str(enc.address),
        "type": enc.type.value,
    }
    return point_info(dev, pc, enc, origin="pico", attrs=attrs)


_FC_READ = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}


def derive(cfg: BoardConfig) -> BoardPlan:
    """Raises ValueError if the planner refuses a device's points (named)."""
    infos: list[PointInfo] = []
    ids: dict[str, IoMap] = {}
    io = []
    for p in cfg.io:
        io.append(_io_entry(p))
        for fid, info, m in _io_infos(cfg, p):
            infos.append(info)
            ids[fid] = m
    out = BoardPlan(doc={}, text="", infos=infos, ids=ids)
    mb = []
    for b, bus in enumerate(cfg.modbus):
        reqs: list[dict[str, object]] = []
        for dev in bus.devices:
            out.devices[dev.name] = dev
            out.bus_of[dev.name] = b
            encodings = {pc.name: pc.encoding(dev.byte_order) for pc in dev.points}
            for pc in dev.points:
                infos.append(_mb_info(cfg, dev, b, pc, encodings[pc.name]))
                out.encodings[(dev.name, pc.name)] = encodings[pc.name]
            by_interval: dict[float, list[tuple[str, Encoding]]] = {}
            for pc in dev.points:
                interval = pc.poll or dev.poll
                by_interval.setdefault(interval, []).append((pc.name, encodings[pc.name]))
            for interval, members in sorted(by_interval.items()):
                try:
                    planned = plan(
                        members,
                        max_registers=dev.max_registers,
                        max_bits=dev.max_bits,
                        max_gap=dev.max_gap,
                        no_merge=dev.no_merge,
                    )
                except ValueError as exc:
                    raise ValueError(f"modbus device {dev.name}: {exc}") from None
                for r in planned:
                    out.requests[(b, len(reqs))] = MbRequest(dev, r, encodings)
                    reqs.append(
                        {
                            "u": dev.unit_id,
                            "fc": _FC_READ[r.table.value],
                            "a": r.start,
                            "n": r.count,
                            "every_ms": max(10, _period_ms(interval)),
                        }
                    )
        entry: dict[str, object] = {
            "bus": b,
            "uart": bus.uart,
            "tx": bus.tx,
            "rx": bus.rx,
            "de": bus.de,
            "baud": bus.baudrate,
            "bits": bus.bytesize,
            "parity": bus.parity,
            "stop": bus.stopbits,
            "timeout_ms": _period_ms(bus.timeout),
            "retries": bus.retries,
            "backoff_ms": _period_ms(bus.backoff),
            "reqs": reqs,
        }
        mb.append(entry)
    doc: dict[str, object] = {
        "v": 1,
        "name": cfg.name,
        "hb_ms": _period_ms(cfg.heartbeat),
        "safe_ms": round(cfg.safe_timeout * 1000),
        "io": io,
        "mb": mb,
    }
    out.doc = doc
    out.text = orjson.dumps(doc).decode()
    if len(out.text) > MAX_CONFIG:
        raise ValueError(
            f"the board's configuration would be {len(out.text)} bytes of JSON; a board takes at most "
            f"{MAX_CONFIG} (fewer points or Modbus requests, or a second board)"
        )
    return out


def decode_result(
    req: MbRequest,
    status: str,
    data: bytes | int | None,
    ts: int,
    bad: list[tuple[str, BadValue]] | None = None,
) -> tuple[list[Reading], bool]:
    """The readings of one `mb` result and whether the device answered (ok or exception).  A
    register that does not decode to a value of its point (`bad`, if given, hears which and why)
    is a bad reading."""
    name = req.device.name
    members = req.request.members
    units = {pc.name: pc.unit for pc in req.device.points}
    if status != "ok" or not isinstance(data, bytes):
        answered = status == "exc"
        return [Reading(name, p, None, ts, Quality.BAD, units[p]) for p, _ in members], answered
    r = req.request
    words: list[int] | list[bool]
    if r.table.is_bit:
        if len(data) * 8 < r.count:
            return [Reading(name, p, None, ts, Quality.BAD, units[p]) for p, _ in members], True
        words = [bool(data[i >> 3] >> (i & 7) & 1) for i in range(r.count)]
    else:
        if len(data) != 2 * r.count:
            return [Reading(name, p, None, ts, Quality.BAD, units[p]) for p, _ in members], True
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    out: list[Reading] = []
    for point, offset in members:
        enc = req.encodings[point]
        try:
            value = decode(enc, words[offset : offset + enc.width])
        except (CodecError, ValueError, UnicodeDecodeError, OverflowError) as exc:
            out.append(Reading(name, point, None, ts, Quality.BAD, units[point]))
            if bad is not None:
                bad.append((point, BadValue("undecodable", f"registers do not decode: {exc}")))
            continue
        if isinstance(value, float) and not math.isfinite(value):
            out.append(Reading(name, point, None, ts, Quality.BAD, units[point]))
            if bad is not None:
                bad.append((point, BadValue("not_finite", f"{value} is not a finite number")))
            continue
        out.append(Reading(name, point, value, ts, Quality.GOOD, units[point]))
    return out, True
