"""Peers that misbehave at the transport level never take the gateway down."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _agent import base_config, running_gateway
from picogate import DeviceState


@contextlib.contextmanager
def slamming_listener() -> Iterator[int]:
    """Accepts every connection and closes it at once (a misconfigured converter, a port scanner)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        srv.close()


async def test_peer_closing_every_connection_marks_device_offline(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    good = await modbus_tcp_server({1: {"hr": [7]}})
    with slamming_listener() as bad_port:
        devices = [
            {"name": name, "type": "modbus_tcp", "host": "127.0.0.1", "port": port, "poll": "100ms",
             "timeout": "300ms", "offline_after": 2, "points": [{"name": "v", "table": "holding", "address": 0}]}
            for name, port in (("bad", bad_port), ("good", good.port))
        ]  # fmt: skip
        async with running_gateway(base_config(tmp_path, mosquitto.port, devices)) as gw:
            for _ in range(100):
                bad, ok = gw.registry.device("bad"), gw.registry.device("good")
                if bad and ok and bad.state is DeviceState.OFFLINE and ok.state is DeviceState.ONLINE:
                    break
                await asyncio.sleep(0.1)
            bad, ok = gw.registry.device("bad"), gw.registry.device("good")
            assert bad is not None
            assert ok is not None
            assert bad.state is DeviceState.OFFLINE
            assert ok.state is DeviceState.ONLINE
            assert gw.pipeline.latest[("good", "v")].value == 7
