# Picogate board start-up (always plain source, so that it runs even if the firmware package is
# broken). Modes (docs/link-protocol.md, "Modes"):
#   maintenance  pg_maint present (written by the link's `maint` command) or BOOTSEL held:
#                the flag is removed and main.py returns to the REPL: no watchdog, no I/O
#   safe         3 boots in a row did not run healthy for 10 s (crashes): REPL only, no I/O; the
#                first line of pg_crash.txt is printed; the counter restarts, so that the next
#                reset (the agent's soft reset, with backoff) tries the application again
#   run          after a 2 s boot window (Ctrl-C reaches the REPL): Ctrl-C off, watchdog armed,
#                picogate_fw.app runs. An exception escaping it: traceback to pg_crash.txt, reset.
# Before any of them (unless BOOTSEL is held), a firmware commit or rollback that a power cut
# interrupted is finished, or undone (_recover; the steps are the flasher's, picogate/flash/_deploy.py).
import sys
import time

RP2 = sys.platform == "rp2"
WDT_MS = 8000  # RP2040 allows at most 8388 ms
BOOT_WINDOW_MS = 2000
SAFE_AFTER = 3
_FW = "pg_fw.json"


def _read(name):
    try:
        with open(name) as f:
            return f.read()
    except OSError:
        return None


def _write(name, text):
    with open(name, "w") as f:
        f.write(text)


def _mkdir(name):
    import os

    try:
        os.mkdir(name)
    except OSError:
        pass


def _copy(a, b):
    buf = bytearray(512)
    m = memoryview(buf)
    with open(a, "rb") as f:
        with open(b, "wb") as g:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                g.write(m[:n])


def _remove(name):
    import os

    try:
        os.remove(name)
        return True
    except OSError:
        return False


def _exists(p):
    import os

    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _rm(p):
    import os

    try:
        os.remove(p)
    except OSError:
        if not _exists(p):
            return
        for e in list(os.ilistdir(p)):
            _rm(p + "/" + e[0])
        os.rmdir(p)


def _mv(a, b):
    import os

    try:
        os.rename(a, b)
    except OSError:
        _rm(b)
        os.rename(a, b)


def _complete(src, want_fw):
    """Does the version being installed exist whole, in src/ and, for what already moved, at the root:
    every file its manifest lists, with that sha256? Items leave src/ in a fixed order (_forward's):
    one still there before a later one gone is not."""
    m, p, f = _exists(src + "/main.py"), _exists(src + "/picogate_fw"), _exists(src + "/" + _FW)
    there = False
    for x in ((p, f, m) if src == "pg_old" else (m, p, f)) if want_fw else (p, m):
        if there and not x:
            return False
        there = there or x
    if not want_fw:  # a previous version without manifest (rollback to a development install)
        return (m or _exists("main.py")) and (p or _exists("picogate_fw"))
    import json

    try:
        files = json.loads(_read(src + "/" + _FW if f else _FW) or "")["files"]
    except (ValueError, KeyError, TypeError):
        return False
    import binascii

    try:
        import hashlib

        hashing = True
    except ImportError:  # a MicroPython without it: the files' presence only
        hashing = False

    buf = bytearray(512)
    m = memoryview(buf)
    for path in files:
        top = path.split("/", 1)[0]
        where = (src + "/" if _exists(src + "/" + top) else "") + path
        if not hashing:
            if not _exists(where):
                return False
            continue
        h = hashlib.sha256()
        try:
            with open(where, "rb") as fh:
                while True:
                    n = fh.readinto(buf)
                    if not n:
                        break
                    h.update(m[:n])
        except OSError:
            return False
        if binascii.hexlify(h.digest()).decode() != files[path]:
            return False
    return True


def _swap_main(src, save):
    if _exists(src + "/main.py"):
        if _exists("main.py"):
            _copy("main.py", save + "/main.py")
        _mv(src + "/main.py", "main.py")  # one rename: there is always a main.py


def _forward(src, save):
    """The rest of the swap: src/ becomes the running version, the running one goes into save/, in
    the flasher's order. A commit's main.py comes first (it can finish the rest), a rollback's last
    (the previous version's main.py may be one from before this recovery)."""
    import os

    _mkdir(save)
    if src == "pg_new":
        _swap_main(src, save)
    if _exists(_FW) and (_exists(src + "/picogate_fw") or _exists(src + "/" + _FW)):
        _mv(_FW, save + "/" + _FW)
    if _exists(src + "/picogate_fw"):
        if _exists("picogate_fw"):
            _mv("picogate_fw", save + "/picogate_fw")
        os.rename(src + "/picogate_fw", "picogate_fw")
    if _exists(src + "/" + _FW):
        _mv(src + "/" + _FW, _FW)
    _swap_main(src, save)
    _rm(src)
    if src == "pg_old":
        os.rename(save, "pg_old")
    _write("pg_boots", "0")


