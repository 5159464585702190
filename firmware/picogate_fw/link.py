# Link protocol v1 frame codec (docs/link-protocol.md). No I/O.
#
#   frame = marker seq SP type [SP body] SP crc LF      crc = crc32 of `marker seq SP type [SP body]`
#
# decode() parses one line; Encoder builds a frame in a buffer allocated once (the board's hot path:
# readings are appended to the frame as they come, with no allocation per reading).
from binascii import crc32

try:
    from micropython import const
except ImportError:  # CPython (tests/firmware/test_link_cpython.py runs this codec there too)

    def const(x):  # type: ignore[misc]
        return x


MAX_LINE = const(1024)  # bytes, LF included
GARBAGE = "garbage"
BAD_CRC = "bad_crc"
OVERSIZE = "oversize"

_SP = const(0x20)
_HEX = b"0123456789abcdef"


def decode(line):
    """Decode one line (bytes-like, with or without its LF; a CR before the LF is tolerated).

    Returns (marker, seq, type, body) with marker "#" or "@", body a str or None, or one of the
    error strings GARBAGE, BAD_CRC, OVERSIZE.
    """
    n = len(line)
    if n and line[n - 1] == 10:
        if n > MAX_LINE:
            return OVERSIZE
        n -= 1
    elif n >= MAX_LINE:
        return OVERSIZE
    if n and line[n - 1] == 13:
        n -= 1
    if n < 13:  # "#0 t 12345678" is the shortest frame
        return GARBAGE
    for i in range(n):
        c = line[i]
        if c < 0x20 or c > 0x7E:
            return GARBAGE
    m = line[0]
    if m != 0x23 and m != 0x40:  # "#", "@"
        return GARBAGE
    # seq
    i = 1
    seq = 0
    while i < n and 0x30 <= line[i] <= 0x39:
        seq = seq * 10 + line[i] - 0x30
        i += 1
    if i == 1 or i > 6 or seq > 65535 or i >= n or line[i] != _SP:
        return GARBAGE
    i += 1
    # type
    t0 = i
    while i < n and 0x61 <= line[i] <= 0x7A:
        i += 1
    if i == t0 or i - t0 > 8 or i >= n or line[i] != _SP:
        return GARBAGE
    t1 = i
    # crc: the last 8 characters, after the last SP
    c0 = n - 8
    if c0 <= t1 or line[c0 - 1] != _SP:
        return GARBAGE
    crc = 0
    for k in range(c0, n):
        c = line[k]
        if 0x30 <= c <= 0x39:
            d = c - 0x30
        elif 0x61 <= c <= 0x66:
            d = c - 0x61 + 10
        else:
            return GARBAGE
        crc = (crc << 4) | d
    head = c0 - 1  # end of the covered part
    if crc32(memoryview(line)[:head]) & 0xFFFFFFFF != crc:
        return BAD_CRC
    typ = bytes(line[t0:t1]).decode()
    body = None
    if head > t1:
        body = bytes(line[t1 + 1 : head]).decode()
    return (chr(m), seq, typ, body)


def encode(marker, seq, typ, body=None):
    """One frame as bytes (allocates; for frames that are not on the hot path, and tests)."""
    e = Encoder(64 + (len(body) if body else 0))
    e.start(marker, seq, typ)
    if body is not None:
        e.sp()
        e.put_str(body)
    return bytes(e.finish())


class Encoder:
    """Builds one frame in a buffer allocated once: start(), then put_*(), then finish() gives a
    memoryview of the complete line (valid until the next start())."""

    def __init__(self, size=MAX_LINE):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0
        self.size = size

    def start(self, marker, seq, typ):
        b = self.buf
        b[0] = ord(marker)
        self.n = 1
        self.put_int(seq)
        self.sp()
        self.put_str(typ)

    def room(self):
        """Bytes that can still be added (space for the crc and LF kept back)."""
        return self.size - self.n - 10

    def sp(self):
        self.buf[self.n] = _SP
        self.n += 1

    def put_byte(self, c):
        self.buf[self.n] = c
        self.n += 1

    def put_str(self, s):
        # str or bytes (ASCII)
        n = self.n
        k = len(s)
        if isinstance(s, str):
            s = s.encode()
            k = len(s)
        self.mv[n : n + k] = s
        self.n = n + k

    def put_int(self, v):
        b = self.buf
        n = self.n
        if v < 0:
            b[n] = 0x2D
            n += 1
            v = -v
        if v == 0:
            b[n] = 0x30
            self.n = n + 1
            return
        k = n
        while v:
            b[k] = 0x30 + v % 10
            v //= 10
            k += 1
        # reverse the digits in place
        i, j = n, k - 1
        while i < j:
            b[i], b[j] = b[j], b[i]
            i += 1
            j -= 1
        self.n = k

    def put_fixed(self, v, places):
        """An integer `v` scaled by 10^places, written as a decimal: put_fixed(1652, 3) -> 1.652;
        trailing zeros dropped (1500, 3 -> 1.5; 2000, 3 -> 2)."""
        b = self.buf
        if v < 0:
            b[self.n] = 0x2D
            self.n += 1
            v = -v
        scale = 10**places
        self.put_int(v // scale)
        frac = v % scale
        if frac:
            b[self.n] = 0x2E
            n = self.n + 1
            d = scale // 10
            while frac and d:
                b[n] = 0x30 + frac // d
                frac %= d
                d //= 10
                n += 1
            self.n = n

    def finish(self):
        """Append the crc and LF; returns a memoryview of the frame."""
        b = self.buf
        n = self.n
        crc = crc32(self.mv[:n]) & 0xFFFFFFFF
        b[n] = _SP
        n += 1
        for k in range(7, -1, -1):
            b[n + k] = _HEX[crc & 15]
            crc >>= 4
        n += 8
        b[n] = 10
        n += 1
        self.n = n
        return self.mv[:n]


def json_str(s):
    """A str as a compact JSON string literal, ASCII only (non-ASCII as \\uXXXX)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 0x20 or o > 0x7E:
            if o > 0xFFFF:
                o -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 + (o >> 10), 0xDC00 + (o & 0x3FF)))
            else:
                out.append("\\u%04x" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
