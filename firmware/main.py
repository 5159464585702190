# Picogate board start-up (always plain source, so that it runs even if the firmware package is
# broken). Modes (docs/link-protocol.md, "Modes"):
#   maintenance  pg_maint present (written by the link's `maint` command) or BOOTSEL held:
#                the flag is removed and main.py returns to the REPL: no watchdog, no I/O
#   safe         3 boots in a row did not run healthy for 10 s (crashes): REPL only, no I/O; the
#                first line of pg_crash.txt is printed; the counter restarts, so that the next
#                reset (the agent's soft reset, with backoff) tries the application again
#   run          after a 2 s boot window (Ctrl-C reaches the REPL): Ctrl-C off, watchdog armed,
#                picogate_fw.app runs. An exception escaping it: traceback to pg_crash.txt, reset.
import sys
import time

RP2 = sys.platform == "rp2"
WDT_MS = 8000  # RP2040 allows at most 8388 ms
BOOT_WINDOW_MS = 2000
SAFE_AFTER = 3


def _read(name):
    try:
        with open(name) as f:
            return f.read()
    except OSError:
        return None


def _write(name, text):
    with open(name, "w") as f:
        f.write(text)


def _remove(name):
    import os

    try:
        os.remove(name)
        return True
    except OSError:
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
    raw = _read("pg_boots")
    try:
        boots = int(raw) if raw else 0
    except ValueError:
        boots = 0
    if _remove("pg_maint"):
        print("picogate: maintenance mode (pg_maint): REPL only, no watchdog, no I/O")
        return
    if RP2:
        import rp2

        if rp2.bootsel_button():
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
