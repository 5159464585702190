# Modbus RTU codec: CRC16, request builders and reply checks for function codes 1, 2, 3, 4, 5, 6,
# 15 and 16. Pure: no I/O, no timing (picogate_fw.mb_master does those). Runs unchanged on
# MicroPython and CPython (the tests check both against tests/cases/mb_rtu/vectors.json).
#
# Frames live in caller-owned buffers: builders write into a bytearray and return the length;
# check_reply() reads the reply where it was received. Nothing here allocates except the
# ValueError of a bad request and build_write()'s frame (writes are rare; polls are prebuilt).
from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]
        return x


# check_reply() results
OK = const(0)  # a normal reply that matches the request
EXC = const(1)  # an exception reply: its code is rep[2]
CRC = const(2)  # too short to be a frame, or the CRC does not match
BAD = const(3)  # CRC right, but the reply does not match the request (unit, fc, length, echo)

_MAX_N = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}  # Modbus spec quantity limits

# CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF): one 16-bit entry per byte value, computed
# once at import into an array (512 bytes, the size of a bytes table of the same entries): one
# lookup per byte. On the RP2040 the CRC of a 25-byte reply takes 0.33 ms this way, 0.48 ms with a
# bytes table's two lookups per entry (bench/fw_rp2.py, board time).
def _table():
    t = array("H", range(256))
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t[i] = c
    return t


_T = _table()


def crc16(buf, n, start=0):
    """CRC of buf[start:n]. Over a whole frame including its CRC bytes, the result is 0."""
    t = _T
    c = 0xFFFF
    for i in range(start, n):
        c = (c >> 8) ^ t[(c ^ buf[i]) & 0xFF]
    return c


def put_crc(buf, n):
    """Append the CRC of buf[0:n] (low byte first, as RTU sends it); returns the new length."""
    c = crc16(buf, n)
    buf[n] = c & 0xFF
    buf[n + 1] = c >> 8
    return n + 2


def frame_gap_us(baud, bits=8, parity="N", stop=1):
    """t3.5: the silence that separates frames, in microseconds. Fixed 1750 µs above 19200 baud
    (Modbus over serial line, 2.5.1.1); otherwise 3.5 character times of 1 start bit, `bits` data
    bits, a parity bit unless parity is "N", and `stop` stop bits."""
    if baud > 19200:
        return 1750
    return (35 * char_bits(bits, parity, stop) * 100000 + baud - 1) // baud


def char_bits(bits=8, parity="N", stop=1):
    return 1 + bits + (0 if parity == "N" else 1) + stop


def check_request(unit, fc, addr, n):
    """Raise ValueError("field: why") unless (unit, fc, addr, n) is a request we can send."""
    if not isinstance(unit, int) or not 1 <= unit <= 247:
        raise ValueError("u: %r is not a unit id 1..247" % (unit,))
    top = _MAX_N.get(fc) if fc in (1, 2, 3, 4, 15, 16) else None
    if top is None and fc not in (5, 6):
        raise ValueError("fc: %r is not one of 1, 2, 3, 4, 5, 6, 15, 16" % (fc,))
    if not isinstance(addr, int) or not 0 <= addr <= 0xFFFF:
        raise ValueError("a: %r is not an address 0..65535" % (addr,))
    if top is not None:
        if not isinstance(n, int) or not 1 <= n <= top:
            raise ValueError("n: %r is not 1..%d for fc %d" % (n, top, fc))
        if addr + n > 0x10000:
            raise ValueError("n: %d from address %d goes past 65535" % (n, addr))


def build_read(buf, unit, fc, addr, n):
    """A read request (fc 1, 2, 3, 4) into buf[0:8]; returns 8."""
    if fc not in (1, 2, 3, 4):
        raise ValueError("fc: %r is not a read (1, 2, 3, 4)" % (fc,))
    check_request(unit, fc, addr, n)
    buf[0] = unit
    buf[1] = fc
    buf[2] = addr >> 8
    buf[3] = addr & 0xFF
    buf[4] = n >> 8
    buf[5] = n & 0xFF
    return put_crc(buf, 6)


def _bit(v, i):
    if v is True or v is False or v == 0 or v == 1:
        return 1 if v else 0
    raise ValueError("v[%d]: %r is not a coil value (true/false/0/1)" % (i, v))


def _reg(v, i):
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF:
        return v
    raise ValueError("v[%d]: %r is not a register value 0..65535" % (i, v))


def build_write(unit, fc, addr, values):
    """A write request (fc 5, 6, 15, 16) as a new bytearray. `values` is a list: one value for fc
    5 and 6; coils are true/false (or 1/0), registers 0..65535."""
    if fc not in (5, 6, 15, 16):
        raise ValueError("fc: %r is not a write (5, 6, 15, 16)" % (fc,))
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError("v: must be a non-empty list")
    n = len(values)
    if fc in (5, 6):
        if n != 1:
            raise ValueError("v: fc %d writes one value, got %d" % (fc, n))
        check_request(unit, fc, addr, 1)
        buf = bytearray(8)
        if fc == 5:
            v = 0xFF00 if _bit(values[0], 0) else 0
        else:
            v = _reg(values[0], 0)
        buf[4] = v >> 8
        buf[5] = v & 0xFF
        k = 6
    else:
        check_request(unit, fc, addr, n)
        nb = (n + 7) >> 3 if fc == 15 else 2 * n
        buf = bytearray(9 + nb)
        buf[4] = n >> 8
        buf[5] = n & 0xFF
        buf[6] = nb
        if fc == 15:  # coils packed LSB first
            for i in range(n):
                if _bit(values[i], i):
                    buf[7 + (i >> 3)] |= 1 << (i & 7)
        else:
            for i in range(n):
                v = _reg(values[i], i)
                buf[7 + 2 * i] = v >> 8
                buf[8 + 2 * i] = v & 0xFF
        k = 7 + nb
    buf[0] = unit
    buf[1] = fc
    buf[2] = addr >> 8
    buf[3] = addr & 0xFF
    put_crc(buf, k)
    return buf


def reply_len(req):
    """The length of the normal reply to the request frame `req` (an exception reply is 5)."""
    fc = req[1]
    if fc > 4:
        return 8
    n = (req[4] << 8) | req[5]
    return 5 + ((n + 7) >> 3 if fc < 3 else 2 * n)


def check_reply(req, rep, n):
    """Check the reply rep[0:n] against the request frame `req`: OK, EXC, CRC or BAD.

    OK: for reads the data are rep[3:3 + rep[2]] (registers big-endian, coils packed LSB first);
    EXC: the exception code is rep[2]."""
    if n < 5 or crc16(rep, n) != 0:
        return CRC
    if rep[0] != req[0]:
        return BAD
    fc = req[1]
    if rep[1] != fc:
        return EXC if rep[1] == fc | 0x80 and n == 5 else BAD
    if n != reply_len(req):
        return BAD
    if fc <= 4:
        return OK if rep[2] == n - 5 else BAD
    for i in range(2, 6):  # writes echo address and value (5, 6) or quantity (15, 16)
        if rep[i] != req[i]:
            return BAD
    return OK
