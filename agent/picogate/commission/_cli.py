"""The commissioning commands' arguments; each handler imports what it needs when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.config import CoreConfig

LoadConfig = Callable[[Path], "CoreConfig"]


def add_commands(
    sub: argparse._SubParsersAction[Any],
    config_actions: argparse._SubParsersAction[Any],
    *,
    load_config: LoadConfig,
) -> None:
    """`poll` and `scan` under `sub`, `show` under `config_actions` (the actions of `picogate
    config`).  `load_config(path)` reads a gateway.yaml (raises ConfigError)."""
    show = config_actions.add_parser(
        "show", help="print the effective configuration: every default filled in, secrets masked"
    )
    show.add_argument("file", type=Path)
    show.add_argument("--json", action="store_true", help="JSON instead of YAML")
    show.set_defaults(func=_config_show, load_config=load_config)

    from picogate.commission import _poll, _scan

    _poll.add_command(sub, load_config)
    _scan.add_command(sub)


def _config_show(args: argparse.Namespace) -> int:
    from picogate.commission._common import load_or_report

    cfg = load_or_report(args, args.file)
    if cfg is None:
        return 1
    if args.json:
        import orjson

        from picogate._secrets import redact
        from picogate.config import effective

        text = orjson.dumps(effective(cfg), option=orjson.OPT_INDENT_2).decode()
        print(redact(text))
        return 0
    from picogate.config import show_yaml

    sys.stdout.write(show_yaml(cfg, source=str(args.file)))
    return 0
