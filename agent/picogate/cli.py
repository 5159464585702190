"""The `picogate` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import traceback
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from picogate import __version__

if TYPE_CHECKING:
    from picogate._model import PointInfo
    from picogate._registry import PointRegistry
    from picogate.config import CoreConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"picogate: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="picogate", description="Edge gateway for factories: Modbus, Pico boards, CoAP → MQTT, EdgeX."
    )
    p.add_argument("-V", "--version", action="version", version=f"picogate {__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway")
    run.add_argument(
        "-c", "--config", type=Path, default=Path("/etc/picogate/gateway.yaml"), help="gateway.yaml"
    )

    cfg = sub.add_parser("config", help="work with gateway.yaml")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    cfg.set_defaults(func=_help_of(cfg))  # `picogate config` alone: its help
    check = cfg_sub.add_parser("check", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=lambda args: _config_check(args.file))

    demo = sub.add_parser("demo", help="run a simulated plant, a broker and the gateway, with a live view")
    demo.add_argument("--no-tui", action="store_true", help="log instead of the live terminal view")
    demo.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    demo.add_argument(
        "--workdir", type=Path, default=None, help="where the demo keeps its files (default: a temp dir)"
    )
    # The plug-ins' commands (each module keeps its imports inside its handlers: `picogate --help`
    # must stay fast).  A handler is set with `parser.set_defaults(func=handler)`, where
    # `handler(args: argparse.Namespace) -> int` returns the exit status.
    from picogate.api import add_commands as api_commands
    from picogate.commission import add_commands as commission_commands
    from picogate.console import add_commands as console_commands
    from picogate.edgex import add_commands as edgex_commands
    from picogate.flash import add_commands as flash_commands
    from picogate.install import add_commands as install_commands
    from picogate.rules import add_commands as rules_commands

    commission_commands(sub, cfg_sub, load_config=_load_config)
    rules_commands(sub, load_points=_load_points)
    flash_commands(sub)
    edgex_commands(sub, load_config=_load_config, declared_points=_declared_points)
    api_commands(sub, load_config=_load_config)
    console_commands(sub, load_config=_load_config)
    install_commands(sub, load_config=_load_config, parser=_parser)
    return p


def _help_of(parser: argparse.ArgumentParser) -> Any:
    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return show_help


def _load_config(path: Path) -> CoreConfig:
    from picogate.gateway import load_config

    return load_config(path)


def _declared_points(cfg: CoreConfig) -> PointRegistry:
    from picogate.gateway import declared_points

    return declared_points(cfg)


def _load_points(path: Path) -> list[PointInfo]:
    return list(_declared_points(_load_config(path)))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from picogate._logging import setup_logging

    setup_logging(args.log_level, args.log_format)
    sys.excepthook = _excepthook
    func = getattr(args, "func", None)
    if func is not None:
        status: int = func(args)
        return status
    if args.command == "run":
        return _run(args.config)
    if args.command == "demo":
        from picogate.demo import run_demo

        return run_demo(tui=not args.no_tui, duration=args.duration, workdir=args.workdir)
    return 2


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """A traceback that reaches the top is printed without the secrets it may carry."""
    from picogate._secrets import redact

    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def _config_check(path: Path) -> int:
    from picogate.config import ConfigError, ConfigIssue
    from picogate.gateway import declared_points, load_config

    warnings: list[ConfigIssue] = []
    try:
        cfg = load_config(path, warnings=warnings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        n = len(exc.issues)
        print(f"{path}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    registry = declared_points(cfg)
    devices, boards, coap = cfg.section("devices"), cfg.section("boards"), cfg.section("coap")
    parts = [_count(len(devices), "Modbus device")]
    if boards:
        parts.append(_count(len(boards), "Pico board"))
    if coap is not None and (coap.nodes or coap.clients):
        parts.append(_count(len(coap.nodes) + len(coap.clients), "CoAP device"))
    for warning in warnings:
        print(warning.format())
    noted = f", {_count(len(warnings), 'warning')}" if warnings else ""
    print(f"{path}: OK ({', '.join(parts)}; {_count(len(registry), 'point')}){noted}")
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _event_loop_run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (Linux), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _run(path: Path) -> int:
    from picogate._datadir import DataDirInUse
    from picogate._outbox import OutboxError
    from picogate._secrets import redact
    from picogate.config import ConfigError, ConfigIssue
    from picogate.gateway import Gateway, load_config

    warnings: list[ConfigIssue] = []
    try:
        cfg = load_config(path, warnings=warnings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in warnings:
        logging.getLogger("picogate").warning("%s", warning)

    async def go() -> None:
        async with Gateway(cfg, config_path=path) as gw:
            await gw.run()

    try:
        _event_loop_run(go())
    except KeyboardInterrupt:
        pass
    except (DataDirInUse, ValueError, OSError, sqlite3.Error, OutboxError) as exc:
        # Start-up problems an operator can fix: another agent on data_dir, unreadable secret,
        # data_dir not writable, port in use, a damaged or read-only outbox.
        print(f"picogate: cannot start: {redact(str(exc))}", file=sys.stderr)
        return 1
    return 0
