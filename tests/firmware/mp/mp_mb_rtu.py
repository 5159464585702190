# The Modbus RTU codec (firmware/picogate_fw/mb_rtu.py) against tests/cases/mb_rtu/vectors.json.
# The same checks run on CPython (tests/unit/test_mb_rtu_vectors.py imports check_vectors).
from picogate_fw import mb_rtu

_STATUS = {"ok": mb_rtu.OK, "exc": mb_rtu.EXC, "crc": mb_rtu.CRC, "bad": mb_rtu.BAD}


def _eq(a, b, what):
    if a != b:
        raise AssertionError("%s: %r != %r" % (what, a, b))


def check_vectors(m, v):
    """Every vector of `v` against the codec module `m`; returns the number of cases checked."""
    k = 0
    for c in v["crc"]:
        data = bytes.fromhex(c["hex"])
        _eq(m.crc16(data, len(data)), c["crc"], "crc16 " + c["hex"])
        buf = bytearray(len(data) + 2)
        buf[: len(data)] = data
        m.put_crc(buf, len(data))
        _eq(m.crc16(buf, len(buf)), 0, "crc over frame+crc " + c["hex"])
        k += 1
    for c in v["gap"]:
        _eq(m.frame_gap_us(c["baud"], c["bits"], c["parity"], c["stop"]), c["us"], "gap %r" % c)
        k += 1
    for c in v["reads"]:
        buf = bytearray(8)
        _eq(m.build_read(buf, c["u"], c["fc"], c["a"], c["n"]), 8, "read length")
        _eq(buf.hex(), c["hex"], "read %r" % c)
        k += 1
    for c in v["writes"]:
        _eq(bytes(m.build_write(c["u"], c["fc"], c["a"], c["v"])).hex(), c["hex"], "write %r" % c)
        k += 1
    for c in v["bad_requests"]:
        try:
            if "v" in c:
                m.build_write(c["u"], c["fc"], c["a"], c["v"])
            else:
                m.build_read(bytearray(8), c["u"], c["fc"], c["a"], c["n"])
        except ValueError as e:
            msg = str(e)
            if not msg.startswith(c["error"]):
                raise AssertionError("bad request %r: message %r does not start with %r" % (c, msg, c["error"]))
        else:
            raise AssertionError("bad request accepted: %r" % (c,))
        k += 1
    rep = bytearray(260)
    for c in v["replies"]:
        req = bytes.fromhex(c["req"])
        data = bytes.fromhex(c["rep"])
        rep[: len(data)] = data
        st = m.check_reply(req, rep, len(data))
        _eq(st, _STATUS[c["status"]], "reply %s to %s" % (c["rep"], c["req"]))
        if st == m.OK and req[1] <= 4:
            _eq(bytes(rep[3 : 3 + rep[2]]).hex(), c["data"], "data of " + c["rep"])
            _eq(m.reply_len(req), len(data), "reply_len " + c["req"])
        if st == m.EXC:
            _eq(rep[2], c["exc"], "exception code " + c["rep"])
        k += 1
    return k


def test_vectors():
    from mpt import read_json

    n = check_vectors(mb_rtu, read_json("tests/cases/mb_rtu/vectors.json"))
    if n < 70:
        raise AssertionError("only %d vectors" % n)


def test_check_reply_allocates_nothing():
    import gc

    req = bytearray(8)
    mb_rtu.build_read(req, 1, 3, 0, 10)
    rep = bytearray(64)
    rep[:25] = bytes.fromhex("01031400fa00010000ffff1234000700080009000a000b")[:23]
    mb_rtu.put_crc(rep, 23)
    gc.collect()
    before = gc.mem_free()
    for _ in range(50):
        mb_rtu.check_reply(req, rep, 25)
        mb_rtu.crc16(rep, 25)
    _eq(gc.mem_free(), before, "heap after 50 checks")
    _eq(mb_rtu.check_reply(req, rep, 25), mb_rtu.OK, "status")
