"""Shared fixtures: real peers (mosquitto, socat pty pairs, pymodbus field devices).

The helpers behind them live in ``tests/_peers.py`` (see its docstring for the pymodbus 3.16
quirks). In short:

* ``mosquitto`` / ``mosquitto_session`` → a started ``MosquittoBroker`` (``.host``, ``.port``,
  ``.stop()``, ``.start()`` on the same port, ``.kill()``); ``make_mosquitto(**options)`` for a
  broker with ``persistence=True`` or extra config lines.
* ``socat_pty_pair`` → ``(path_a, path_b)``, two raw ptys joined like a null-modem cable.
* ``modbus_tcp_server`` → ``await modbus_tcp_server({unit_id: {"hr": [...], ...}})`` gives a
  started ``ModbusTcpPeer`` (``.host``, ``.port``, ``set_holding``/``get_holding``/...,
  ``set_silent``, ``set_delay``, ``writes``, ``requests``, ``stop()``/``start()``).
* ``modbus_rtu_server`` → the same over a socat pty pair; the client opens ``peer.device``.

Everything is on 127.0.0.1, every wait is bounded and every process is ended at teardown.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

# Blinka reads this once, when `board` is first imported, wherever in the session that is: the
# gateway's own I/O is tested on its OS-agnostic board (tests/_local.py).
os.environ.setdefault("BLINKA_OS_AGNOSTIC", "1")

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # `import _peers` works whatever pytest's import mode or rootdir
    sys.path.insert(0, _HERE)

from _peers import (  # noqa: E402
    ModbusRtuPeer,
    ModbusTcpPeer,
    MosquittoBroker,
    PeerError,
    SocatPtyPair,
    UnitSpec,
    make_test_certs,
)

Units = Mapping[int, UnitSpec | None] | None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ talks to real peers: mark it so `-m "not integration"` works."""
    integration_dir = Path(_HERE) / "integration"
    for item in items:
        if integration_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def _start_broker(workdir: Path, **options: Any) -> MosquittoBroker:
    try:
        return MosquittoBroker(workdir, **options).start()
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private broker for one test; the test may stop/start/kill it."""
    broker = _start_broker(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One broker shared by the whole run: do not stop it, and use unique topics per test."""
    broker = _start_broker(tmp_path_factory.mktemp("mosquitto-session"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Factory: ``make_mosquitto(persistence=True, extra_config=[...], port=...)`` → started broker."""
    brokers: list[MosquittoBroker] = []

    def make(**options: Any) -> MosquittoBroker:
        broker = _start_broker(tmp_path / f"mosquitto-{len(brokers)}", **options)
        brokers.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture
def socat_pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two raw ptys joined by socat: what is written to one is read from the other."""
    try:
        pair = SocatPtyPair(tmp_path / "pty").start()
    except PeerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield pair.path_a, pair.path_b
    finally:
        pair.stop()


@pytest.fixture
async def modbus_tcp_server() -> AsyncIterator[Callable[..., Awaitable[ModbusTcpPeer]]]:
    """Factory: ``await modbus_tcp_server(units=None, *, size=1000, port=None)`` → started peer.

    ``units`` maps a device id to ``{"hr": ..., "ir": ..., "co": ..., "di": ..., "silent": bool,
    "delay": seconds, "slow": {address: seconds}, "size": n, "invalid": {"hr": {addresses}}}``;
    a table is a sequence from address 0 or ``{address: value or values}``. ``None`` means unit 1
    with zeroed tables.
    """
    peers: list[ModbusTcpPeer] = []

    async def start(units: Units = None, *, size: int = 1000, port: int | None = None) -> ModbusTcpPeer:
        peer = ModbusTcpPeer(units, size=size, port=port)
        peers.append(peer)
        await peer.start()
        return peer

    try:
        yield start
    finally:
        for peer in peers:
            await peer.stop()


@pytest.fixture
async def modbus_rtu_server(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ModbusRtuPeer]]]:
    """Factory: ``await modbus_rtu_server(units=None, *, size=1000, baudrate=19200)`` → started peer.

    The server holds one end of a fresh socat pty pair; clients open ``peer.device`` (RTU framing,
    8N1, ``peer.baudrate``). Units as for ``modbus_tcp_server``.
    """
    peers: list[ModbusRtuPeer] = []

    async def start(units: Units = None, *, size: int = 1000, baudrate: int = 19200) -> ModbusRtuPeer:
        try:
            pair = SocatPtyPair(tmp_path / f"rtu-{len(peers)}").start()
        except PeerError as exc:
            pytest.fail(str(exc), pytrace=False)
        peer = ModbusRtuPeer(pair, units, size=size, baudrate=baudrate)
        peers.append(peer)
        await peer.start()
        return peer

    try:
        yield start
    finally:
        for peer in peers:
            try:
                await peer.stop()
            finally:
                peer.pty_pair.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a server certificate for localhost / 127.0.0.1 (ca.crt, server.crt/key)."""
    return make_test_certs(tmp_path_factory.mktemp("certs"))
