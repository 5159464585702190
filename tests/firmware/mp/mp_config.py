# Configuration validation (firmware/picogate_fw/config.py): every error names its field.
import json

from mpt import eq

from picogate_fw import config

GOOD = {
    "v": 1, "name": "line1_io", "hb_ms": 1000, "safe_ms": 5000,
    "io": [
        {"id": "door", "k": "di", "pin": 2, "pull": "up", "deb_ms": 20, "inv": True},
        {"id": "parts", "k": "cnt", "pin": 3, "pull": "up", "edge": "rise", "every_ms": 1000},
        {"id": "valve", "k": "do", "pin": 15, "init": False, "safe": False},
        {"id": "fan", "k": "pwm", "pin": 16, "freq": 1000, "init": 0.0, "safe": 0.0},
        {"id": "level", "k": "adc", "pin": 26, "os": 16, "every_ms": 1000},
        {"id": "cpu", "k": "temp", "every_ms": 5000},
        {"id": "tank", "k": "ds18b20", "pin": 4, "rom": None, "every_ms": 2000},
        {"id": "room", "k": "dht22", "pin": 5, "every_ms": 2000},
        {"id": "air", "k": "sht3x", "i2c": 0, "sda": 8, "scl": 9, "addr": 68, "every_ms": 2000},
    ],
    "mb": [
        {"bus": 0, "uart": 0, "tx": 0, "rx": 1, "de": 6, "baud": 19200, "bits": 8, "parity": "N",
         "stop": 1, "timeout_ms": 200, "retries": 1, "backoff_ms": 5000,
         "reqs": [{"u": 3, "fc": 3, "a": 0, "n": 10, "every_ms": 1000},
                  {"u": 4, "fc": 1, "a": 0, "n": 16, "every_ms": 500}]},
    ],
}


def _copy():
    return json.loads(json.dumps(GOOD))


def _errors(doc):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    cfg, errors = config.validate(text)
    if errors:
        eq(cfg, None)
    return errors


def test_the_documented_example_is_valid():
    # the same document as in docs/link-protocol.md
    cfg, errors = config.validate(json.dumps(GOOD))
    eq(errors, [])
    eq(len(cfg["io"]), 9)
    eq(cfg["mb"][0]["reqs"][1]["n"], 16)
    eq(cfg["io"][0]["inv"], True)


def test_defaults():
    cfg, errors = config.validate('{"v":1,"io":[{"id":"a","k":"di","pin":1}]}')
    eq(errors, [])
    eq(cfg["hb_ms"], 1000)
    eq(cfg["safe_ms"], 5000)
    eq(cfg["io"][0], {"id": "a", "k": "di", "pin": 1, "pull": None, "deb_ms": 20, "inv": False})


def test_document_errors():
    eq(_errors("{nope"), [("cfg", "not valid JSON")])
    eq(_errors("[]"), [("cfg", "must be a JSON object, got a list")])
    eq(_errors('{"v":2}'), [("v", "must be 1 (this firmware speaks config version 1), got 2")])
    eq(_errors('{"v":1,"extra":1}'), [("extra", "unknown key")])
    eq(_errors('{"v":1,"io":{}}'), [("io", "must be a list, got an object")])
    eq(_errors('{"v":1,"hb_ms":"fast"}'), [("hb_ms", "must be an integer, got a string")])
    eq(_errors('{"v":1,"hb_ms":5}'), [("hb_ms", "must be 100..60000, got 5")])
    eq(_errors("x" * (config.MAX_DOC + 1)), [("cfg", "document is 16385 bytes, at most 16384")])


def _with(i, **kw):
    d = _copy()
    for k, v in kw.items():
        if v is _DEL:
            del d["io"][i][k]
        else:
            d["io"][i][k] = v
    return d


_DEL = object()


