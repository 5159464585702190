# A UART of the simulated board (MicroPython's unix port): a host tty (e.g. one end of a socat
# pty pair) opened raw and non-blocking through termios (VMIN = VTIME = 0: a read returns what is
# there, possibly nothing). It offers the subset of machine.UART that picogate_fw.mb_master uses:
# write, readinto, any, flush, deinit. The unix port has no FIONREAD, so any() moves what the tty
# holds into a buffer of our own (allocated once) and counts it.
import termios

from micropython import const

_VTIME = const(5)  # indexes into termios' cc list (Linux)
_VMIN = const(6)
_SIZE = const(1024)


class SimUART:
    # A pty delivers bytes in bursts decided by the host scheduler, not at the baud rate: the
    # master waits at least this long without a new byte before it takes a short reply as ended.
    min_gap_us = 3000

    def __init__(self, path, baud=19200, bits=8, parity=None, stop=1):
        self.path = path
        self.baud = baud
        try:
            self._f = open(path, "r+b", buffering=0)
        except OSError as e:
            raise OSError(e.errno if hasattr(e, "errno") else 19, "uart: cannot open %s" % path)
        fd = self._f.fileno()
        termios.setraw(fd)
        a = termios.tcgetattr(fd)
        a[6][_VMIN] = 0
        a[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, a)
        self._buf = bytearray(_SIZE)
        self._scratch = bytearray(256)
        self._head = 0
        self._tail = 0

    def _pump(self):
        f = self._f
        s = self._scratch
        b = self._buf
        while True:
            room = _SIZE - self._tail
            if room <= 0:
                if self._head == 0:
                    return  # full: leave the rest in the tty
                self._compact()
                continue
            k = f.readinto(s, room if room < 256 else 256)
            if not k:
                return
            t = self._tail
            for i in range(k):
                b[t + i] = s[i]
            self._tail = t + k

    def _compact(self):
        b = self._buf
        h = self._head
        n = self._tail - h
        for i in range(n):
            b[i] = b[h + i]
        self._head = 0
        self._tail = n

    def any(self):
        if self._f is None:
            return 0
        self._pump()
        return self._tail - self._head

    def readinto(self, buf, nbytes=None):
        n = self.any()
        if nbytes is None or nbytes > len(buf):
            nbytes = len(buf)
        if n > nbytes:
            n = nbytes
        b = self._buf
        h = self._head
        for i in range(n):
            buf[i] = b[h + i]
        h += n
        if h == self._tail:
            self._head = self._tail = 0
        else:
            self._head = h
        return n if n else None  # as machine.UART: None when nothing came

    def write(self, buf):
        if self._f is None:
            raise OSError(9, "uart closed")
        return self._f.write(buf)

    def flush(self):
        pass  # a pty takes the bytes at once

    def deinit(self):
        f, self._f = self._f, None
        if f is not None:
            f.close()
