# The simulated board for MicroPython's unix port, driven by the scenario file pg_sim.json in the
# board directory (see firmware/README.md for its format). Used by picogate_fw.hal only.
#
# Time in the scenario is the board's time since boot (time.ticks_ms at import).
import json
import os
import time

try:
    from typing import Any
except ImportError:
    pass

_SCENARIO = "pg_sim.json"
_board = None


def board():
    global _board
    if _board is None:
        _board = SimBoard(_load())
    return _board


def _load():
    try:
        with open(_SCENARIO) as f:
            return json.load(f)
    except OSError:
        return {}


class SimBoard:
    def __init__(self, sc):
        self.sc = sc
        self.t0 = time.ticks_ms()
        self.uid = os.getenv("PICOGATE_UID") or sc.get("uid") or "E6614103E7000001"
        self.board_name = os.getenv("PICOGATE_BOARD") or sc.get("board") or "pico"
        self.pins = {}
        self.outs = {}  # pin -> value written (do) or duty (pwm)
        self.irq_pins = []

    def now(self):
        return time.ticks_diff(time.ticks_ms(), self.t0)

    def service(self):
        t = self.now()
        for p in self.irq_pins:
            p._check(t)

    def pin(self, n, pull, out=False):
        p = SimPin(self, n, pull, self.sc.get("pins", {}).get(str(n)))
        if out:
            p.out = True
        self.pins[n] = p
        return p

    def pwm(self, n, freq):
        return SimPWM(self, n, freq)

    def adc(self, n):
        if n is None:
            return SimADC(self, None, self.sc.get("temp", 25.0))
        return SimADC(self, n, self.sc.get("adc", {}).get(str(n), 0.0))

    def uart_path(self, uart_id):
        path = self.sc.get("uart", {}).get(str(uart_id))
        if not path:
            raise OSError(19, "pg_sim.json: no host tty for uart %d" % uart_id)
        return path

    def onewire(self, pin):
        return SimDS18X20(self.sc.get("onewire", {}).get(str(pin)))

    def dht22(self, pin):
        return SimDHT22(self.sc.get("dht22", {}).get(str(pin)))

    def i2c(self, bus):
        """The I2C bus `bus` with its simulated devices (fw-bus's SHT3x, which speaks the chip's
        protocol): {"68": {"kind": "sht3x", "t": 22.0, "h": 40.0, "fail": null | true | "crc"}}."""
        from picogate_fw.sim_sht3x import SimI2CBus, SimSHT3x

        devs = {}
        for addr, d in self.sc.get("i2c", {}).get(str(bus), {}).items():
            fail = d.get("fail")
            devs[int(addr)] = SimSHT3x(d.get("t", 25.0), d.get("h", 50.0), "nodev" if fail is True else fail)
        return SimI2CBus(devs)


