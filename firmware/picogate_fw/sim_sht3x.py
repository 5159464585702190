# A simulated SHT3x for the unix port's I2C bus: it answers the way the chip does (a measurement
# command first, then 6 bytes with a CRC-8 per word; a read without a measurement pending is
# not acknowledged), so drv_sht3x is tested against the protocol, not against itself.
#
#   dev = SimSHT3x(t=22.5, h=41.0)       # or fail="nodev" (no ACK) / "crc" (a corrupt CRC)
#   bus = SimI2CBus({0x44: dev})         # writeto / readfrom_into / scan, as machine.I2C
from picogate_fw.drv_sht3x import crc8

_ENODEV = 19
_EIO = 5


class SimSHT3x:
    def __init__(self, t=25.0, h=50.0, fail=None):
        self.t = t
        self.h = h
        self.fail = fail
        self.pending = False
        self.commands = 0

    def write(self, buf):
        if self.fail == "nodev":
            raise OSError(_ENODEV)
        if len(buf) != 2:
            raise OSError(_EIO)  # the chip NACKs anything but a 16-bit command
        cmd = (buf[0] << 8) | buf[1]
        self.commands += 1
        if cmd == 0x2400 or cmd == 0x2C06:  # single shot, high repeatability
            self.pending = True
        elif cmd in (0x30A2, 0x3041):  # soft reset, clear status
            self.pending = False
        else:
            raise OSError(_EIO)

    def read_into(self, buf):
        if self.fail == "nodev" or not self.pending:
            raise OSError(_ENODEV)  # no measurement ready: the address is not acknowledged
        self.pending = False
        t = int((self.t + 45) * 65535 / 175 + 0.5)
        h = int(self.h * 65535 / 100 + 0.5)
        t = 0 if t < 0 else 65535 if t > 65535 else t
        h = 0 if h < 0 else 65535 if h > 65535 else h
        out = bytearray((t >> 8, t & 0xFF, 0, h >> 8, h & 0xFF, 0))
        out[2] = crc8(out, 0, 2)
        out[5] = crc8(out, 3, 2)
        if self.fail == "crc":
            out[5] ^= 0x01
        for i in range(min(len(buf), 6)):
            buf[i] = out[i]


class SimI2CBus:
    def __init__(self, devices=None):
        self.devices = dict(devices or {})

    def _dev(self, addr):
        d = self.devices.get(addr)
        if d is None:
            raise OSError(_ENODEV)
        return d

    def scan(self):
        return sorted(a for a, d in self.devices.items() if getattr(d, "fail", None) != "nodev")

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).write(buf)
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        self._dev(addr).read_into(buf)

    def readfrom(self, addr, n, stop=True):
        b = bytearray(n)
        self.readfrom_into(addr, b)
        return bytes(b)
