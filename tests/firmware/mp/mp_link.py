# The link codec (firmware/picogate_fw/link.py) against the shared vectors.
from mpt import eq, read_json

from picogate_fw import link


def _vectors():
    return read_json("tests/cases/link/vectors.json")


def test_good_vectors_decode_and_encode():
    v = _vectors()
    for case in v["good"]:
        line = case["line"].encode()
        got = link.decode(line)
        eq(got, (case["marker"], case["seq"], case["type"], case["body"]), case["line"])
        again = link.encode(case["marker"], case["seq"], case["type"], case["body"])
        eq(again, line.replace(b"\r\n", b"\n"), "encode " + case["line"])


def test_bad_vectors_are_dropped_with_their_error():
    v = _vectors()
    for case in v["bad"]:
        eq(link.decode(case["line"].encode()), case["error"], case["why"])


def test_without_lf_and_max_line():
    eq(link.decode(b"#1 hb 3e019a36"), ("#", 1, "hb", None))
    eq(link.MAX_LINE, _vectors()["max_line"])
    # a frame of exactly MAX_LINE bytes (LF included) is accepted, one more is not
    for size, ok in ((link.MAX_LINE, True), (link.MAX_LINE + 1, False)):
        body = "x" * (size - len("@1 log  12345678\n"))
        line = link.encode("@", 1, "log", body)
        eq(len(line), size)
        eq(link.decode(line) == ("@", 1, "log", body), ok, "size %d" % size)


def test_encoder_numbers():
    e = link.Encoder(200)
    e.start("@", 65535, "rd")
    for v, p in ((1652, 3), (1500, 3), (2000, 3), (-52, 3), (0, 3), (7, 0), (-1234567, 2)):
        e.sp()
        e.put_fixed(v, p)
    e.sp()
    e.put_int(-3)
    frame = bytes(e.finish())
    got = link.decode(frame)
    eq(got[3], "1.652 1.5 2 -0.052 0 7 -12345.67 -3")


def test_random_bytes_never_raise():
    import random

    random.seed(4)
    buf = bytearray(1100)
    for _ in range(400):
        n = random.randint(0, 1100)
        for i in range(n):
            buf[i] = random.getrandbits(8)
        r = link.decode(memoryview(buf)[:n])
        if not isinstance(r, str):
            raise AssertionError("random bytes decoded: %r" % (r,))
    # mutations of a good frame: every one is dropped, never accepted as a different frame
    good = bytearray(link.encode("#", 17, "set", '{"id":"valve","v":true}'))
    for i in range(len(good) - 1):
        orig = good[i]
        good[i] = orig ^ 0x01
        r = link.decode(good)
        good[i] = orig
        if not isinstance(r, str):
            raise AssertionError("mutated frame at %d decoded: %r" % (i, r))


def test_json_str():
    eq(link.json_str('caf\u00e9 "x"\\'), '"caf\\u00e9 \\"x\\"\\\\"')
