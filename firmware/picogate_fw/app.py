# The application: link session, configuration, I/O points, Modbus buses, safe state, watchdog.
# main.py starts it with run(wdt, boots, crash) after the boot window.
import gc
import json
import sys
import time

import asyncio
from micropython import const

from picogate_fw import VERSION, config, hal, link, points
from picogate_fw.session import PENDING, Session, StdIO

_LOOP_MS = const(2)
_HEALTHY_MS = const(10000)  # pg_boots goes back to 0 after this long healthy
_STALL_MS = const(30000)  # a task that made no progress for this long makes the loop unhealthy
_RD_FLUSH = const(900)
_MB_BATCH_MS = const(20)  # Modbus results wait at most this long for others to share their frame  # bytes: a reading frame is committed before it grows past this
_BUS_KEYS = tuple("mb%d" % i for i in range(8))
_STATUS = {"ok": b"ok", "exc": b"exc", "timeout": b"timeout", "crc": b"crc"}
CAPS = ("di", "cnt", "do", "pwm", "adc", "temp")  # always; plus the drivers present (_caps)
_OPTIONAL = (("ds18b20", "drv_ds18b20"), ("dht22", "drv_dht22"), ("sht3x", "drv_sht3x"), ("mb", "mb_master"))


def _caps():
    """What this firmware can do: the built-in kinds and every optional module it carries."""
    import os

    caps = list(CAPS)
    for cap, mod in _OPTIONAL:
        for ext in (".mpy", ".py"):
            try:
                os.stat("picogate_fw/" + mod + ext)
                caps.append(cap)
                break
            except OSError:
                pass
    return caps


class ApplyError(Exception):
    """A configuration that validated but could not be applied: (field, message)."""


def _fw_hash():
    try:
        with open("pg_fw.json") as f:
            return json.load(f).get("hash") or "dev"
    except (OSError, ValueError):
        return "dev"


def _ok(extra=""):
    return '{"ok":true' + extra + "}"


def _err(code, msg):
    return '{"ok":false,"code":%s,"msg":%s}' % (link.json_str(code), link.json_str(msg))


