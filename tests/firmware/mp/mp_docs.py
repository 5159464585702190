# Examples in the docs work on the firmware: the configuration in docs/link-protocol.md validates,
# the pg_sim.json in firmware/README.md drives the simulated board.
import json

from mpt import REPO, eq


def _json_blocks(rel):
    with open(REPO + "/" + rel) as f:
        text = f.read()
    out = []
    for chunk in text.split("```json\n")[1:]:
        out.append(json.loads(chunk.split("```")[0]))
    return out


def test_link_protocol_config_example_validates():
    from picogate_fw import config

    docs = [d for d in _json_blocks("docs/link-protocol.md") if "io" in d]
    eq(len(docs), 1)
    cfg, errors = config.validate(json.dumps(docs[0]))
    eq(errors, [])


def test_readme_scenario_drives_the_simulated_board():
    (sc,) = _json_blocks("firmware/README.md")
    with open("pg_sim.json", "w") as f:
        json.dump(sc, f)
    from picogate_fw import sim_board

    b = sim_board.board()
    eq(b.pin(2, None).value(), 1)
    eq(b.pin(9, "up").value(), 1)
    eq(b.pin(10, "down").value(), 0)
    v = b.adc(26).read_u16()
    eq(abs(v - int(1.652 / 3.3 * 65535)) <= 1, True, "adc 26")
    ow = b.onewire(16)
    roms = ow.scan()
    eq(len(roms), 2)
    ow.convert_temp()
    eq(ow.read_temp(roms[0]), 21.5)
    try:
        ow.read_temp(roms[1])
        raise AssertionError("a failing DS18B20 read")
    except OSError:
        pass
    d = b.dht22(17)
    d.measure()
    eq((d.temperature(), d.humidity()), (22.0, 45.0))
    try:
        b.dht22(18).measure()
        raise AssertionError("a failing DHT22 measured")
    except OSError:
        pass
    i2c = b.i2c(0)
    buf = bytearray(6)
    i2c.writeto(68, b"\x24\x00")
    i2c.readfrom_into(68, buf)
    t = -45 + 175 * ((buf[0] << 8) | buf[1]) / 65535
    eq(abs(t - 22.0) < 0.01, True, "sht3x t")
    eq(b.uart_path(0), "/dev/pts/7")
