# The board's I/O configuration (docs/link-protocol.md, "Configuration"): validate the JSON the
# agent pushes, naming the field of every error; persist the last good one in pg_cfg.json.
import hashlib
import json
import os

from micropython import const

FILE = "pg_cfg.json"
MAX_DOC = const(16384)
KINDS = ("di", "cnt", "do", "pwm", "adc", "temp", "ds18b20", "dht22", "sht3x")
SENSOR_FIELDS = {"dht22": ("_t", "_h"), "sht3x": ("_t", "_h")}
_MAX_PIN = const(47)  # RP2350B has GPIO 0-47; the agent checks the board's own pins before pushing
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."

_TOP = ("v", "name", "hb_ms", "safe_ms", "io", "mb")
_COMMON = ("id", "k")
_KEYS = {
    "di": ("pin", "pull", "deb_ms", "inv"),
    "cnt": ("pin", "pull", "edge", "every_ms"),
    "do": ("pin", "init", "safe"),
    "pwm": ("pin", "freq", "init", "safe"),
    "adc": ("pin", "os", "every_ms"),
    "temp": ("every_ms",),
    "ds18b20": ("pin", "rom", "every_ms"),
    "dht22": ("pin", "every_ms"),
    "sht3x": ("i2c", "sda", "scl", "addr", "every_ms"),
}
_MB_KEYS = ("bus", "uart", "tx", "rx", "de", "baud", "bits", "parity", "stop", "timeout_ms", "retries",
            "backoff_ms", "reqs")
_REQ_KEYS = ("u", "fc", "a", "n", "every_ms")


def cfg_hash(text):
    """First 12 hex digits of the SHA-256 of the JSON text as received."""
    h = hashlib.sha256(text.encode() if isinstance(text, str) else text).digest()
    return "".join("%02x" % b for b in h[:6])


class _Errors:
    def __init__(self):
        self.items = []

    def add(self, field, msg):
        if len(self.items) < 10:  # the ack must fit in one frame
            self.items.append((field, msg))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _int(e, obj, key, where, lo, hi, default=None, required=False):
    v = obj.get(key, default)
    if v is None:
        if required:
            e.add(where + key, "missing")
        return v
    if not _is_int(v):
        e.add(where + key, "must be an integer, got %s" % _tname(v))
        return default
    if v < lo or v > hi:
        e.add(where + key, "must be %d..%d, got %d" % (lo, hi, v))
        return default
    return v


def _num(e, obj, key, where, lo, hi, default=None, nullable=False):
    v = obj.get(key, default)
    if v is None:
        if not nullable and default is None and key in obj:
            e.add(where + key, "must be a number, got null")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        e.add(where + key, "must be a number, got %s" % _tname(v))
        return default
    if v < lo or v > hi:
        e.add(where + key, "must be %s..%s, got %s" % (lo, hi, v))
        return default
    return v


def _choice(e, obj, key, where, choices, default=None):
    v = obj.get(key, default)
    if v not in choices:
        e.add(where + key, "must be one of %s, got %s" % (", ".join("null" if c is None else str(c) for c in choices),
                                                          json.dumps(v)))
        return default
    return v


def _bool(e, obj, key, where, default=None, nullable=False):
    v = obj.get(key, default)
    if v is None and nullable:
        return None
    if not isinstance(v, bool):
        e.add(where + key, "must be true or false%s, got %s" % (" or null" if nullable else "", json.dumps(v)))
        return default
    return v


