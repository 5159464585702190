"""The board's serial port on asyncio, and finding the port of a board by its USB serial number.

pyserial opens and configures the port (raw, 115200 8N1 — CDC ignores the rate); the asyncio loop
then watches the file descriptor with `loop.add_reader` instead of a reader thread: a USB CDC port
is a tty, which selects like a socket, so each chunk of bytes costs one non-blocking `os.read` on
the loop's thread and no thread hand-off, and closing is a plain `remove_reader` (a blocked reader
thread would have to be woken by closing the port under it).  Writes are small (frames of at most
1 KB); what the tty does not take at once waits in a buffer flushed by `add_writer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Protocol

import serial
from serial.tools import list_ports

__all__ = ["PICO_PID", "PICO_VID", "SerialTransport", "Transport", "find_port"]

PICO_VID = 0x2E8A
PICO_PID = 0x0005
"""Raspberry Pi's USB ids for MicroPython on the RP2040/RP2350."""

_MAX_BUFFER = 256 * 1024


class Transport(Protocol):
    async def read(self) -> bytes:
        """The next bytes; raises ConnectionError when the port is gone."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes; raises ConnectionError when the port is gone."""
        ...

    def close(self) -> None: ...


def find_port(serial_number: str) -> str | None:
    """The device path of the Pico (USB 2E8A:0005) with this serial number, or None."""
    wanted = serial_number.upper()
    for p in list_ports.comports():
        if p.vid == PICO_VID and p.pid == PICO_PID and (p.serial_number or "").upper() == wanted:
            return str(p.device)
    return None


class SerialTransport:
    """An open serial port driven by the running loop (see the module docstring)."""

    def __init__(self, port: str) -> None:
        self.port = port
        self._ser = serial.Serial(port, 115200, timeout=0, write_timeout=0, exclusive=True)
        self._fd = self._ser.fileno()
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._data = bytearray()
        self._out = bytearray()
        self._ready = asyncio.Event()
        self._error: ConnectionError | None = None
        self._writing = False
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(ConnectionError(f"{self.port}: {exc.strerror or exc}"))
            return
        if not chunk:
            self._fail(ConnectionError(f"{self.port}: the device went away"))
            return
        if len(self._data) < _MAX_BUFFER:
            self._data += chunk
        self._ready.set()

    def _fail(self, exc: ConnectionError) -> None:
        if self._error is None:
            self._error = exc
        self._remove()
        self._ready.set()

    def _remove(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
            self._writing = False

    async def read(self) -> bytes:
        while not self._data:
            if self._error is not None:
                raise self._error
            self._ready.clear()
            await self._ready.wait()
        data = bytes(self._data)
        self._data.clear()
        return data

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if len(self._out) > _MAX_BUFFER:
            raise ConnectionError(f"{self.port}: the board does not take what is written")
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._fd, self._out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._fail(ConnectionError(f"{self.port}: {exc.strerror or exc}"))
                return
            del self._out[:n]
        if self._out and not self._writing:
            self._loop.add_writer(self._fd, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def close(self) -> None:
        self._remove()
        with contextlib.suppress(Exception):
            self._ser.close()
        if self._error is None:
            self._error = ConnectionError(f"{self.port}: closed")
        self._ready.set()
