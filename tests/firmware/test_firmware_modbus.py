"""Modbus end to end through the link: the firmware on a simulated board, its UART wired to a
pymodbus RTU server over a socat pty pair; the host reads results in mb frames and writes with
mbw, whose ack carries the bus's answer (ok, an exception reply, a silent slave's timeout)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _host import Host

from picogate.simboard import SimBoard, install_firmware

pytestmark = pytest.mark.integration


def _mb_results(host: Host) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in host.of_type("mb"):
        items = (f[3] or "").split(" ")[1:]
        i = 0
        while i < len(items):
            key, status = items[i], items[i + 1]
            i += 2
            if status in ("ok", "exc"):
                out[key] = f"{status} {items[i]}"
                i += 1
            else:
                out[key] = status
    return out


def _drive(board: SimBoard) -> dict[str, Any]:
    host = Host(board.port)
    try:
        board.wait_for_output(b"@0 hello ", timeout=20)
        host.hello()
        cfg = {
            "v": 1,
            "hb_ms": 500,
            "mb": [
                {
                    "bus": 0, "uart": 0, "tx": 0, "rx": 1, "de": 2, "baud": 115200, "timeout_ms": 100,
                    "retries": 0, "backoff_ms": 0,
                    "reqs": [
                        {"u": 3, "fc": 3, "a": 0, "n": 2, "every_ms": 50},
                        {"u": 3, "fc": 3, "a": 5, "n": 1, "every_ms": 50},  # an invalid address
                        {"u": 9, "fc": 3, "a": 0, "n": 1, "every_ms": 200},  # a silent slave
                    ],
                }
            ],
        }  # fmt: skip
        res = host.push_config(cfg)
        assert res is not None
        assert res["ok"], res
        host.wait(lambda: len(_mb_results(host)) == 3, what="a result for every request")
        first = _mb_results(host)
        w_ok = host.command("mbw", '{"bus":0,"u":3,"fc":6,"a":1,"v":[4242]}')
        w_exc = host.command("mbw", '{"bus":0,"u":3,"fc":6,"a":5,"v":[1]}')
        w_silent = host.command("mbw", '{"bus":0,"u":9,"fc":16,"a":0,"v":[1,2]}')
        host.frames.clear()
        host.wait(lambda: _mb_results(host).get("0.0") == "ok 00071092", what="the written value read back")
        read_now = host.command("read", '{"bus":0,"req":0}')
        bad_req = host.command("read", '{"bus":0,"req":7}')
        return {
            "first": first,
            "w_ok": w_ok,
            "w_exc": w_exc,
            "w_silent": w_silent,
            "read_now": read_now,
            "bad_req": bad_req,
        }
    finally:
        host.close()


async def test_modbus_through_the_link(tmp_path: Path, modbus_rtu_server: Any) -> None:
    units = {3: {"hr": [7, 8], "invalid": {"hr": {5}}}, 9: {"silent": True}}
    peer = await modbus_rtu_server(units, baudrate=115200)
    d = install_firmware(tmp_path / "board", scenario=json.dumps({"uart": {"0": peer.device}}))
    board = SimBoard(d, env={"PICOGATE_BOOT_WINDOW_MS": "100"}).start()
    try:
        r = await asyncio.to_thread(_drive, board)
    finally:
        board.stop()
    assert r["first"] == {"0.0": "ok 00070008", "0.1": "exc 2", "0.2": "timeout"}
    assert r["w_ok"] == {"ok": True}
    assert r["w_exc"] == {"ok": False, "code": "device_error", "exc": 2}
    assert r["w_silent"]["ok"] is False
    assert r["w_silent"]["code"] == "timeout"
    assert r["read_now"] == {"ok": True}
    assert r["bad_req"]["code"] == "unknown_point"
