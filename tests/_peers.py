"""Real peers for integration tests: mosquitto, socat pty pairs and pymodbus field devices.

Fixtures that hand these out live in ``tests/conftest.py``; this module holds the helpers so that
tests, benchmarks and tools can use them outside pytest too.

Everything here binds to 127.0.0.1 only, every wait is bounded, and every process started here
is ended by ``stop()`` (and, should the test process itself die, by the kernel: children are
started with ``PR_SET_PDEATHSIG``).

pymodbus 3.16.1 notes (the version pinned in pyproject.toml):

* ``slave=`` is ``device_id=`` in every client call, and a server's devices are keyed by id.
* The legacy datastore (``ModbusSequentialDataBlock``/``ModbusDeviceContext``/
  ``ModbusServerContext``) is deprecated in 3.16 and is now a thin shim over ``SimData``/
  ``SimDevice``: ``ModbusSequentialDataBlock(address, values)`` becomes ``SimData(address - 1)``,
  so a block created at address 1 serves ``values[0]`` at protocol address 0, and a block at
  address 0 raises ``TypeError``. An unknown device id answers exception 4 (a ``KeyError`` inside
  ``SimCore``) instead of staying silent.
* The stock request handler reads ``self.last_pdu`` again *after* awaiting the datastore, so a
  reply that is delayed while another request arrives gets the newer request's transaction and
  device id.

Because of all three, the Modbus peers here keep their own tables (``ModbusUnit``), handed to
pymodbus as a duck-typed datastore (pymodbus's request PDUs only call ``async_getValues`` and
``async_setValues`` on it), and answer each request from a small handler subclass that captures
the request before doing anything else. That handler is also where a unit can be made silent
(the request is dropped, as an absent RS-485 slave would) or slow (the reply is delayed).
Addresses are protocol addresses: ``hr[0]`` is what ``read_holding_registers(0)`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# processes and ports
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _libc_prctl() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process dies, so no peer outlives a run."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class PeerError(RuntimeError):
    """A peer process could not be started; the message carries the tail of its log."""


class _Process:
    """One child process with its output appended to a log file; terminate → wait → kill."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def spawn(self) -> None:
        if self.running:
            raise PeerError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=_die_with_parent,  # only calls prctl(2)
        )

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until true; fail early if the process exits, and after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                self.stop()
                raise PeerError(
                    f"{self.name} exited (code {code}) before {what}; log {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise PeerError(
                    f"{self.name} not ready ({what}) within {timeout:g} s; log {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = STOP_TIMEOUT, *, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (SIGTERM by default), wait up to ``timeout``, then SIGKILL. Idempotent."""
        proc, self.proc = self.proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=timeout)
            code = proc.returncode
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# --------------------------------------------------------------------------------------------------
# mosquitto
# --------------------------------------------------------------------------------------------------


def mosquitto_binary() -> str:
    """Debian installs the broker in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(found, os.X_OK):
        raise PeerError("mosquitto is not installed: run tools/bootstrap.sh (apt-get install mosquitto)")
    return found


class MosquittoBroker:
    """A private mosquitto 2.0 broker on 127.0.0.1:<port>, configured so it never drops QoS 1/2.

    ``stop()`` then ``start()`` brings it back on the same port (broker outage tests); ``kill()``
    is a crash (SIGKILL, nothing saved). With ``persistence=True`` the broker keeps sessions and
    queued messages in ``workdir`` across a clean stop/start.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        extra_config: Iterable[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.persistence = persistence
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path.write_text(self._config(list(extra_config)))
        self._process = _Process("mosquitto", [mosquitto_binary(), "-c", str(self.conf_path)], self.log_path)

    def _config(self, extra: list[str]) -> str:
        lines = [
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous true",
            # No limit on QoS 1/2 messages queued per client beyond those in flight: the default of
            # 1000 silently drops messages for a slow or offline subscriber (0 means unlimited,
            # mosquitto.conf(5) of 2.0.11). max_queued_bytes 0 (the default) is no byte limit.
            "max_queued_messages 0",
            "max_queued_bytes 0",
            # max_inflight_messages only paces delivery (messages beyond it wait in the queue
            # above, they are not dropped), so the default of 20 is kept.
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to user "mosquitto": it then could not write its
            # persistence file in our (root-owned) workdir, and the change of user clears the
            # parent-death signal that ends it if the test process dies.
            lines.append("user root")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        return "\n".join([*lines, *extra, ""])

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self, timeout: float = START_TIMEOUT) -> MosquittoBroker:
        """Start (or restart) on the same port; returns once the port accepts connections."""
        self._process.spawn()
        self._process.wait_until(
            lambda: port_accepts(self.host, self.port), timeout, f"listening on {self.host}:{self.port}"
        )
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Clean shutdown (SIGTERM; SIGKILL after ``timeout``). Idempotent."""
        self._process.stop(timeout)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): nothing is saved, connections drop."""
        self._process.stop(sig=signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.host}:{self.port}, running={self.running})"