def test_point_errors_name_the_field():
    eq(_errors(_with(4, pin=7)), [("io[4].pin", "GP7 has no ADC: ADC pins are GP26, GP27, GP28 (GP29 on some boards)")])
    eq(_errors(_with(0, k="relay")), [("io[0].k", 'must be one of di, cnt, do, pwm, adc, temp, ds18b20, dht22, sht3x, got "relay"')])
    eq(_errors(_with(0, pull="sideways")), [("io[0].pull", 'must be one of up, down, null, got "sideways"')])
    eq(_errors(_with(1, edge="up")), [("io[1].edge", 'must be one of rise, fall, both, got "up"')])
    eq(_errors(_with(2, init=1)), [("io[2].init", "must be true or false, got 1")])
    eq(_errors(_with(3, init=1.5)), [("io[3].init", "must be 0..1, got 1.5")])
    eq(_errors(_with(3, safe="off")), [("io[3].safe", "must be a number, got a string")])
    eq(_errors(_with(6, rom="28AA")), [("io[6].rom", 'must be 16 hex digits or null, got "28AA"')])
    eq(_errors(_with(8, i2c=_DEL)), [("io[8].i2c", "missing")])
    eq(_errors(_with(0, pin=_DEL)), [("io[0].pin", "missing")])
    eq(_errors(_with(0, pin=99)), [("io[0].pin", "must be 0..47, got 99")])
    eq(_errors(_with(0, colour="red")), [("io[0].colour", "unknown key")])
    eq(_errors(_with(1, pin=2)), [("io[1].pin", "GP2 is already used by io[0]")])
    eq(_errors(_with(1, id="door")), [("io[1].id", "door is also io[0]")])
    eq(_errors(_with(0, id="bad id")), [("io[0].id", 'must be 1-32 characters of A-Z a-z 0-9 _ - ., got "bad id"')])
    eq(_errors(_with(4, every_ms=1)), [("io[4].every_ms", "must be 10..86400000, got 1")])


def test_sensor_field_ids_collide():
    d = _copy()
    d["io"].append({"id": "room_t", "k": "adc", "pin": 27})
    eq(_errors(d), [("io[9].id", "room_t is also io[7]")])


def test_modbus_errors_name_the_field():
    d = _copy()
    d["mb"][0]["parity"] = "X"
    d["mb"][0]["reqs"][0]["fc"] = 6
    d["mb"][0]["reqs"][1]["n"] = 3000
    d["mb"][0]["tx"] = 2  # door's pin
    eq(_errors(d), [
        ("mb[0].tx", "GP2 is already used by io[0]"),
        ("mb[0].parity", 'must be one of N, E, O, got "X"'),
        ("mb[0].reqs[0].fc", "must be one of 1, 2, 3, 4, got 6"),
        ("mb[0].reqs[1].n", "must be 1..2000, got 3000"),
    ])
    d = _copy()
    d["mb"].append(json.loads(json.dumps(d["mb"][0])))
    for k in ("tx", "rx", "de"):
        d["mb"][1][k] += 30
    eq(_errors(d), [("mb[1].bus", "bus 0 is also mb[0]")])


def test_at_most_ten_errors_reported():
    d = {"v": 1, "io": [{"id": "p%d" % i, "k": "di", "pin": 100 + i} for i in range(30)]}
    eq(len(_errors(d)), 10)


def test_hash_save_load():
    text = json.dumps(GOOD)
    h = config.cfg_hash(text)
    eq(len(h), 12)
    import hashlib, binascii

    eq(h, binascii.hexlify(hashlib.sha256(text.encode()).digest()).decode()[:12])
    eq(config.load(), (None, None))
    config.save(text)
    t2, cfg = config.load()
    eq(t2, text)
    eq(cfg["name"], "line1_io")
    with open(config.FILE, "w") as f:
        f.write('{"v":7}')  # a stored config that no longer validates is ignored
    eq(config.load(), (None, None))


def test_errors_json():
    eq(config.errors_json([("io[2].pin", 'GP5 "x"')]), '[{"field":"io[2].pin","msg":"GP5 \\"x\\""}]')
