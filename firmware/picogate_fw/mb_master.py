# Modbus RTU master on one UART (picogate_fw.mb_rtu is the codec; this is the timing).
#
#   m = Master(hal, cfg, on_result)   # cfg: one entry of the config's "mb" list
#   asyncio.create_task(m.run())
#   m.write(u, fc, a, values, done)   # queued ahead of polls; done(status, code) when finished
#   m.read_now(req_index)             # poll that request next
#   m.close()
#
# - RS-485: with a "de" pin, DE goes high, the frame is written, flush() waits for the last stop
#   bit (MicroPython >= 1.24), DE goes low. The frame's own air time is slept through first so
#   that flush() does not block the other tasks.
# - Timing: before every request the bus must have been silent for t3.5 (mb_rtu.frame_gap_us:
#   3.5 characters of baud/bits/parity/stop, fixed 1750 us above 19200 baud); stray bytes are
#   drained and counted. A reply ends when the expected number of bytes is in, or after a silence
#   of t3.5 (an exception reply, or a wrong one), or at the reply timeout.
# - Each request is tried 1 + retries times when no reply or a corrupt one comes (an exception
#   reply is an answer and is not retried).
# - Per-slave exponential backoff: the k-th consecutive timeout of a slave puts its polls off for
#   min(backoff_ms, 250 ms * 2^(k-1)); the other slaves keep their rate. Any answer (even an
#   exception or a corrupt reply: something is there) clears it. backoff_ms 0 disables it.
#   Writes and read_now() are tried even while their slave is backed off.
# - Results: on_result(bus, req_index, status, data) with status "ok" (data: a memoryview of the
#   reply's data bytes, valid only during the call), "exc" (data: the exception code), "timeout"
#   or "crc" (data: None; "crc" also covers a reply with a good CRC that does not fit the
#   request). Writes: done(status, code) with the same statuses, "bad" (code: the message naming
#   the field) for a write that cannot be sent, "busy" when the write queue is full and "closed".
# - The transaction loop allocates nothing: poll frames are built once, replies are read into one
#   buffer, results are views made once, and the loop is one coroutine that only awaits
#   asyncio.sleep_ms().
import time

import asyncio
from micropython import const

from picogate_fw import mb_rtu

_TIMEOUT = const(4)  # beside mb_rtu's OK, EXC, CRC, BAD
_STATUS = ("ok", "exc", "crc", "crc", "timeout")
_IDLE_MS = const(10)  # longest sleep when nothing is due (how soon a new write starts)
_WQ_MAX = const(8)
_BACKOFF_MIN_MS = const(250)
_RX_SIZE = const(260)
_QUIET_ROUNDS = const(50)
_PARITY = {"N": None, "E": 0, "O": 1}


def _int(cfg, key, lo, hi, default, where):
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError("%s%s: %r is not %d..%d" % (where, key, v, lo, hi))
    return v


