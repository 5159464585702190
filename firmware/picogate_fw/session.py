# The board's side of a link session (docs/link-protocol.md): non-blocking reads from stdin,
# line assembly, acks, retransmits, duplicate memory, bounded queue of unacknowledged frames.
# The frame codec itself is picogate_fw.link (no I/O).
import os
import select
import sys
import time

from micropython import const

from picogate_fw import link

RESEND_MS = const(300)
RESENDS = const(5)
WINDOW = const(8)
QUEUE = const(64)
MEMORY = const(32)
_RX_BURST = const(512)  # bytes read per poll() call at most

RELIABLE_IN = ("cfg", "set", "mbw", "read", "maint", "boot", "reset")
PENDING = "pending"  # a handler's result when the ack comes later (ack_later)


class StdIO:
    """The USB CDC serial (the REPL's stdin/stdout), read without blocking."""

    def __init__(self):
        self.inp = sys.stdin.buffer
        self.out = sys.stdout.buffer
        if sys.platform != "rp2":
            try:
                import termios

                if termios.tcgetattr(0)[3] & 0x0A:  # ICANON | ECHO (setraw drops pending input)
                    termios.setraw(0)  # unix port: no echo, no CR/LF rewriting by the tty
            except (ImportError, OSError):
                pass
        self.poll = select.poll()
        self.poll.register(self.inp, select.POLLIN)
        self.one = bytearray(1)
        self.onemv = memoryview(self.one)

    def read_byte(self):
        """One byte, or -1 when none is waiting."""
        for _ in self.poll.ipoll(0):  # ipoll: no list allocated per call
            if self.inp.readinto(self.onemv):
                return self.one[0]
        return -1

    def write(self, mv):
        self.out.write(mv)


class Session:
    def __init__(self, io, handler):
        self.io = io
        self.handler = handler  # handler(typ, body, seq) -> ack result (str JSON, None or PENDING)
        self.enc = link.Encoder()  # frames sent at once
        self.rd = link.Encoder()  # the reliable frame being built (rd, mb, evt)
        self.rd_open = False
        self.line = bytearray(link.MAX_LINE)
        self.linemv = memoryview(self.line)
        self.n = 0
        self.over = False
        self.seq = 0
        self.sid = "".join("%02x" % b for b in os.urandom(4))  # new at every boot
        self.peer = None  # the host's sid once it said hello
        self.up = False  # a host session is established and acknowledging
        self.q = []  # [seq, frame bytes, sent ticks or -1, resends]
        self.memory = {}  # host seq -> ack result (None: still pending)
        self.order = []
        self.last_rx = time.ticks_ms()
        self.drop = 0  # reliable frames dropped from a full queue
        self.bad = 0  # lines dropped: garbage + bad_crc + oversize + wrong marker
        self.garbage = 0
        self.bad_crc = 0
        self.oversize = 0
        self.resent = 0
        self.sent = 0

    # --- sending ---------------------------------------------------------------------------------

    def next_seq(self):
        s = self.seq
        self.seq = (s + 1) & 0xFFFF
        return s

    def send(self, typ, body=None):
        """A fire-and-forget frame (hello, hb, ack, log)."""
        e = self.enc
        e.start("@", self.next_seq(), typ)
        if body is not None:
            e.sp()
            e.put_str(body)
        self.io.write(e.finish())
        self.sent += 1

    def begin(self, typ):
        """Start a reliable frame in self.rd; the caller appends to it, then calls commit()."""
        e = self.rd
        e.start("@", self.next_seq(), typ)
        self.rd_open = True
        return e

    def commit(self):
        frame = bytes(self.rd.finish())
        self.rd_open = False
        if len(self.q) >= QUEUE:
            self.q.pop(0)
            self.drop += 1
        self.q.append([_seq_of(frame), frame, -1, 0])

    def ack(self, seq, result):
        e = self.enc
        e.start("@", self.next_seq(), "ack")
        e.sp()
        e.put_int(seq)
        if result:
            e.sp()
            e.put_str(result)
        self.io.write(e.finish())
        self.sent += 1

    def ack_later(self, seq, result):
        """The result of a command whose handler returned PENDING."""
        if seq in self.memory:
            self.memory[seq] = result
        self.ack(seq, result)

    def pump(self, now):
        """Send new reliable frames (window permitting) and resend unacknowledged ones. Returns
        False when a frame ran out of resends (the link is down)."""
        if not self.up:
            return True
        k = 0
        for ent in self.q:
            if k >= WINDOW:
                break
            k += 1
            if ent[2] == -1:
                self.io.write(ent[1])
                ent[2] = now
                self.sent += 1
            elif time.ticks_diff(now, ent[2]) >= RESEND_MS:
                if ent[3] >= RESENDS:
                    self.up = False
                    return False
                self.io.write(ent[1])
                ent[2] = now
                ent[3] += 1
                self.resent += 1
        return True

    def restart_flow(self):
        """A new host session: everything unacknowledged goes again, from the start."""
        for ent in self.q:
            ent[2] = -1
            ent[3] = 0

    # --- receiving -------------------------------------------------------------------------------

    def poll_rx(self):
        """Read what is waiting (bounded) and handle every complete line."""
        io = self.io
        line = self.line
        for _ in range(_RX_BURST):
            b = io.read_byte()
            if b < 0:
                return
            if b == 10:
                if self.over:
                    self.oversize += 1
                    self.bad += 1
                else:
                    self._line(self.n)
                self.n = 0
                self.over = False
            elif self.over:
                continue
            elif self.n >= link.MAX_LINE - 1:  # no room for the LF: too long, skip to the next LF
                self.over = True
            else:
                line[self.n] = b
                self.n += 1

    def _line(self, n):
        r = link.decode(self.linemv[:n])
        if isinstance(r, str):
            self.bad += 1
            if r == link.BAD_CRC:
                self.bad_crc += 1
            elif r == link.OVERSIZE:
                self.oversize += 1
            else:
                self.garbage += 1
            return
        marker, seq, typ, body = r
        if marker != "#":  # our own frames echoed back, or another board: not for us
            self.bad += 1
            self.garbage += 1
            return
        self.last_rx = time.ticks_ms()
        if typ == "ack":
            self._acked(body)
            return
        if typ in RELIABLE_IN:
            if seq in self.memory:
                res = self.memory[seq]
                if res is not None:
                    self.ack(seq, res)  # a repeat: acknowledged again, not acted on again
                return
            self.memory[seq] = None
            self.order.append(seq)
            if len(self.order) > MEMORY:
                self.memory.pop(self.order.pop(0), None)
            res = self.handler(typ, body, seq)
            if res is PENDING:
                return
            self.memory[seq] = res
            self.ack(seq, res)
            return
        self.handler(typ, body, seq)

    def new_peer(self, sid):
        """The host's hello: a new sid resets the duplicate memory and restarts the flow."""
        if sid != self.peer:
            self.peer = sid
            self.memory = {}
            self.order = []
        self.up = True
        self.restart_flow()

    def _acked(self, body):
        if not body:
            return
        seq = 0
        for i in range(len(body)):
            c = body[i]
            if c == " ":
                break
            if not "0" <= c <= "9":
                self.bad += 1
                return
            seq = seq * 10 + ord(c) - 48
        q = self.q
        for i in range(len(q)):
            if q[i][0] == seq:
                q.pop(i)
                return


def _seq_of(frame):
    s = 0
    for i in range(1, 7):
        c = frame[i]
        if c == 32:
            break
        s = s * 10 + c - 48
    return s
