"""The firmware on the real MicroPython rp2 build (RPI_PICO, v1.28.0) on an emulated RP2040
(../shared/rp2, tools/rp2emu.py): figures in board time.

    python bench/fw_rp2.py [--only modbus,link,boot,heap] [--heap-minutes 60] [--json]

Board time is the emulator's clock: cycles × 8 ns at 125 MHz (plus jumps over idle time), so a
figure in board time is what the code costs on a real Pico's CPU (flash wait states and bus
contention are not modelled), however slowly the emulator runs.

- modbus: the firmware's Modbus RTU master (picogate_fw.mb_master on UART0, 115200 8N1, 10 holding
  registers, polled as fast as it can) against a responder on the UART0 socket: its own code per
  transaction (mb_master's tx_us - wait_us: the time in a transaction not asleep waiting for the
  line), and the whole firmware's CPU per transaction when the application polls the same request
  every 10 ms and reports every result to a host (below).
- link: the application (picogate_fw.app, as main.py runs it) with N edge counters reported every
  10 ms to a host that acknowledges every frame: the firmware's CPU per reading. CPU = board time
  less the time the asyncio loop sleeps waiting for I/O or a timer (the loop's
  `_io_queue.wait_io_event` is timed from outside the firmware, by the harness that starts it).
- boot: from reset to the first hello of a flashed board (`.mpy` files, as picogate flash writes
  them) and of the same firmware as `.py` source, in board ms (the hello's ticks), less the 2 s boot
  window.
- heap: the free heap (the heartbeat's `mem`, after its gc.collect()) over an hour of board time at
  the densest documented configuration: every kind of docs/pico.md on every free pin (see
  DENSE_IO), SHT3x on I2C0 (the runner's model), a Modbus bus on UART0 with 4 slaves, inputs
  changing and commands arriving as in tests/firmware/test_soak.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "firmware"))

from _host import Host, decode  # noqa: E402

import rp2emu  # noqa: E402

REGS = list(range(1000, 1010))


# --- a Modbus RTU responder on the emulator's UART0 socket -------------------------------------------


def _crc(data: bytes) -> bytes:
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return bytes((c & 0xFF, c >> 8))


class Responder:
    """Answers reads (fc 1-4) of any unit with register i = 1000 + i, coils 1,0,1,0..."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.served = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _reply(self, req: bytes) -> bytes:
        u, fc = req[0], req[1]
        a, n = int.from_bytes(req[2:4], "big"), int.from_bytes(req[4:6], "big")
        if fc in (3, 4):
            body = bytes([u, fc, 2 * n]) + b"".join(
                ((1000 + a + i) & 0xFFFF).to_bytes(2, "big") for i in range(n)
            )
        else:
            bits = [(a + i) % 2 == 0 for i in range(n)]
            packed = bytes(sum(1 << k for k in range(8) if j + k < n and bits[j + k]) for j in range(0, n, 8))
            body = bytes([u, fc, len(packed)]) + packed
        return body + _crc(body)

    def _run(self) -> None:
        buf = b""
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while len(buf) >= 8:
                req, buf = buf[:8], buf[8:]
                if _crc(req[:6]) != req[6:8]:
                    buf = b""  # out of step: drop what is there
                    break
                self.sock.sendall(self._reply(req))
                self.served += 1

    def close(self) -> None:
        self._stop = True
        self.sock.close()


# --- boards ------------------------------------------------------------------------------------------


