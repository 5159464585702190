"""`picogate boards` and `picogate flash` (docs/flashing.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add subparsers to `sub`; each sets `func=handler` (handler(args) -> exit status)."""
    b = sub.add_parser("boards", help="list connected Pico boards (serial ports and UF2 bootloaders)")
    b.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    b.add_argument("--port", action="append", default=[], help="also probe this serial port (repeatable)")
    b.add_argument("--no-probe", action="store_true", help="do not open the ports (USB data only)")
    b.add_argument(
        "--mount",
        action="store_true",
        help="mount bootloader drives that are not mounted (to read INFO_UF2.TXT)",
    )
    b.set_defaults(func=_boards)

    f = sub.add_parser(
        "flash",
        help="install or update the Picogate firmware on boards",
        description="Build the firmware for each board's MicroPython, upload what changed over the raw "
        "REPL, write the board's identity, reset it and check that it reports the new firmware.",
    )
    sel = f.add_argument_group("which boards (default: the only one connected)")
    sel.add_argument("--port", action="append", default=[], help="serial port (repeatable)")
    sel.add_argument(
        "--serial", action="append", default=[], help="USB serial number = unique id (repeatable)"
    )
    sel.add_argument("--all", action="store_true", help="every connected board (factory mode)")
    f.add_argument("--micropython", type=Path, help="MicroPython .uf2 for boards in the UF2 bootloader")
    f.add_argument(
        "--reinstall-micropython",
        action="store_true",
        help="also send boards running MicroPython to their bootloader and install --micropython",
    )
    f.add_argument("--config", type=Path, help="factory tray file (tray.yaml: gateway, names, parallel, log)")
    f.add_argument("--name", help="the board's name (pg_id.json)")
    f.add_argument("--gateway", help="the gateway the board belongs to (pg_id.json)")
    f.add_argument(
        "--verify-only", action="store_true", help="check the firmware hash the board reports; write nothing"
    )
    f.add_argument(
        "--rollback", action="store_true", help="go back to the previous firmware kept on the board"
    )
    f.add_argument("--stop-agent", action="store_true", help="stop the Picogate agent if it holds a port")
    f.add_argument("--parallel", type=int, help="boards flashed at once (default 4, or the tray's)")
    f.add_argument("--log", type=Path, help="append a JSON line per board to this factory log")
    f.add_argument("--firmware", type=Path, help="firmware folder (default: the one shipped with picogate)")
    f.add_argument(
        "--boot-wait", type=float, default=20.0, help="seconds to wait for a manual reset (fallback)"
    )
    f.add_argument("--json", action="store_true", help="print the results as JSON")
    f.set_defaults(func=_flash)


def _err(msg: str) -> None:
    print(f"picogate: error: {msg}", file=sys.stderr)


