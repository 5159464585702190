"""Each Modbus device read once (`picogate poll --once`): every point with its value, unit, quality
and the raw registers (or bits) it was decoded from.

The reads are those the poller makes (the same plan, the same links, retries and timeouts), but all
of a device's points at once whatever their `poll`, and nothing goes to the pipeline: the result is
data for the caller to print.  Devices that share a link (a TCP gateway, an RS-485 bus) are read in
turn on one connection; links are read at the same time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from picogate._model import Quality, Value
from picogate.modbus._codec import CodecError, decode
from picogate.modbus._config import ModbusRtuDevice, ModbusTcpDevice
from picogate.modbus._planner import Request, plan
from picogate.modbus._source import _build_device, _Device, link_key
from picogate.modbus._transport import FailKind, ModbusFailure, ModbusLink, SerialParams, TcpParams

__all__ = ["DeviceReading", "PointReading", "poll_once"]

DeviceConfig = ModbusTcpDevice | ModbusRtuDevice


@dataclass(frozen=True, slots=True)
class PointReading:
    """One point as read: `raw` holds the registers (0..65535) or bits (bool) it was decoded from,
    empty when nothing was read; `error` says why a bad point is bad."""

    point: str
    value: Value | None
    unit: str
    quality: Quality
    table: str
    address: int
    width: int
    """Registers (or bits) the point spans."""
    bit: int | None
    raw: tuple[int, ...] | tuple[bool, ...]
    error: str = ""


@dataclass(slots=True)
class DeviceReading:
    """One device read once: its points in the order of the file, the requests it took, and
    `error` when it did not answer (its points are then bad, with nothing raw)."""

    device: str
    link: str
    unit_id: int
    points: list[PointReading] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(p.quality is Quality.GOOD for p in self.points)


async def poll_once(devices: Sequence[DeviceConfig]) -> list[DeviceReading]:
    """Read every point of `devices` once; the results in the order of `devices`."""
    lines: dict[tuple[str, ...], list[DeviceConfig]] = {}
    for d in devices:
        lines.setdefault(link_key(d), []).append(d)
    results = await asyncio.gather(*(_read_line(group) for group in lines.values()))
    by_name = {r.device: r for line in results for r in line}
    return [by_name[d.name] for d in devices]


def _link(first: DeviceConfig, devices: Sequence[DeviceConfig]) -> ModbusLink:
    if isinstance(first, ModbusTcpDevice):
        params: TcpParams | SerialParams = TcpParams(first.host, first.port, first.framing)
    else:
        params = SerialParams(first.port, first.baudrate, first.parity, first.stopbits, first.bytesize)
    return ModbusLink(
        params,
        timeout=max(d.timeout for d in devices),
        late_reply={d.unit_id: d.late_reply for d in devices},
        driver=first.driver,
    )


async def _read_line(devices: Sequence[DeviceConfig]) -> list[DeviceReading]:
    link = _link(devices[0], devices)
    try:
        out = []
        for cfg in devices:
            quiet = link.quiet_until(cfg.unit_id) - time.monotonic()
            if quiet > 0:  # RTU, after a timeout: a late reply must not be taken for another's
                await asyncio.sleep(quiet)
            out.append(await _read_device(link, cfg))
        return out
    finally:
        link.close()


async def _read_device(link: ModbusLink, cfg: DeviceConfig) -> DeviceReading:
    dev = _build_device(cfg)
    result = DeviceReading(cfg.name, link.description, cfg.unit_id)
    members = [(p.name, dev.encodings[p.name]) for p in cfg.points]
    requests = plan(
        members,
        max_registers=cfg.max_registers,
        max_bits=cfg.max_bits,
        max_gap=cfg.max_gap,
        no_merge=cfg.no_merge,
    )
    started = time.perf_counter()
    found: dict[str, PointReading] = {}
    for req in requests:
        words: list[int] | list[bool] | None = None
        failure: ModbusFailure | None = None
        for attempt in range(cfg.retries + 1):
            result.requests += 1
            try:
                link.timeout = cfg.timeout
                words = await link.read(cfg.unit_id, req.table, req.start, req.count)
                break
            except ModbusFailure as exc:
                failure = exc
                if exc.kind is FailKind.EXCEPTION:
                    break  # the device answered: asking again gets the same answer
                if attempt < cfg.retries:
                    await asyncio.sleep(min(0.05 * (attempt + 1), cfg.timeout))
        if words is None:
            assert failure is not None
            if failure.kind is FailKind.EXCEPTION:
                found.update((p.point, p) for p in _bad(dev, req, str(failure)))
                continue
            # No answer: the rest of the device is not asked (each request would wait as long).
            result.error = str(failure)
            break
        found.update((p.point, p) for p in _decode(dev, req, words))
    result.seconds = time.perf_counter() - started
    for p in cfg.points:
        reading = found.get(p.name)
        if reading is None:
            enc = dev.encodings[p.name]
            reading = PointReading(
                p.name,
                None,
                dev.infos[p.name].unit,
                Quality.BAD,
                enc.table.value,
                enc.address,
                enc.width,
                enc.bit,
                (),
                result.error or "not read",
            )
        result.points.append(reading)
    return result


def _decode(dev: _Device, req: Request[str], words: list[int] | list[bool]) -> list[PointReading]:
    out = []
    for point, offset in req.members:
        enc = dev.encodings[point]
        unit = dev.infos[point].unit
        raw: tuple[int, ...] | tuple[bool, ...] = tuple(words[offset : offset + enc.width])
        quality, error = Quality.GOOD, ""
        value: Value | None
        try:
            value = decode(enc, list(raw))
        except (CodecError, ValueError, UnicodeDecodeError) as exc:
            value, quality, error = None, Quality.BAD, f"cannot decode: {exc}"
        if isinstance(value, float) and not math.isfinite(value):
            value, quality, error = None, Quality.BAD, f"not a finite number ({value})"
        out.append(
            PointReading(
                point, value, unit, quality, enc.table.value, enc.address, enc.width, enc.bit, raw, error
            )
        )
    return out


def _bad(dev: _Device, req: Request[str], error: str) -> list[PointReading]:
    out = []
    for point, _ in req.members:
        enc = dev.encodings[point]
        unit = dev.infos[point].unit
        out.append(
            PointReading(
                point, None, unit, Quality.BAD, enc.table.value, enc.address, enc.width, enc.bit, (), error
            )
        )
    return out
