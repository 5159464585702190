# Maxim DS18B20 temperature sensor on 1-Wire, through MicroPython's onewire/ds18x20 modules on the
# board (hal.onewire(pin) gives a ds18x20.DS18X20; the unix port's simulated board has the same
# API). One sensor per config entry: "rom" (16 hex digits, family 28) picks it on a shared pin; null
# means the only sensor on the pin.
#
#   s = Sensor(hal, {"pin": 4, "rom": "28FF4A1C62160452"})
#   (t,) = await s.read()          # °C; OSError when it fails (absent, CRC error, no conversion)
import asyncio
from micropython import const

_CONVERT_MS = const(750)  # 12-bit resolution


def _rom(v):
    if v is None:
        return None
    if not isinstance(v, str) or len(v) != 16:
        raise ValueError("rom: %r is not 16 hex digits" % (v,))
    try:
        rom = bytes.fromhex(v)
    except ValueError:
        raise ValueError("rom: %r is not 16 hex digits" % (v,))
    if rom[0] != 0x28:
        raise ValueError("rom: %s is not a DS18B20 (family 28, got %02X)" % (v, rom[0]))
    return rom


class Sensor:
    fields = ("",)

    def __init__(self, hal, cfg):
        pin = cfg.get("pin")
        if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= 47:
            raise ValueError("pin: %r is not a GPIO number" % (pin,))
        self.rom = _rom(cfg.get("rom"))
        self.fixed = self.rom is not None
        self.ds = hal.onewire(pin)

    def _find(self):
        roms = [r for r in self.ds.scan() if r[0] == 0x28]
        if not roms:
            raise OSError(19, "ds18b20: no sensor on the pin")
        if len(roms) > 1:
            raise OSError(22, "ds18b20: %d sensors on the pin, set rom" % len(roms))
        return bytes(roms[0])

    async def read(self):
        if self.rom is None:
            self.rom = self._find()
        try:
            self.ds.convert_temp()
            await asyncio.sleep_ms(_CONVERT_MS)
            t = self.ds.read_temp(self.rom)
        except OSError:
            self._forget()
            raise
        except Exception as e:  # ds18x20 raises a bare Exception("CRC error")
            self._forget()
            raise OSError(5, "ds18b20: %s" % e)
        if t is None or not -55 <= t <= 125:
            raise OSError(5, "ds18b20: %r out of range" % (t,))
        return (t,)

    def _forget(self):
        if not self.fixed:
            self.rom = None  # search the pin again next time (the sensor may have been replaced)
