# Small helpers for the MicroPython test modules (mp_*.py).
import os

REPO = os.getenv("PICOGATE_REPO")


def eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s: %r != %r" % (what, a, b))


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc.__name__, fn))


def read_json(rel):
    import json

    with open(REPO + "/" + rel) as f:
        return json.load(f)
