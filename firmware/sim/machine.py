# The `machine` module as seen at the REPL of a simulated board (MicroPython unix port under
# picogate.simboard). It extends the unix port's own `machine` with what a flasher or an operator
# uses at a Pico's REPL. Not part of the firmware (the firmware's picogate_fw.hal simulates the
# board on its own); picogate.simboard puts this folder on MICROPYPATH.
# Exit codes are picogate.simboard's: 75 hard reset, 76 UF2 bootloader.
import os
import sys

from umachine import *  # noqa: F401,F403


def reset():
    sys.exit(75)


def bootloader(*args):
    sys.exit(76)


def unique_id():
    uid = os.getenv("PICOGATE_UID") or "E6614103E7000001"
    return bytes(int(uid[i : i + 2], 16) for i in range(0, len(uid), 2))


def freq(*args):
    return 125000000


def reset_cause():
    return 1
