"""The only module of the agent that imports pymodbus (pinned in pyproject.toml).

pymodbus renamed `slave` to `device_id`, moved its framers and flipped the bit order of coils
across 3.x; keeping every call here means one place to mend when it moves again.  pymodbus's own
retries and automatic reconnect are switched off: timing, retries and backoff belong to our
poller, which knows about priorities, offline devices and a shared RS-485 bus.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from picogate.modbus._codec import Table

log = logging.getLogger("picogate.modbus")

# Silence pymodbus's own logging of every timeout and reconnect: we log once, with the device name.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class FailKind(enum.StrEnum):
    TIMEOUT = "timeout"  # no (valid) reply in time
    EXCEPTION = "exception"  # the device answered with a Modbus exception
    DISCONNECTED = "disconnected"  # no connection to the device or the serial port
    PROTOCOL = "protocol"  # a reply that does not fit the request


class ModbusFailure(Exception):
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

    Requests are serialised by the caller (one poller task per link).
    """

    def __init__(self, params: TcpParams | SerialParams, *, timeout: float = 1.0) -> None:
        self.params = params
        self.timeout = timeout
        self._client: Any = None
        # RTU frames carry no transaction id: a reply that comes after the timeout would be taken
        # for the answer to the next request to the same unit (pymodbus drops frames of other
        # units).  So after a timeout, that unit is not asked again for one more timeout: a late
        # reply then arrives while nothing of its unit is pending, and is dropped.
        self._rtu = not isinstance(params, TcpParams) or params.framing == "rtu"
        self._quiet_until: dict[int, float] = {}
        self.description = (
            f"{params.host}:{params.port}" if isinstance(params, TcpParams) else f"{params.port}"
        )

    def _make_client(self) -> Any:
        p = self.params
        if isinstance(p, TcpParams):
            framer = FramerType.RTU if p.framing == "rtu" else FramerType.SOCKET
            return AsyncModbusTcpClient(
                p.host, port=p.port, framer=framer, timeout=self.timeout, retries=0, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            p.port,
            framer=FramerType.RTU,
            baudrate=p.baudrate,
            parity=p.parity,
            stopbits=p.stopbits,
            bytesize=p.bytesize,
            timeout=self.timeout,
            retries=0,
            reconnect_delay=0,
        )

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def connect(self) -> None:
        if self.connected:
            return
        self.close()
        client = self._make_client()
        try:
            async with asyncio.timeout(self.timeout + 1):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise ModbusFailure(
                FailKind.DISCONNECTED, f"cannot connect to {self.description}: {exc}"
            ) from exc
        if not ok:
            client.close()
            raise ModbusFailure(FailKind.DISCONNECTED, f"cannot connect to {self.description}")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def quiet_until(self, unit: int) -> float:
        """`time.monotonic()` before which `unit` is not asked again (after a timeout, RTU only)."""
        return self._quiet_until.get(unit, 0.0)

    async def _settle(self, unit: int) -> None:
        if self._quiet_until:
            wait = self._quiet_until.get(unit, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._quiet_until.pop(unit, None)

    async def _call(self, what: str, coro: Any, unit: int) -> Any:
        try:
            reply = await coro
        except ModbusIOException as exc:
            if self._rtu:
                self._quiet_until[unit] = time.monotonic() + self.timeout
            raise ModbusFailure(FailKind.TIMEOUT, f"{what}: no reply within {self.timeout:g} s") from exc
        except ConnectionException as exc:
            self.close()
            raise ModbusFailure(
                FailKind.DISCONNECTED, f"{what}: connection to {self.description} lost"
            ) from exc
        except ModbusException as exc:
            raise ModbusFailure(FailKind.PROTOCOL, f"{what}: {exc}") from exc
        except (OSError, RuntimeError) as exc:
            # A peer that closes the connection under pymodbus's feet: uvloop raises RuntimeError
            # ("unable to perform operation on <TCPTransport closed=True>") from the write.
            self.close()
            raise ModbusFailure(
                FailKind.DISCONNECTED, f"{what}: connection to {self.description} lost ({exc})"
            ) from exc
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            name = EXCEPTION_NAMES.get(code or 0, "unknown exception")
            raise ModbusFailure(
                FailKind.EXCEPTION, f"{what}: device answered exception {code} ({name})", exception_code=code
            )
        return reply

    async def read(self, unit: int, table: Table, start: int, count: int) -> list[int] | list[bool]:
        if not self.connected:
            await self.connect()
        await self._settle(unit)
        c = self._client
        what = f"read {table.value} {start}+{count} from unit {unit}"
        if table is Table.HOLDING:
            reply = await self._call(what, c.read_holding_registers(start, count=count, device_id=unit), unit)
        elif table is Table.INPUT:
            reply = await self._call(what, c.read_input_registers(start, count=count, device_id=unit), unit)
        elif table is Table.COIL:
            reply = await self._call(what, c.read_coils(start, count=count, device_id=unit), unit)
        else:
            reply = await self._call(what, c.read_discrete_inputs(start, count=count, device_id=unit), unit)
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
        """FC 5 / 15 for coils, FC 6 / 16 for holding registers, as the width needs."""
        if not self.connected:
            await self.connect()
        await self._settle(unit)
        c = self._client
        what = f"write {table.value} {address}+{len(values)} to unit {unit}"
        if table is Table.COIL:
            if len(values) == 1:
                await self._call(what, c.write_coil(address, bool(values[0]), device_id=unit), unit)
            else:
                await self._call(
                    what, c.write_coils(address, [bool(v) for v in values], device_id=unit), unit
                )
        elif table is Table.HOLDING:
            if len(values) == 1:
                await self._call(what, c.write_register(address, int(values[0]), device_id=unit), unit)
            else:
                await self._call(
                    what, c.write_registers(address, [int(v) for v in values], device_id=unit), unit
                )
        else:
            raise ModbusFailure(FailKind.PROTOCOL, f"{table.value} is read-only")

    async def mask_write(self, unit: int, address: int, and_mask: int, or_mask: int) -> None:
        """FC 22 Mask Write Register."""
        if not self.connected:
            await self.connect()
        await self._settle(unit)
        what = f"mask write holding {address} on unit {unit}"
        await self._call(
            what,
            self._client.mask_write_register(
                address=address, and_mask=and_mask, or_mask=or_mask, device_id=unit
            ),
            unit,
        )
