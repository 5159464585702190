# Sensirion SHT3x (SHT30/31/35) temperature and humidity over I2C: single-shot measurement, high
# repeatability, no clock stretching (command 0x2400, at most 15.5 ms), every word checked with
# the sensor's CRC-8 (polynomial 0x31, init 0xFF). Datasheet: SHT3x-DIS, sections 4.3-4.13.
#
#   s = Sensor(hal, {"i2c": 0, "sda": 8, "scl": 9, "addr": 68})   # addr 0x44 (68) or 0x45 (69)
#   t, h = await s.read()                                          # °C, %RH; OSError when it fails
import asyncio
from micropython import const

_MEASURE = b"\x24\x00"
_MEASURE_MS = const(16)
_ADDRS = (0x44, 0x45)


def crc8(buf, start, n):
    c = 0xFF
    for i in range(start, start + n):
        c ^= buf[i]
        for _ in range(8):
            c = ((c << 1) ^ 0x31) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def _pin(cfg, key):
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 47:
        raise ValueError("%s: %r is not a GPIO number" % (key, v))
    return v


class Sensor:
    fields = ("_t", "_h")

    def __init__(self, hal, cfg):
        bus = cfg.get("i2c", 0)
        if bus not in (0, 1):
            raise ValueError("i2c: %r is not 0 or 1" % (bus,))
        addr = cfg.get("addr", 0x44)
        if addr not in _ADDRS:
            raise ValueError("addr: %r is not an SHT3x address (68 = 0x44, 69 = 0x45)" % (addr,))
        freq = cfg.get("freq", 100000)
        if isinstance(freq, bool) or not isinstance(freq, int) or not 10000 <= freq <= 1000000:
            raise ValueError("freq: %r is not 10000..1000000 Hz" % (freq,))
        self.addr = addr
        self.i2c = hal.i2c(bus, _pin(cfg, "sda"), _pin(cfg, "scl"), freq)
        self.buf = bytearray(6)

    async def read(self):
        b = self.buf
        self.i2c.writeto(self.addr, _MEASURE)  # OSError (ENODEV/EIO) when nothing acknowledges
        await asyncio.sleep_ms(_MEASURE_MS)
        self.i2c.readfrom_into(self.addr, b)
        if crc8(b, 0, 2) != b[2] or crc8(b, 3, 2) != b[5]:
            raise OSError(5, "sht3x: CRC error")
        t = -45 + 175 * ((b[0] << 8) | b[1]) / 65535
        h = 100 * ((b[3] << 8) | b[4]) / 65535
        return (t, 100.0 if h > 100 else h)
