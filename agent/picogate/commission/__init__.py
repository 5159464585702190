"""Commissioning: what an integrator runs at a new machine (docs/commissioning.md).

`picogate poll --once` (each configured device read once, every point with its raw registers),
`picogate scan` (which Modbus unit ids answer on a line, and at which serial settings) and
`picogate config show` (the effective configuration).  Importing the package costs nothing: the
handlers import what they use.
"""

from picogate.commission._cli import add_commands

__all__ = ["add_commands"]
