# The application's handling of configs and sensors, with a stand-in sensor driver written into the
# board directory (the real drivers are fw-bus's; this checks app.py's side of the interface).
import json

import asyncio
from mpt import eq

_DRV = '''
FAIL = [False]


class Sensor:
    def __init__(self, hal, cfg):
        if cfg["pin"] == 30:
            raise ValueError("pin: GP30 cannot drive a DHT22")

    async def read(self):
        if FAIL[0]:
            raise OSError(110, "ETIMEDOUT")
        return (21.5, 40.25)
'''


class NullIO:
    def __init__(self):
        self.out = []

    def read_byte(self):
        return -1

    def write(self, mv):
        self.out.append(bytes(mv))


def _app():
    with open("picogate_fw/drv_dht22.py", "w") as f:
        f.write(_DRV)
    with open("pg_sim.json", "w") as f:
        f.write("{}")
    from picogate_fw import app

    a = app.App(None, 1, None)
    a.io = NullIO()
    a.s.io = a.io
    a.s.up = True
    return a


def _cfg(a, doc):
    return json.loads(a.handle("cfg", "1/1 " + json.dumps(doc), 1))


GOOD = {"v": 1, "io": [{"id": "room", "k": "dht22", "pin": 5, "every_ms": 100},
                       {"id": "valve", "k": "do", "pin": 15}]}


def test_driver_refusal_keeps_the_old_config():
    a = _app()

    async def go():
        r = _cfg(a, GOOD)
        eq(r["ok"], True)
        good_id = a.cfg_id
        bad = json.loads(json.dumps(GOOD))
        bad["io"][0]["pin"] = 30
        eq(_cfg(a, bad), {"ok": False, "errors": [{"field": "io[0].pin", "msg": "GP30 cannot drive a DHT22"}]})
        eq(a.cfg_id, good_id)
        eq(sorted(a.by_id), ["room", "valve"])
        with open("pg_cfg.json") as f:
            eq(f.read(), json.dumps(GOOD))

    asyncio.run(go())


def test_sensor_values_failure_event_and_recovery():
    a = _app()
    import picogate_fw.drv_dht22 as drv

    async def go():
        _cfg(a, GOOD)
        p = a.by_id["room"]
        await p.poll()
        p.fresh = True
        a.s.q.clear()
        a.report(0, False)
        eq([f[1].decode().split(" ")[3:5] for f in a.s.q], [["room_t=21.5", "room_h=40.25"]])
        drv.FAIL[0] = True
        await p.poll()
        p.fresh = True
        a.s.q.clear()
        a.report(0, False)
        frames = [f[1].decode() for f in a.s.q]
        eq(frames[0].split(" ")[1], "evt")
        eq(json.loads(frames[0].split(" ", 2)[2].rsplit(" ", 1)[0]), {"k": "sensor", "id": "room", "ok": False, "why": "nodev"})
        eq(frames[1].split(" ")[3:5], ["room_t=?nodev", "room_h=?nodev"])
        drv.FAIL[0] = False
        await p.poll()
        a.s.q.clear()
        a.report(0, False)
        eq(json.loads(a.s.q[0][1].decode().split(" ", 2)[2].rsplit(" ", 1)[0])["ok"], True)
        a.clear()

    asyncio.run(go())


def test_unknown_and_bad_frames_are_counted():
    a = _app()
    bad = a.s.bad
    eq(a.handle("zzz", None, 3), None)
    eq(a.s.bad, bad + 1)
    eq(a.handle("hello", "not json", 4), None)
    eq(a.s.bad, bad + 2)
    eq(json.loads(a.handle("cfg", "x/y {}", 5))["ok"], False)
    eq(json.loads(a.handle("cfg", "2/2 {}", 6))["errors"][0]["field"], "cfg")


_MASTER = '''
import asyncio

MASTERS = []


class Master:
    def __init__(self, hal, cfg, on_result, where="mb."):
        self.cfg = cfg
        self.on_result = on_result
        self.writes = []
        self.now = []
        MASTERS.append(self)

    async def run(self):
        while True:
            await asyncio.sleep_ms(1000)

    def read_now(self, i):
        self.now.append(i)

    def write(self, u, fc, a, values, done):
        self.writes.append((u, fc, a, values, done))

    def close(self):
        pass
'''

