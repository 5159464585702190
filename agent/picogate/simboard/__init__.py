"""A simulated Pico: the real firmware on MicroPython's unix port, behind a stable serial port.

`SimBoard(dir)` runs the board directory `dir` (the board's flash filesystem: main.py,
picogate_fw/, pg_cfg.json, pg_sim.json, ...) under `micropython -X heapsize=…` with the process's
stdin/stdout/stderr on a pty, and relays that pty to a second pty whose slave the host opens at
`board.port` (a symlink that stays the same across restarts: what pyserial and mpremote open).

Like a real board:

- When the process ends it is started again (`board.restarts` counts): exit status 0 of main.py
  means main.py returned to the REPL, so a plain REPL process follows; `sys.exit(75)`
  (`EXIT_RESET`, the firmware's `machine.reset()` on the unix port) or a crash or `kill()` boots
  main.py again; Ctrl-D at the REPL (a soft reset) prints `MPY: soft reboot` and boots main.py,
  or, when the host had put the REPL into raw mode (Ctrl-A), comes back in the raw REPL
  (`raw REPL; CTRL-B to exit\\r\\n>`), as mpremote expects. `sys.exit(76)` (`EXIT_BOOTLOADER`,
  `machine.bootloader()`) leaves the port (UF2 mode) until `replug()`.
- A hard reset (`EXIT_RESET`) re-enumerates USB: the port disappears for a moment, so the host's
  open port fails and it has to open it again (pass `usb_reset=False` to keep it open).
- Bytes the board writes while no host has the port open are dropped (USB CDC without DTR), and
  the host side is raw (no echo, no CR/LF rewriting). Input the host sent is lost at a reset.
- The watchdog: the firmware arms and feeds it through a FIFO (`PICOGATE_WDT`); when it is not
  fed within its timeout the process is killed and boots again, as the chip would reset
  (`board.wdt_resets` counts).
- At the REPL, `import machine` also has `reset()`, `bootloader()`, `unique_id()` (firmware/sim is
  on MICROPYPATH). The process gets `PICOGATE_UID` and `PICOGATE_BOARD` in its environment.

API (synchronous, thread-based; fine to call from asyncio code, nothing blocks for long):

    board = SimBoard(dir, heapsize="220wK", uid="E6614103E7000001", board="pico",
                     port=None, usb_reset=True).start()     # or: with SimBoard(dir) as board:
    board.port            # the serial path (stable across restarts and replugs)
    board.restarts        # process starts after the first
    board.exits           # exit statuses so far (negative: killed by a signal)
    board.mode            # "main" | "repl" | "raw" | "bootloader" | "off"
    board.inject(b"...", to="board")   # bytes into the board's stdin as if the host sent them
    board.inject(b"...", to="host")    # bytes to the host as if the board sent them
    board.unplug(power_off=False); board.replug()
    board.kill()          # SIGKILL the process (crash); it boots again
    board.output(since)   # everything the board wrote (last 256 KiB), see output_pos()
    board.wait_for_output(b"needle", since=pos, timeout=10); board.wait_restarts(n)
    board.stop()

`install_firmware(dir, scenario=json_text)` copies firmware/main.py and firmware/picogate_fw/ into
a board directory (and writes pg_sim.json). `python -m picogate.simboard DIR` runs one board in
the foreground and prints its port.
"""

from picogate.simboard._board import EXIT_BOOTLOADER, EXIT_RESET, SimBoard, SimBoardError, install_firmware

__all__ = ["EXIT_BOOTLOADER", "EXIT_RESET", "SimBoard", "SimBoardError", "install_firmware"]