def _level(spec, t):
    """The level of an input at time t: spec is null (floating: pull decides), 0/1, or
    {"pulse_ms": P} (square wave, rises every P ms) or {"seq": [[t, v], ...], "period_ms": P}."""
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec
    p = spec.get("pulse_ms")
    if p:
        return 1 if (t % p) < (p // 2) else 0
    seq = spec.get("seq")
    if seq:
        per = spec.get("period_ms")
        if per:
            t = t % per
        v = seq[0][1]
        for at, val in seq:
            if at <= t:
                v = val
            else:
                break
        return v
    return spec.get("v", 0)


class SimPin:
    def __init__(self, b, n, pull, spec):
        self.b = b
        self.n = n
        self.pull = pull
        self.spec = spec
        self.out = False
        self.v = 0
        self.handler = None  # type: Any
        self.trigger = 0
        self.last = None
        self.last_t = 0

    def value(self, v=None):
        if v is None:
            if self.out:
                return self.v
            lv = _level(self.spec, self.b.now())
            if lv is None:
                return 1 if self.pull == "up" else 0
            return lv
        self.v = 1 if v else 0
        self.b.outs[self.n] = self.v
        return None

    def irq(self, handler=None, trigger=3):
        self.handler = handler
        self.trigger = trigger
        t = self.b.now()
        self.last = self.value()
        self.last_t = t
        if handler is None:
            if self in self.b.irq_pins:
                self.b.irq_pins.remove(self)
        elif self not in self.b.irq_pins:
            self.b.irq_pins.append(self)

    def _check(self, t):
        # fire the handler once per edge since the last check, as the pin IRQ would
        spec = self.spec
        if isinstance(spec, dict) and spec.get("pulse_ms"):
            p = spec["pulse_ms"]
            half = p // 2
            rises = t // p - self.last_t // p
            falls = (t + p - half) // p - (self.last_t + p - half) // p
            self.last_t = t
            if self.trigger & 1:
                for _ in range(rises):
                    self.handler(self)
            if self.trigger & 2:
                for _ in range(falls):
                    self.handler(self)
            return
        v = self.value()
        self.last_t = t
        if v != self.last:
            self.last = v
            if (v and self.trigger & 1) or (not v and self.trigger & 2):
                self.handler(self)


class SimPWM:
    def __init__(self, b, n, freq):
        self.b = b
        self.n = n
        self.f = freq
        self.d = 0

    def freq(self, f=None):
        if f is None:
            return self.f
        self.f = f
        return None

    def duty_u16(self, d=None):
        if d is None:
            return self.d
        self.d = d
        self.b.outs[self.n] = d
        return None

    def deinit(self):
        self.b.outs.pop(self.n, None)


class SimADC:
    # spec: volts (a number), or {"v": volts, "noise": volts} or {"seq": [[t, volts], ...],
    # "period_ms": P}; for the temperature channel the spec is in °C. Constant values are turned
    # into raw counts once, so that reading allocates nothing (as on the board).
    def __init__(self, b, n, spec):
        self.b = b
        self.n = n
        self.spec = spec
        self.k = 12345
        self.noise = 0
        self.raw = None
        if not isinstance(spec, dict):
            self.raw = self._raw(spec)
        elif "seq" not in spec:
            self.raw = self._raw(spec.get("v", 0.0))
            self.noise = int(spec.get("noise", 0.0) / 3.3 * 65535)

    def _raw(self, v):
        if self.n is None:  # temperature sensor: 27 - (V - 0.706) / 0.001721
            v = 0.706 - (v - 27) * 0.001721
        raw = int(v / 3.3 * 65535 + 0.5)
        return 0 if raw < 0 else 65535 if raw > 65535 else raw

    def read_u16(self):
        raw = self.raw
        if raw is None:
            raw = self._raw(_level(self.spec, self.b.now()))
        if self.noise:
            self.k = (self.k * 1103515245 + 12345) & 0x3FFFFFFF
            raw += self.noise * ((self.k >> 8) % 2001 - 1000) // 1000
            raw = 0 if raw < 0 else 65535 if raw > 65535 else raw
        return raw


class SimDS18X20:
    # spec: {"28AA...": 21.5 | "fail", ...} (rom in hex, 16 digits)
    def __init__(self, spec):
        self.spec = spec or {}

    def scan(self):
        return [bytearray(bytes.fromhex(r)) for r in self.spec]

    def convert_temp(self):
        if not self.spec:
            raise OSError(19, "no 1-Wire presence")

    def read_temp(self, rom):
        v = self.spec.get("".join("%02X" % b for b in rom))
        if v is None or v == "fail":
            raise OSError(5, "CRC error")
        return float(v)


class SimDHT22:
    # spec: {"t": 21.0, "h": 45.0} or "fail"
    def __init__(self, spec):
        self.spec = spec
        self.t = 0.0
        self.h = 0.0

    def measure(self):
        s = self.spec
        if not s or s == "fail":
            raise OSError(110, "ETIMEDOUT")
        self.t = float(s.get("t", 0.0))
        self.h = float(s.get("h", 0.0))

    def temperature(self):
        return self.t

    def humidity(self):
        return self.h


class SimWDT:
    """The watchdog of a simulated board: picogate.simboard kills the process (a chip reset) when
    feed() has not been called within the timeout. It listens on the FIFO named by PICOGATE_WDT."""

    def __init__(self, path, timeout_ms):
        self.f = open(path, "wb")
        self.f.write(b"A%d\n" % timeout_ms)
        self.last = time.ticks_ms()

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self.last) >= 250:  # a byte 4 times a second is enough
            self.last = now
            self.f.write(b"F\n")


class NoWDT:
    def feed(self):
        pass


def wdt(timeout_ms):
    path = os.getenv("PICOGATE_WDT")
    timeout_ms = int(os.getenv("PICOGATE_WDT_MS") or timeout_ms)  # tests shorten it
    return SimWDT(path, timeout_ms) if path else NoWDT()