def _boards(args: argparse.Namespace) -> int:
    import json

    from picogate.flash._select import list_boards

    rows = list_boards(args.port, probe=not args.no_probe, mount=args.mount)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    if not rows:
        print("no boards found (USB vendor 2E8A); plug a Pico in, or hold BOOTSEL for its UF2 bootloader")
        return 0
    head = ("PORT", "SERIAL", "VID:PID", "MODE", "BOARD", "MICROPYTHON", "FIRMWARE", "HASH")
    table = [head] + [
        (
            r.port or r.drive or "-",
            r.serial or "-",
            r.vid_pid or "-",
            r.mode,
            r.board or "-",
            r.micropython or "-",
            r.firmware or "-",
            r.hash or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r.note and r.mode not in ("app",):
            print(f"  {r.port or r.drive}: {r.note}")
    return 0


def _flash(args: argparse.Namespace) -> int:
    import json

    from picogate.flash._errors import FlashError, PortBusy
    from picogate.flash._factory import FactoryRun, run_many
    from picogate.flash._flash import Builder, FlashOptions
    from picogate.flash._ports import port_holders
    from picogate.flash._select import select_targets, stop_agent
    from picogate.flash._tray import load_tray

    if args.verify_only and args.rollback:
        _err("--verify-only and --rollback exclude each other")
        return 2
    import re

    from picogate._model import NAME_PATTERN

    for opt in ("name", "gateway"):
        value = getattr(args, opt)
        if value is not None and not re.fullmatch(NAME_PATTERN, value):
            _err(
                f"--{opt} {value!r}: names are a lower-case letter, then lower-case letters, digits and _ ({NAME_PATTERN})"
            )
            return 2
    if args.parallel is not None and not 1 <= args.parallel <= 32:
        _err(f"--parallel must be 1..32, got {args.parallel}")
        return 2
    try:
        tray = load_tray(args.config) if args.config else None
        micropython = args.micropython
        if micropython is None and tray is not None and tray.micropython:
            micropython = (args.config.parent / tray.micropython).resolve()
        if args.reinstall_micropython and micropython is None:
            raise FlashError(
                "--reinstall-micropython needs --micropython FILE.uf2 (or micropython: in the tray)"
            )
        if micropython is not None and not micropython.is_file():
            raise FlashError("no such file", where=str(micropython))
        if args.firmware is not None and not (args.firmware / "main.py").is_file():
            raise FlashError(
                "no firmware there (main.py and picogate_fw/ expected)", where=str(args.firmware)
            )
        targets = select_targets(ports=args.port, serials=args.serial, all_=args.all)
        if tray is not None and not args.name:
            for key in tray.unmatched(t.serial for t in targets):
                print(
                    f"picogate: warning: {args.config}: boards: {key} ({tray.boards[key]}) is none of the "
                    f"{len(targets)} board(s) found, so this name is not given (`picogate boards` lists them)",
                    file=sys.stderr,
                )
        if args.name and len(targets) > 1:
            raise FlashError(
                f"--name gives one name to {len(targets)} boards; use --config tray.yaml for names"
            )
        for t in targets:
            holders = port_holders(t.port) if t.port else []
            if holders:
                from picogate.flash._board import BoardConn

                err = BoardConn(t.port or "")._busy(*holders[0])
                if args.stop_agent and err.agent:
                    stop_agent(err, log=lambda m: print(f"picogate: {m}", file=sys.stderr))
                elif len(targets) == 1:
                    raise err
                # several boards: this one fails on its own, the others go on
    except PortBusy as e:
        _err(str(e))
        return 1
    except FlashError as e:
        _err(str(e))
        return 1
    opts = FlashOptions(
        name=args.name,
        gateway=args.gateway if args.gateway is not None else (tray.gateway if tray else None),
        verify_only=args.verify_only,
        rollback=args.rollback,
        boot_wait=args.boot_wait,
        builder=Builder(source=args.firmware),
    )
    log_path = args.log
    if log_path is None and tray is not None:
        log_path = (args.config.parent / (tray.log or "factory-log.jsonl")).resolve()
    run = FactoryRun(
        targets=targets,
        opts=opts,
        parallel=args.parallel or (tray.parallel if tray else 4),
        log_path=log_path,
        config_name=args.config.stem if args.config else None,
        micropython=micropython,
        reinstall_micropython=args.reinstall_micropython,
        names=(lambda t, n: tray.name_for(t.serial, n)) if tray is not None and not args.name else None,
    )
    results = run_many(run)
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps([r.record() for r in results], indent=2))
    else:
        for r in sorted(results, key=lambda r: r.port):
            status = "OK  " if r.ok else "FAIL"
            what = f"{r.result}"
            if r.uploaded:
                what += f", {len(r.uploaded)} files / {r.uploaded_bytes} bytes uploaded"
            line = f"{status} {r.port} {r.uid or '-'} {r.board or '-'} MicroPython {r.micropython or '-'} firmware {r.version or '-'} {r.hash or '-'}: {what} ({r.duration:.1f} s)"
            print(line)
            if r.error:
                print(f"     {r.error}")
        if len(results) > 1 or failed:
            print(f"{len(results) - len(failed)} of {len(results)} boards ok, {len(failed)} failed")
        if log_path is not None:
            print(f"factory log: {log_path}")
    return min(len(failed), 125)
