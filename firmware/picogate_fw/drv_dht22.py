# Aosong DHT22 (AM2302) temperature and humidity on one pin, through MicroPython's dht module
# (hal.dht22(pin) gives a dht.DHT22; simulated on the unix port). measure() blocks while it bit-
# bangs the sensor (see ../shared GUIDE: about 270 ms at worst on rp2); the sensor must not be read
# more often than every 2 s, so a read sooner than that returns the last values.
#
#   s = Sensor(hal, {"pin": 5})
#   t, h = await s.read()          # °C, %RH; OSError when it fails (timeout, checksum)
import time

from micropython import const

_MIN_MS = const(2000)


class Sensor:
    fields = ("_t", "_h")

    def __init__(self, hal, cfg):
        pin = cfg.get("pin")
        if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 47:
            raise ValueError("pin: %r is not a GPIO number" % (pin,))
        self.dht = hal.dht22(pin)
        self.last = None
        self.at = 0

    async def read(self):
        if self.last is not None and time.ticks_diff(time.ticks_ms(), self.at) < _MIN_MS:
            return self.last
        self.last = None
        d = self.dht
        d.measure()  # OSError(ETIMEDOUT) without an answer, OSError(EIO) on a checksum error
        t = d.temperature()
        h = d.humidity()
        if not (-40 <= t <= 80 and 0 <= h <= 100):
            raise OSError(5, "dht22: implausible reading %r °C %r %%RH" % (t, h))
        self.at = time.ticks_ms()
        self.last = (t, h)
        return self.last
