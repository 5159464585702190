# Allocation in the application's main loop: none per round when nothing is to be sent, and a
# small constant amount per frame (the frame's bytes and its queue entry), never per reading.
import gc
import json
import time

from mpt import eq

_SIM = {"pins": {"2": 1, "3": {"pulse_ms": 20}}, "adc": {"26": 1.652}}
_CFG = {
    "v": 1, "hb_ms": 60000, "safe_ms": 0,
    "io": [
        {"id": "door", "k": "di", "pin": 2, "pull": "up", "deb_ms": 20},
        {"id": "parts", "k": "cnt", "pin": 3, "pull": "up", "every_ms": 60000},
        {"id": "valve", "k": "do", "pin": 15, "init": False, "safe": False},
        {"id": "level", "k": "adc", "pin": 26, "os": 16, "every_ms": 60000},
        {"id": "cpu", "k": "temp", "every_ms": 60000},
    ],
}


class NullIO:
    def __init__(self):
        self.n = 0

    def read_byte(self):
        return -1

    def write(self, mv):
        self.n += len(mv)


def _app():
    with open("pg_sim.json", "w") as f:
        json.dump(_SIM, f)
    from picogate_fw import app, config

    text = json.dumps(_CFG)
    cfg, errors = config.validate(text)
    eq(errors, [])
    a = app.App(None, 1, None)
    a.io = NullIO()
    a.s.io = a.io
    a.s.up = True
    a.apply(text, cfg)
    from picogate_fw import hal

    a.hal = hal
    return a


def _round(a, now):
    a.hal.service()
    a.s.poll_rx()
    for p in a.pts:
        if type(p) is a.points_DI:
            p.scan(now)
    a.report(now, False)
    a.s.pump(now)
    a.check_safe(now)
    a.healthy(now)


def test_idle_rounds_allocate_nothing():
    from picogate_fw import points

    a = _app()
    a.points_DI = points.DI
    now = time.ticks_ms()
    _round(a, now)  # the first round reports everything once
    a.s.q.clear()
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(500):
        _round(a, time.ticks_ms())
    grown = gc.mem_alloc() - before
    print("idle: %d bytes allocated in 500 rounds" % grown)
    if grown > 0:
        raise AssertionError("idle rounds allocated %d bytes" % grown)


def test_reading_frames_allocate_per_frame_not_per_reading():
    from picogate_fw import points

    a = _app()
    a.points_DI = points.DI
    _round(a, time.ticks_ms())
    a.s.q.clear()
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(100):
        a.report(time.ticks_ms(), True)  # a full report: one frame with 5 readings
        size = len(a.s.q[0][1])
        a.s.q.clear()
    per_frame = (gc.mem_alloc() - before) // 100
    print("full report (5 readings, %d bytes): %d bytes allocated per frame" % (size, per_frame))
    # the frame's bytes, its queue entry and two memoryviews (~190 bytes on 64-bit); nothing per reading
    if per_frame > size + 200:
        raise AssertionError("%d bytes per frame of %d" % (per_frame, size))


def test_modbus_results_allocate_nothing_per_result():
    a = _app()
    data = memoryview(bytearray(b"\x00\xfa\x00\x01\x12\x34"))
    a.on_mb(0, 0, "ok", data)  # the first result opens the frame
    gc.collect()
    before = gc.mem_alloc()
    for i in range(20):  # 20 results of 6 data bytes fit one frame
        a.on_mb(0, i & 7, "ok", data)
        a.on_mb(0, 1, "exc", 2)
        a.on_mb(0, 2, "timeout", None)
    grown = gc.mem_alloc() - before
    print("60 Modbus results into one open frame: %d bytes allocated" % grown)
    if grown > 0:
        raise AssertionError("%d bytes allocated by 60 results" % grown)