# --------------------------------------------------------------------------------------------------
# socat pty pair: a null-modem cable between two pseudo-terminals
# --------------------------------------------------------------------------------------------------


class SocatPtyPair:
    """``socat`` joining two raw ptys; ``path_a`` and ``path_b`` are symlinks to the two ends."""

    def __init__(self, workdir: Path, *, name: str = "tty") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path_a = str(self.workdir / f"{name}A")
        self.path_b = str(self.workdir / f"{name}B")
        self.log_path = self.workdir / f"socat-{name}.log"
        binary = shutil.which("socat")
        if binary is None:
            raise PeerError("socat is not installed: run tools/bootstrap.sh (apt-get install socat)")
        self._process = _Process(
            "socat",
            [
                binary,
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.path_a}",
                f"pty,raw,echo=0,link={self.path_b}",
            ],
            self.log_path,
        )

    @property
    def running(self) -> bool:
        return self._process.running

    def start(self, timeout: float = START_TIMEOUT) -> SocatPtyPair:
        for path in (self.path_a, self.path_b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a stale link from an earlier run would look ready at once
        self._process.spawn()
        self._process.wait_until(
            lambda: os.path.exists(self.path_a) and os.path.exists(self.path_b),
            timeout,
            f"creating {self.path_a} and {self.path_b}",
        )
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._process.stop(timeout)

    def __enter__(self) -> SocatPtyPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Modbus field devices (pymodbus 3.16.1 servers with our own tables)
# --------------------------------------------------------------------------------------------------

Table = Literal["co", "di", "hr", "ir"]
TABLES: tuple[Table, ...] = ("co", "di", "hr", "ir")
_TABLE_NAMES = {"co": "coils", "di": "discrete inputs", "hr": "holding registers", "ir": "input registers"}
# function code → table it reads or writes
_FC_TABLE: dict[int, Table] = {1: "co", 5: "co", 15: "co", 2: "di", 4: "ir"}
_FC_TABLE.update(dict.fromkeys((3, 6, 16, 22, 23), "hr"))

TableSpec = Sequence[int] | Sequence[bool] | Mapping[int, "int | bool | Sequence[int] | Sequence[bool]"]
"""Initial values for a table: a sequence starting at address 0, or {address: value or values}."""

UnitSpec = Mapping[str, Any]
"""{"hr": TableSpec, "ir": ..., "co": ..., "di": ..., "size": int, "silent": bool, "delay": float,
"slow": {address: seconds}}"""


@dataclass(frozen=True)
class ModbusWrite:
    """One write that reached a unit over the wire (not the test's own ``set_*`` calls)."""

    unit_id: int
    function_code: int
    table: Table
    address: int
    values: tuple[int | bool, ...]
    arrived: float = field(default=0.0, compare=False)
    """`time.time()` when the request reached the unit (before its `delay`)."""


@dataclass(eq=False)
class ModbusUnit:
    """One device id's four tables, and how it behaves on the wire."""

    unit_id: int
    size: int = 1000
    silent: bool = False
    """Drop every request addressed to this unit (an absent or dead RS-485 slave)."""
    delay: float = 0.0
    """Seconds to wait before answering (a slow slave); the reply still comes, late."""
    slow: dict[int, float] = field(default_factory=dict)
    """Seconds to wait before answering a request that starts at one of these addresses, instead
    of ``delay`` (a slave that is slow on chosen requests only)."""
    tables: dict[Table, list[Any]] = field(default_factory=dict)
    invalid: dict[Table, set[int]] = field(default_factory=dict)
    """Addresses that answer ILLEGAL_ADDRESS when a request touches them (holes in a device map)."""

    def __post_init__(self) -> None:
        for table in TABLES:
            default: int | bool = False if table in ("co", "di") else 0
            self.tables.setdefault(table, [default] * self.size)
            self.invalid.setdefault(table, set())

    def put(self, table: Table, address: int, values: int | bool | Iterable[int] | Iterable[bool]) -> None:
        items = [values] if isinstance(values, int | bool) else list(values)
        store = self.tables[table]
        if address < 0 or address + len(items) > len(store):
            raise IndexError(
                f"unit {self.unit_id}: {_TABLE_NAMES[table]} {address}..{address + len(items) - 1} "
                f"outside 0..{len(store) - 1}"
            )
        for offset, item in enumerate(items):
            if table in ("co", "di"):
                store[address + offset] = bool(item)
            else:
                value = int(item)
                if not 0 <= value <= 0xFFFF:
                    raise ValueError(f"unit {self.unit_id}: register value {value} is not 0..65535")
                store[address + offset] = value

    def take(self, table: Table, address: int, count: int = 1) -> list[Any]:
        store = self.tables[table]
        if address < 0 or count < 1 or address + count > len(store):
            raise IndexError(f"unit {self.unit_id}: {_TABLE_NAMES[table]} {address}+{count} out of range")
        return store[address : address + count]

    def readable(self, table: Table, address: int, count: int) -> bool:
        if address < 0 or count < 0 or address + count > len(self.tables[table]):
            return False
        holes = self.invalid[table]
        return not any(a in holes for a in range(address, address + count))


def _build_unit(unit_id: int, spec: UnitSpec | None, size: int) -> ModbusUnit:
    spec = dict(spec or {})
    unknown = set(spec) - {*TABLES, "size", "silent", "delay", "slow", "invalid"}
    if unknown:
        raise ValueError(f"unit {unit_id}: unknown keys {sorted(unknown)} (tables are {TABLES})")
    unit = ModbusUnit(
        unit_id,
        size=int(spec.get("size", size)),
        silent=bool(spec.get("silent", False)),
        delay=float(spec.get("delay", 0.0)),
        slow={int(a): float(s) for a, s in dict(spec.get("slow", {})).items()},
    )
    for table in TABLES:
        initial = spec.get(table)
        if initial is None:
            continue
        if isinstance(initial, Mapping):
            for address, value in initial.items():
                unit.put(table, int(address), value)
        else:
            unit.put(table, 0, initial)
    for table, addresses in dict(spec.get("invalid", {})).items():
        unit.invalid[table].update(addresses)
    return unit


class _Datastore:
    """What pymodbus's request PDUs call (``datastore_update``): async get/set by function code."""

    def __init__(self, peer: ModbusPeer) -> None:
        self._peer = peer

    def device_ids(self) -> list[int]:
        return list(self._peer.units)

    async def async_getValues(  # pymodbus's name
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | Any:
        from pymodbus.constants import ExcCodes

        unit = self._peer.units.get(device_id)
        table = _FC_TABLE.get(func_code)
        if unit is None or table is None:
            return ExcCodes.ILLEGAL_FUNCTION if table is None else ExcCodes.GATEWAY_NO_RESPONSE
        if not unit.readable(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        return list(unit.take(table, address, count))

    async def async_setValues(  # pymodbus's name
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> Any:
        from pymodbus.constants import ExcCodes

        unit = self._peer.units.get(device_id)
        table = _FC_TABLE.get(func_code)
        if unit is None or table is None or table in ("di", "ir"):
            return ExcCodes.ILLEGAL_FUNCTION
        if not unit.readable(table, address, len(values)):
            return ExcCodes.ILLEGAL_ADDRESS
        try:
            unit.put(table, address, values)
        except ValueError:
            return ExcCodes.ILLEGAL_VALUE
        self._peer.writes.append(
            ModbusWrite(device_id, func_code, table, address, tuple(values), _arrived.get())
        )
        return None


_arrived: ContextVar[float] = ContextVar("_arrived", default=0.0)  # set per request task


def _handler_class() -> type:
    """A ServerRequestHandler that captures each request at once and answers it in its own task."""
    from pymodbus.constants import ExcCodes
    from pymodbus.pdu import ExceptionResponse
    from pymodbus.server.requesthandler import ServerRequestHandler

    class _Handler(ServerRequestHandler):
        peer: ModbusPeer

        def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
            used: int = super().callback_data(data, addr)
            request, self.last_pdu = self.last_pdu, None  # the stock handle_later now does nothing
            if request is not None:
                task = asyncio.get_running_loop().create_task(self._answer(request, addr, time.time()))
                self.peer._tasks.add(task)
                task.add_done_callback(self.peer._tasks.discard)
            return used

        async def _answer(self, request: Any, addr: tuple[Any, ...] | None, arrived: float) -> None:
            _arrived.set(arrived)  # this task's own context: read by async_setValues
            peer = self.peer
            unit = peer.units.get(request.dev_id)
            peer.requests[request.dev_id] += 1
            if unit is None or unit.silent:
                return
            delay = unit.slow.get(getattr(request, "address", -1), unit.delay)
            if delay > 0:
                await asyncio.sleep(delay)
                if unit.silent:
                    return
            try:
                response = await request.datastore_update(peer.datastore, request.dev_id)
            except Exception:
                log.exception("modbus peer: unit %s failed to answer %r", request.dev_id, request)
                response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
            response.transaction_id = request.transaction_id
            response.dev_id = request.dev_id
            if self.transport is not None:
                self.server_send(response, addr)  # type: ignore[no-untyped-call]

    return _Handler


def _placeholder_context() -> Any:
    """pymodbus insists on a datastore at construction; ours replaces it right after."""
    from pymodbus.simulator import DataType, SimData, SimDevice

    return SimDevice(0, simdata=[SimData(0, datatype=DataType.REGISTERS)])


class ModbusPeer:
    """Units (device ids) with their tables, served by a pymodbus server in the running loop.

    Units that are not configured stay silent, like an absent slave on an RS-485 line. Test-side
    access (``set_*``/``get_*``) goes straight to the tables and is never delayed or recorded;
    requests that arrive over the wire are counted per unit in ``requests`` and writes are
    recorded in ``writes``.
    """

    def __init__(self, units: Mapping[int, UnitSpec | None] | None = None, *, size: int = 1000) -> None:
        specs = {1: None} if units is None else dict(units)
        self.units: dict[int, ModbusUnit] = {uid: _build_unit(uid, spec, size) for uid, spec in specs.items()}
        self.size = size
        self.writes: list[ModbusWrite] = []
        self.requests: Counter[int] = Counter()
        self.datastore = _Datastore(self)
        self._server: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- behaviour -----------------------------------------------------------------------------------

    def unit(self, unit_id: int) -> ModbusUnit:
        try:
            return self.units[unit_id]
        except KeyError:
            raise KeyError(f"unit {unit_id} is not configured (have {sorted(self.units)})") from None

    def add_unit(self, unit_id: int, spec: UnitSpec | None = None) -> ModbusUnit:
        self.units[unit_id] = unit = _build_unit(unit_id, spec, self.size)
        return unit

    def set_silent(self, unit_id: int, silent: bool = True) -> None:
        self.unit(unit_id).silent = silent

    def set_delay(self, unit_id: int, seconds: float) -> None:
        self.unit(unit_id).delay = seconds

    # -- tables --------------------------------------------------------------------------------------

    def set(self, unit_id: int, table: Table, address: int, values: Any) -> None:
        self.unit(unit_id).put(table, address, values)

    def get(self, unit_id: int, table: Table, address: int, count: int = 1) -> list[Any]:
        return list(self.unit(unit_id).take(table, address, count))

    def set_holding(self, unit_id: int, address: int, values: int | Iterable[int]) -> None:
        self.set(unit_id, "hr", address, values)

    def get_holding(self, unit_id: int, address: int, count: int = 1) -> list[int]:
        return self.get(unit_id, "hr", address, count)

    def set_input(self, unit_id: int, address: int, values: int | Iterable[int]) -> None:
        self.set(unit_id, "ir", address, values)

    def get_input(self, unit_id: int, address: int, count: int = 1) -> list[int]:
        return self.get(unit_id, "ir", address, count)

    def set_coils(self, unit_id: int, address: int, values: bool | Iterable[bool]) -> None:
        self.set(unit_id, "co", address, values)

    def get_coils(self, unit_id: int, address: int, count: int = 1) -> list[bool]:
        return self.get(unit_id, "co", address, count)

    def set_discrete(self, unit_id: int, address: int, values: bool | Iterable[bool]) -> None:
        self.set(unit_id, "di", address, values)

    def get_discrete(self, unit_id: int, address: int, count: int = 1) -> list[bool]:
        return self.get(unit_id, "di", address, count)

    # -- server life -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    def _make_server(self) -> Any:
        raise NotImplementedError

    async def start(self) -> ModbusPeer:
        """Start serving (again, after ``stop()``: same port or pty, same tables)."""
        if self._server is not None:
            return self
        server = self._make_server()
        server.context = self.datastore
        async with asyncio.timeout(START_TIMEOUT):
            await server.serve_forever(background=True)
        self._server = server
        return self

    async def stop(self) -> None:
        """Stop serving and drop connections (a device switched off). Idempotent."""
        server, self._server = self._server, None
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            async with asyncio.timeout(STOP_TIMEOUT):
                await server.shutdown()


def _handler_for(peer: ModbusPeer) -> Callable[[Any], Any]:
    handler_cls = _handler_class()

    def new_connection(server: Any) -> Any:
        handler = handler_cls(server, server.trace_packet, server.trace_pdu, server.trace_connect)
        handler.peer = peer
        return handler

    return new_connection


class ModbusTcpPeer(ModbusPeer):
    """Modbus TCP field device(s) on 127.0.0.1:``port``.

    ``framer="rtu"`` speaks RTU frames (with CRC, no MBAP header) on the TCP socket, as a
    serial-to-Ethernet converter in transparent mode does.
    """

    def __init__(
        self,
        units: Mapping[int, UnitSpec | None] | None = None,
        *,
        size: int = 1000,
        port: int | None = None,
        framer: Literal["socket", "rtu"] = "socket",
    ) -> None:
        super().__init__(units, size=size)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.framer = framer

    def _make_server(self) -> Any:
        from pymodbus import FramerType
        from pymodbus.server import ModbusTcpServer

        new_connection = _handler_for(self)

        class _Server(ModbusTcpServer):
            def callback_new_connection(self) -> Any:
                return new_connection(self)

        framer = FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET
        return _Server(_placeholder_context(), framer=framer, address=(self.host, self.port))

    def __repr__(self) -> str:
        return f"ModbusTcpPeer({self.host}:{self.port} {self.framer}, units={sorted(self.units)})"


class ModbusRtuPeer(ModbusPeer):
    """Modbus RTU field device(s) on one end of a socat pty pair; clients open ``device``."""

    def __init__(
        self,
        pty_pair: SocatPtyPair,
        units: Mapping[int, UnitSpec | None] | None = None,
        *,
        size: int = 1000,
        baudrate: int = 19200,
    ) -> None:
        super().__init__(units, size=size)
        self.pty_pair = pty_pair
        self.server_device = pty_pair.path_a
        self.device = pty_pair.path_b
        self.baudrate = baudrate

    def _make_server(self) -> Any:
        from pymodbus import FramerType
        from pymodbus.server import ModbusSerialServer

        new_connection = _handler_for(self)

        class _Server(ModbusSerialServer):
            def callback_new_connection(self) -> Any:
                return new_connection(self)

        return _Server(
            _placeholder_context(),
            framer=FramerType.RTU,
            port=self.server_device,
            baudrate=self.baudrate,
            bytesize=8,
            parity="N",
            stopbits=1,
        )

    def __repr__(self) -> str:
        return f"ModbusRtuPeer({self.device} @ {self.baudrate}, units={sorted(self.units)})"


# --------------------------------------------------------------------------------------------------
# TLS: a throw-away CA and a server certificate for localhost / 127.0.0.1
# --------------------------------------------------------------------------------------------------


def make_test_certs(d: Path) -> Path:
    """Write ca.crt/ca.key and server.crt/server.key (CN localhost, SAN 127.0.0.1) into `d`."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=picogate test CA",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")  # fmt: skip
    return d
