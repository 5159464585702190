"""`picogate watch` and `picogate write DEVICE.POINT VALUE`: a running gateway, through its local API.

Exit status: 0 done; 1 the write was refused or failed (its code and why are printed); 2 a usage
error; 3 no gateway answers at the address.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.config import CoreConfig

DEFAULT_CONFIG = Path("/etc/picogate/gateway.yaml")
NO_GATEWAY = 3
WRITE_TIMEOUT = 300.0
"""Seconds `picogate write` waits for the answer (the router answers by the write's deadline)."""

_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


def add_commands(sub: argparse._SubParsersAction[Any], *, load_config: Callable[[Path], CoreConfig]) -> None:
    """`load_config(path)` reads a gateway.yaml (raises ConfigError)."""
    watch = sub.add_parser(
        "watch",
        help="a running gateway's live view: devices, points, rules, alerts, last writes",
        description="Show a running gateway's devices and points with their last values, its rules and "
        "their states, its active alerts and its last writes, refreshed live (Ctrl-C stops).",
    )
    _address(watch)
    watch.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)", metavar="SECONDS"
    )
    watch.add_argument("--once", action="store_true", help="print the view once and exit")
    watch.set_defaults(func=_watch, load_config=load_config)

    write = sub.add_parser(
        "write",
        help="write one value to a point of a running gateway (through its command router)",
        description="Write one value through the running gateway's command router: the same checks "
        "(writable, type, range), deadline (commands.deadline.other) and audit line as any write.",
    )
    write.add_argument("point", metavar="DEVICE.POINT", help="the point, e.g. boiler.setpoint")
    write.add_argument(
        "value",
        metavar="VALUE",
        help="a number (70, 85.5), true/false, or text (quote it for the shell if it has spaces)",
    )
    write.add_argument(
        "--id", default="", help="an id for the write: a repeat with the same id is not written again"
    )
    _address(write)
    write.set_defaults(func=_write, load_config=load_config)


def _address(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"the gateway's gateway.yaml: its local API is at metrics.host:metrics.port (default {DEFAULT_CONFIG} "
        "if it exists, else http://127.0.0.1:9108)",
    )
    where.add_argument("--url", default=None, help="the gateway's local API, e.g. http://127.0.0.1:9108")


def resolve_url(args: argparse.Namespace) -> str:
    """The local API's address from --url, -c FILE, /etc/picogate/gateway.yaml or the default;
    raises ValueError with what to fix."""
    from picogate.api._client import DEFAULT_URL, url_of
    from picogate.config import ConfigError

    if args.url:
        url: str = args.url
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        return url
    path: Path | None = args.config
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return DEFAULT_URL
        path = DEFAULT_CONFIG
    try:
        cfg = args.load_config(path)
    except ConfigError as exc:
        raise ValueError(
            f"{exc}\n(the gateway's address is read from {path}; or give it with --url)"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not cfg.metrics.enabled:
        raise ValueError(
            f"{path}: the local API is off (metrics.enabled: false); turn it on to use this command"
        )
    return url_of(cfg)


def parse_value(text: str) -> object:
    """VALUE as JSON when it is a JSON number, true, false or a "quoted string"; any other text as a
    string (the router then says whether the point takes it)."""
    try:
        value: object = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float | str) else text


def _write(args: argparse.Namespace) -> int:
    from picogate.api._client import ApiClient, GatewayUnreachable

    device, dot, point = args.point.partition(".")
    if not dot or not device or not point or "." in point:
        print(
            f"picogate write: {args.point!r} is not a point: write it device.point (e.g. boiler.setpoint)",
            file=sys.stderr,
        )
        return 2
    value = parse_value(args.value)
    body: dict[str, Any] = {"device": device, "point": point, "value": value}
    if args.id:
        body["id"] = args.id
    try:
        client = ApiClient(resolve_url(args), timeout=WRITE_TIMEOUT)
        status, answer = client.post("/writes", body)
    except ValueError as exc:
        print(f"picogate write: {exc}", file=sys.stderr)
        return 2
    except GatewayUnreachable as exc:
        if exc.maybe_sent:  # it may have reached the router: never say "not written"
            print(
                f"picogate write: {device}.{point}: the gateway at {exc.url} did not answer ({exc.why}): "
                "the write may or may not have been applied; its audit line and `picogate watch` "
                "(last writes) tell",
                file=sys.stderr,
            )
            return 1
        print(f"picogate write: {exc}", file=sys.stderr)
        return NO_GATEWAY
    if not isinstance(answer, dict) or "code" not in answer:
        error = answer.get("error") if isinstance(answer, dict) else answer
        print(f"picogate write: the gateway refused the request ({status}): {error}", file=sys.stderr)
        return 1
    shown = json.dumps(value, ensure_ascii=False)
    if answer.get("ok"):
        written = json.dumps(answer.get("written"), ensure_ascii=False)
        print(f"{device}.{point} = {written}: ok ({answer.get('ms')} ms)")
        return 0
    hint = ""
    if isinstance(value, str) and _DECIMAL_COMMA.match(value):
        hint = f" (a decimal point, not a comma: write {value.replace(',', '.')})"
    print(
        f"{device}.{point} = {shown}: {answer['code']}: {answer.get('error') or 'not written'}{hint}",
        file=sys.stderr,
    )
    return 1


def _watch(args: argparse.Namespace) -> int:
    from picogate.api._client import ApiClient, GatewayUnreachable
    from picogate.api._watch import watch

    try:
        client = ApiClient(resolve_url(args))
    except ValueError as exc:
        print(f"picogate watch: {exc}", file=sys.stderr)
        return 2
    try:
        return watch(client, interval=max(0.2, args.interval), once=args.once)
    except GatewayUnreachable as exc:
        print(f"picogate watch: {exc}", file=sys.stderr)
        return NO_GATEWAY