def _tname(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _unknown(e, obj, allowed, where):
    for k in obj:
        if k not in allowed:
            e.add(where + k, "unknown key")


def validate(text):
    """Parse and check a configuration document. Returns (cfg, errors): cfg is the normalized dict
    (defaults filled in) or None, errors a list of (field, message)."""
    e = _Errors()
    if len(text) > MAX_DOC:
        e.add("cfg", "document is %d bytes, at most %d" % (len(text), MAX_DOC))
        return None, e.items
    try:
        doc = json.loads(text)
    except ValueError:
        e.add("cfg", "not valid JSON")
        return None, e.items
    if not isinstance(doc, dict):
        e.add("cfg", "must be a JSON object, got %s" % _tname(doc))
        return None, e.items
    _unknown(e, doc, _TOP, "")
    if doc.get("v") != 1:
        e.add("v", "must be 1 (this firmware speaks config version 1), got %s" % json.dumps(doc.get("v")))
    name = doc.get("name", "")
    if not isinstance(name, str) or len(name) > 64:
        e.add("name", "must be a string of at most 64 characters")
        name = ""
    cfg = {
        "name": name,
        "hb_ms": _int(e, doc, "hb_ms", "", 100, 60000, 1000),
        "safe_ms": _int(e, doc, "safe_ms", "", 0, 3600000, 5000),
        "io": [],
        "mb": [],
    }
    io = doc.get("io", [])
    if not isinstance(io, list):
        e.add("io", "must be a list, got %s" % _tname(io))
        io = []
    if len(io) > 64:
        e.add("io", "at most 64 points, got %d" % len(io))
        io = []
    ids = {}  # type: dict[str, str]
    pins = {}  # type: dict[int, str]
    for i, p in enumerate(io):
        w = "io[%d]." % i
        if not isinstance(p, dict):
            e.add("io[%d]" % i, "must be an object, got %s" % _tname(p))
            continue
        q = _point(e, p, w, ids, pins)
        if q is not None:
            cfg["io"].append(q)
    mb = doc.get("mb", [])
    if not isinstance(mb, list):
        e.add("mb", "must be a list, got %s" % _tname(mb))
        mb = []
    buses = {}  # type: dict[int, int]
    for i, b in enumerate(mb):
        w = "mb[%d]." % i
        if not isinstance(b, dict):
            e.add("mb[%d]" % i, "must be an object, got %s" % _tname(b))
            continue
        q = _bus(e, b, w, pins)
        if q is None:
            continue
        if q["bus"] in buses:
            e.add(w + "bus", "bus %d is also mb[%d]" % (q["bus"], buses[q["bus"]]))
        buses[q["bus"]] = i
        cfg["mb"].append(q)
    if e.items:
        return None, e.items
    return cfg, []


def _pin(e, p, key, w, pins, required=True):
    n = _int(e, p, key, w, 0, _MAX_PIN, required=required)
    if n is not None:
        if n in pins:
            e.add(w + key, "GP%d is already used by %s" % (n, pins[n]))
        else:
            pins[n] = w[:-1]
    return n


def _point(e, p, w, ids, pins):
    k = p.get("k")
    if k not in KINDS:
        e.add(w + "k", "must be one of %s, got %s" % (", ".join(KINDS), json.dumps(k)))
        return None
    _unknown(e, p, _COMMON + _KEYS[k], w)
    pid = p.get("id")
    if not isinstance(pid, str) or not pid or len(pid) > 32 or any(c not in _ID_CHARS for c in pid):
        e.add(w + "id", "must be 1-32 characters of A-Z a-z 0-9 _ - ., got %s" % json.dumps(pid))
        return None
    for suffix in SENSOR_FIELDS.get(k, ("",)):
        full = pid + suffix
        if full in ids:
            e.add(w + "id", "%s is also %s" % (full, ids[full]))
        ids[full] = w[:-1]
    q = {"id": pid, "k": k}
    every = _int(e, p, "every_ms", w, 10, 86400000, 1000)
    if k == "di":
        q["pin"] = _pin(e, p, "pin", w, pins)
        q["pull"] = _choice(e, p, "pull", w, ("up", "down", None))
        q["deb_ms"] = _int(e, p, "deb_ms", w, 0, 10000, 20)
        q["inv"] = _bool(e, p, "inv", w, False)
    elif k == "cnt":
        q["pin"] = _pin(e, p, "pin", w, pins)
        q["pull"] = _choice(e, p, "pull", w, ("up", "down", None))
        q["edge"] = _choice(e, p, "edge", w, ("rise", "fall", "both"), "rise")
        q["every_ms"] = every
    elif k == "do":
        q["pin"] = _pin(e, p, "pin", w, pins)
        q["init"] = _bool(e, p, "init", w, False)
        q["safe"] = _bool(e, p, "safe", w, None, nullable=True)
    elif k == "pwm":
        q["pin"] = _pin(e, p, "pin", w, pins)
        q["freq"] = _int(e, p, "freq", w, 8, 62500000, 1000)
        q["init"] = _num(e, p, "init", w, 0, 1, 0.0)
        q["safe"] = _num(e, p, "safe", w, 0, 1, None, nullable=True)
    elif k == "adc":
        n = _pin(e, p, "pin", w, pins)
        if n is not None and not 26 <= n <= 29:
            e.add(w + "pin", "GP%d has no ADC: ADC pins are GP26, GP27, GP28 (GP29 on some boards)" % n)
        q["pin"] = n
        q["os"] = _int(e, p, "os", w, 1, 256, 16)
        q["every_ms"] = every
    elif k == "temp":
        q["every_ms"] = every
    elif k == "ds18b20":
        q["pin"] = _pin(e, p, "pin", w, pins)
        rom = p.get("rom")
        if rom is not None and (not isinstance(rom, str) or len(rom) != 16
                                or any(c not in "0123456789abcdefABCDEF" for c in rom)):
            e.add(w + "rom", "must be 16 hex digits or null, got %s" % json.dumps(rom))
        q["rom"] = rom.upper() if isinstance(rom, str) else None
        q["every_ms"] = every
    elif k == "dht22":
        q["pin"] = _pin(e, p, "pin", w, pins)
        q["every_ms"] = every
    elif k == "sht3x":
        q["i2c"] = _int(e, p, "i2c", w, 0, 1, required=True)
        q["sda"] = _int(e, p, "sda", w, 0, _MAX_PIN, required=True)
        q["scl"] = _int(e, p, "scl", w, 0, _MAX_PIN, required=True)
        q["addr"] = _int(e, p, "addr", w, 8, 119, 68)
        q["every_ms"] = every
    return q


def _bus(e, b, w, pins):
    _unknown(e, b, _MB_KEYS, w)
    q = {
        "bus": _int(e, b, "bus", w, 0, 7, required=True),
        "uart": _int(e, b, "uart", w, 0, 1, required=True),
        "tx": _pin(e, b, "tx", w, pins),
        "rx": _pin(e, b, "rx", w, pins),
        "de": _pin(e, b, "de", w, pins, required=False),
        "baud": _int(e, b, "baud", w, 300, 1000000, 19200),
        "bits": _choice(e, b, "bits", w, (7, 8), 8),
        "parity": _choice(e, b, "parity", w, ("N", "E", "O"), "N"),
        "stop": _choice(e, b, "stop", w, (1, 2), 1),
        "timeout_ms": _int(e, b, "timeout_ms", w, 10, 10000, 200),
        "retries": _int(e, b, "retries", w, 0, 5, 1),
        "backoff_ms": _int(e, b, "backoff_ms", w, 0, 600000, 5000),
        "reqs": [],
    }
    reqs = b.get("reqs", [])
    if not isinstance(reqs, list) or len(reqs) > 32:
        e.add(w + "reqs", "must be a list of at most 32 requests")
        return q
    for i, r in enumerate(reqs):
        wr = w + "reqs[%d]." % i
        if not isinstance(r, dict):
            e.add(wr[:-1], "must be an object, got %s" % _tname(r))
            continue
        _unknown(e, r, _REQ_KEYS, wr)
        fc = _choice(e, r, "fc", wr, (1, 2, 3, 4), 3)
        q["reqs"].append({
            "u": _int(e, r, "u", wr, 1, 247, required=True),
            "fc": fc,
            "a": _int(e, r, "a", wr, 0, 65535, required=True),
            "n": _int(e, r, "n", wr, 1, 2000 if fc in (1, 2) else 125, required=True),
            "every_ms": _int(e, r, "every_ms", wr, 10, 86400000, 1000),
        })
    return q


def load():
    """The persisted configuration: (text, cfg) or (None, None) when there is none (or it no longer
    validates, e.g. after a firmware update)."""
    try:
        with open(FILE) as f:
            text = f.read()
    except OSError:
        return None, None
    cfg, errors = validate(text)
    if errors:
        return None, None
    return text, cfg


def save(text):
    """Write atomically: a power cut leaves the old file or the new one."""
    tmp = FILE + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, FILE)


def errors_json(errors):
    from picogate_fw.link import json_str

    return "[" + ",".join('{"field":%s,"msg":%s}' % (json_str(f), json_str(m)) for f, m in errors) + "]"
