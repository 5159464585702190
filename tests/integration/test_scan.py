"""`picogate scan` against real peers: pymodbus units behind a Modbus TCP address and on RTU over a
socat pty pair, the command run as the operator runs it (a process of its own).  (A pty carries
bytes at any baud rate: which setting a unit answers at is tested as data in
tests/unit/test_modbus_scan.py.)"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.integration


async def _picogate(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "picogate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_scan_tcp_lists_the_units_that_answer(modbus_tcp_server: Any) -> None:
    peer = await modbus_tcp_server(
        {
            1: {"hr": {0: 1234}},
            3: {"invalid": {"hr": {0}}},  # answers, with an exception: it is there
            5: {"silent": True},
        }
    )
    target = f"127.0.0.1:{peer.port}"
    rc, out, err = await _picogate("scan", target, "--units", "1-6", "--timeout", "200ms")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{target}: 2 of 6 unit ids answered")
    assert lines[1].split() == ["unit", "1", "holding", "0", "=", "1234"]
    assert lines[2].split() == ["unit", "3", "exception", "2", "(illegal", "data", "address)"]
    assert peer.writes == []

    rc, out, err = await _picogate("scan", target, "--units", "2,4-6", "--json", "--timeout", "100ms")
    assert rc == 1, err  # nothing answered
    (line,) = orjson.loads(out)["lines"]
    assert (line["target"], line["asked"], line["units"], line["error"]) == (target, 4, [], "")


async def test_scan_serial_finds_units_and_says_the_setting(modbus_rtu_server: Any) -> None:
    peer = await modbus_rtu_server({2: {"hr": {0: 7}}, 4: {"hr": {0: 9}}})
    rc, out, err = await _picogate(
        "scan", peer.device, "--units", "1-5", "--baud", "19200", "--parity", "N", "--json"
    )
    assert rc == 0, err
    (line,) = orjson.loads(out)["lines"]
    assert (line["baudrate"], line["parity"], line["stopbits"]) == (19200, "N", 1)
    assert [u["unit"] for u in line["units"]] == [2, 4]
    assert line["units"][0]["answer"] == "holding 0 = 7"

    # Several settings: the scan stops at the first at which units answer, and says what to write.
    rc, out, err = await _picogate("scan", peer.device, "--units", "1-4", "--baud", "9600,19200")
    assert rc == 0, err
    assert out.splitlines()[0].startswith(f"{peer.device} at 9600 8E1: 2 of 4 unit ids answered")
    assert "19200" not in out
    assert out.splitlines()[-1] == "gateway.yaml: baudrate: 9600, parity: E, stopbits: 1"


async def test_scan_errors_name_what_to_fix(tmp_path: Any) -> None:
    rc, out, err = await _picogate("scan", str(tmp_path / "ttyNONE"), "--units", "1-2")
    assert rc == 1
    assert "cannot connect to" in out
    assert "No such file or directory" in out
    rc, _, err = await _picogate("scan", "/dev/ttyUSB0", "--units", "0-3")
    assert rc == 2
    assert "0 is the broadcast id" in err
    rc, _, err = await _picogate("scan", "/dev/ttyUSB0", "--parity", "X")
    assert rc == 2
    assert "parity: 'X' must be N, E or O" in err
    rc, _, err = await _picogate("scan", "host:notaport")
    assert rc == 2
    assert "the port after ':' must be a number" in err
    assert "Traceback" not in err