class Master:
    def __init__(self, hal, cfg, on_result, uart=None, de=None, where="mb."):
        w = where
        self.bus = _int(cfg, "bus", 0, 255, 0, w)
        baud = _int(cfg, "baud", 300, 1000000, 19200, w)
        bits = cfg.get("bits", 8)
        if bits not in (7, 8):
            raise ValueError("%sbits: %r is not 7 or 8" % (w, bits))
        parity = cfg.get("parity", "N")
        if parity not in _PARITY:
            raise ValueError("%sparity: %r is not N, E or O" % (w, parity))
        stop = cfg.get("stop", 1)
        if stop not in (1, 2):
            raise ValueError("%sstop: %r is not 1 or 2" % (w, stop))
        self.timeout_ms = _int(cfg, "timeout_ms", 1, 60000, 200, w)
        self.retries = _int(cfg, "retries", 0, 10, 1, w)
        self.backoff_ms = _int(cfg, "backoff_ms", 0, 3600000, 5000, w)
        self.on_result = on_result

        reqs = cfg.get("reqs", [])
        if not isinstance(reqs, list):
            raise ValueError("%sreqs: must be a list" % w)
        self._rx = bytearray(_RX_SIZE)
        rxv = memoryview(self._rx)
        self._frames = []
        self._need = []
        self._every = []
        self._due = []
        self._force = []
        self._slot = []
        self._views = []
        self._units = []  # type: list[int]
        now = time.ticks_ms()
        for i, r in enumerate(reqs):
            wr = "%sreqs[%d]." % (w, i)
            if not isinstance(r, dict):
                raise ValueError("%sreqs[%d]: must be an object" % (w, i))
            frame = bytearray(8)
            try:
                mb_rtu.build_read(frame, r.get("u"), r.get("fc", 3), r.get("a"), r.get("n"))
            except ValueError as e:
                raise ValueError(wr + str(e))
            every = _int(r, "every_ms", 1, 86400000, 1000, wr)
            need = mb_rtu.reply_len(frame)
            self._frames.append(bytes(frame))
            self._need.append(need)
            self._every.append(every)
            self._due.append(now)
            self._force.append(False)
            self._views.append(rxv[3 : need - 2])
            self._slot.append(self._slot_of(r["u"], True))
        self._nreq = len(self._frames)
        n = len(self._units)
        self._fails = [0] * n
        self._until = [0] * n

        if uart is None:
            uart = hal.uart(
                _int(cfg, "uart", 0, 7, 0, w), baud, bits, _PARITY[parity], stop, cfg.get("tx"), cfg.get("rx")
            )
        self._uart = uart
        if de is None and cfg.get("de") is not None:
            de = hal.pin_out(cfg["de"])
        self._de = de
        if de is not None:
            de.value(0)
        cb = mb_rtu.char_bits(bits, parity, stop)
        self.char_us = (cb * 1000000 + baud - 1) // baud
        self.gap_us = mb_rtu.frame_gap_us(baud, bits, parity, stop)
        self.eof_us = max(self.gap_us, getattr(uart, "min_gap_us", 0))
        self._rx_limit_ms = self.timeout_ms + (_RX_SIZE * self.char_us) // 1000 + 10
        self._last_us = time.ticks_us()
        self._wq = []
        self._idle = _IDLE_MS
        self._closed = False
        # counters
        self.n_tx = 0  # transactions (polls and writes), each with its retries
        self.n_ok = 0
        self.n_exc = 0
        self.n_timeout = 0  # transactions that ended without a reply
        self.n_crc = 0  # transactions that ended with a corrupt or unfitting reply
        self.n_retry = 0
        self.n_bad_frames = 0  # attempts with a corrupt or unfitting reply (retried or not)
        self.n_stray = 0  # bytes received outside a transaction (late replies, noise)
        self.n_backoff = 0  # times a slave was put off
        self.n_late = 0  # polls that could not keep their period (bus too busy)
        self.n_wq_full = 0
        self.n_cb_err = 0
        self.tx_us = 0  # time inside transactions ...
        self.wait_us = 0  # ... of which asleep (waiting for the bus); the rest is our own code

    def _slot_of(self, u, add=False):
        units = self._units
        for s in range(len(units)):
            if units[s] == u:
                return s
        if not add:
            return -1
        units.append(u)
        return len(units) - 1

    # --- commands --------------------------------------------------------------------------------

    def read_now(self, i):
        if not isinstance(i, int) or not 0 <= i < self._nreq:
            raise ValueError("req: %r is not 0..%d" % (i, self._nreq - 1))
        self._force[i] = True

    def write(self, u, fc, a, v, done):
        """Queue a write (fc 5, 6, 15, 16) ahead of the polls; done(status, code) reports it.
        Returns whether it was queued (if not, done was already called)."""
        try:
            frame = mb_rtu.build_write(u, fc, a, v)
        except ValueError as e:
            done("bad", str(e))
            return False
        if self._closed:
            done("closed", None)
            return False
        if len(self._wq) >= _WQ_MAX:
            self.n_wq_full += 1
            done("busy", None)
            return False
        self._wq.append([frame, done, self._slot_of(u)])
        return True

    async def write_wait(self, u, fc, a, v):
        """write() as a coroutine: returns (status, code)."""
        ev = asyncio.Event()
        res = []

        def done(status, code=None):
            res.append((status, code))
            ev.set()

        self.write(u, fc, a, v, done)
        await ev.wait()
        return res[0]

    def close(self):
        self._closed = True
        wq, self._wq = self._wq, []
        for w in wq:
            self._call_done(w[1], "closed", None)
        u = self._uart
        try:
            u.deinit()
        except (AttributeError, OSError):
            pass
        if self._de is not None:
            self._de.value(0)

    def stats(self):
        busy = self.tx_us - self.wait_us
        return {
            "tx": self.n_tx,
            "ok": self.n_ok,
            "exc": self.n_exc,
            "timeout": self.n_timeout,
            "crc": self.n_crc,
            "retry": self.n_retry,
            "bad_frames": self.n_bad_frames,
            "stray": self.n_stray,
            "backoff": self.n_backoff,
            "late": self.n_late,
            "wq_full": self.n_wq_full,
            "cb_err": self.n_cb_err,
            "tx_us": self.tx_us,
            "wait_us": self.wait_us,
            "busy_us_per_tx": busy // self.n_tx if self.n_tx else 0,
        }

    # --- the loop --------------------------------------------------------------------------------

    def _pick(self):
        """The request to poll now (forced first, then the most overdue whose slave is not backed
        off), or -1; self._idle is how long to sleep then."""
        now = time.ticks_ms()
        best = -1
        late = -1
        wait = _IDLE_MS
        due = self._due
        for i in range(self._nreq):
            if self._force[i]:
                return i
            d = time.ticks_diff(now, due[i])
            if d < 0:
                if -d < wait:
                    wait = -d
                continue
            s = self._slot[i]
            if self._fails[s]:
                b = time.ticks_diff(self._until[s], now)
                if b > 0:
                    if b < wait:
                        wait = b
                    continue
            if d > late:
                best = i
                late = d
        self._idle = wait if wait > 0 else 1
        return best

    def _drain(self, k):
        self.n_stray += k
        self._uart.readinto(self._rx, k if k < _RX_SIZE else _RX_SIZE)
        self._last_us = time.ticks_us()

    def _tx_on(self, frame):
        if self._de is not None:
            self._de.value(1)
        self._uart.write(frame)

    def _tx_off(self):
        self._uart.flush()
        if self._de is not None:
            self._de.value(0)
        self._last_us = time.ticks_us()

    def _health(self, s, st):
        if s < 0:
            return
        if st != _TIMEOUT:
            self._fails[s] = 0
            return
        f = self._fails[s] + 1
        self._fails[s] = f
        if self.backoff_ms:
            d = self.backoff_ms if f > 16 else _BACKOFF_MIN_MS << (f - 1)
            if d > self.backoff_ms:
                d = self.backoff_ms
            self._until[s] = time.ticks_add(time.ticks_ms(), d)
            self.n_backoff += 1

    def _count(self, st):
        if st == mb_rtu.OK:
            self.n_ok += 1
        elif st == mb_rtu.EXC:
            self.n_exc += 1
        elif st == _TIMEOUT:
            self.n_timeout += 1
        else:
            self.n_crc += 1

    def _polled(self, i, st):
        now = time.ticks_ms()
        every = self._every[i]
        due = time.ticks_add(self._due[i], every)
        if self._force[i]:
            self._force[i] = False
            due = time.ticks_add(now, every)
        elif time.ticks_diff(now, due) >= 0:
            self.n_late += 1
            due = time.ticks_add(now, every)
        self._due[i] = due
        self._health(self._slot[i], st)
        data = None
        if st == mb_rtu.OK:
            data = self._views[i]
        elif st == mb_rtu.EXC:
            data = self._rx[2]
        try:
            self.on_result(self.bus, i, _STATUS[st], data)
        except Exception:  # a failing consumer must not stop the bus
            self.n_cb_err += 1

    def _call_done(self, done, status, code):
        try:
            done(status, code)
        except Exception:
            self.n_cb_err += 1

    def _wrote(self, w, st):
        self._health(w[2], st)
        self._call_done(w[1], _STATUS[st], self._rx[2] if st == mb_rtu.EXC else None)

    async def run(self):
        u = self._uart
        rx = self._rx
        ticks_us = time.ticks_us
        ticks_ms = time.ticks_ms
        ticks_diff = time.ticks_diff
        sleep_ms = asyncio.sleep_ms
        while not self._closed:
            w = self._wq[0] if self._wq else None
            if w is not None:
                frame = w[0]
                need = 8
                i = -1
            else:
                i = self._pick()
                if i < 0:
                    await sleep_ms(self._idle)
                    continue
                frame = self._frames[i]
                need = self._need[i]
            t_start = ticks_us()
            st = _TIMEOUT
            tries = self.retries + 1
            while tries and not self._closed:
                tries -= 1
                # 1. t3.5 of silence on the bus (stray bytes drained and counted)
                for _ in range(_QUIET_ROUNDS):
                    k = u.any()
                    if k:
                        self._drain(k)
                    d = ticks_diff(ticks_us(), self._last_us)
                    if d >= self.gap_us:
                        break
                    t = ticks_us()
                    await sleep_ms((self.gap_us - d + 999) // 1000)
                    self.wait_us += ticks_diff(ticks_us(), t)
                # 2. send: DE high, write, sleep through the frame's air time, flush, DE low
                self._tx_on(frame)
                ms = (len(frame) * self.char_us) // 1000 - 1
                if ms > 0:
                    t = ticks_us()
                    await sleep_ms(ms)
                    self.wait_us += ticks_diff(ticks_us(), t)
                self._tx_off()
                # 3. receive: the expected length, or silence after some bytes, or the timeout
                t0 = ticks_ms()
                last = 0
                t_last = 0
                while True:
                    n = u.any()
                    now = ticks_us()
                    if n >= need:
                        break
                    if n != last:
                        last = n
                        t_last = now
                    elif n and ticks_diff(now, t_last) >= self.eof_us:
                        break
                    el = ticks_diff(ticks_ms(), t0)
                    if (not n and el >= self.timeout_ms) or el >= self._rx_limit_ms:
                        break
                    ms = 1
                    if n:
                        ms = ((need - n) * self.char_us) // 1000
                        if ms < 1:
                            ms = 1
                    t = ticks_us()
                    await sleep_ms(ms)
                    self.wait_us += ticks_diff(ticks_us(), t)
                if n:
                    k = u.readinto(rx, n if n < _RX_SIZE else _RX_SIZE) or 0
                    self._last_us = ticks_us()
                    st = mb_rtu.check_reply(frame, rx, k)
                    if st == mb_rtu.OK or st == mb_rtu.EXC:
                        break
                    self.n_bad_frames += 1
                else:
                    st = _TIMEOUT
                if tries:
                    self.n_retry += 1
            self.n_tx += 1
            self.tx_us += ticks_diff(ticks_us(), t_start)
            self._count(st)
            if w is not None:
                if self._wq and self._wq[0] is w:
                    self._wq.pop(0)
                self._wrote(w, st)
            else:
                self._polled(i, st)