def flashed_image(workdir: Path, source: Path | None = None) -> Path:
    """A blank board given the firmware by `picogate flash` (source: another firmware folder)."""
    board = rp2emu.Pico(None)
    try:
        board.start()
        args = ["--firmware", str(source)] if source else []
        r = subprocess.run(
            [sys.executable, "-m", "picogate", "flash", "--port", board.port, "--json", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise SystemExit(f"picogate flash failed: {r.stdout}{r.stderr}")
        board.stop()
        out = workdir / ("source.bin" if source else "picogate.bin")
        out.write_bytes(board.image.read_bytes())
        return out
    finally:
        board.close()


# The harness that starts the application at the REPL (instead of main.py) and times the asyncio
# loop's waits: "BUSY <board ms> <µs waited> <µs of other tasks>" every 2 s of board time.
_HARNESS = """
import time, asyncio, gc, micropython
from asyncio import core
micropython.kbd_intr(-1)
_q = core._io_queue
_wait = _q.wait_io_event
_idle = [0]
def _timed(dt):
    t = time.ticks_us()
    _wait(dt)
    _idle[0] += time.ticks_diff(time.ticks_us(), t)
_q.wait_io_event = _timed
import picogate_fw.app as A
_app = A.App(None, 1, None)
async def _report():
    while True:
        await asyncio.sleep_ms(2000)
        print("BUSY %d %d" % (time.ticks_ms(), _idle[0]))
async def _main():
    asyncio.create_task(_report())
    await _app.main()
asyncio.run(_main())
"""


class Run:
    """The application started by _HARNESS on a board at its REPL, talking the link to a Host."""

    def __init__(self, board: rp2emu.Pico) -> None:
        self.board = board
        board.wait_output(b"maintenance mode (BOOTSEL held)")
        board.ctl(bootsel=False)
        pos = board.output_pos()
        board.write(b"\r\x03\x03\r\x01")
        board.wait_output(b"raw REPL; CTRL-B to exit\r\n>", since=pos)
        self.host = Host(board.port)
        self.host.ser.reset_input_buffer()
        board.write(_HARNESS.encode() + b"\x04")
        self.busy: list[tuple[int, int]] = []  # (board ms, µs waited)
        self.rd: list[tuple[int, int]] = []  # (board ticks, readings) per rd frame
        self.mb: list[tuple[int, int]] = []  # (board ticks, results) per mb frame
        self.hb: list[dict[str, Any]] = []
        self._buf = b""

    def pump(self, seconds: float) -> None:
        h = self.host
        deadline = time.monotonic() + seconds
        while True:
            self._buf += h.ser.read(max(1, h.ser.in_waiting))
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(b"BUSY "):
                    _, t, idle = line.split()
                    self.busy.append((int(t), int(idle)))
                    continue
                f = decode(line + b"\n")
                if f is None or f[0] != "@":
                    continue
                h.frames.append(f)
                body = f[3] or ""
                if f[2] == "ack":
                    n, _, res = body.partition(" ")
                    h.acks[int(n)] = res or None
                elif f[2] in ("rd", "mb", "evt"):
                    h.send("ack", str(f[1]))
                    if f[2] == "rd":
                        self.rd.append((int(body.split(" ", 1)[0]), body.count("=")))
                    elif f[2] == "mb":
                        self.mb.append(
                            (int(body.split(" ", 1)[0]), body.count(" ok ") + body.count(" timeout"))
                        )
                elif f[2] == "hb":
                    self.hb.append(json.loads(body))
            if time.monotonic() >= deadline:
                return

    def start(self, cfg: dict[str, Any]) -> None:
        self.host.wait(lambda: self.host.of_type("hello"), 60, "the application's hello")
        self.host.hello()
        text = json.dumps(cfg, separators=(",", ":"))
        parts = [text[i : i + 900] for i in range(0, len(text), 900)]
        for i, p in enumerate(parts, 1):
            seq = self.host.send("cfg", f"{i}/{len(parts)} {p}")
            deadline = time.monotonic() + 60
            while seq not in self.host.acks:
                self.pump(0.05)
                if time.monotonic() > deadline:
                    raise SystemExit("no ack for the configuration")
            res = json.loads(self.host.acks[seq] or "{}")
            if not res.get("ok"):
                raise SystemExit(f"configuration refused: {res}")

    def window(self, kind: str, seconds: float) -> dict[str, Any]:
        """CPU per reading (rd) or per Modbus result (mb) over the BUSY reports of `seconds` of wall."""
        self.pump(2.0)  # settle
        b0 = len(self.busy)
        self.pump(seconds)
        busy = self.busy[b0:]
        if len(busy) < 2:
            raise SystemExit(f"too few BUSY reports ({len(busy)}): the board is too slow for the window")
        (t0, i0), (t1, i1) = busy[0], busy[-1]
        frames = self.rd if kind == "rd" else self.mb
        n = sum(k for t, k in frames if t0 < t <= t1)
        nf = sum(1 for t, _ in frames if t0 < t <= t1)
        cpu_us = (t1 - t0) * 1000 - (i1 - i0)
        return {
            "board_s": round((t1 - t0) / 1000, 1),
            "items": n,
            "frames": nf,
            "items_per_board_s": round(n / ((t1 - t0) / 1000), 1),
            "cpu_pct": round(100 * cpu_us / ((t1 - t0) * 1000), 1),
            "cpu_us_per_item": round(cpu_us / n, 1) if n else None,
        }

    def close(self) -> None:
        self.host.close()


# --- figures -----------------------------------------------------------------------------------------

_MASTER = """
import time, asyncio, json
from picogate_fw import hal, mb_master
n = [0]
def on_result(bus, i, st, data):
    n[0] += 1
cfg = {"bus": 0, "uart": 0, "tx": 0, "rx": 1, "baud": 115200, "timeout_ms": 100, "retries": 0,
       "backoff_ms": 0, "reqs": [{"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 1}]}
m = mb_master.Master(hal, cfg, on_result)
async def main():
    t = asyncio.create_task(m.run())
    while n[0] < %d:
        await asyncio.sleep_ms(20)
    m.stop()
    await t
t0 = time.ticks_ms()
asyncio.run(main())
s = m.stats()
s["elapsed_ms"] = time.ticks_diff(time.ticks_ms(), t0)
print(json.dumps(s))
"""


def fig_modbus_in_memory(image: Path, n: int = 300) -> dict[str, Any]:
    """tests/firmware/mp/mb_cpu.py on the board: the master against an in-memory line (slaves that
    answer at once), i.e. its own code alone, and check_reply (CRC-16 of a 25-byte reply)."""
    mp = ROOT / "tests" / "firmware" / "mp"
    board = rp2emu.Pico(image, bootsel=True).start()
    try:
        board.wait_output(b"maintenance mode (BOOTSEL held)")
        # mpt.py reads os.getenv at import: the rp2 port's os has no getenv (no environment)
        board.put("mpt.py", (mp / "mpt.py").read_bytes().replace(b'os.getenv("PICOGATE_REPO")', b"None"))
        board.put("mp_mb_master.py", (mp / "mp_mb_master.py").read_bytes())
        code = (
            (mp / "mb_cpu.py")
            .read_text()
            .replace("N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000", f"N = {n}")
        )
        row: dict[str, Any] = json.loads(board.exec(code, timeout=600).strip().splitlines()[-1])
        return row
    finally:
        board.close()


def fig_modbus(image: Path, n: int = 500) -> dict[str, Any]:
    out: dict[str, Any] = {"in_memory": fig_modbus_in_memory(image)}
    board = rp2emu.Pico(image, bootsel=True, realtime=True, uart0=True).start()
    try:
        board.wait_output(b"maintenance mode (BOOTSEL held)")
        assert board.uart0_path is not None
        resp = Responder(board.uart0_path)
        s = json.loads(board.exec(_MASTER % n, timeout=600).strip().splitlines()[-1])
        resp.close()
        tx = s["tx"] or 1
        out["master"] = {
            "tx": s["tx"],
            "ok": s["ok"],
            "tx_per_board_s": round(s["tx"] / (s["elapsed_ms"] / 1000), 1),
            "ms_per_tx": round(s["tx_us"] / tx / 1000, 3),
            "own_us_per_tx": round((s["tx_us"] - s["wait_us"]) / tx, 1),
        }
    finally:
        board.close()
    board = rp2emu.Pico(image, bootsel=True, realtime=True, uart0=True).start()
    try:
        assert board.uart0_path is not None
        resp = Responder(board.uart0_path)
        run = Run(board)
        cfg = {
            "v": 1,
            "hb_ms": 1000,
            "safe_ms": 0,
            "io": [],
            "mb": [
                {
                    "bus": 0,
                    "uart": 0,
                    "tx": 0,
                    "rx": 1,
                    "baud": 115200,
                    "timeout_ms": 100,
                    "reqs": [{"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 10}],
                }
            ],
        }
        run.start(cfg)
        out["app"] = run.window("mb", 20.0)
        run.close()
        resp.close()
    finally:
        board.close()
    return out


def fig_link(image: Path, points: int = 20, every_ms: int = 10) -> dict[str, Any]:
    pins = list(range(23))[:points]
    io = [{"id": f"c{p}", "k": "cnt", "pin": p, "every_ms": every_ms} for p in pins]
    cfg = {"v": 1, "hb_ms": 1000, "safe_ms": 0, "io": io}
    board = rp2emu.Pico(image, bootsel=True, realtime=True).start()
    try:
        run = Run(board)
        run.start(cfg)
        row = run.window("rd", 20.0)
        row.update(points=points, every_ms=every_ms, offered_per_s=points * 1000 // every_ms)
        run.close()
        return row
    finally:
        board.close()


def fig_boot(image: Path, source_image: Path, boots: int = 3) -> dict[str, Any]:
    from _rp2 import hello_of

    out: dict[str, Any] = {}
    for name, img in (("mpy", image), ("py", source_image)):
        ticks = []
        walls = []
        for _ in range(boots):
            t0 = time.monotonic()
            board = rp2emu.Pico(img).start()
            try:
                board.wait_output(b"@0 hello ", timeout=120)
                walls.append(time.monotonic() - t0)
                seen = board.wait_output(b"\n@1 ", timeout=30)
                ticks.append(int(hello_of(seen, 0)["ticks"]))
            finally:
                board.close()
        out[name] = {
            "board_ms_to_hello": int(statistics.median(ticks)),
            "less_boot_window_ms": int(statistics.median(ticks)) - 2000,
            "wall_s_to_hello": round(statistics.median(walls), 2),
        }
    return out


# every kind of docs/pico.md's example on the Pico's free pins; the SHT3x on I2C0 (GP4/GP5), the
# Modbus bus on UART0 (GP0/GP1, DE GP2), 1-Wire on GP3 and DHT22 on GP6 (no sensor there: the
# emulator models none, so they report bad quality every read, as a board with them unplugged)
DENSE_IO: list[dict[str, Any]] = (
    [{"id": f"di{p}", "k": "di", "pin": p, "pull": "up", "deb_ms": 20, "inv": False} for p in range(7, 13)]
    + [
        {"id": f"cnt{p}", "k": "cnt", "pin": p, "pull": "up", "edge": "rise", "every_ms": 1000}
        for p in range(13, 17)
    ]
    + [{"id": f"do{p}", "k": "do", "pin": p, "init": False, "safe": False} for p in range(17, 20)]
    + [{"id": f"pwm{p}", "k": "pwm", "pin": p, "freq": 1000, "init": 0.0, "safe": 0.0} for p in range(20, 23)]
    + [{"id": f"adc{p}", "k": "adc", "pin": p, "os": 16, "every_ms": 1000} for p in (26, 27, 28)]
    + [
        {"id": "cpu", "k": "temp", "every_ms": 5000},
        {"id": "air", "k": "sht3x", "i2c": 0, "sda": 4, "scl": 5, "addr": 68, "every_ms": 2000},
        {"id": "tank", "k": "ds18b20", "pin": 3, "rom": None, "every_ms": 2000},
        {"id": "room", "k": "dht22", "pin": 6, "every_ms": 2000},
    ]
)


def dense_config() -> dict[str, Any]:
    reqs = []
    for u in (1, 2, 3, 4):
        reqs.append({"u": u, "fc": 3, "a": 0, "n": 10, "every_ms": 1000})
        reqs.append({"u": u, "fc": 1, "a": 0, "n": 16, "every_ms": 2000})
    bus = {"bus": 0, "uart": 0, "tx": 0, "rx": 1, "de": 2, "baud": 19200, "timeout_ms": 200, "reqs": reqs}
    return {"v": 1, "name": "dense", "hb_ms": 1000, "safe_ms": 0, "io": DENSE_IO, "mb": [bus]}


def fig_heap(image: Path, minutes: float, log: Any = print) -> dict[str, Any]:
    src = rp2emu.find_source()
    assert src is not None
    sys.path.insert(0, str(src))
    from i2c_models import I2CBus, SHT3x

    board = rp2emu.Pico(image, uart0=True, i2c0=True).start()
    rng = random.Random(1)
    try:
        assert board.uart0_path is not None
        resp = Responder(board.uart0_path)
        bus = I2CBus(board.i2c_paths[0], SHT3x(0x44, temperature=21.5, humidity=40.0)).start()
        host = Host(board.port)
        host.wait(lambda: host.of_type("hello"), 60, "hello")
        host.hello()
        res = host.push_config(dense_config())
        if not res or not res.get("ok"):
            raise SystemExit(f"configuration refused: {res}")
        mem: list[tuple[int, int]] = []  # (board ms, free heap)
        seen = 0
        k = 0
        t0 = time.monotonic()
        next_cmd = t0
        end_ms = int(minutes * 60_000)
        last_log = 0
        while True:
            host.pump(0.05)
            hbs = host.of_type("hb")
            for f in hbs[seen:]:
                hb = json.loads(f[3] or "{}")
                mem.append((int(hb["ticks"]), int(hb["mem"])))
            seen = len(hbs)
            if len(host.frames) > 5000:
                host.frames = host.frames[-100:]
                seen = len(host.of_type("hb"))
            now = time.monotonic()
            if now >= next_cmd:  # about a second of wall time: commands, inputs that change
                next_cmd = now + 1.0
                k += 1
                host.send("set", json.dumps({"id": f"do{17 + k % 3}", "v": bool(k & 1)}))
                host.send("set", json.dumps({"id": f"pwm{20 + k % 3}", "v": (k % 100) / 100}))
                board.ctl(pin=7 + k % 6, v=rng.randrange(2))
                for _ in range(5):
                    p = 13 + rng.randrange(4)
                    board.ctl(pin=p, v=0)
                    board.ctl(pin=p, v=1)
                board.ctl(adc=0, v=round(1.0 + rng.random(), 3))
            if mem and mem[-1][0] - last_log >= 300_000:
                last_log = mem[-1][0]
                log(
                    f"   heap: {mem[-1][0] / 60000:.0f} board min, free {mem[-1][1]} bytes, wall {now - t0:.0f} s"
                )
            if mem and mem[-1][0] >= end_ms:
                break
            if not board.running:
                raise SystemExit("the emulator ended")
        host.pump(1.0)
        last_hb = json.loads(host.of_type("hb")[-1][3] or "{}")
        st = board.ctl()
        host.close()
        bus.close()
        resp.close()
    finally:
        board.close()
    tenth = max(1, len(mem) // 6)
    first = [m for t, m in mem if t <= 600_000 and t > 60_000] or [m for _, m in mem[:tenth]]
    last = [m for t, m in mem if t > mem[-1][0] - 600_000]
    return {
        "board_minutes": round(mem[-1][0] / 60000, 1),
        "wall_minutes": round((time.monotonic() - t0) / 60, 1),
        "points": len(DENSE_IO) + 2,  # two-value sensors
        "heartbeats": len(mem),
        "free_first_10min_median": int(statistics.median(first)),
        "free_last_10min_median": int(statistics.median(last)),
        "free_min": min(m for _, m in mem),
        "free_max": max(m for _, m in mem),
        "boots": st["boots"],
        "drop": last_hb["drop"],
        "bad": last_hb["bad"],
        "lag_ms": last_hb["lag"],
        "modbus_replies": resp.served,
        "commands": 2 * k,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="modbus,link,boot,heap", help="figures to take (default: all)")
    ap.add_argument("--heap-minutes", type=float, default=60.0, help="board minutes of the heap run")
    ap.add_argument("--image", type=Path, help="a flashed image to use (default: flash a blank board)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "rp2"))
    only = set(args.only.split(","))
    rp2emu.setup(quiet=True)
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fw-rp2-") as tmp:
        image = args.image or flashed_image(Path(tmp))
        if "modbus" in only:
            res["modbus"] = fig_modbus(image)
            print("modbus:", json.dumps(res["modbus"]), flush=True)
        if "link" in only:
            res["link"] = fig_link(image)
            print("link:", json.dumps(res["link"]), flush=True)
        if "boot" in only:
            from picogate.flash import _deploy  # the same firmware as .py source on the board

            src_image = Path(tmp) / "py.bin"
            src_image.write_bytes(image.read_bytes())
            board = rp2emu.Pico(src_image, bootsel=True, keep_image=True).start()
            try:
                board.wait_output(b"maintenance mode (BOOTSEL held)")
                board.exec(_deploy._HELPERS + "_rm('picogate_fw')\nos.mkdir('picogate_fw')\n")
                for py in sorted((ROOT / "firmware" / "picogate_fw").glob("*.py")):
                    board.put(f"picogate_fw/{py.name}", py.read_bytes())
            finally:
                board.stop()
            res["boot"] = fig_boot(image, src_image)
            print("boot:", json.dumps(res["boot"]), flush=True)
        if "heap" in only:
            res["heap"] = fig_heap(image, args.heap_minutes)
            print("heap:", json.dumps(res["heap"]), flush=True)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
