"""This package's `picogate` subcommands (none yet: the issue that builds it adds them)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add subparsers to `sub`; each sets `func=handler` (handler(args) -> exit status)."""
