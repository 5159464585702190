"""`picogate poll --once`: each configured Modbus device read once, every point printed with its
value, unit, quality and the raw registers it was decoded from; each CoAP device the gateway reads,
every resource asked once (GET) and printed with the payload it answered; Pico boards and the CoAP
nodes that report by themselves are listed with why they are not read this way."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.coap import CoapDeviceReading, CoapPointReading
    from picogate.config import CoreConfig
    from picogate.modbus import DeviceReading, PointReading

NOT_READ = {
    "pico": "a Pico board sends its readings once the gateway has sent it its configuration; "
    "`picogate boards` lists the boards on USB",
    "coap node": "a CoAP node reports to the gateway's CoAP server by itself: there is nothing to ask it",
}


def add_command(sub: argparse._SubParsersAction[Any], load_config: Any) -> None:
    from pathlib import Path

    poll = sub.add_parser(
        "poll",
        help="read each configured device once and print every point (value, unit, quality, raw registers)",
        description="Read each Modbus device of gateway.yaml once (and each CoAP device the gateway "
        "reads), print every point with its value, unit, quality and the raw registers (or payload) "
        "it was decoded from, then exit. Exit status 0 when every point was read good, 1 otherwise. "
        "Do not run it on a serial line the running gateway uses: the port is opened exclusively.",
    )
    poll.add_argument(
        "-c", "--config", type=Path, default=Path("/etc/picogate/gateway.yaml"), help="gateway.yaml"
    )
    poll.add_argument(
        "--once", action="store_true", required=True, help="read each device once, then exit (required)"
    )
    poll.add_argument(
        "--device",
        "-d",
        action="append",
        default=[],
        metavar="NAME",
        help="only this device (may be given more than once)",
    )
    poll.add_argument("--json", action="store_true", help="one JSON document on stdout")
    poll.set_defaults(func=_poll, load_config=load_config)


def _poll(args: argparse.Namespace) -> int:
    from picogate.commission._common import load_or_report

    cfg = load_or_report(args, args.config)
    if cfg is None:
        return 1
    devices = list(cfg.section("devices"))
    coap = cfg.section("coap")
    clients = list(coap.clients) if coap is not None else []
    others = _others(cfg)
    known = [d.name for d in devices] + [c.name for c in clients] + [name for name, _ in others]
    wanted = set(args.device)
    unknown = sorted(wanted - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        print(
            f"picogate poll: no device named {unknown[0]!r} in {args.config} (its devices: {names})",
            file=sys.stderr,
        )
        return 2
    if wanted:
        devices = [d for d in devices if d.name in wanted]
        clients = [c for c in clients if c.name in wanted]
        others = [(n, kind) for n, kind in others if n in wanted]
    results, coap_results = asyncio.run(_read(devices, clients))
    if args.json:
        _print_json(results, coap_results, others)
    else:
        _print_text(results, coap_results, others)
    if not results and not coap_results and not others:
        print(f"{args.config}: no devices", file=sys.stderr)
    return 0 if all(r.ok for r in results) and all(c.ok for c in coap_results) else 1


async def _read(
    devices: list[Any], clients: list[Any]
) -> tuple[list[DeviceReading], list[CoapDeviceReading]]:
    """The Modbus devices and the CoAP devices, read at the same time."""
    from picogate.modbus import poll_once

    async def modbus() -> list[DeviceReading]:
        return await poll_once(devices) if devices else []

    async def coap() -> list[CoapDeviceReading]:
        if not clients:
            return []
        from picogate.coap import read_once  # imports aiocoap: only when there are CoAP devices

        return await read_once(clients)

    modbus_results, coap_results = await asyncio.gather(modbus(), coap())
    return modbus_results, coap_results


def _others(cfg: CoreConfig) -> list[tuple[str, str]]:
    """(name, kind) of the configured devices that are not read: Pico boards, CoAP nodes."""
    out = [(b.name, "pico") for b in cfg.section("boards") or ()]
    coap = cfg.section("coap")
    if coap is not None:
        out += [(n.name, "coap node") for n in coap.nodes]
    return out


def _value_text(p: PointReading | CoapPointReading) -> str:
    if p.value is None:
        return "-"
    if isinstance(p.value, bool):
        text = "true" if p.value else "false"
    elif isinstance(p.value, str):
        text = repr(p.value)
    else:
        text = str(p.value)
    return f"{text} {p.unit}" if p.unit else text


def _where(p: PointReading) -> str:
    text = f"{p.table} {p.address}"
    if p.width > 1:
        text += f"+{p.width}"
    if p.bit is not None:
        text += f" bit {p.bit}"
    return text


def _raw_text(p: PointReading) -> str:
    if not p.raw:
        return ""
    return " ".join(str(int(w)) if isinstance(w, bool) else f"0x{w:04X}" for w in p.raw)


def _payload_text(p: CoapPointReading) -> str:
    if not p.payload and p.content_format is None:
        return ""
    cf = f" (cf {p.content_format})" if p.content_format is not None else ""
    return f"{p.payload!r}{cf}"


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows of cells, each column as wide as its widest cell; the last cell, a note, in brackets."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        line = "  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])).rstrip()
        if row[-1]:
            line += f"  ({row[-1]})"
        out.append(line)
    return out


def _print_text(
    results: list[DeviceReading], coap: list[CoapDeviceReading], others: list[tuple[str, str]]
) -> None:
    for r in results:
        head = f"{r.device}  (unit {r.unit_id} on {r.link}): "
        if r.error:
            head += f"no answer: {r.error}"
        else:
            head += f"{r.requests} request{'s' if r.requests != 1 else ''}, {r.seconds * 1000:.0f} ms"
        print(head)
        rows = [
            (p.point, _value_text(p), p.quality.value, _where(p), _raw_text(p), "" if r.error else p.error)
            for p in r.points
        ]
        for line in _table(rows):
            print(line)
    for c in coap:
        n = len(c.points)
        print(f"{c.device}  ({c.link}): {n} resource{'s' if n != 1 else ''} asked")
        rows = [
            (
                p.point,
                _value_text(p),
                p.quality.value,
                "GET " + p.url.removeprefix(c.link),
                _payload_text(p),
                p.error,
            )
            for p in c.points
        ]
        for line in _table(rows):
            print(line)
    for name, kind in others:
        print(f"{name}  ({kind}): not read: {NOT_READ[kind]}")


def _print_json(
    results: list[DeviceReading], coap: list[CoapDeviceReading], others: list[tuple[str, str]]
) -> None:
    import orjson

    devices: list[dict[str, Any]] = [
        {
            "device": r.device,
            "kind": "modbus",
            "link": r.link,
            "unit_id": r.unit_id,
            "ok": r.ok,
            "error": r.error,
            "requests": r.requests,
            "seconds": round(r.seconds, 6),
            "points": [
                {
                    "point": p.point,
                    "value": p.value,
                    "unit": p.unit,
                    "quality": p.quality.value,
                    "table": p.table,
                    "address": p.address,
                    "width": p.width,
                    "bit": p.bit,
                    "raw": list(p.raw),
                    "error": p.error,
                }
                for p in r.points
            ],
        }
        for r in results
    ]
    devices += [
        {
            "device": c.device,
            "kind": "coap",
            "link": c.link,
            "ok": c.ok,
            "points": [
                {
                    "point": p.point,
                    "value": p.value,
                    "unit": p.unit,
                    "quality": p.quality.value,
                    "url": p.url,
                    "payload": p.payload,
                    "content_format": p.content_format,
                    "error": p.error,
                }
                for p in c.points
            ],
        }
        for c in coap
    ]
    doc = {
        "devices": devices,
        "not_read": [{"device": n, "kind": kind, "reason": NOT_READ[kind]} for n, kind in others],
    }
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
