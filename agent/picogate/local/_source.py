"""`LocalIoSource`: the gateway component of the `local:` section, a source like a Modbus line.

```
sample loop (every `sample`) ──gpio Worker──► read every di/cnt pin ──► Debouncer ─► di readings
                                                                       └► EdgeCounter ─► cnt every `every`
sensor loops (one per adc, I²C sensor, DS18B20; every `every`, backoff while failing)
   ──bus Worker (one per I²C bus; gpio; 1-Wire)──► driver call ──► readings, or bad readings
router ──► writer ──gpio Worker──► DigitalInOut.value / PWMOut.duty_cycle ──► the new value's reading
stop ──► every output with `safe` set to it (after the writes already queued), pins released
```

Every Blinka call runs on a `Worker` (_worker.py), bounded by `timeout`.  A sensor that fails
(no answer, a CRC error, garbage outside what the chip measures) makes its points bad once, is
logged once, and is asked again after `every`, doubling up to `backoff_max`; its driver object is
opened anew each time, so a chip that was replaced or reset is initialised again.  The device
stays online: its other points go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from picogate._model import PointInfo, Quality, Reading, Value
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import ErrorCode, WriteError, WriteTicket
from picogate.local import _w1
from picogate.local._config import I2C_KINDS, SUFFIXES, LocalIo, LocalSection
from picogate.local._hw import Hardware, check_value, duty16, sensor_reader
from picogate.local._inputs import Backoff, Debouncer, EdgeCounter
from picogate.local._points import infos
from picogate.local._worker import DriverBusy, DriverTimeout, Worker

__all__ = ["LocalIoSource", "LocalStats"]

log = logging.getLogger("picogate.local")

Emit = Callable[..., Awaitable[None]]
StatusChanged = Callable[[DeviceStatus], Awaitable[None]]


@dataclass
class LocalStats:
    """Counters of the source (also Prometheus metrics, _attach.py)."""

    reads: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # by reason: timeout, error, value
    writes: int = 0


@dataclass
class _Input:
    io: LocalIo
    debouncer: Debouncer
    counter: EdgeCounter | None
    dio: Any = None
    next_report: float = 0.0
    failing: str = ""  # why the pin could not be read (its point is bad until it can)


@dataclass
class _Output:
    io: LocalIo
    obj: Any = None
    error: str = "not opened yet"
    value: bool | float = False

    def set(self, value: bool | float) -> None:
        """Blocking (on the gpio worker): drive the pin."""
        if self.io.kind == "do":
            self.obj.value = bool(value) != self.io.invert
        else:
            self.obj.duty_cycle = duty16(float(value))


@dataclass
class _Sensor:
    io: LocalIo
    worker: Worker
    points: list[tuple[str, str, str]]  # (suffix, point, unit)
    backoff: Backoff
    reader: Callable[[], dict[str, float]] | None = None
    analog: Any = None  # adc: the AnalogIn, kept across failures
    failing: str = ""


class LocalIoSource:
    """One component for the whole section (see the module docstring)."""

    kind: Literal["source", "service"] = "source"

    def __init__(
        self,
        section: LocalSection,
        *,
        registry: PointRegistry,
        emit: Emit,
        status_changed: StatusChanged,
        hardware: Callable[[], Hardware] = Hardware,
    ) -> None:
        self.section = section
        self.name = f"local-{section.name}"
        self.device = section.name
        self.registry = registry
        self._emit = emit
        self._status_changed = status_changed
        self._hardware = hardware
        self.infos: list[PointInfo] = infos(section)
        self._units = {i.name: i.unit for i in self.infos}
        self.stats = LocalStats()
        self._stop = asyncio.Event()
        self._stopping = False
        self.gpio = Worker("gpio", timeout=section.timeout)
        self.buses: dict[tuple[str, str], Worker] = {}
        self._w1 = Worker("1-wire", timeout=section.timeout)
        self._hw: Hardware | None = None
        self._i2c: dict[tuple[str, str], Any] = {}  # one busio.I2C per bus, used on that bus's worker
        self._inputs = [
            _Input(p, Debouncer(p.debounce), EdgeCounter(p.edge) if p.kind == "cnt" else None)
            for p in section.io
            if p.kind in ("di", "cnt")
        ]
        self.outputs = {p.name: _Output(p) for p in section.io if p.kind in ("do", "pwm")}
        self._sensors: list[_Sensor] = []
        for p in section.io:
            if p.kind in I2C_KINDS:
                worker = self.buses.setdefault(
                    (p.sda, p.scl), Worker(f"i2c {p.sda}/{p.scl}", timeout=section.timeout)
                )
            elif p.kind == "ds18b20":
                worker = self._w1
            elif p.kind == "adc":
                worker = self.gpio
            else:
                continue
            units = {i.name: i.unit for i in self.infos}
            points = [(s, p.name + s, units[p.name + s]) for s, _ in SUFFIXES.get(p.kind, (("", ""),))]
            self._sensors.append(_Sensor(p, worker, points, Backoff(p.every, section.backoff_max)))

    # ------------------------------------------------------------------ the gateway's side

    def register(self) -> None:
        for info in self.infos:
            self.registry.add(info, replace=True)

    def writer(self) -> _Writer:
        return _Writer(self)

    def stop(self) -> None:
        self._stopping = True
        self._stop.set()

    async def run(self) -> None:
        try:
            try:
                if any(p.kind != "ds18b20" for p in self.section.io):  # DS18B20s need no Blinka
                    self._hw = await self.gpio.call(self._hardware)
            except Exception as exc:
                log.error("local I/O %s: Blinka could not start: %s", self.device, exc)
                await self._set_state(DeviceState.OFFLINE, f"Blinka could not start: {exc}")
                await self._publish([self._bad(i.name) for i in self.infos])
                await self._stop.wait()
                return
            await self._open_outputs()
            await self._set_state(DeviceState.ONLINE, "")
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._sensor_loop(s), name=f"{self.name}-{s.io.name}")
                    for s in self._sensors
                ]
                if self._inputs:
                    tasks.append(tg.create_task(self._sample_loop(), name=f"{self.name}-sample"))
                if any(o.obj is None for o in self.outputs.values()):
                    tasks.append(tg.create_task(self._reopen_outputs(), name=f"{self.name}-outputs"))
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            self._stopping = True
            await self._safe_state()
            await self._release()

    # ------------------------------------------------------------------ outputs

    async def _open_outputs(self) -> None:
        hw = self._hw
        if hw is None:  # no Blinka needed (DS18B20s only), hence no outputs
            return
        for out in self.outputs.values():
            if out.obj is not None:
                continue
            p = out.io
            init: bool | float = p.init if p.init is not None else (False if p.kind == "do" else 0.0)
            try:
                if p.kind == "do":
                    assert p.pin is not None
                    out.obj = await self.gpio.call(hw.digital_out, p.pin, bool(init) != p.invert)
                else:
                    assert p.pin is not None
                    out.obj = await self.gpio.call(hw.pwm, p.pin, p.freq, float(init))
            except Exception as exc:
                out.error = f"{p.pin}: {exc}"
                log.error("local I/O %s.%s: cannot open %s: %s", self.device, p.name, p.pin, exc)
                await self._publish([self._bad(p.name)])
                continue
            out.value = init
            out.error = ""
            await self._publish([self._reading(p.name, init)])

    async def _reopen_outputs(self) -> None:
        backoff = Backoff(1.0, self.section.backoff_max)
        while any(o.obj is None for o in self.outputs.values()):
            await asyncio.sleep(backoff.failed())
            await self._open_outputs()

    async def _safe_state(self) -> None:
        """Every output with a `safe` value is set to it (queued after the writes in flight)."""
        for out in self.outputs.values():
            safe = out.io.safe
            if out.obj is None or safe is None:
                continue
            try:
                await asyncio.shield(self.gpio.call(out.set, safe))
            except Exception as exc:
                log.error("local I/O %s.%s: safe value %s not set: %s", self.device, out.io.name, safe, exc)
                continue
            out.value = safe
            log.info("local I/O %s.%s: safe value %s set", self.device, out.io.name, safe)
            with contextlib.suppress(Exception):
                await self._publish([self._reading(out.io.name, safe)])

    async def _release(self) -> None:
        objs = [o.obj for o in self.outputs.values()] + [i.dio for i in self._inputs]
        objs += [s.analog for s in self._sensors] + list(self._i2c.values())
        self._i2c.clear()
        for out in self.outputs.values():
            out.obj = None
            out.error = "stopped"

        def release() -> None:
            for obj in objs:
                if obj is not None:
                    with contextlib.suppress(Exception):
                        obj.deinit()

        with contextlib.suppress(Exception):
            await self.gpio.call(release)
        for worker in (self.gpio, self._w1, *self.buses.values()):
            worker.close()

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        out = self.outputs.get(point.name)
        where = f"{self.device}.{point.name}"
        if out is None:
            raise WriteError(ErrorCode.READ_ONLY, f"{where}: not an output")
        if self._stopping:
            raise WriteError(ErrorCode.DEVICE_OFFLINE, f"{where}: the local I/O is stopping")
        if out.obj is None:
            raise WriteError(ErrorCode.DEVICE_OFFLINE, f"{where}: the pin is not open ({out.error})")
        assert isinstance(value, bool | int | float)
        target: bool | float = bool(value) if out.io.kind == "do" else float(value)
        ticket.send()
        try:
            await self.gpio.call(out.set, target)
        except DriverBusy as exc:  # certainly not written
            raise WriteError(ErrorCode.DEVICE_OFFLINE, f"{where}: not written: {exc}") from None
        except DriverTimeout as exc:
            raise WriteError(ErrorCode.OUTCOME_UNKNOWN, f"{where}: {exc}") from None
        except Exception as exc:
            raise WriteError(ErrorCode.DEVICE_ERROR, f"{where}: {type(exc).__name__}: {exc}") from None
        out.value = target
        self.stats.writes += 1
        await self._publish([self._reading(point.name, target)])

    # ------------------------------------------------------------------ inputs

    def _open_inputs(self) -> list[str]:
        """Blocking: open the input pins not open yet; the errors."""
        assert self._hw is not None
        errors = []
        for i in self._inputs:
            if i.dio is None:
                assert i.io.pin is not None
                try:
                    i.dio = self._hw.digital_in(i.io.pin, i.io.pull)
                except Exception as exc:
                    errors.append(f"{i.io.name} ({i.io.pin}): {exc}")
        return errors

    def _read_inputs(self) -> list[bool | Exception | None]:
        """Blocking: every input's level (None: not open; the exception: could not be read)."""
        levels: list[bool | Exception | None] = []
        for i in self._inputs:
            try:
                levels.append(bool(i.dio.value) if i.dio is not None else None)
            except Exception as exc:  # this pin alone: the others are read on
                levels.append(exc)
        return levels

    async def _sample_loop(self) -> None:
        sample = self.section.sample
        backoff = Backoff(sample, self.section.backoff_max)
        failing = ""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for i in self._inputs:
            i.next_report = next_at + i.io.every
        reopen = Backoff(1.0, self.section.backoff_max)
        open_at = 0.0  # when to try again to open the inputs that could not be opened
        unopened = ""
        while True:
            try:
                if any(i.dio is None for i in self._inputs) and loop.time() >= open_at:
                    errors = await self.gpio.call(self._open_inputs)
                    if errors:
                        open_at = loop.time() + reopen.failed()
                        if "; ".join(errors) != unopened:
                            unopened = "; ".join(errors)
                            log.error("local I/O %s: cannot open inputs: %s", self.device, unopened)
                            await self._publish([self._bad(i.io.name) for i in self._inputs if i.dio is None])
                    else:
                        unopened = ""
                levels = await self.gpio.call(self._read_inputs)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self._count("timeout" if isinstance(exc, DriverTimeout) else "error")
                if reason != failing:
                    log.warning("local I/O %s: inputs not read: %s", self.device, reason)
                    failing = reason
                    for i in self._inputs:
                        i.debouncer.reset()
                        if i.counter is not None:
                            i.counter.lost()
                    await self._publish([self._bad(i.io.name) for i in self._inputs])
                await asyncio.sleep(backoff.failed())
                next_at = loop.time()
                continue
            if failing:
                log.info("local I/O %s: inputs read again", self.device)
                failing = ""
            backoff.ok()
            now = loop.time()
            readings = []
            for i, level in zip(self._inputs, levels, strict=True):
                if level is None:
                    continue
                if isinstance(level, Exception):
                    self._count("error")
                    if not i.failing:
                        i.failing = _reason(level)
                        log.warning(
                            "local I/O %s.%s: %s not read: %s", self.device, i.io.name, i.io.pin, i.failing
                        )
                        i.debouncer.reset()
                        if i.counter is not None:
                            i.counter.lost()
                        readings.append(self._bad(i.io.name))
                    continue
                if i.failing:
                    log.info("local I/O %s.%s: %s read again", self.device, i.io.name, i.io.pin)
                    i.failing = ""
                changed = i.debouncer.update(level != (i.io.invert and i.io.kind == "di"), now)
                if i.counter is None:
                    if changed is not None:
                        readings.append(self._reading(i.io.name, changed))
                    continue
                if changed is not None:
                    i.counter.level(changed)
                if now >= i.next_report:
                    readings.append(self._reading(i.io.name, i.counter.count))
                    i.next_report = max(i.next_report + i.io.every, now)
            if readings:
                await self._publish(readings)
            next_at += sample
            delay = next_at - loop.time()
            if delay < 0:  # behind (a slow read): go on from now, without catching up
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------ sensors

    def _open_sensor(self, s: _Sensor) -> Callable[[], dict[str, float]]:
        """Blocking: the reader of a sensor (opening the driver talks to the chip)."""
        p = s.io
        if p.kind == "ds18b20":
            root, rom = self.section.w1_path, p.rom
            return lambda: {"": _w1.read(root, rom)}
        hw = self._hw
        assert hw is not None
        if p.kind == "adc":
            assert p.pin is not None
            if s.analog is None:
                s.analog = hw.analog_in(p.pin)
            analog = s.analog
            return lambda: {"": analog.value * p.scale + p.offset}
        bus = self._i2c.get((p.sda, p.scl))
        if bus is None:
            bus = self._i2c[(p.sda, p.scl)] = hw.i2c(p.scl, p.sda)
        return sensor_reader(p, bus)

    def _read_sensor(self, s: _Sensor) -> dict[str, float]:
        if s.reader is None:
            s.reader = self._open_sensor(s)
        try:
            return s.reader()
        except BaseException:
            s.reader = None  # opened anew at the next try: the chip may have been reset or replaced
            raise

    async def _sensor_loop(self, s: _Sensor) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ts = time.time_ns()
            try:
                values = await s.worker.call(self._read_sensor, s)
                readings = [
                    self._reading(point, check_value(s.io.kind, suffix, values[suffix]), ts)
                    for suffix, point, _ in s.points
                ]
            except Exception as exc:
                reason = _reason(exc)
                self._count(
                    "timeout"
                    if isinstance(exc, DriverTimeout)
                    else "value"
                    if isinstance(exc, ValueError)
                    else "error"
                )
                if s.reader is not None and isinstance(exc, ValueError):
                    s.reader = None
                retry = s.backoff.failed()
                if not s.failing:
                    log.warning(
                        "local I/O %s.%s (%s) failed, its points are bad; retrying every %gs up to %gs: %s",
                        self.device, s.io.name, s.io.kind, s.io.every, self.section.backoff_max, reason,
                    )  # fmt: skip
                    await self._publish([self._bad(point, ts) for _, point, _ in s.points])
                s.failing = reason
                next_at = loop.time() + retry
                continue
            self.stats.reads += 1
            if s.failing:
                log.info("local I/O %s.%s (%s) answers again", self.device, s.io.name, s.io.kind)
                s.failing = ""
            s.backoff.ok()
            await self._publish(readings)
            next_at = max(next_at + s.io.every, loop.time())

    # ------------------------------------------------------------------ helpers

    def _count(self, reason: str) -> None:
        self.stats.failures[reason] = self.stats.failures.get(reason, 0) + 1

    def _reading(self, point: str, value: Value, ts: int | None = None) -> Reading:
        return Reading(
            self.device, point, value, ts or time.time_ns(), Quality.GOOD, self._units.get(point, "")
        )

    def _bad(self, point: str, ts: int | None = None) -> Reading:
        return Reading(
            self.device, point, None, ts or time.time_ns(), Quality.BAD, self._units.get(point, "")
        )

    async def _publish(self, readings: Sequence[Reading]) -> None:
        await self._emit(list(readings), wait=False)

    async def _set_state(self, state: DeviceState, reason: str) -> None:
        if self.registry.set_device_state(self.device, state, reason=reason, ts=time.time_ns()):
            status = self.registry.device(self.device)
            assert status is not None
            await self._status_changed(status)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Writer:
    """The router's handle on the outputs."""

    def __init__(self, source: LocalIoSource) -> None:
        self._source = source

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        await self._source.write(point, value, ticket)
