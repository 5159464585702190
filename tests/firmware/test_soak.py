"""The heap soak: the full firmware on the unix port with `-X heapsize=220wK` (the Pico's ~220 KB
heap, word-scaled for a 64-bit build), a 20-point configuration and 4 Modbus slaves, running a
scenario accelerated 20 times (every period divided by 20) for the equivalent of 10 minutes of
operation. No MemoryError, no restart, no dropped frame, and the free heap after the heartbeat's
collection does not shrink. The figures are printed (pytest -s) and written to
$PICOGATE_SOAK_REPORT when set.

PICOGATE_SOAK_MINUTES (default 10) sets the equivalent duration.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from _host import Host

from picogate.simboard import SimBoard, install_firmware

pytestmark = pytest.mark.integration

ACCEL = 20
MINUTES = float(os.environ.get("PICOGATE_SOAK_MINUTES", "10"))
HAVE_MB = (
    Path(__file__).resolve().parents[2] / "firmware" / "picogate_fw" / "mb_master.py"
).exists()  # fw-bus's


def _ms(real_ms: int) -> int:
    return max(10, real_ms // ACCEL)


def soak_config(with_mb: bool) -> dict[str, Any]:
    io: list[dict[str, Any]] = []
    for i in range(6):
        io.append({"id": f"di{i}", "k": "di", "pin": i, "pull": "up", "deb_ms": _ms(40)})
    for i in range(3):
        io.append(
            {"id": f"cnt{i}", "k": "cnt", "pin": 6 + i, "pull": "up", "edge": "rise", "every_ms": _ms(1000)}
        )
    for i in range(3):
        io.append({"id": f"do{i}", "k": "do", "pin": 10 + i, "init": False, "safe": False})
    for i in range(2):
        io.append({"id": f"pwm{i}", "k": "pwm", "pin": 14 + i, "freq": 1000, "init": 0.0, "safe": 0.0})
    for i in range(3):
        io.append({"id": f"adc{i}", "k": "adc", "pin": 26 + i, "os": 16, "every_ms": _ms(1000)})
    io.append({"id": "cpu", "k": "temp", "every_ms": _ms(5000)})
    io.append({"id": "tank", "k": "ds18b20", "pin": 16, "rom": None, "every_ms": _ms(2000)})
    io.append({"id": "room", "k": "dht22", "pin": 17, "every_ms": _ms(2000)})
    assert len(io) == 20
    cfg: dict[str, Any] = {"v": 1, "name": "soak", "hb_ms": 100, "safe_ms": 60000, "io": io, "mb": []}
    if with_mb:
        reqs = []
        for u in (1, 2, 3, 4):
            reqs.append({"u": u, "fc": 3, "a": 0, "n": 10, "every_ms": _ms(1000)})
            reqs.append({"u": u, "fc": 1, "a": 0, "n": 16, "every_ms": _ms(2000)})
        cfg["mb"].append(
            {
                "bus": 0,
                "uart": 0,
                "tx": 20,
                "rx": 21,
                "de": 22,
                "baud": 115200,
                "timeout_ms": 100,
                "reqs": reqs,
            }
        )
    return cfg


def soak_scenario(uart: str | None) -> dict[str, Any]:
    pins: dict[str, Any] = {}
    for i in range(6):  # inputs changing every 0.5-3 s of real time
        per = _ms(1000 + 500 * i) * 2
        pins[str(i)] = {"seq": [[0, 0], [per // 2, 1]], "period_ms": per}
    for i in range(3):  # 10-50 pulses/s real
        pins[str(6 + i)] = {"pulse_ms": max(2, 100 // (1 + 2 * i) // ACCEL * 2)}
    sc: dict[str, Any] = {
        "pins": pins,
        "adc": {
            "26": {"v": 1.2, "noise": 0.01},
            "27": 2.5,
            "28": {"seq": [[0, 0.5], [_ms(3000), 1.5]], "period_ms": _ms(6000)},
        },
        "temp": 31.0,
        "onewire": {"16": {"28FF4A6B12160301": 21.5}},
        "dht22": {"17": {"t": 22.0, "h": 45.0}},
    }
    if uart:
        sc["uart"] = {"0": uart}
    return sc


def _count_mb(body: str, stats: dict[str, int], last: dict[str, str]) -> None:
    items = body.split(" ")[1:]
    i = 0
    while i < len(items):
        key, status = items[i], items[i + 1]
        i += 2
        stats[status] = stats.get(status, 0) + 1
        if status in ("ok", "exc"):
            last[key] = f"{status} {items[i]}"
            i += 1
        else:
            last[key] = status


def run_soak(board: SimBoard, seconds: float, with_mb: bool) -> dict[str, Any]:
    host = Host(board.port)
    try:
        board.wait_for_output(b"@0 hello ", timeout=20)
        host.hello()
        res = host.push_config(soak_config(with_mb))
        assert res is not None
        assert res["ok"], res
        t0 = time.monotonic()
        next_set = t0
        k = 0
        mem: list[tuple[float, int]] = []
        lag = 0
        seen_mb = len(host.frames)
        mb_stats: dict[str, int] = {}
        mb_last: dict[str, str] = {}
        seen_hb = 0
        while time.monotonic() - t0 < seconds:
            host.pump(0.02)
            now = time.monotonic()
            if now >= next_set:  # a command every second of real time
                next_set = now + 1.0 / ACCEL
                k += 1
                host.send("set", json.dumps({"id": f"do{k % 3}", "v": bool(k & 1)}))
                host.send("set", json.dumps({"id": f"pwm{k % 2}", "v": (k % 100) / 100}))
            hbs = host.of_type("hb")
            for f in hbs[seen_hb:]:
                hb = json.loads(f[3] or "{}")
                mem.append((now - t0, hb["mem"]))
                lag = max(lag, hb["lag"])
            seen_hb = len(hbs)
            for f in host.frames[seen_mb:]:
                if f[2] == "mb":
                    _count_mb(f[3] or "", mb_stats, mb_last)
            seen_mb = len(host.frames)
            # keep the host's memory small over a long run
            if len(host.frames) > 5000:
                keep = [f for f in host.frames if f[2] == "rd"][-200:]
                host.frames = keep
                seen_hb = 0
                seen_mb = len(keep)
        host.pump(0.5)
        last_hb = json.loads([f for f in host.frames if f[2] == "hb"][-1][3] or "{}")
        readings = host.readings()
        third = max(1, len(mem) // 3)
        warm = [m for _, m in mem[third : 2 * third]]
        late = [m for _, m in mem[2 * third :]]
        return {
            "seconds": round(time.monotonic() - t0, 1),
            "equivalent_minutes": round((time.monotonic() - t0) * ACCEL / 60, 1),
            "heartbeats": len(mem),
            "mem_free_first": mem[0][1],
            "mem_free_min": min(m for _, m in mem),
            "mem_free_mid_median": int(statistics.median(warm)),
            "mem_free_late_median": int(statistics.median(late)),
            "mem_free_last": mem[-1][1],
            "loop_lag_max_ms": lag,
            "drop": last_hb["drop"],
            "bad": last_hb["bad"],
            "queued": last_hb["q"],
            "commands": k * 2,
            "acks": len(host.acks),
            "modbus_results": mb_stats,
            "modbus_last": mb_last,
            "readings": readings,
        }
    finally:
        host.close()


async def test_soak_heap(tmp_path: Path, modbus_rtu_server: Any) -> None:
    uart = None
    if HAVE_MB:
        units = {u: {"hr": list(range(u * 100, u * 100 + 10)), "co": [1, 0] * 8} for u in (1, 2, 3, 4)}
        peer = await modbus_rtu_server(units, baudrate=115200)
        uart = peer.device
    d = install_firmware(tmp_path / "board", scenario=json.dumps(soak_scenario(uart)))
    board = SimBoard(d, heapsize="220wK", env={"PICOGATE_BOOT_WINDOW_MS": "100"}).start()
    try:
        seconds = MINUTES * 60 / ACCEL
        fig = await asyncio.to_thread(run_soak, board, seconds, HAVE_MB)
        out = board.output()
    finally:
        board.stop()
    fig["modbus"] = HAVE_MB
    fig["restarts"] = board.restarts
    print(
        "\nsoak figures:", json.dumps({k: v for k, v in fig.items() if k not in ("readings", "modbus_last")})
    )
    if os.environ.get("PICOGATE_SOAK_REPORT"):
        await asyncio.to_thread(
            Path(os.environ["PICOGATE_SOAK_REPORT"]).write_text, json.dumps(fig, indent=1)
        )
    assert b"MemoryError" not in out
    assert b"Traceback" not in out
    assert board.restarts == 0
    assert fig["drop"] == 0
    assert fig["equivalent_minutes"] >= MINUTES * 0.95
    # no growth: the free heap after collection late in the run is not below the middle of the run
    # (1 KB of slack for the collector's granularity and the host's changing command mix)
    assert fig["mem_free_late_median"] >= fig["mem_free_mid_median"] - 1024, fig
    r = fig["readings"]
    for name in ("di0", "cnt0", "do0", "pwm0", "adc0", "adc2", "cpu"):
        assert name in r, name
    assert int(r["cnt0"]) > 0
    assert (r["tank"], r["room_t"], r["room_h"]) == ("21.5", "22", "45")  # the drivers, on simulated sensors
    if HAVE_MB:
        # every request of every slave answered with the values the slaves hold
        last = fig["modbus_last"]
        for k, u in enumerate((1, 2, 3, 4)):
            regs = "".join(f"{v:04x}" for v in range(u * 100, u * 100 + 10))
            assert last[f"0.{2 * k}"] == f"ok {regs}", last
            assert last[f"0.{2 * k + 1}"] == "ok 5555", last  # coils 1,0,1,0... packed LSB first
        assert fig["modbus_results"].get("timeout", 0) == 0
        assert fig["modbus_results"]["ok"] > MINUTES * 60 * 6 * 0.5  # 4 slaves x 1.5 polls/s
