# picogate_fw.mb_master on MicroPython with an in-memory RS-485 line (fake slaves answering at
# once): allocation in the transaction loop, backoff, the write queue, read_now, close, config
# errors. The same master against pymodbus over real ptys: tests/integration/test_fw_modbus_rtu.py.
import gc

import asyncio
from mpt import eq, raises

from picogate_fw import mb_master, mb_rtu


class Line:
    """machine.UART's subset; slaves answer every read with prebuilt replies (no allocation)."""

    def __init__(self, regs):
        self.replies = {}
        for u, words in regs.items():
            body = bytearray(3 + 2 * len(words) + 2)
            body[0] = u
            body[1] = 3
            body[2] = 2 * len(words)
            for i, w in enumerate(words):
                body[3 + 2 * i] = w >> 8
                body[4 + 2 * i] = w & 0xFF
            mb_rtu.put_crc(body, len(body) - 2)
            self.replies[u] = body
        self.silent = set()
        self.pending = None
        self.writes = 0
        self.by_unit = {}
        self.echo = bytearray(8)

    def write(self, buf):
        self.writes += 1
        u = buf[0]
        self.by_unit[u] = self.by_unit.get(u, 0) + 1
        if u in self.silent:
            self.pending = None
        elif buf[1] in (5, 6, 15, 16):
            for i in range(6):
                self.echo[i] = buf[i]
            mb_rtu.put_crc(self.echo, 6)
            self.pending = self.echo
        else:
            self.pending = self.replies.get(u)
        return len(buf)

    def any(self):
        return len(self.pending) if self.pending is not None else 0

    def readinto(self, buf, n=None):
        p = self.pending
        if p is None:
            return None
        k = len(p)
        for i in range(k):
            buf[i] = p[i]
        self.pending = None
        return k

    def flush(self):
        pass


class Pin:
    def __init__(self):
        self.v = 0
        self.ups = 0

    def value(self, v=None):
        if v is None:
            return self.v
        if v and not self.v:
            self.ups += 1
        self.v = v


def cfg(reqs, **kw):
    c = {"bus": 1, "baud": 115200, "timeout_ms": 20, "retries": 0, "backoff_ms": 0, "reqs": reqs}
    c.update(kw)
    return c


