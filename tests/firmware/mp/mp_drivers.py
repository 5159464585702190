# The sensor drivers (drv_sht3x, drv_ds18b20, drv_dht22) on MicroPython, against simulated
# devices: sim_sht3x (speaks the SHT3x protocol) and small fakes of the ds18x20/dht module APIs.
import asyncio

from mpt import eq, raises

from picogate_fw import drv_dht22, drv_ds18b20, drv_sht3x
from picogate_fw.sim_sht3x import SimI2CBus, SimSHT3x


class Hal:
    def __init__(self, i2c=None, ow=None, dht=None):
        self._i2c = i2c
        self._ow = ow
        self._dht = dht
        self.calls = []

    def i2c(self, bus, sda, scl, freq):
        self.calls.append(("i2c", bus, sda, scl, freq))
        return self._i2c

    def onewire(self, pin):
        self.calls.append(("onewire", pin))
        return self._ow

    def dht22(self, pin):
        self.calls.append(("dht22", pin))
        return self._dht


def run(coro):
    return asyncio.run(coro)


def near(a, b, eps, what):
    if abs(a - b) > eps:
        raise AssertionError("%s: %r is not %r +- %r" % (what, a, b, eps))


def test_sht3x_reads_and_checks_crc():
    dev = SimSHT3x(t=22.5, h=41.25)
    hal = Hal(i2c=SimI2CBus({0x44: dev}))
    s = drv_sht3x.Sensor(hal, {"i2c": 1, "sda": 2, "scl": 3, "addr": 68})
    eq(hal.calls, [("i2c", 1, 2, 3, 100000)], "bus")
    eq(drv_sht3x.Sensor.fields, ("_t", "_h"), "fields")
    t, h = run(s.read())
    near(t, 22.5, 0.01, "t")
    near(h, 41.25, 0.01, "h")
    eq(dev.commands, 1, "one measurement command per read")
    dev.t, dev.h = -40.0, 100.0
    t, h = run(s.read())
    near(t, -40.0, 0.01, "t low")
    near(h, 100.0, 0.01, "h high")
    dev.fail = "crc"
    e = raises(OSError, run, s.read())
    eq("CRC" in str(e), True, "crc message %s" % e)
    dev.fail = "nodev"
    raises(OSError, run, s.read())
    dev.fail = None
    near(run(s.read())[0], -40.0, 0.01, "recovers")


def test_sht3x_absent_or_wrong_address():
    hal = Hal(i2c=SimI2CBus({0x45: SimSHT3x()}))
    s = drv_sht3x.Sensor(hal, {"i2c": 0, "sda": 8, "scl": 9})  # default 0x44: nothing there
    raises(OSError, run, s.read())
    s = drv_sht3x.Sensor(hal, {"i2c": 0, "sda": 8, "scl": 9, "addr": 69})
    near(run(s.read())[1], 50.0, 0.01, "h")


def test_sht3x_bad_config_names_the_field():
    hal = Hal(i2c=SimI2CBus())
    for cfg, field in (
        ({"i2c": 2, "sda": 8, "scl": 9}, "i2c: "),
        ({"i2c": 0, "sda": 8, "scl": 9, "addr": 0x40}, "addr: "),
        ({"i2c": 0, "sda": None, "scl": 9}, "sda: "),
        ({"i2c": 0, "sda": 8, "scl": 99}, "scl: "),
        ({"i2c": 0, "sda": 8, "scl": 9, "freq": 5}, "freq: "),
    ):
        e = raises(ValueError, drv_sht3x.Sensor, hal, cfg)
        eq(str(e).startswith(field), True, "%r -> %s" % (cfg, e))


def test_sim_sht3x_nacks_a_read_without_a_measurement():
    bus = SimI2CBus({0x44: SimSHT3x()})
    raises(OSError, bus.readfrom_into, 0x44, bytearray(6))
    raises(OSError, bus.writeto, 0x44, b"\x12\x34")  # an unknown command
    eq(bus.scan(), [0x44])


class FakeDS:
    # the ds18x20.DS18X20 API: scan(), convert_temp(), read_temp(rom)
    def __init__(self, temps):
        self.temps = temps  # {rom bytes: value | "crc" | OSError}
        self.converts = 0

    def scan(self):
        return [bytearray(r) for r in self.temps]

    def convert_temp(self):
        if not self.temps:
            raise OSError(110)
        self.converts += 1

    def read_temp(self, rom):
        v = self.temps.get(bytes(rom))
        if v is None:
            raise OSError(19)
        if v == "crc":
            raise Exception("CRC error")  # what micropython-lib's ds18x20 raises
        return v


