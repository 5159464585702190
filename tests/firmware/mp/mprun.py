# Runs one test function of a MicroPython test module: micropython mprun.py MODULE FUNC
# (tests/firmware/test_on_micropython.py starts it; cwd is a fresh board directory).
import sys

sys.path.insert(0, "")  # the board directory (cwd) first, as on a board
mod_name, func = sys.argv[1], sys.argv[2]
mod = __import__(mod_name)
getattr(mod, func)()
print("MPTEST-PASS")
