"""`picogate scan TARGET`: which Modbus unit ids answer on a serial line (and at which baud rate
and parity) or behind a TCP address."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.modbus import ScanLine


def add_command(sub: argparse._SubParsersAction[Any]) -> None:
    scan = sub.add_parser(
        "scan",
        help="find the Modbus unit ids that answer on a serial line or at a TCP address",
        description="Ask each unit id for holding register 0 and list those that answer (with the "
        "register or with a Modbus exception). TARGET is a serial port (/dev/ttyUSB0: tried at each "
        "baud rate and parity until units answer) or HOST[:PORT] (a Modbus TCP device or gateway). "
        "Do not scan a serial line the running gateway uses: the port is opened exclusively.",
    )
    scan.add_argument("target", metavar="TARGET", help="/dev/ttyUSB0, or HOST[:PORT] (port 502 by default)")
    scan.add_argument(
        "--units",
        default=None,
        help="unit ids to ask, e.g. 1,2,10-20 (default 1-247; 0 only on TCP: it is the broadcast id on serial)",
    )
    scan.add_argument(
        "--timeout", default=None, help="how long to wait for each unit (default 100ms; TCP 300ms)"
    )
    scan.add_argument(
        "--baud",
        default=None,
        help="serial: baud rates to try, in order (default 19200,9600,38400,57600,115200,4800,2400,1200)",
    )
    scan.add_argument("--parity", default=None, help="serial: parities to try, in order (default E,N,O)")
    scan.add_argument("--stopbits", type=int, choices=[1, 2], default=1, help="serial: stop bits (default 1)")
    scan.add_argument(
        "--all-settings",
        action="store_true",
        help="serial: go on after the first setting at which units answered (a misconfigured unit)",
    )
    scan.add_argument(
        "--framing",
        choices=["socket", "rtu"],
        default="socket",
        help="TCP: rtu for a serial-to-Ethernet converter in transparent mode (default socket: Modbus TCP)",
    )
    scan.add_argument("--json", action="store_true", help="one JSON document on stdout")
    scan.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    scan.set_defaults(func=_scan)


def _split(text: str, what: str, convert: Any) -> list[Any]:
    from picogate.modbus import ScanError

    out = []
    for part in text.split(","):
        part = part.strip()
        if part:
            try:
                out.append(convert(part))
            except ValueError:
                raise ScanError(f"{what}: {part!r} is not valid") from None
    if not out:
        raise ScanError(f"{what}: none given")
    return out


def _scan(args: argparse.Namespace) -> int:
    from picogate.config import parse_duration
    from picogate.modbus import (
        BAUD_RATES,
        PARITIES,
        ScanError,
        parse_units,
        scan_serial,
        scan_tcp,
        serial_settings,
    )

    serial = args.target.startswith("/") or args.target.upper().startswith("COM")
    try:
        timeout = parse_duration(args.timeout) if args.timeout else (0.1 if serial else 0.3)
        if timeout <= 0:
            raise ScanError("--timeout must be more than 0")
        units = parse_units(args.units or "1-247", lowest=1 if serial else 0)
        if serial:
            bauds = _split(args.baud, "--baud", int) if args.baud else list(BAUD_RATES)
            parities = _split(args.parity.upper(), "--parity", str) if args.parity else list(PARITIES)
            settings = serial_settings(bauds, parities, args.stopbits)
        else:
            host, port = _host_port(args.target)
    except (ScanError, ValueError) as exc:
        print(f"picogate scan: {exc}", file=sys.stderr)
        return 2

    progress = None if args.quiet or args.json or not sys.stderr.isatty() else _progress(len(units))
    if serial:
        lines = asyncio.run(
            scan_serial(
                args.target,
                units,
                settings,
                timeout=timeout,
                every_setting=args.all_settings,
                progress=progress,
            )
        )
    else:
        lines = [
            asyncio.run(scan_tcp(host, port, units, timeout=timeout, framing=args.framing, progress=progress))
        ]
    if progress is not None:
        sys.stderr.write("\r\033[K")
    if args.json:
        _print_json(lines)
    else:
        _print_text(lines, len(units))
    if any(line.error for line in lines):
        return 1
    return 0 if any(line.units for line in lines) else 1


def _host_port(target: str) -> tuple[str, int]:
    from picogate.modbus import ScanError

    host, sep, port_text = target.rpartition(":")
    if not sep or "]" in port_text:
        return target.strip("[]"), 502
    try:
        port = int(port_text)
    except ValueError:
        raise ScanError(f"{target!r}: the port after ':' must be a number") from None
    if not 1 <= port <= 65535:
        raise ScanError(f"{target!r}: port must be 1..65535")
    return host.strip("[]"), port


def _progress(total: int) -> Any:
    def show(line: ScanLine, unit: int) -> None:
        where = f"{line.target} {line.setting}" if line.setting else line.target
        found = len(line.units)
        sys.stderr.write(f"\r\033[K{where}: unit {unit} ({line.asked}/{total}), {found} answered")
        sys.stderr.flush()

    return show


def _print_text(lines: list[ScanLine], total: int) -> None:
    for line in lines:
        where = f"{line.target} at {line.setting}" if line.setting else line.target
        if line.error:
            print(f"{where}: {line.error}")
            continue
        n = len(line.units)
        print(f"{where}: {n} of {line.asked} unit ids answered ({line.seconds:.1f} s)")
        for u in line.units:
            print(f"  unit {u.unit:<3}  {u.answer}")
        if line.garbled and not line.units:
            print(
                f"  {line.garbled} unit id(s) got an unreadable reply: something is on the line at "
                "another baud rate or parity (or the line is noisy)"
            )
        if line.setting is None and n == line.asked and n > 3:
            print(
                "  every unit id answered: the device ignores the unit id (a plain Modbus TCP "
                "device); use unit_id: 1 (or 255) in gateway.yaml"
            )
    found = [line for line in lines if line.units]
    serial = any(line.setting is not None for line in lines)
    if serial and found:
        s = found[0].setting
        assert s is not None
        print(f"gateway.yaml: baudrate: {s.baudrate}, parity: {s.parity}, stopbits: {s.stopbits}")
    elif serial and not any(line.error for line in lines):
        print("no unit answered at any setting tried: check wiring (A/B swapped?), termination and --units")


def _print_json(lines: list[ScanLine]) -> None:
    import orjson

    doc = {
        "lines": [
            {
                "target": line.target,
                "baudrate": line.setting.baudrate if line.setting else None,
                "parity": line.setting.parity if line.setting else None,
                "stopbits": line.setting.stopbits if line.setting else None,
                "asked": line.asked,
                "units": [{"unit": u.unit, "answer": u.answer} for u in line.units],
                "garbled": line.garbled,
                "error": line.error,
                "seconds": round(line.seconds, 3),
            }
            for line in lines
        ]
    }
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
