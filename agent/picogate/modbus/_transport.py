"""`ModbusLink`: one connection (a TCP socket or a serial line) carrying requests for its unit ids.
The only module of the agent that talks to the wire, and the only one that imports pymodbus.

Two drivers serve a link (`driver:` of the devices on it; docs/modbus.md says when to choose
which):

- `builtin` (the default): our own frames (`_wire.py`) on asyncio: Modbus TCP on a Protocol with
  replies matched by transaction id (`_mbap.py`); RTU on a serial port read with
  `loop.add_reader`, or on a TCP socket, with t3.5 silences, reply matching by unit, function,
  byte count or echo and CRC, and quiet windows after a timeout (`_rtu.py`).  About a fifth of
  pymodbus's CPU per request (docs/modbus.md, `bench/modbus_wire.py`).
- `pymodbus`: pymodbus 3.16.1's async clients (pinned: pymodbus renamed `slave` to `device_id`,
  moved its framers and flipped the bit order of coils across 3.x; keeping every call here means
  one place to mend when it moves again).  Its own retries and automatic reconnect are off:
  timing, retries and backoff belong to our poller.  Imported only when a link uses it.

One request is on the wire at a time per link (the lock below), whatever the callers do: many
devices and TCP-to-RTU gateways answer one transaction at a time, and a serial line can only
carry one.  Requests are built once per distinct (unit, table, address, count) and cached.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from picogate._errors import PicogateError
from picogate.modbus._codec import Table
from picogate.modbus._mbap import MbapConnection
from picogate.modbus._rtu import RtuLine, SerialCarrier, SerialTiming, TcpCarrier
from picogate.modbus._wire import (
    EXCEPTION_NAMES,
    Desync,
    ExceptionReply,
    Mismatch,
    Request,
    WireError,
    WireStats,
    mask_write_request,
    read_request,
    rtu_frame,
    write_request,
)

__all__ = [
    "EXCEPTION_NAMES",
    "LATE_REPLY_FACTOR",
    "Driver",
    "FailKind",
    "ModbusFailure",
    "ModbusLink",
    "SerialParams",
    "TcpParams",
    "WireStats",
]

log = logging.getLogger("picogate.modbus")

# Silence pymodbus's own logging of every timeout and reconnect: we log once, with the device name.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

Driver = Literal["builtin", "pymodbus"]

LATE_REPLY_FACTOR = 3.0
"""A unit's `late_reply` window, when not configured, is this many times the request's timeout."""

_READ_FC = {Table.COIL: 1, Table.DISCRETE_INPUT: 2, Table.HOLDING: 3, Table.INPUT: 4}
_CACHE_MAX = 4096


class FailKind(enum.StrEnum):
    TIMEOUT = "timeout"  # no (valid) reply in time
    EXCEPTION = "exception"  # the device answered with a Modbus exception
    DISCONNECTED = "disconnected"  # no connection to the device or the serial port
    PROTOCOL = "protocol"  # a reply that does not fit the request


class ModbusFailure(PicogateError):
    def __init__(self, kind: FailKind, message: str, *, exception_code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.exception_code = exception_code


@dataclass(frozen=True, slots=True)
class TcpParams:
    host: str
    port: int = 502
    framing: str = "socket"  # "rtu": RTU framing over TCP


@dataclass(frozen=True, slots=True)
class SerialParams:
    port: str
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


class ModbusLink:
    """One connection (TCP socket or serial line) carrying requests for one or more unit ids.

    `timeout` may be changed between requests (the poller sets each device's own).  `late_reply`
    maps a unit id to its window after a timeout on an RTU line (docs/modbus.md); a unit not in
    it gets `LATE_REPLY_FACTOR` × the timeout.  `stats` counts what was discarded.
    """

    def __init__(
        self,
        params: TcpParams | SerialParams,
        *,
        timeout: float = 1.0,
        late_reply: Mapping[int, float | None] | None = None,
        driver: Driver = "builtin",
    ) -> None:
        self.params = params
        self.timeout = timeout
        self.driver = driver
        self.stats = WireStats()
        self._late = {u: s for u, s in (late_reply or {}).items() if s is not None}
        self._rtu_framing = not isinstance(params, TcpParams) or params.framing == "rtu"
        self.description = (
            f"{params.host}:{params.port}" if isinstance(params, TcpParams) else f"{params.port}"
        )
        self._lock = asyncio.Lock()
        self._requests: dict[tuple[int, Table, int, int], tuple[Request, bytes]] = {}
        self._mbap: MbapConnection | None = None
        self._timing = (
            SerialTiming(params.baudrate, params.bytesize, params.parity, params.stopbits)
            if isinstance(params, SerialParams)
            else None
        )
        self._rtu = RtuLine(self.stats, self._timing) if self._rtu_framing else None
        self._py = _Pymodbus(self) if driver == "pymodbus" else None

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        if self._py is not None:
            return self._py.connected
        if self._rtu is not None:
            return self._rtu.carrier is not None
        return self._mbap is not None and self._mbap.connected

    async def connect(self) -> None:
        if self.connected:
            return
        self.close()
        if self._py is not None:
            await self._py.connect()
            return
        p = self.params
        timeout = self.timeout + 1
        try:
            if isinstance(p, SerialParams):
                assert self._rtu is not None
                assert self._timing is not None
                SerialCarrier(p.port, self._timing, self._rtu)
            elif self._rtu is not None:
                await TcpCarrier.open(p.host, p.port, timeout, self._rtu)
            else:
                self._mbap = await MbapConnection.open(p.host, p.port, timeout, self.stats)
        except TimeoutError as exc:
            raise ModbusFailure(
                FailKind.DISCONNECTED, f"cannot connect to {self.description}: no answer within {timeout:g} s"
            ) from exc
        except OSError as exc:  # serial.SerialException is an OSError
            raise ModbusFailure(
                FailKind.DISCONNECTED, f"cannot connect to {self.description}: {exc}"
            ) from exc

    def close(self) -> None:
        if self._py is not None:
            self._py.close()
        if self._mbap is not None:
            self._mbap.close()
            self._mbap = None
        if self._rtu is not None:
            self._rtu.close()

    def quiet_until(self, unit: int) -> float:
        """`time.monotonic()` before which `unit` is sent nothing but a retry of the request that
        timed out (RTU framing: its late reply may still come; docs/modbus.md).  0 when free."""
        if self._py is not None:
            return self._py.quiet_until(unit)
        if self._rtu is not None:
            return self._rtu.quiet_until(unit)
        return 0.0

    def late_reply(self, unit: int, timeout: float) -> float:
        late = self._late.get(unit)
        return late if late is not None else LATE_REPLY_FACTOR * timeout

    # ------------------------------------------------------------------ requests

    async def read(self, unit: int, table: Table, start: int, count: int) -> list[int] | list[bool]:
        if self._py is not None:
            return await self._py.read(unit, table, start, count)
        key = (unit, table, start, count)
        built = self._requests.get(key)
        if built is None:
            built = self._build(lambda: read_request(unit, _READ_FC[table], start, count), "read", *key)
            if len(self._requests) >= _CACHE_MAX:
                self._requests.clear()
            self._requests[key] = built
        values = await self._call(built, "read", *key)
        assert values is not None
        return values

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        """FC 5 / 15 for coils, FC 6 / 16 for holding registers, as the width needs."""
        if self._py is not None:
            await self._py.write(unit, table, address, values)
            return
        if table is Table.COIL:
            fc = 5 if len(values) == 1 else 15
            items: list[int | bool] = [bool(v) for v in values]
        elif table is Table.HOLDING:
            fc = 6 if len(values) == 1 else 16
            items = [int(v) for v in values]
        else:
            raise ModbusFailure(FailKind.PROTOCOL, f"{table.value} is read-only")
        where = (unit, table, address, len(values))
        built = self._build(lambda: write_request(unit, fc, address, items), "write", *where)
        await self._call(built, "write", *where)

    async def mask_write(self, unit: int, address: int, and_mask: int, or_mask: int) -> None:
        """FC 22 Mask Write Register."""
        if self._py is not None:
            await self._py.mask_write(unit, address, and_mask, or_mask)
            return
        where = (unit, Table.HOLDING, address, 1)
        built = self._build(lambda: mask_write_request(unit, address, and_mask, or_mask), "mask", *where)
        await self._call(built, "mask", *where)

    def _build(
        self, make: Callable[[], Request], kind: str, unit: int, table: Table, address: int, count: int
    ) -> tuple[Request, bytes]:
        try:
            req = make()
            return req, rtu_frame(req) if self._rtu is not None else b""
        except WireError as exc:
            raise ModbusFailure(
                FailKind.PROTOCOL, f"{_what(kind, unit, table, address, count)}: {exc}"
            ) from exc

    async def _call(
        self, built: tuple[Request, bytes], kind: str, unit: int, table: Table, address: int, count: int
    ) -> list[int] | list[bool] | None:
        req, frame = built
        timeout = self.timeout
        lock = self._lock
        await lock.acquire()
        try:
            rtu = self._rtu
            if rtu is not None:
                if rtu.carrier is None:
                    await self.connect()
                return await rtu.request(req, frame, timeout, self.late_reply(unit, timeout))
            mbap = self._mbap
            if mbap is None or not mbap.connected:
                await self.connect()
                mbap = self._mbap
                assert mbap is not None
            return await mbap.request(req, timeout)
        except TimeoutError as exc:
            seen = f" (received {exc})" if str(exc) else ""
            raise ModbusFailure(
                FailKind.TIMEOUT,
                f"{_what(kind, unit, table, address, count)}: no reply within {timeout:g} s{seen}",
            ) from exc
        except ExceptionReply as exc:
            raise ModbusFailure(
                FailKind.EXCEPTION,
                f"{_what(kind, unit, table, address, count)}: {exc}",
                exception_code=exc.code,
            ) from exc
        except Desync as exc:
            self.close()
            raise ModbusFailure(
                FailKind.PROTOCOL,
                f"{_what(kind, unit, table, address, count)}: {exc}; connection dropped",
            ) from exc
        except Mismatch as exc:
            raise ModbusFailure(
                FailKind.PROTOCOL, f"{_what(kind, unit, table, address, count)}: {exc}"
            ) from exc
        except (OSError, RuntimeError) as exc:
            # ConnectionError; or a peer that closed under us: uvloop raises RuntimeError
            # ("unable to perform operation on <TCPTransport closed=True>") from the write.
            self.close()
            raise ModbusFailure(
                FailKind.DISCONNECTED,
                f"{_what(kind, unit, table, address, count)}: connection to {self.description} lost ({exc})",
            ) from exc

        finally:
            lock.release()


def _what(kind: str, unit: int, table: Table, address: int, count: int) -> str:
    if kind == "read":
        return f"read {table.value} {address}+{count} from unit {unit}"
    if kind == "mask":
        return f"mask write holding {address} on unit {unit}"
    return f"write {table.value} {address}+{count} to unit {unit}"


# --------------------------------------------------------------------------------------------------
# driver: pymodbus


class _Pymodbus:
    """pymodbus 3.16.1's async clients behind a `ModbusLink` (`driver: pymodbus`).

    RTU frames carry no transaction id, and pymodbus takes any frame of the asked unit that
    parses for the reply: so after a timeout the unit is sent nothing at all until the whole
    late-reply window has passed (no early end, no retry inside it: pymodbus does not tell which
    frames it dropped)."""

    def __init__(self, link: ModbusLink) -> None:
        self.link = link
        self._client: Any = None
        self._quiet_until: dict[int, float] = {}

    def _make_client(self) -> Any:
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        p = self.link.params
        if isinstance(p, TcpParams):
            framer = FramerType.RTU if p.framing == "rtu" else FramerType.SOCKET
            return AsyncModbusTcpClient(
                p.host, port=p.port, framer=framer, timeout=self.link.timeout, retries=0, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            p.port,
            framer=FramerType.RTU,
            baudrate=p.baudrate,
            parity=p.parity,
            stopbits=p.stopbits,
            bytesize=p.bytesize,
            timeout=self.link.timeout,
            retries=0,
            reconnect_delay=0,
        )

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def connect(self) -> None:
        from pymodbus.exceptions import ModbusException

        client = self._make_client()
        desc = self.link.description
        try:
            async with asyncio.timeout(self.link.timeout + 1):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise ModbusFailure(FailKind.DISCONNECTED, f"cannot connect to {desc}: {exc}") from exc
        if not ok:
            client.close()
            raise ModbusFailure(FailKind.DISCONNECTED, f"cannot connect to {desc}")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def quiet_until(self, unit: int) -> float:
        return self._quiet_until.get(unit, 0.0)

    async def _settle(self, unit: int) -> None:
        if self._quiet_until:
            wait = self._quiet_until.get(unit, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._quiet_until.pop(unit, None)

    async def _call(self, what: str, coro: Any, unit: int) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        link = self.link
        try:
            reply = await coro
        except ModbusIOException as exc:
            if link._rtu_framing:
                self._quiet_until[unit] = time.monotonic() + link.late_reply(unit, link.timeout)
            raise ModbusFailure(FailKind.TIMEOUT, f"{what}: no reply within {link.timeout:g} s") from exc
        except ConnectionException as exc:
            self.close()
            raise ModbusFailure(
                FailKind.DISCONNECTED, f"{what}: connection to {link.description} lost"
            ) from exc
        except ModbusException as exc:
            raise ModbusFailure(FailKind.PROTOCOL, f"{what}: {exc}") from exc
        except (OSError, RuntimeError) as exc:
            self.close()
            raise ModbusFailure(
                FailKind.DISCONNECTED, f"{what}: connection to {link.description} lost ({exc})"
            ) from exc
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            name = EXCEPTION_NAMES.get(code or 0, "unknown exception")
            raise ModbusFailure(
                FailKind.EXCEPTION, f"{what}: device answered exception {code} ({name})", exception_code=code
            )
        return reply

    async def _ready(self, unit: int) -> Any:
        if not self.connected:
            await self.link.connect()
        await self._settle(unit)
        return self._client

    async def read(self, unit: int, table: Table, start: int, count: int) -> list[int] | list[bool]:
        async with self.link._lock:
            c = await self._ready(unit)
            what = _what("read", unit, table, start, count)
            if table is Table.HOLDING:
                reply = await self._call(
                    what, c.read_holding_registers(start, count=count, device_id=unit), unit
                )
            elif table is Table.INPUT:
                reply = await self._call(
                    what, c.read_input_registers(start, count=count, device_id=unit), unit
                )
            elif table is Table.COIL:
                reply = await self._call(what, c.read_coils(start, count=count, device_id=unit), unit)
            else:
                reply = await self._call(
                    what, c.read_discrete_inputs(start, count=count, device_id=unit), unit
                )
        if table.is_bit:
            bits = list(reply.bits)
            if len(bits) < count:
                raise ModbusFailure(FailKind.PROTOCOL, f"{what}: reply carries {len(bits)} bits")
            return [bool(b) for b in bits[:count]]
        regs = list(reply.registers)
        if len(regs) != count:
            raise ModbusFailure(FailKind.PROTOCOL, f"{what}: reply carries {len(regs)} registers")
        return regs

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        what = _what("write", unit, table, address, len(values))
        if not table.writable:
            raise ModbusFailure(FailKind.PROTOCOL, f"{table.value} is read-only")
        async with self.link._lock:
            c = await self._ready(unit)
            if table is Table.COIL:
                if len(values) == 1:
                    await self._call(what, c.write_coil(address, bool(values[0]), device_id=unit), unit)
                else:
                    await self._call(
                        what, c.write_coils(address, [bool(v) for v in values], device_id=unit), unit
                    )
            elif len(values) == 1:
                await self._call(what, c.write_register(address, int(values[0]), device_id=unit), unit)
            else:
                await self._call(
                    what, c.write_registers(address, [int(v) for v in values], device_id=unit), unit
                )

    async def mask_write(self, unit: int, address: int, and_mask: int, or_mask: int) -> None:
        what = _what("mask", unit, Table.HOLDING, address, 1)
        async with self.link._lock:
            c = await self._ready(unit)
            await self._call(
                what,
                c.mask_write_register(address=address, and_mask=and_mask, or_mask=or_mask, device_id=unit),
                unit,
            )