async def _until(cond, ms=3000):
    for _ in range(ms // 5):
        if cond():
            return True
        await asyncio.sleep_ms(5)
    return False


def test_polls_report_views_of_the_data():
    line = Line({1: [10, 20, 30]})
    got = []

    def on_result(bus, i, st, data):
        got.append((bus, i, st, bytes(data).hex() if st == "ok" else data))

    de = Pin()
    m = mb_master.Master(None, cfg([{"u": 1, "fc": 3, "a": 0, "n": 3, "every_ms": 5}]), on_result, uart=line, de=de)

    async def main():
        t = asyncio.create_task(m.run())
        await _until(lambda: len(got) >= 3)
        t.cancel()

    asyncio.run(main())
    eq(got[0], (1, 0, "ok", "000a0014001e"), "first result")
    eq(de.ups, line.writes, "DE raised for every frame")
    eq(de.v, 0, "DE low after")


def test_the_transaction_loop_allocates_nothing():
    line = Line({1: list(range(10)), 2: list(range(3))})
    line.silent.add(3)
    marks = [0, 0]
    n = [0]

    def on_result(bus, i, st, data):
        n[0] += 1
        if n[0] == 20:
            gc.collect()
            gc.disable()
            marks[0] = gc.mem_alloc()
        elif n[0] == 220:
            marks[1] = gc.mem_alloc()

    reqs = [
        {"u": 1, "fc": 3, "a": 0, "n": 10, "every_ms": 1},
        {"u": 2, "fc": 3, "a": 0, "n": 3, "every_ms": 1},
        {"u": 3, "fc": 3, "a": 0, "n": 3, "every_ms": 1},  # silent: timeouts and backoff too
    ]
    m = mb_master.Master(None, cfg(reqs, timeout_ms=2, backoff_ms=30), on_result, uart=line)

    async def main():
        t = asyncio.create_task(m.run())
        await _until(lambda: n[0] >= 220, 10000)
        t.cancel()

    try:
        asyncio.run(main())
    finally:
        gc.enable()
    eq(n[0] >= 220, True, "transactions done")
    eq(marks[1] - marks[0], 0, "bytes allocated by 200 transactions")
    eq(m.n_timeout > 0, True, "the silent slave timed out")


def test_backoff_spares_the_bus_and_clears_on_an_answer():
    line = Line({1: [1], 2: [2]})
    line.silent.add(2)
    res = {0: [], 1: []}

    def on_result(bus, i, st, data):
        res[i].append(st)

    reqs = [{"u": 1, "fc": 3, "a": 0, "n": 1, "every_ms": 10}, {"u": 2, "fc": 3, "a": 0, "n": 1, "every_ms": 10}]
    m = mb_master.Master(None, cfg(reqs, timeout_ms=10, backoff_ms=2000), on_result, uart=line)

    async def main():
        t = asyncio.create_task(m.run())
        await asyncio.sleep_ms(1000)
        dead = len(res[1])
        line.silent.discard(2)
        m.read_now(1)  # tried at once, backoff or not
        await _until(lambda: "ok" in res[1])
        t.cancel()
        return dead

    dead = asyncio.run(main())
    # 250 + 500 ms of backoff after the first two timeouts: at most 3 tries in the first second
    eq(1 <= dead <= 3, True, "tries of the dead slave in 1 s: %d" % dead)
    eq(len(res[0]) > 5 * dead, True, "the live slave kept polling: %d" % len(res[0]))
    eq(res[1][-1], "ok", "answers again")
    eq(m._fails[m._slot[1]], 0, "backoff cleared")
    eq(m.n_backoff, dead, "one backoff per timeout")


def test_writes_go_first_and_report():
    line = Line({1: [1]})
    order = []
    done = []

    def on_result(bus, i, st, data):
        order.append("poll")

    m = mb_master.Master(None, cfg([{"u": 1, "fc": 3, "a": 0, "n": 1, "every_ms": 1}]), on_result, uart=line)

    def cb(k):
        def f(st, code):
            order.append("w%d" % k)
            done.append((k, st, code))

        return f

    async def main():
        t = asyncio.create_task(m.run())
        await _until(lambda: len(order) >= 2)
        for k in range(3):
            m.write(1, 6, k, [k], cb(k))
        await _until(lambda: len(done) >= 3)
        t.cancel()

    asyncio.run(main())
    eq([d for d in done], [(0, "ok", None), (1, "ok", None), (2, "ok", None)], "results")
    i = order.index("w0")
    eq(order[i : i + 3], ["w0", "w1", "w2"], "queued writes ran before the next polls")


def test_write_errors_busy_bad_closed():
    line = Line({1: [1]})
    got = []
    m = mb_master.Master(None, cfg([]), lambda *a: None, uart=line)
    m.write(1, 6, 0, [70000], lambda st, code: got.append((st, code)))
    eq(got[-1], ("bad", "v[0]: 70000 is not a register value 0..65535"), "bad value")
    m.write(1, 3, 0, [1], lambda st, code: got.append((st, code)))
    eq(got[-1][0], "bad", "not a write fc")
    for k in range(8):
        eq(m.write(1, 6, k, [k], lambda st, code: got.append((st, code))), True, "queued %d" % k)
    eq(m.write(1, 6, 9, [9], lambda st, code: got.append((st, code))), False, "ninth")
    eq(got[-1], ("busy", None), "queue full")
    m.close()
    eq(got[-8:], [("closed", None)] * 8, "pending writes told on close")
    m.write(1, 6, 0, [1], lambda st, code: got.append((st, code)))
    eq(got[-1], ("closed", None), "after close")


def test_exception_and_corrupt_replies():
    line = Line({1: [1]})
    exc = bytearray(5)
    exc[0], exc[1], exc[2] = 1, 0x83, 2
    mb_rtu.put_crc(exc, 3)
    bad = bytearray(line.replies[1])
    bad[3] ^= 1
    got = []
    m = mb_master.Master(
        None, cfg([{"u": 1, "fc": 3, "a": 0, "n": 1, "every_ms": 5}], retries=1), lambda b, i, st, d: got.append((st, d)),
        uart=line,
    )

    async def main():
        t = asyncio.create_task(m.run())
        line.replies[1] = exc
        await _until(lambda: len(got) >= 1)
        line.replies[1] = bad
        await _until(lambda: len(got) >= 2)
        t.cancel()

    asyncio.run(main())
    eq(got[0], ("exc", 2), "exception")
    eq(got[1], ("crc", None), "corrupt")
    eq(m.n_retry, 1, "only the corrupt reply was retried")


def test_timing_from_the_line_settings():
    def gap(**kw):
        return mb_master.Master(None, cfg([], **kw), None, uart=Line({})).gap_us

    eq(gap(baud=9600), 3646, "9600 8N1")
    eq(gap(baud=9600, parity="E"), 4011, "9600 8E1")
    eq(gap(baud=38400), 1750, "fixed above 19200")
    m = mb_master.Master(None, cfg([], baud=9600), None, uart=Line({}))
    eq(m.char_us, 1042, "10 bits at 9600")


def test_bad_config_names_the_field():
    for c, msg in (
        (cfg([{"u": 1, "fc": 3, "a": 65535, "n": 2}]), "mb.reqs[0].n: 2 from address 65535 goes past 65535"),
        (cfg([{"u": 1, "fc": 3, "a": 0, "n": 1, "every_ms": 0}]), "mb.reqs[0].every_ms: 0 is not 1..86400000"),
        (cfg(["x"]), "mb.reqs[0]: must be an object"),
        (cfg([], bits=9), "mb.bits: 9 is not 7 or 8"),
        (cfg([], stop=3), "mb.stop: 3 is not 1 or 2"),
        (cfg([], retries=-1), "mb.retries: -1 is not 0..10"),
        (cfg([], baud="fast"), "mb.baud: 'fast' is not 300..1000000"),
    ):
        e = raises(ValueError, mb_master.Master, None, c, None, Line({}))
        eq(str(e), msg, "message")
    m = mb_master.Master(None, cfg([{"u": 1, "fc": 3, "a": 0, "n": 1}]), None, uart=Line({}))
    e = raises(ValueError, m.read_now, 1)
    eq(str(e), "req: 1 is not 0..0", "read_now")
