"""What the commissioning commands share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from picogate.config import CoreConfig


def load_or_report(args: argparse.Namespace, path: Path) -> CoreConfig | None:
    """The configuration at `path`, or None after printing its problems as `config check` does."""
    from picogate.config import ConfigError

    try:
        cfg: CoreConfig = args.load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        n = len(exc.issues)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return None
    return cfg