MB = {"v": 1, "mb": [{"bus": 0, "uart": 0, "tx": 0, "rx": 1, "reqs": [
    {"u": 3, "fc": 3, "a": 0, "n": 2}, {"u": 4, "fc": 1, "a": 0, "n": 16}]}]}


def test_modbus_results_and_writes_through_the_master_interface():
    with open("picogate_fw/mb_master.py", "w") as f:
        f.write(_MASTER)
    a = _app()
    _CUR[0] = a
    import picogate_fw.mb_master as mbm

    async def go():
        eq(_cfg(a, MB)["ok"], True)
        m = mbm.MASTERS[-1]
        eq(m.cfg["baud"], 19200)  # defaults filled in
        a.s.q.clear()
        m.on_result(0, 0, "ok", b"\x00\xfa\x00\x01")
        m.on_result(0, 1, "exc", 2)
        m.on_result(0, 0, "timeout", None)
        m.on_result(0, 1, "crc", None)
        a.report(0, False)
        a.flush_open()  # as the main loop does after each round
        eq(len(a.s.q), 1)
        body = a.s.q[0][1].decode().split(" ", 2)[2].rsplit(" ", 1)[0]
        eq(body.split(" ", 1)[1], "0.0 ok 00fa0001 0.1 exc 2 0.0 timeout 0.1 crc")
        # read now, and a write acknowledged when the master is done
        eq(json.loads(a.handle("read", '{"bus":0,"req":1}', 7)), {"ok": True})
        eq(m.now, [1])
        eq(json.loads(a.handle("read", '{"bus":5,"req":1}', 8))["code"], "unknown_point")
        a.s._line(_frame(9, "mbw", '{"bus":0,"u":3,"fc":6,"a":10,"v":[123]}'))
        eq(len(m.writes), 1)
        eq(m.writes[0][:4], (3, 6, 10, [123]))
        a.io.out.clear()
        a.s._line(_frame(9, "mbw", '{"bus":0,"u":3,"fc":6,"a":10,"v":[123]}'))  # repeat while pending
        eq(len(m.writes), 1)
        eq(a.io.out, [])
        m.writes[0][4]("exc", 2)
        eq(a.io.out[-1].decode().split(" ")[2:4], ["9", '{"ok":false,"code":"device_error","exc":2}'])
        a.s._line(_frame(9, "mbw", '{"bus":0,"u":3,"fc":6,"a":10,"v":[123]}'))  # repeat: same result
        eq(a.io.out[-1].decode().split(" ")[2:4], ["9", '{"ok":false,"code":"device_error","exc":2}'])
        eq(len(m.writes), 1)
        a.s._line(_frame(10, "mbw", '{"bus":0,"u":3,"fc":3,"a":10,"v":[1]}'))
        eq(json.loads(a.io.out[-1].decode().split(" ", 3)[3].rsplit(" ", 1)[0])["code"], "bad_request")
        a.clear()

    asyncio.run(go())


def _frame(seq, typ, body):
    # Session._line(n) decodes its line buffer's first n bytes: stage the frame there
    from picogate_fw import link

    f = link.encode("#", seq, typ, body)
    s = _CUR[0].s
    s.line[: len(f) - 1] = f[:-1]
    return len(f) - 1


_CUR = [None]


class CountWDT:
    def __init__(self):
        self.n = 0

    def feed(self):
        self.n += 1


def test_watchdog_fed_only_while_healthy():
    a = _app()
    w = CountWDT()
    a.wdt = w
    import time

    async def go():
        t = asyncio.create_task(a.main())
        await asyncio.sleep_ms(100)
        fed = w.n
        eq(fed > 10, True, "fed while healthy")
        a.progress["room"] = time.ticks_add(time.ticks_ms(), -60000)  # a task stalled for a minute
        await asyncio.sleep_ms(20)
        fed = w.n
        await asyncio.sleep_ms(100)
        eq(w.n, fed, "not fed while a task is stalled")
        a.progress["room"] = time.ticks_ms()
        await asyncio.sleep_ms(50)
        eq(w.n > fed, True, "fed again")
        t.cancel()

    asyncio.run(go())