def _back(src, save):
    """Undo the swap: what moved into save/ goes back (src/ could not complete a version)."""
    if not _exists(src + "/main.py") and _exists(save + "/main.py"):
        _mv(save + "/main.py", "main.py")
    if _exists(save + "/picogate_fw"):
        _mv(save + "/picogate_fw", "picogate_fw")
    if _exists(save + "/" + _FW):
        _mv(save + "/" + _FW, _FW)
    elif not _exists(src + "/" + _FW) and not _exists(src + "/picogate_fw"):
        _remove(_FW)  # the new manifest over files that are not all there: report "dev", not a lie


def _recover():
    """pg_commit ("<source folder> <1 if it has a manifest>") is there only while the flasher's commit
    or rollback runs: a power cut interrupted it. Finish it, or undo it; never raise (a failure is
    printed and kept in pg_crash.txt, the journal stays, main.py returns to the REPL)."""
    j = _read("pg_commit")
    if j is None:
        return True
    try:
        src, want = j.split()
        if src not in ("pg_new", "pg_old"):
            raise ValueError("pg_commit: " + j)
        save = "pg_old" if src == "pg_new" else "pg_new"
        if src == "pg_old" and not _exists(save):
            _write("pg_boots", "0")  # the rollback's last rename (pg_new/ to pg_old/) was done
            how = "finished"
        elif _complete(src, want == "1"):
            _forward(src, save)
            how = "finished"
        else:
            _back(src, save)
            how = "undone"
        _remove("pg_commit")
        print(
            "picogate: a firmware %s interrupted by a reset was %s"
            % ("commit" if src == "pg_new" else "rollback", how)
        )
        return True
    except Exception as e:
        msg = "recovery of an interrupted firmware commit failed: %r" % (e,)
        print("picogate: " + msg + ": REPL")
        try:
            _write("pg_crash.txt", "boot 0: " + msg + "\n")
        except Exception:
            pass
        return False


def _reset():
    if RP2:
        import machine

        machine.reset()
    sys.exit(75)  # picogate.simboard boots main.py again


def _raw_tty():
    """Unix port: the tty neither echoes nor rewrites CR/LF nor turns Ctrl-C into a signal (setraw
    discards pending input, so only when the tty is not raw already)."""
    if RP2:
        return
    try:
        import termios

        if termios.tcgetattr(0)[3] & 0x0A:  # ICANON | ECHO
            termios.setraw(0)
    except (ImportError, OSError):
        pass


def _boot_window():
    """Wait BOOT_WINDOW_MS; a Ctrl-C (0x03) from the host raises KeyboardInterrupt. On the Pico the
    REPL's keyboard interrupt does it; on the unix port (raw tty, no SIGINT) we look at stdin."""
    import select

    p = select.poll()
    p.register(sys.stdin.buffer, select.POLLIN)
    one = bytearray(1)
    window = BOOT_WINDOW_MS
    if not RP2:
        import os

        window = int(os.getenv("PICOGATE_BOOT_WINDOW_MS") or window)  # simulated boards in tests
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < window:
        if p.poll(20) and sys.stdin.buffer.readinto(one) and one[0] == 3:
            raise KeyboardInterrupt


def main():
    held = False
    if RP2:
        import rp2

        held = bool(rp2.bootsel_button())
    if not held and not _recover():
        return
    raw = _read("pg_boots")
    try:
        boots = int(raw) if raw else 0
    except ValueError:
        boots = 0
    if _remove("pg_maint"):
        print("picogate: maintenance mode (pg_maint): REPL only, no watchdog, no I/O")
        return
    if held:
        print("picogate: maintenance mode (BOOTSEL held): REPL only, no watchdog, no I/O")
        return
    crash = _read("pg_crash.txt")
    crash_line = crash.split("\n", 1)[0] if crash else None
    if boots >= SAFE_AFTER:
        _write("pg_boots", "0")
        print("picogate: safe mode after %d failed boots: REPL only, no I/O. Last crash: %s" % (boots, crash_line))
        return
    _write("pg_boots", str(boots + 1))
    _raw_tty()
    print("picogate: starting (Ctrl-C within %d ms for the REPL)" % BOOT_WINDOW_MS)
    try:
        _boot_window()
    except KeyboardInterrupt:
        _write("pg_boots", str(boots))  # an interrupted boot is not a failed one
        print("picogate: boot interrupted: REPL")
        return
    import micropython

    micropython.kbd_intr(-1)  # a stray 0x03 on the link is a dropped byte, not an interrupt
    try:
        if RP2:
            import machine

            wdt = machine.WDT(timeout=WDT_MS)
        else:
            from picogate_fw import hal

            wdt = hal.wdt(WDT_MS)  # simulated under picogate.simboard
        import picogate_fw.app

        picogate_fw.app.run(wdt, boots + 1, crash_line)
    except Exception as e:
        try:
            import io

            buf = io.StringIO()
            sys.print_exception(e, buf)
            tb = buf.getvalue()
            last = tb.strip().split("\n")[-1]
            _write("pg_crash.txt", "boot %d: %s\n%s" % (boots + 1, last, tb))
            sys.print_exception(e)
        finally:
            _reset()


main()
