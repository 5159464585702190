# The I/O points of a configuration: digital inputs, edge counters, outputs, PWM, ADC, internal
# temperature, and sensors through fw-bus's drivers. Values are kept as integers (fixed point) so
# that reporting them allocates nothing: each point writes itself into the rd frame being built.
import time

from micropython import const

from picogate_fw import hal

_ADC_DIV = const(14)  # volts*10^4 = mean_u16 * 8250 >> 14 (= * 3.3 / 65535 within 2e-5; no bigints)


class Point:
    periodic = False
    writable = False
    changed = False  # a value to report on change is waiting

    def __init__(self, c):
        self.id = c["id"]
        self.bid = c["id"].encode()
        self.every = c.get("every_ms", 0)
        self.due = time.ticks_ms()

    def put(self, e):
        """Append ` id=value` to the frame in encoder e."""

    def close(self):
        pass


class DI(Point):
    def __init__(self, c):
        super().__init__(c)
        self.pin = hal.pin_in(c["pin"], c["pull"])
        self.inv = 1 if c["inv"] else 0
        self.deb = c["deb_ms"]
        self.v = self.pin.value() ^ self.inv
        self.cand = self.v
        self.since = time.ticks_ms()
        self.changed = True

    def scan(self, now):
        v = self.pin.value() ^ self.inv
        if v == self.v:
            self.cand = v
            return
        if v != self.cand:
            self.cand = v
            self.since = now
        if time.ticks_diff(now, self.since) >= self.deb:
            self.v = v
            self.changed = True

    def put(self, e):
        e.sp()
        e.put_str(self.bid)
        e.put_str(b"=T" if self.v else b"=F")


class CNT(Point):
    periodic = True

    def __init__(self, c):
        super().__init__(c)
        self.n = 0
        self.pin = hal.pin_in(c["pin"], c["pull"])
        edge = c["edge"]
        trig = hal.IRQ_RISING if edge == "rise" else hal.IRQ_FALLING if edge == "fall" else (
            hal.IRQ_RISING | hal.IRQ_FALLING)
        self.pin.irq(handler=self._irq, trigger=trig)

    def _irq(self, pin):
        self.n += 1  # the IRQ only records

    def put(self, e):
        e.sp()
        e.put_str(self.bid)
        e.put_byte(0x3D)
        e.put_int(self.n)

    def close(self):
        self.pin.irq(handler=None)


class DO(Point):
    writable = True

    def __init__(self, c):
        super().__init__(c)
        self.pin = hal.pin_out(c["pin"])
        self.safe = c["safe"]
        self.v = None
        self.write(c["init"])

    def write(self, v):
        v = bool(v)
        self.pin.value(1 if v else 0)
        if v != self.v:
            self.v = v
            self.changed = True

    def check(self, v):
        if not isinstance(v, bool):
            return "bad_type", "a do point takes true or false"
        return None

    def put(self, e):
        e.sp()
        e.put_str(self.bid)
        e.put_str(b"=T" if self.v else b"=F")

    def value_json(self):
        return "true" if self.v else "false"


class PWM(Point):
    writable = True

    def __init__(self, c):
        super().__init__(c)
        self.pwm = hal.pwm(c["pin"], c["freq"])
        self.safe = c["safe"]
        self.d = -1  # duty * 10^4
        self.write(c["init"])

    def write(self, v):
        d = int(v * 10000 + 0.5)
        self.pwm.duty_u16((d * 65535 + 5000) // 10000)
        if d != self.d:
            self.d = d
            self.changed = True

    def check(self, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "bad_type", "a pwm point takes a number 0.0-1.0"
        if v < 0 or v > 1:
            return "out_of_range", "duty must be 0.0-1.0"
        return None

    def put(self, e):
        e.sp()
        e.put_str(self.bid)
        e.put_byte(0x3D)
        e.put_fixed(self.d, 4)

    def value_json(self):
        e = _scratch()
        e.n = 0
        e.put_fixed(self.d, 4)
        return bytes(e.buf[: e.n]).decode()

    def close(self):
        self.pwm.deinit()


class ADC(Point):
    periodic = True

    def __init__(self, c):
        super().__init__(c)
        self.adc = hal.adc(c["pin"])
        self.os = c["os"]

    def mean(self):
        s = 0
        a = self.adc
        for _ in range(self.os):
            s += a.read_u16()
        return s // self.os

    def put(self, e):
        e.sp()
        e.put_str(self.bid)
        e.put_byte(0x3D)
        e.put_fixed((self.mean() * 8250 + 8192) >> _ADC_DIV, 4)


class TEMP(ADC):
    def __init__(self, c):
        c = {"id": c["id"], "every_ms": c["every_ms"], "pin": None, "os": 16}
        super().__init__(c)

    def put(self, e):
        v4 = (self.mean() * 8250 + 8192) >> _ADC_DIV  # volts * 10^4
        e.sp()
        e.put_str(self.bid)
        e.put_byte(0x3D)
        e.put_fixed(2700 - (v4 - 7060) * 10000 // 1721, 2)  # 27 - (V - 0.706) / 0.001721 °C


class Sensor(Point):
    """A fw-bus driver (picogate_fw.drv_<kind>): read in its own task, reported when read."""

    periodic = True

    def __init__(self, c):
        super().__init__(c)
        self.k = c["k"]
        self.fields = [(c["id"] + s).encode() for s in _FIELDS.get(self.k, ("",))]
        self.vals = None
        self.why = b"?"
        self.drv = None
        self.fresh = False
        self.event = False
        self.ok = True  # until a read fails
        try:
            mod = __import__("picogate_fw.drv_" + self.k, None, None, ("Sensor",))
            self.drv = mod.Sensor(hal, c)
        except ImportError:
            self.why = b"?nodrv"
        except OSError:  # no answer at start: the task keeps trying (ValueError: a config error)
            self.why = b"?init"

    async def poll(self):
        if self.drv is None:
            return
        try:
            self.vals = await self.drv.read()
            self.why = b""
        except Exception as ex:  # a failing sensor reports bad quality; the others go on
            self.vals = None
            self.why = b"?nodev" if isinstance(ex, OSError) else b"?err"
        ok = self.vals is not None
        if ok != self.ok:
            self.ok = ok
            self.event = True  # it failed, or it is back: the app sends an evt frame

    def put(self, e):
        vals = self.vals
        for i in range(len(self.fields)):
            e.sp()
            e.put_str(self.fields[i])
            e.put_byte(0x3D)
            if vals is None or i >= len(vals) or vals[i] is None:
                e.put_str(self.why or b"?")
            else:
                e.put_fixed(int(vals[i] * 100 + (0.5 if vals[i] >= 0 else -0.5)), 2)


_FIELDS = {"dht22": ("_t", "_h"), "sht3x": ("_t", "_h")}
_KIND = {"di": DI, "cnt": CNT, "do": DO, "pwm": PWM, "adc": ADC, "temp": TEMP}
_enc = None


def _scratch():
    global _enc
    if _enc is None:
        from picogate_fw.link import Encoder

        _enc = Encoder(32)
    return _enc


def hal_log(pid, ex):
    _logs.append((pid, str(ex)))
    if len(_logs) > 8:
        _logs.pop(0)


_logs = []  # type: list[tuple[str, str]]


def make(c):
    cls = _KIND.get(c["k"], Sensor)
    return cls(c)
