# Modbus RTU codec: CRC16, request builders and reply checks for function codes 1, 2, 3, 4, 5, 6,
# 15 and 16. Pure: no I/O, no timing (picogate_fw.mb_master does those). Runs unchanged on
# MicroPython and CPython (the tests check both against tests/cases/mb_rtu/vectors.json).
#
# Frames live in caller-owned buffers: builders write into a bytearray and return the length;
# check_reply() reads the reply where it was received. Nothing here allocates except the
# ValueError of a bad request and build_write()'s frame (writes are rare; polls are prebuilt).
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

# CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), one 16-bit entry per byte value, low byte
# first: a bytes constant, so it costs no heap (and stays in flash when frozen).
_T = (
    b"\x00\x00\xc1\xc0\x81\xc1\x40\x01\x01\xc3\xc0\x03\x80\x02\x41\xc2\x01\xc6\xc0\x06\x80\x07\x41\xc7"
    b"\x00\x05\xc1\xc5\x81\xc4\x40\x04\x01\xcc\xc0\x0c\x80\x0d\x41\xcd\x00\x0f\xc1\xcf\x81\xce\x40\x0e"
    b"\x00\x0a\xc1\xca\x81\xcb\x40\x0b\x01\xc9\xc0\x09\x80\x08\x41\xc8\x01\xd8\xc0\x18\x80\x19\x41\xd9"
    b"\x00\x1b\xc1\xdb\x81\xda\x40\x1a\x00\x1e\xc1\xde\x81\xdf\x40\x1f\x01\xdd\xc0\x1d\x80\x1c\x41\xdc"
    b"\x00\x14\xc1\xd4\x81\xd5\x40\x15\x01\xd7\xc0\x17\x80\x16\x41\xd6\x01\xd2\xc0\x12\x80\x13\x41\xd3"
    b"\x00\x11\xc1\xd1\x81\xd0\x40\x10\x01\xf0\xc0\x30\x80\x31\x41\xf1\x00\x33\xc1\xf3\x81\xf2\x40\x32"
    b"\x00\x36\xc1\xf6\x81\xf7\x40\x37\x01\xf5\xc0\x35\x80\x34\x41\xf4\x00\x3c\xc1\xfc\x81\xfd\x40\x3d"
    b"\x01\xff\xc0\x3f\x80\x3e\x41\xfe\x01\xfa\xc0\x3a\x80\x3b\x41\xfb\x00\x39\xc1\xf9\x81\xf8\x40\x38"
    b"\x00\x28\xc1\xe8\x81\xe9\x40\x29\x01\xeb\xc0\x2b\x80\x2a\x41\xea\x01\xee\xc0\x2e\x80\x2f\x41\xef"
    b"\x00\x2d\xc1\xed\x81\xec\x40\x2c\x01\xe4\xc0\x24\x80\x25\x41\xe5\x00\x27\xc1\xe7\x81\xe6\x40\x26"
    b"\x00\x22\xc1\xe2\x81\xe3\x40\x23\x01\xe1\xc0\x21\x80\x20\x41\xe0\x01\xa0\xc0\x60\x80\x61\x41\xa1"
    b"\x00\x63\xc1\xa3\x81\xa2\x40\x62\x00\x66\xc1\xa6\x81\xa7\x40\x67\x01\xa5\xc0\x65\x80\x64\x41\xa4"
    b"\x00\x6c\xc1\xac\x81\xad\x40\x6d\x01\xaf\xc0\x6f\x80\x6e\x41\xae\x01\xaa\xc0\x6a\x80\x6b\x41\xab"
    b"\x00\x69\xc1\xa9\x81\xa8\x40\x68\x00\x78\xc1\xb8\x81\xb9\x40\x79\x01\xbb\xc0\x7b\x80\x7a\x41\xba"
    b"\x01\xbe\xc0\x7e\x80\x7f\x41\xbf\x00\x7d\xc1\xbd\x81\xbc\x40\x7c\x01\xb4\xc0\x74\x80\x75\x41\xb5"
    b"\x00\x77\xc1\xb7\x81\xb6\x40\x76\x00\x72\xc1\xb2\x81\xb3\x40\x73\x01\xb1\xc0\x71\x80\x70\x41\xb0"
    b"\x00\x50\xc1\x90\x81\x91\x40\x51\x01\x93\xc0\x53\x80\x52\x41\x92\x01\x96\xc0\x56\x80\x57\x41\x97"
    b"\x00\x55\xc1\x95\x81\x94\x40\x54\x01\x9c\xc0\x5c\x80\x5d\x41\x9d\x00\x5f\xc1\x9f\x81\x9e\x40\x5e"
    b"\x00\x5a\xc1\x9a\x81\x9b\x40\x5b\x01\x99\xc0\x59\x80\x58\x41\x98\x01\x88\xc0\x48\x80\x49\x41\x89"
    b"\x00\x4b\xc1\x8b\x81\x8a\x40\x4a\x00\x4e\xc1\x8e\x81\x8f\x40\x4f\x01\x8d\xc0\x4d\x80\x4c\x41\x8c"
    b"\x00\x44\xc1\x84\x81\x85\x40\x45\x01\x87\xc0\x47\x80\x46\x41\x86\x01\x82\xc0\x42\x80\x43\x41\x83"
    b"\x00\x41\xc1\x81\x81\x80\x40\x40"
)


def crc16(buf, n, start=0):
    """CRC of buf[start:n]. Over a whole frame including its CRC bytes, the result is 0."""
    t = _T
    c = 0xFFFF
    for i in range(start, n):
        j = ((c ^ buf[i]) & 0xFF) << 1
        c = (c >> 8) ^ (t[j] | (t[j + 1] << 8))
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
