"""The firmware's Modbus RTU master (picogate_fw.mb_master on the MicroPython unix port) polling over
a socat pty pair: transactions per second and the master's own time per transaction.

    python bench/fw_modbus.py [--seconds 5] [--json]

Two peers: the pymodbus RTU server of the tests (what the integration tests use), and a minimal
responder that answers every request with a prebuilt reply (so that the figure is the master's and
the pty's, not pymodbus's). Each runs at two bus settings, 115200 and 9600 8N1: a pty has no baud
rate, but the master's t3.5 silences and frame air time come from the setting. The master polls
10 holding registers as fast as it can (every_ms 1).

"own µs/tx" is the time inside the master's transaction code that is not asleep waiting for the
bus (mb_master's tx_us - wait_us): building nothing (frames are prebuilt), UART calls, checking the
CRC, scheduling, the result callback. The physical reference is what the same poll costs on a real
line: (8 + 25 bytes) × 10 bits / baud + two t3.5 silences ≈ 6.4 ms at 115200, 42 ms at 9600.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _fwbus import _open_raw, micropython, run_master  # noqa: E402
from _peers import ModbusRtuPeer, SocatPtyPair  # noqa: E402

REGS = list(range(1000, 1010))


def reference_ms(baud: int, n_regs: int = 10) -> float:
    chars = 8 + 5 + 2 * n_regs
    gap_ms = 1.75 if baud > 19200 else 3.5 * 10 * 1000 / baud
    return chars * 10 * 1000 / baud + 2 * gap_ms


def _crc(data: bytes) -> bytes:
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return bytes((c & 0xFF, c >> 8))


class Responder:
    """Answers any 8-byte read request for unit 1 with a prebuilt reply of 10 registers."""

    def __init__(self, path: str) -> None:
        self.path = path
        body = bytes([1, 3, 20]) + b"".join(v.to_bytes(2, "big") for v in REGS)
        self.reply = body + _crc(body)
        self.buf = bytearray()
        self.fd = -1
        self.served = 0

    def start(self) -> Responder:
        self.fd = _open_raw(self.path)
        asyncio.get_running_loop().add_reader(self.fd, self._on_read)
        return self

    def _on_read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self.buf += os.read(self.fd, 4096)
        while len(self.buf) >= 8:
            del self.buf[:8]
            os.write(self.fd, self.reply)
            self.served += 1

    def stop(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


async def measure(peer_kind: str, baud: int, seconds: float, workdir: Path) -> dict[str, Any]:
    pair = SocatPtyPair(workdir / "pty").start()  # makes workdir/pty
    server: ModbusRtuPeer | None = None
    responder: Responder | None = None
    try:
        if peer_kind == "pymodbus":
            server = ModbusRtuPeer(pair, {1: {"hr": REGS}}, baudrate=baud)
            await server.start()
            device = server.device
        else:
            responder = Responder(pair.path_a).start()
            device = pair.path_b
        cfg = {
            "bus": 0,
            "baud": baud,
            "timeout_ms": 500,
            "retries": 0,
            "backoff_ms": 0,
            "reqs": [{"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 1}],
        }
        run = await run_master(device, cfg, workdir, ms=int(seconds * 1000), quiet=True, timeout=seconds + 30)
    finally:
        if server is not None:
            await server.stop()
        if responder is not None:
            responder.stop()
        pair.stop()
    st = run.stats
    n = st["tx"] or 1
    return {
        "peer": peer_kind,
        "baud": baud,
        "tx": st["tx"],
        "ok": st["ok"],
        "tx_per_s": round(st["tx"] / (st["elapsed_ms"] / 1000), 1),
        "ms_per_tx": round(st["tx_us"] / n / 1000, 3),
        "own_us_per_tx": round((st["tx_us"] - st["wait_us"]) / n, 1),
        "wait_us_per_tx": round(st["wait_us"] / n, 1),
        "reference_ms": round(reference_ms(baud), 1),
        "reference_tx_per_s": round(1000 / reference_ms(baud), 1),
        "errors": st["timeout"] + st["crc"] + st["exc"],
    }


def own_cost(n: int = 3000) -> dict[str, Any]:
    """The master on an in-memory line (tests/firmware/mp/mb_cpu.py): its code alone, no I/O."""
    env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:{ROOT / 'tests/firmware/mp'}:.frozen")
    proc = subprocess.run(
        [micropython(), "-X", "heapsize=220wK", str(ROOT / "tests/firmware/mp/mb_cpu.py"), str(n)],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    row: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    row["peer"] = "in-memory"
    return row


async def run_all(seconds: float) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (peer, baud) in enumerate(
            (("pymodbus", 115200), ("pymodbus", 9600), ("responder", 115200), ("responder", 9600))
        ):
            out.append(await measure(peer, baud, seconds, Path(tmp) / str(k)))
    return out


def report(rows: list[dict[str, Any]], cost: dict[str, Any] | None = None) -> None:
    print("   firmware Modbus master (MicroPython unix port) ↔ socat pty ↔ peer, 10 holding registers:")
    print("     peer        baud    tx/s   ms/tx  own µs/tx  wait µs/tx   real line: ms/tx  tx/s  errors")
    for r in rows:
        print(
            f"     {r['peer']:<10} {r['baud']:>6} {r['tx_per_s']:>7.1f} {r['ms_per_tx']:>7.2f} "
            f"{r['own_us_per_tx']:>10.1f} {r['wait_us_per_tx']:>11.1f}   {r['reference_ms']:>16.1f} "
            f"{r['reference_tx_per_s']:>5.0f} {r['errors']:>7}"
        )
    if cost:
        print(
            f"   the master's code alone (in-memory line, no I/O): {cost['own_us_per_tx']} µs per transaction, "
            f"of which checking the reply (CRC-16 of 25 bytes) {cost['check_reply_us']} µs"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="measurement per row (default 5)")
    ap.add_argument("--json", action="store_true", help="print the rows as one JSON line too")
    args = ap.parse_args(argv)
    rows = asyncio.run(run_all(args.seconds))
    cost = own_cost()
    report(rows, cost)
    if args.json:
        print(json.dumps({"rows": rows, "own_cost": cost}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
