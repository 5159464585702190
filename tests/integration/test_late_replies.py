"""A slave that answers after the timeout never has its late answer taken for another request's.

End to end, through the gateway to mosquitto, on the three framings: serial RTU (a socat pty
pair), RTU over TCP (a serial-to-Ethernet converter in transparent mode) and Modbus TCP (MBAP).
The slave answers most requests in 0.6 × the timeout, but the read at address 10 (polled in a
group of its own) only after 2.2 × the timeout: its late answer arrives while the next request to
the same unit (same function, same length, other registers) is still waiting for its own.  On RTU lines a second unit
answers everything late, so its replies arrive while the first unit's requests are pending: they
are skipped, not fatal.  Every value published with quality good must be that point's register.
Both drivers, builtin and pymodbus.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from _agent import base_config, recorder, running_gateway
from _peers import ModbusPeer, ModbusTcpPeer

ROOT = "picogate/gw1"
TIMEOUT = 0.4
REGS = {0: [111, 112], 10: [211, 212], 20: [311, 312]}
SLOW = {10: 2.2 * TIMEOUT}  # between 2× and 3× the timeout
OTHER = {0: [911, 912]}  # unit 2 (RTU lines): every answer late


def _points(regs: dict[int, list[int]]) -> list[dict[str, Any]]:
    # The slow registers are polled in a group of their own, so that the others' polls succeed.
    return [
        {
            "name": f"r{a + i}",
            "table": "holding",
            "address": a + i,
            **({"poll": "150ms"} if a in SLOW else {}),
        }
        for a in regs
        for i in range(2)
    ]


def _device(name: str, unit: int, link: dict[str, Any], regs: dict[int, list[int]]) -> dict[str, Any]:
    return {
        "name": name,
        "unit_id": unit,
        "poll": "100ms",
        "timeout": f"{TIMEOUT}s",
        "retries": 0,
        "offline_after": 50,
        "points": _points(regs),
        **link,
    }


def _wrong_and_good(rec: Any, device: str, regs: dict[int, list[int]]) -> tuple[dict[str, Any], set[str]]:
    wrong: dict[str, Any] = {}
    good: set[str] = set()
    for a, values in regs.items():
        for i, want in enumerate(values):
            point = f"r{a + i}"
            got = [m.json() for m in rec.on(f"{ROOT}/data/{device}/{point}")]
            seen = {g["v"] for g in got if g["q"] == "good"}
            if seen:
                good.add(point)
            if seen - {want}:
                wrong[point] = (want, seen)
    return wrong, good


async def _run(tmp_path: Path, mosquitto: Any, peer: ModbusPeer, devices: list[dict[str, Any]]) -> Any:
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(base_config(tmp_path, mosquitto.port, devices)):
            await asyncio.sleep(5.0)
    return rec


@pytest.mark.parametrize("driver", ["builtin", "pymodbus"])
@pytest.mark.parametrize("framing", ["serial", "rtu_over_tcp", "modbus_tcp"])
async def test_late_answers_are_never_taken_for_another_request(
    mosquitto: Any, modbus_rtu_server: Any, tmp_path: Path, framing: str, driver: str
) -> None:
    units: dict[int, Any] = {1: {"hr": REGS, "delay": 0.6 * TIMEOUT, "slow": SLOW}}
    if framing != "modbus_tcp":
        units[2] = {"hr": OTHER, "delay": 2.5 * TIMEOUT}
    tcp: ModbusTcpPeer | None = None
    if framing == "serial":
        peer: ModbusPeer = await modbus_rtu_server(units)
        link: dict[str, Any] = {"type": "modbus_rtu", "port": peer.device, "baudrate": peer.baudrate}
    else:
        tcp = peer = ModbusTcpPeer(units, framer="socket" if framing == "modbus_tcp" else "rtu")
        await peer.start()
        link = {"type": "modbus_tcp", "host": tcp.host, "port": tcp.port}
        link["framing"] = "socket" if framing == "modbus_tcp" else "rtu"
    link["driver"] = driver
    devices = [_device("slow", 1, link, REGS)]
    if 2 in units:
        devices.append(_device("late", 2, link, OTHER))
    try:
        rec = await _run(tmp_path, mosquitto, peer, devices)
    finally:
        if tcp is not None:
            await tcp.stop()
    wrong, good = _wrong_and_good(rec, "slow", REGS)
    assert not wrong, wrong
    # Not vacuous: the prompt registers were published, and the slow read was asked more than once.
    assert {"r0", "r1", "r20", "r21"} <= good, good
    assert peer.requests[1] >= 6, peer.requests
    if 2 in units:
        late_wrong, _ = _wrong_and_good(rec, "late", OTHER)
        assert not late_wrong, late_wrong
        assert peer.requests[2] >= 2, peer.requests