class App:
    def __init__(self, wdt, boots, crash):
        self.wdt = wdt
        self.boots = boots
        self.crash = crash if boots > 1 else None  # the boot before this one failed
        self.t0 = time.ticks_ms()
        self.io = StdIO()
        self.s = Session(self.io, self.handle)
        self.cfg = None
        self.cfg_text = None
        self.cfg_id = None
        self.pts = []
        self.by_id = {}
        self.sensors = []
        self.buses = {}
        self.tasks = []
        self.parts = None  # cfg parts being received: [total, next, [texts]]
        self.hb_ms = 1000
        self.safe_ms = 5000
        self.safe = False
        self.next_hb = self.t0
        self.mb_open = False
        self.mb_t0 = 0
        self.after_ack = None  # what to do once the ack of maint/boot/reset went out
        self.healthy_since = self.t0
        self.cleared_boots = boots == 0
        self.progress = {}  # task name -> ticks of its last progress
        self.full_due = False
        self.lag = 0  # longest time between two main-loop rounds since the last heartbeat, ms
        self.caps = _caps()
        text, cfg = config.load()
        if cfg is not None:
            try:
                self.apply(text, cfg)
            except Exception as ex:  # a stored config that no longer applies: run without one
                self.log("error", "stored config not applied: %s" % ex)
                self.clear()

    # --- configuration ---------------------------------------------------------------------------

    def clear(self):
        for t in self.tasks:
            t.cancel()
        self.tasks = []
        for p in self.pts:
            try:
                p.close()
            except Exception:
                pass
        for b in self.buses.values():
            try:
                b.close()
            except Exception:
                pass
        self.pts = []
        self.by_id = {}
        self.sensors = []
        self.buses = {}
        self.cfg = self.cfg_text = self.cfg_id = None

    def apply(self, text, cfg):
        self.clear()
        self.cfg = cfg
        self.cfg_text = text
        self.cfg_id = config.cfg_hash(text)
        self.hb_ms = cfg["hb_ms"]
        self.next_hb = time.ticks_ms()  # the new period starts now
        self.safe_ms = cfg["safe_ms"]
        self.safe = False
        now = time.ticks_ms()
        for i, c in enumerate(cfg["io"]):
            try:
                p = points.make(c)
            except ValueError as ex:  # a driver refused its settings: "field: message"
                msg = str(ex)
                k = msg.find(": ")
                field = "io[%d]" % i + ("." + msg[:k] if k > 0 else "")
                raise ApplyError(field, msg[k + 2 :] if k > 0 else msg)
            p.due = now
            self.pts.append(p)
            self.by_id[p.id] = p
            if isinstance(p, points.Sensor):
                self.sensors.append(p)
                self.tasks.append(asyncio.create_task(self.sensor_task(p)))
        for i, b in enumerate(cfg["mb"]):
            try:
                self.start_bus(b, "mb[%d]." % i)
            except ValueError as ex:  # the master refused its settings: "mb[i].field: message"
                msg = str(ex)
                k = msg.find(": ")
                raise ApplyError(msg[:k] if k > 0 else "mb[%d]" % i, msg[k + 2 :] if k > 0 else msg)
        self.full_due = True

    def start_bus(self, b, where):
        try:
            from picogate_fw.mb_master import Master
        except ImportError:
            self.log("error", "no Modbus master in this firmware")
            return
        m = Master(hal, b, self.on_mb, where=where)
        self.buses[b["bus"]] = m
        self.tasks.append(asyncio.create_task(m.run()))

    # --- commands from the host ------------------------------------------------------------------

    def handle(self, typ, body, seq):
        if typ == "hello":
            return self.on_hello(body)
        if typ == "hb":
            return None
        try:
            if typ == "cfg":
                return self.on_cfg(body)
            if typ == "set":
                return self.on_set(json.loads(body or "{}"))
            if typ == "read":
                return self.on_read(json.loads(body or "{}"))
            if typ == "mbw":
                return self.on_mbw(json.loads(body or "{}"), seq)
            if typ in ("maint", "boot", "reset"):
                self.after_ack = typ
                return _ok()
        except ValueError:
            return _err("bad_request", "body of %s is not valid JSON" % typ)
        except (KeyError, TypeError, AttributeError) as ex:
            return _err("bad_request", "%s: %s" % (typ, ex))
        self.s.bad += 1  # an unknown type: counted, no action
        return None

    def on_hello(self, body):
        try:
            h = json.loads(body or "{}")
            sid = h.get("sid")
            proto = h.get("proto")
        except (ValueError, AttributeError):
            self.s.bad += 1
            return None
        if proto != 1:
            self.log("error", "host speaks protocol %s, this firmware 1" % proto)
        self.s.new_peer(sid)
        self.parts = None  # a configuration half received from an earlier session is dropped
        self.send_hello()
        self.full_due = True
        return None

    def send_hello(self):
        j = link.json_str
        body = (
            '{"proto":1,"sid":%s,"fw":%s,"hash":%s,"board":%s,"mp":%s,"mpy":%s,"uid":%s,"caps":[%s],'
            '"ticks":%d,"cfg":%s,"mode":"run","boots":%d,"crash":%s}'
            % (
                j(self.s.sid),
                j(VERSION),
                j(_fw_hash()),
                j(hal.board_name()),
                j("%d.%d.%d" % sys.implementation.version[:3]),
                _mpy_version(),
                j(hal.uid()),
                ",".join(j(c) for c in self.caps),
                hal.ticks(),
                j(self.cfg_id) if self.cfg_id else "null",
                self.boots,
                j(self.crash) if self.crash else "null",
            )
        )
        self.s.send("hello", body)

    def on_cfg(self, body):
        sp = body.find(" ") if body else -1
        head = body[:sp] if sp > 0 else (body or "")
        slash = head.find("/")
        try:
            part, total = int(head[:slash]), int(head[slash + 1 :])
        except ValueError:
            return self.cfg_errors([("cfg", "body must be part/total then the text, got %r" % head[:20])])
        text = body[sp + 1 :] if sp > 0 else ""
        if part == 1:
            self.parts = [total, 1, [], 0]
        p = self.parts
        if p is None or part != p[1] or total != p[0] or total < 1 or part > total:
            self.parts = None
            return self.cfg_errors([("cfg", "part %d/%d out of order: send the document again from part 1"
                                     % (part, total))])
        p[3] += len(text)
        if p[3] > config.MAX_DOC:
            self.parts = None
            return self.cfg_errors([("cfg", "document longer than %d bytes" % config.MAX_DOC)])
        p[2].append(text)
        p[1] += 1
        if part < total:
            return _ok()
        doc = "".join(p[2])
        self.parts = None
        gc.collect()
        cfg, errors = config.validate(doc)
        if errors:
            return self.cfg_errors(errors)
        cid = config.cfg_hash(doc)
        if cid != self.cfg_id:  # the same config again: outputs are not disturbed
            old_text, old = self.cfg_text, self.cfg
            try:
                self.apply(doc, cfg)
            except Exception as ex:  # the old configuration comes back
                self.clear()
                if old is not None:
                    self.apply(old_text, old)
                if isinstance(ex, ApplyError):
                    return self.cfg_errors([ex.args])
                return self.cfg_errors([("cfg", "not applied: %s" % ex)])
            config.save(doc)
        return '{"ok":true,"cfg":%s}' % link.json_str(cid)

    def cfg_errors(self, errors):
        return '{"ok":false,"errors":%s}' % config.errors_json(errors)

    def on_set(self, req):
        pid = req["id"]
        p = self.by_id.get(pid)
        if p is None:
            return _err("unknown_point", "no point %s" % pid)
        if not p.writable:
            return _err("read_only", "%s is a %s point" % (pid, type(p).__name__.lower()))
        bad = p.check(req.get("v"))
        if bad:
            return _err(bad[0], bad[1])
        p.write(req["v"])
        return _ok(',"v":' + p.value_json())

    def on_read(self, req):
        if "bus" in req:
            m = self.buses.get(req["bus"])
            if m is None:
                return _err("unknown_point", "no Modbus bus %s" % req["bus"])
            try:
                m.read_now(req.get("req", 0))
            except ValueError as ex:
                return _err("unknown_point", "bus %s: %s" % (req["bus"], ex))
            return _ok()
        ids = req.get("ids")
        if ids is None:
            self.full_due = True
            return _ok()
        for pid in ids:
            if pid not in self.by_id:
                return _err("unknown_point", "no point %s" % pid)
        for pid in ids:
            self.by_id[pid].changed = True  # reported in this round (sensors: their last value)
        return _ok()

    def on_mbw(self, req, seq):
        m = self.buses.get(req["bus"])
        if m is None:
            return _err("unknown_point", "no Modbus bus %s" % req["bus"])
        fc = req["fc"]
        if fc not in (5, 6, 15, 16):
            return _err("bad_request", "fc must be 5, 6, 15 or 16")
        v = req["v"]
        if not isinstance(v, list) or not v:
            return _err("bad_type", "v must be a non-empty list")

        def done(status, code=None):
            if status == "ok":
                res = _ok()
            elif status == "exc":
                res = '{"ok":false,"code":"device_error","exc":%d}' % code
            elif status == "timeout":
                res = _err("timeout", "no reply from unit %s" % req["u"])
            elif status == "bad":  # the master refused the write: code names the field
                res = _err("bad_request", str(code))
            elif status == "crc":
                res = _err("device_error", "corrupt reply from unit %s" % req["u"])
            else:  # "busy" (write queue full), "closed" (the configuration changed)
                res = _err("device_error", "write not done: bus %s" % status)
            self.s.ack_later(seq, res)

        m.write(req["u"], fc, req["a"], v, done)
        return PENDING

    # --- board -> host ---------------------------------------------------------------------------

    def log(self, lvl, msg):
        self.s.send("log", '{"lvl":%s,"msg":%s}' % (link.json_str(lvl), link.json_str(msg)))

    def on_mb(self, bus, req, status, data):
        """fw-bus's master reports one result: appended to the mb frame of this round."""
        self.progress[_BUS_KEYS[bus & 7]] = time.ticks_ms()  # the bus task is alive
        s = self.s
        e = s.rd
        if s.rd_open and e.room() < 60 + (2 * len(data) if status == "ok" else 0):
            self.flush_open()
        if not s.rd_open or not self.mb_open:
            self.flush_open()
            e = s.begin(b"mb")
            e.sp()
            e.put_int(hal.ticks())
            self.mb_open = True
            self.mb_t0 = time.ticks_ms()
        e.sp()
        e.put_int(bus)
        e.put_byte(0x2E)
        e.put_int(req)
        e.sp()
        e.put_str(_STATUS.get(status, b"err"))
        if status == "ok":
            e.sp()
            _put_hex(e, data)
        elif status == "exc":
            e.sp()
            e.put_int(data)

    def flush_open(self):
        if self.s.rd_open:
            self.s.commit()
        self.mb_open = False
        self.mb_t0 = 0

    def report(self, now, full):
        """Readings due (periodic), changed (on change), or all (full report) in rd frames."""
        s = self.s
        for p in self.sensors:
            if p.event:
                p.event = False
                self.flush_open()
                e = s.begin(b"evt")
                e.sp()
                ok = p.vals is not None
                e.put_str('{"k":"sensor","id":%s,"ok":%s,"why":%s}' % (
                    link.json_str(p.id), "true" if ok else "false",
                    "null" if ok else link.json_str(p.why.decode()[1:])))
                s.commit()
        e = None
        for p in self.pts:
            send = p.changed or full  # changed: on change, or asked for with `read`
            if p.periodic:
                if isinstance(p, points.Sensor):
                    send = send or p.fresh
                    p.fresh = False
                elif time.ticks_diff(now, p.due) >= 0:
                    p.due = time.ticks_add(now, p.every)
                    send = True
            if not send:
                continue
            p.changed = False
            if e is None or self.mb_open:
                if s.rd_open:
                    self.flush_open()
                e = s.begin(b"rd")
                e.sp()
                e.put_int(hal.ticks())
            p.put(e)
            if e.room() < 1024 - _RD_FLUSH:
                s.commit()
                e = None
        if e is not None:
            s.commit()

    def send_hb(self, now):
        s = self.s
        gc.collect()  # once per heartbeat: short, regular collections; "mem" is then comparable
        up = time.ticks_diff(now, self.t0) // 1000
        s.send(
            "hb",
            '{"ticks":%d,"q":%d,"drop":%d,"bad":%d,"mem":%d,"up":%d,"safe":%s,"lag":%d}'
            % (hal.ticks(), len(s.q), s.drop, s.bad, gc.mem_free(), up, "true" if self.safe else "false", self.lag),
        )
        self.lag = 0

    # --- tasks -----------------------------------------------------------------------------------

    async def sensor_task(self, p):
        while True:
            await p.poll()
            p.fresh = True
            self.progress[p.id] = time.ticks_ms()
            await asyncio.sleep_ms(p.every)

    def check_safe(self, now):
        if self.safe or not self.safe_ms:
            return
        if time.ticks_diff(now, self.s.last_rx) < self.safe_ms:
            return
        self.safe = True
        for p in self.pts:
            if p.writable and p.safe is not None:
                p.write(p.safe)
        self.log("warn", "host silent for %d ms: outputs in their safe state" % self.safe_ms)

    def healthy(self, now):
        pr = self.progress
        for k in pr:
            if time.ticks_diff(now, pr[k]) > _STALL_MS:
                return False
        return True

    async def main(self):
        s = self.s
        self.send_hello()
        prev = time.ticks_ms()
        while True:
            now = time.ticks_ms()
            gap = time.ticks_diff(now, prev)  # this round's start after the last one's
            prev = now
            if gap > self.lag:
                self.lag = gap
            hal.service()
            s.poll_rx()
            if self.after_ack:
                self.finish(self.after_ack)
            if self.safe and time.ticks_diff(now, s.last_rx) < self.safe_ms:
                self.safe = False  # the host is back; outputs stay as they are until it sets them
            for p in self.pts:
                if type(p) is points.DI:
                    p.scan(now)
            full = self.full_due
            if time.ticks_diff(now, self.next_hb) >= 0:
                self.next_hb = time.ticks_add(self.next_hb, self.hb_ms)  # no drift
                if time.ticks_diff(now, self.next_hb) >= 0:
                    self.next_hb = time.ticks_add(now, self.hb_ms)  # far behind: start again
                if s.up:
                    self.send_hb(now)
                else:
                    self.send_hello()  # no host session (yet, or the link went down): ask for one
                full = True
            self.full_due = False
            self.report(now, full)
            if s.rd_open and (not self.mb_open or time.ticks_diff(now, self.mb_t0) >= _MB_BATCH_MS):
                self.flush_open()  # an mb frame gathers results for a while: fewer, fuller frames
            if not s.pump(now):
                self.send_hello()
            self.check_safe(now)
            if self.healthy(now):
                if self.wdt is not None:
                    self.wdt.feed()
                if not self.cleared_boots and time.ticks_diff(now, self.healthy_since) >= _HEALTHY_MS:
                    _write("pg_boots", "0")
                    self.cleared_boots = True
            else:
                self.healthy_since = now
            await asyncio.sleep_ms(_LOOP_MS)

    def finish(self, what):
        self.after_ack = None
        time.sleep_ms(50)  # let the ack leave
        if what == "maint":
            _write("pg_maint", "1")
            hal.reset()
        elif what == "boot":
            hal.bootloader()
        else:
            hal.reset()


def _put_hex(e, data):
    h = b"0123456789abcdef"
    b = e.buf
    n = e.n
    for i in range(len(data)):  # index, not iteration: no iterator allocated
        x = data[i]
        b[n] = h[x >> 4]
        b[n + 1] = h[x & 15]
        n += 2
    e.n = n


def _mpy_version():
    m = getattr(sys.implementation, "_mpy", 0)
    return "%d.%d" % (m & 0xFF, (m >> 8) & 3)


def _write(name, text):
    with open(name, "w") as f:
        f.write(text)


def run(wdt, boots, crash):
    app = App(wdt, boots, crash)
    asyncio.run(app.main())
