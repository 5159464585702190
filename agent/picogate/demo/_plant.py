"""A small simulated plant: three Modbus field devices whose values move like real ones.

- `boiler` (Modbus TCP, unit 1): a burner with a thermostat around a writable setpoint; the water
  temperature rises while the flame burns and falls while it is out, the pressure follows it.
- `pump` (Modbus TCP, unit 1): a run command and a writable speed setpoint; the motor ramps to it,
  current follows the load, the mains voltage sags a little under it.
- `tank` (Modbus RTU, unit 3, over a socat pty pair): filled by the pump, drained by a consumer
  whose demand drifts; high- and low-level switches.

A task advances the physics every `tick` seconds, reading the writable registers back from the
tables first, so a setpoint, the burner switch or the pump speed written by the gateway change
what happens next.  Register maps (protocol addresses, big-endian words) are in each class's
docstring and in `examples/gateway.yaml`.

pymodbus 3.16.1's own datastore is deprecated and shifts addresses by one (a block created at
address 1 serves protocol address 0), and its stock request handler reads the request again after
awaiting the datastore.  So the devices keep their own tables, which pymodbus's request PDUs
reach through two duck-typed methods (`async_getValues`/`async_setValues`), and a small handler
subclass takes each request as it arrives and answers exactly that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import shutil
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from picogate.demo._proc import LOOPBACK, ChildProcess, DemoError, free_port

log = logging.getLogger("picogate.demo.plant")

Table = Literal["co", "di", "hr", "ir"]
_FC_TABLE: dict[int, Table] = {
    1: "co",
    5: "co",
    15: "co",
    2: "di",
    4: "ir",
    3: "hr",
    6: "hr",
    16: "hr",
    22: "hr",
    23: "hr",
}
_TABLE_NAMES: dict[Table, str] = {"co": "coil", "di": "discrete input", "hr": "holding", "ir": "input"}
START_TIMEOUT = 10.0


# --------------------------------------------------------------------------- tables


class Registers:
    """One unit's four tables, indexed by protocol address (what `read_holding_registers(0)` reads)."""

    def __init__(self, size: int = 32) -> None:
        self.bits: dict[Table, list[bool]] = {"co": [False] * size, "di": [False] * size}
        self.words: dict[Table, list[int]] = {"hr": [0] * size, "ir": [0] * size}
        self.size = size

    def fits(self, address: int, count: int) -> bool:
        return count >= 1 and address >= 0 and address + count <= self.size

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool]:
        if table in self.bits:
            return self.bits[table][address : address + count]
        return self.words[table][address : address + count]

    def write(self, table: Table, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        if table in self.bits:
            self.bits[table][address : address + len(values)] = [bool(v) for v in values]
        else:
            self.words[table][address : address + len(values)] = [int(v) & 0xFFFF for v in values]

    # Typed access for the physics (big-endian words: the ABCD byte order).
    def u16(self, table: Table, address: int) -> int:
        return self.words[table][address]

    def set_u16(self, table: Table, address: int, value: float) -> None:
        self.words[table][address] = max(0, min(0xFFFF, round(value)))

    def set_i16(self, table: Table, address: int, value: float) -> None:
        self.words[table][address] = max(-0x8000, min(0x7FFF, round(value))) & 0xFFFF

    def set_u32(self, table: Table, address: int, value: int) -> None:
        value &= 0xFFFF_FFFF
        self.words[table][address : address + 2] = [value >> 16, value & 0xFFFF]

    def set_f32(self, table: Table, address: int, value: float) -> None:
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
        self.words[table][address : address + 2] = [hi, lo]

    def bit(self, table: Table, address: int) -> bool:
        return self.bits[table][address]

    def set_bit(self, table: Table, address: int, value: bool) -> None:
        self.bits[table][address] = value


# --------------------------------------------------------------------------- devices


class FieldDevice:
    """A simulated device: its tables, its physics, and the names of its writable registers."""

    name: ClassVar[str]
    writable: ClassVar[dict[tuple[Table, int], str]] = {}

    def __init__(self, unit_id: int, rng: random.Random) -> None:
        self.unit_id = unit_id
        self.regs = Registers()
        self.rng = rng
        self.writes = 0

    def step(self, dt: float, t: float) -> None:
        raise NotImplementedError

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)

    def written(self, table: Table, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        """A write arrived over the wire (the tables already hold it)."""
        self.writes += 1
        what = ", ".join(
            f"{self.writable.get((table, address + i), f'{_TABLE_NAMES[table]} {address + i}')}={v}"
            for i, v in enumerate(values)
        )
        log.info("%s received a Modbus write: %s", self.name, what)


class Boiler(FieldDevice):
    """Input registers: 0 temperature int16 ×0.1 °C; 1-2 pressure float32 bar; 3-4 burner run
    time uint32 in thousandths of an hour; 5 status (bit 0 flame, bit 1 over-temperature, bit 2
    burner enabled).  Holding register 0: setpoint uint16 ×0.1 °C.  Coil 0: burner enabled.

    With the burner enabled a thermostat lights the flame 1 °C below the setpoint and puts it out
    1 °C above; the flame heats the water, the room cools it."""

    name = "boiler"
    writable: ClassVar[dict[tuple[Table, int], str]] = {("hr", 0): "setpoint (×0.1 °C)", ("co", 0): "burner"}
    HYSTERESIS = 1.0
    HEAT = 1.6  # °C/s while the flame burns
    LOSS = 0.015  # 1/s towards the room temperature
    ROOM = 18.0

    def __init__(self, unit_id: int, rng: random.Random) -> None:
        super().__init__(unit_id, rng)
        self.temperature = 52.0
        self.flame = False
        self.run_mh = 12_345_678  # 12 345.678 h
        self._run_frac = 0.0
        self.regs.set_u16("hr", 0, 650)  # 65.0 °C
        self.regs.set_bit("co", 0, True)
        self.step(0.0, 0.0)

    @property
    def setpoint(self) -> float:
        return self.regs.u16("hr", 0) / 10.0

    @property
    def burner(self) -> bool:
        return self.regs.bit("co", 0)

    def step(self, dt: float, t: float) -> None:
        setpoint = self.setpoint
        if not self.burner:
            self.flame = False
        elif self.temperature < setpoint - self.HYSTERESIS:
            self.flame = True
        elif self.temperature > setpoint + self.HYSTERESIS:
            self.flame = False
        heat = self.HEAT if self.flame else 0.0
        self.temperature += (heat - self.LOSS * (self.temperature - self.ROOM)) * dt + self.noise(0.03) * min(
            dt, 1
        )
        if self.flame:
            self._run_frac += dt / 3.6  # thousandths of an hour
            whole = int(self._run_frac)
            self.run_mh += whole
            self._run_frac -= whole
        pressure = 1.2 + 0.035 * max(0.0, self.temperature - 20.0) + self.noise(0.004)
        overtemp = self.temperature > 95.0
        r = self.regs
        r.set_i16("ir", 0, self.temperature * 10)
        r.set_f32("ir", 1, pressure)
        r.set_u32("ir", 3, self.run_mh)
        r.set_u16("ir", 5, int(self.flame) | int(overtemp) << 1 | int(self.burner) << 2)


class Pump(FieldDevice):
    """Input registers: 0-1 supply voltage float32 V; 2-3 motor current float32 A; 4 speed uint16
    rpm.  Holding register 0: speed setpoint uint16 rpm.  Coil 0: run command.

    The motor ramps towards the setpoint while running and coasts down when stopped; its current
    grows with the square of the speed.  `flow` (L/min) fills the tank."""

    name = "pump"
    writable: ClassVar[dict[tuple[Table, int], str]] = {("hr", 0): "speed_setpoint", ("co", 0): "running"}
    NOMINAL_RPM = 1450.0
    NOMINAL_FLOW = 120.0  # L/min at the nominal speed
    RAMP = 600.0  # rpm/s

    def __init__(self, unit_id: int, rng: random.Random) -> None:
        super().__init__(unit_id, rng)
        self.speed = 1450.0
        self.regs.set_u16("hr", 0, 1450)
        self.regs.set_bit("co", 0, True)
        self.step(0.0, 0.0)

    @property
    def flow(self) -> float:
        return self.NOMINAL_FLOW * self.speed / self.NOMINAL_RPM

    def step(self, dt: float, t: float) -> None:
        target = float(self.regs.u16("hr", 0)) if self.regs.bit("co", 0) else 0.0
        change = max(-self.RAMP * dt, min(self.RAMP * dt, target - self.speed))
        self.speed = max(0.0, self.speed + change)
        load = self.speed / self.NOMINAL_RPM
        current = (0.35 + 11.0 * load * load + self.noise(0.05)) if self.speed > 1 else 0.0
        voltage = 400.0 - 0.3 * current + self.noise(0.4)
        r = self.regs
        r.set_f32("ir", 0, voltage)
        r.set_f32("ir", 2, max(0.0, current))
        r.set_u16("ir", 4, self.speed)


class Tank(FieldDevice):
    """Input registers: 0 level uint16 ×0.1 %; 1 inflow uint16 ×0.1 L/min; 2 outflow uint16
    ×0.1 L/min.  Discrete inputs: 0 high level (≥ 90 %), 1 low level (≤ 10 %).

    Filled by the pump; a consumer drains it through a valve whose opening drifts slowly, so the
    outflow grows with the square root of the level and the level settles where they balance."""

    name = "tank"
    VOLUME = 150.0  # litres at 100 %
    VALVE = 15.5  # L/min per √%
    DRIFT_PERIOD = 90.0  # s

    def __init__(self, unit_id: int, rng: random.Random) -> None:
        super().__init__(unit_id, rng)
        self.level = 55.0
        self.inflow = 0.0
        self.outflow = 0.0
        self.step(0.0, 0.0)

    def step(self, dt: float, t: float) -> None:
        valve = self.VALVE + 2.5 * math.sin(2 * math.pi * t / self.DRIFT_PERIOD)
        self.outflow = valve * math.sqrt(max(self.level, 0.0))
        self.level += (self.inflow - self.outflow) / self.VOLUME * 100.0 * dt / 60.0
        self.level = max(0.0, min(100.0, self.level))
        r = self.regs
        r.set_u16("ir", 0, self.level * 10)
        r.set_u16("ir", 1, max(0.0, self.inflow + self.noise(0.3)) * 10)
        r.set_u16("ir", 2, self.outflow * 10)
        r.set_bit("di", 0, self.level >= 90.0)
        r.set_bit("di", 1, self.level <= 10.0)


# --------------------------------------------------------------------------- serving them


class _Datastore:
    """What pymodbus's request PDUs call to read and write (duck-typed: only these two methods)."""

    def __init__(self, device: FieldDevice) -> None:
        self.device = device

    def device_ids(self) -> list[int]:
        return [self.device.unit_id]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if device_id != self.device.unit_id:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if not self.device.regs.fits(address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        return self.device.regs.read(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        table = _FC_TABLE.get(func_code)
        if table is None or table in ("di", "ir"):
            return ExcCodes.ILLEGAL_FUNCTION
        if device_id != self.device.unit_id:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if not self.device.regs.fits(address, len(values)):
            return ExcCodes.ILLEGAL_ADDRESS
        self.device.regs.write(table, address, values)
        self.device.written(table, address, values)
        return None


class _Handler(ServerRequestHandler):
    """Takes each request the moment it is decoded and answers exactly that one, in its own task."""

    endpoint: _Endpoint

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        used: int = super().callback_data(data, addr)
        request, self.last_pdu = self.last_pdu, None  # the stock handler's later look finds nothing
        if request is not None:
            self.endpoint.spawn(self._answer(request, addr))
        return used

    async def _answer(self, request: Any, addr: tuple[Any, ...] | None) -> None:
        endpoint = self.endpoint
        if request.dev_id != endpoint.device.unit_id and endpoint.silent_for_others:
            return  # an RS-485 slave ignores frames for other unit ids
        try:
            response = await request.datastore_update(endpoint.datastore, request.dev_id)
        except Exception:
            log.exception("%s could not answer %r", endpoint.device.name, request)
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        if self.transport is not None:
            self.server_send(response, addr)  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


def _placeholder() -> SimDevice:
    """pymodbus wants a datastore at construction; ours replaces it right after."""
    return SimDevice(0, simdata=[SimData(0, datatype=DataType.REGISTERS)])


class _Endpoint:
    """One pymodbus server serving one device, on a TCP port or a serial (pty) device."""

    def __init__(self, device: FieldDevice, *, port: int | None = None, tty: str | None = None) -> None:
        self.device = device
        self.port = port
        self.tty = tty
        self.silent_for_others = tty is not None
        self.datastore = _Datastore(device)
        self._server: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            coro, name=f"plant-{self.device.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handler(self, server: Any) -> _Handler:
        handler = _Handler(server, server.trace_packet, server.trace_pdu, server.trace_connect)  # type: ignore[no-untyped-call]
        handler.endpoint = self
        return handler

    async def start(self) -> None:
        endpoint = self
        if self.tty is not None:

            class _Serial(ModbusSerialServer):
                def callback_new_connection(self) -> _Handler:
                    return endpoint._handler(self)

            server: Any = _Serial(
                _placeholder(),
                framer=FramerType.RTU,
                port=self.tty,
                baudrate=19200,
                bytesize=8,
                parity="N",
                stopbits=1,
            )
        else:

            class _Tcp(ModbusTcpServer):
                def callback_new_connection(self) -> _Handler:
                    return endpoint._handler(self)

            assert self.port is not None
            server = _Tcp(_placeholder(), address=(LOOPBACK, self.port))
        server.context = self.datastore
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await server.serve_forever(background=True)
        except (OSError, RuntimeError, TimeoutError) as exc:
            where = self.tty or f"{LOOPBACK}:{self.port}"
            raise DemoError(f"simulated {self.device.name}: cannot serve Modbus on {where}: {exc}") from exc
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):  # TimeoutError included
                async with asyncio.timeout(3):
                    await server.shutdown()


class Plant:
    """The three devices, their servers, the pty pair for the RTU line and the physics task.

    `async with Plant(workdir) as plant:` — then `plant.boiler_port`, `plant.pump_port` and
    `plant.tank_tty` (the end of the pty pair the gateway opens) say where to find them.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        unit_ids: Mapping[str, int] | None = None,
        tick: float = 0.2,
        seed: int | None = None,
    ) -> None:
        units = {"boiler": 1, "pump": 1, "tank": 3, **(unit_ids or {})}
        rng = random.Random(seed)
        self.workdir = workdir
        self.tick = tick
        self.boiler = Boiler(units["boiler"], rng)
        self.pump = Pump(units["pump"], rng)
        self.tank = Tank(units["tank"], rng)
        self.boiler_port = free_port()
        self.pump_port = free_port()
        while self.pump_port == self.boiler_port:
            self.pump_port = free_port()
        self.tty_server = str(workdir / "ttyPlant")
        self.tank_tty = str(workdir / "ttyGateway")
        self._socat: ChildProcess | None = None
        self._endpoints: list[_Endpoint] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def devices(self) -> list[FieldDevice]:
        return [self.boiler, self.pump, self.tank]

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise DemoError(
                "the simulated RS-485 line needs socat, which is not installed.\n"
                "Install it with:  sudo apt-get install socat   (or run tools/bootstrap.sh)"
            )
        for link in (self.tty_server, self.tank_tty):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)  # a stale link from an earlier run would look ready at once
        self._socat = ChildProcess(
            "socat",
            [socat, f"pty,raw,echo=0,link={self.tty_server}", f"pty,raw,echo=0,link={self.tank_tty}"],
            self.workdir / "socat.log",
        )
        self._socat.start()

        def linked() -> bool:
            return os.path.exists(self.tty_server) and os.path.exists(self.tank_tty)

        await self._socat.wait_ready(linked, "creating the pty pair", within=START_TIMEOUT)
        self._endpoints = [
            _Endpoint(self.boiler, port=self.boiler_port),
            _Endpoint(self.pump, port=self.pump_port),
            _Endpoint(self.tank, tty=self.tty_server),
        ]
        for endpoint in self._endpoints:
            await endpoint.start()
        self._task = asyncio.create_task(self._run(), name="plant-physics")

    async def _run(self) -> None:
        started = last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self.step(now - last, now - started)
            last = now

    def step(self, dt: float, t: float) -> None:
        """Advance the physics by `dt` seconds (`t`: seconds since the start)."""
        self.pump.step(dt, t)
        self.tank.inflow = self.pump.flow
        self.tank.step(dt, t)
        self.boiler.step(dt, t)

    async def stop(self) -> None:
        """Stop the physics, the servers, then socat.  Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        endpoints, self._endpoints = self._endpoints, []
        for endpoint in endpoints:
            await endpoint.stop()
        socat, self._socat = self._socat, None
        if socat is not None:
            socat.stop()

    async def __aenter__(self) -> Plant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