ROM1 = bytes.fromhex("28FF4A1C62160452")
ROM2 = bytes.fromhex("28AA000000000001")


def test_ds18b20_only_sensor_and_by_rom():
    ds = FakeDS({ROM1: 21.5})
    s = drv_ds18b20.Sensor(Hal(ow=ds), {"pin": 4, "rom": None})
    eq(run(s.read()), (21.5,), "only sensor")
    ds.temps[ROM2] = 30.0
    eq(run(s.read()), (21.5,), "keeps the one it found")
    s2 = drv_ds18b20.Sensor(Hal(ow=ds), {"pin": 4, "rom": "28AA000000000001"})
    eq(run(s2.read()), (30.0,), "by rom")
    s3 = drv_ds18b20.Sensor(Hal(ow=ds), {"pin": 4})
    e = raises(OSError, run, s3.read())
    eq("set rom" in str(e), True, str(e))


def test_ds18b20_failures_are_oserrors():
    ds = FakeDS({ROM1: "crc"})
    s = drv_ds18b20.Sensor(Hal(ow=ds), {"pin": 4, "rom": "28FF4A1C62160452"})
    e = raises(OSError, run, s.read())
    eq("CRC" in str(e), True, str(e))
    ds.temps[ROM1] = 200.0
    raises(OSError, run, s.read())
    s = drv_ds18b20.Sensor(Hal(ow=FakeDS({})), {"pin": 4})
    raises(OSError, run, s.read())


def test_ds18b20_bad_config_names_the_field():
    for cfg, field in (
        ({"pin": "GP4"}, "pin: "),
        ({"pin": 4, "rom": "28FF"}, "rom: "),
        ({"pin": 4, "rom": "zzFF4A1C62160452"}, "rom: "),
        ({"pin": 4, "rom": "10FF4A1C62160452"}, "rom: "),
    ):
        e = raises(ValueError, drv_ds18b20.Sensor, Hal(ow=FakeDS({})), cfg)
        eq(str(e).startswith(field), True, "%r -> %s" % (cfg, e))


class FakeDHT:
    def __init__(self, t, h):
        self.t = t
        self.h = h
        self.fail = None
        self.measures = 0

    def measure(self):
        self.measures += 1
        if self.fail:
            raise OSError(self.fail)

    def temperature(self):
        return self.t

    def humidity(self):
        return self.h


def test_dht22_reads_at_most_every_2_s():
    d = FakeDHT(21.3, 55.2)
    s = drv_dht22.Sensor(Hal(dht=d), {"pin": 5})
    eq(run(s.read()), (21.3, 55.2), "values")
    eq(run(s.read()), (21.3, 55.2), "again")
    eq(d.measures, 1, "second read within 2 s uses the last values")


def test_dht22_failures_are_oserrors():
    d = FakeDHT(21.3, 55.2)
    d.fail = 110
    s = drv_dht22.Sensor(Hal(dht=d), {"pin": 5})
    raises(OSError, run, s.read())
    d.fail = None
    d.h = 130.0
    raises(OSError, run, s.read())
    e = raises(ValueError, drv_dht22.Sensor, Hal(dht=d), {"pin": -1})
    eq(str(e).startswith("pin: "), True, str(e))


def test_drivers_on_the_simulated_board():
    # fw-core's HAL on the unix port (pg_sim.json in the board directory)
    import json

    with open("pg_sim.json", "w") as f:
        json.dump({"i2c": {"0": {"68": {"kind": "sht3x", "t": 19.0, "h": 33.0}}},
                   "onewire": {"4": {"28FF4A1C62160452": 23.25}},
                   "dht22": {"5": {"t": 20.5, "h": 60.0}}}, f)
    from picogate_fw import hal

    near(run(drv_sht3x.Sensor(hal, {"i2c": 0, "sda": 8, "scl": 9, "addr": 68}).read())[0], 19.0, 0.01, "sht3x")
    eq(run(drv_ds18b20.Sensor(hal, {"pin": 4, "rom": None}).read()), (23.25,), "ds18b20")
    eq(run(drv_dht22.Sensor(hal, {"pin": 5}).read()), (20.5, 60.0), "dht22")
