"""`picogate edgex profiles --config gateway.yaml [-o DIR]`: the EdgeX device profiles of the
points in gateway.yaml, as YAML (what registration sends to core-metadata)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate._registry import PointRegistry
    from picogate.config import CoreConfig


def add_commands(
    sub: argparse._SubParsersAction[Any],
    *,
    load_config: Callable[[Path], CoreConfig],
    declared_points: Callable[[CoreConfig], PointRegistry],
) -> None:
    """`load_config(path)` reads a gateway.yaml (raises ConfigError); `declared_points(cfg)` gives
    the points it declares."""
    edgex = sub.add_parser("edgex", help="EdgeX Foundry: device profiles")
    edgex_sub = edgex.add_subparsers(dest="edgex_command", required=True, metavar="ACTION")
    prof = edgex_sub.add_parser("profiles", help="write the EdgeX device profiles of gateway.yaml's points")
    prof.add_argument("--config", "-c", type=Path, required=True, help="gateway.yaml")
    prof.add_argument(
        "-o", "--output", type=Path, default=None, help="directory for <profile>.yaml files (default: stdout)"
    )
    prof.set_defaults(func=_profiles, load_config=load_config, declared_points=declared_points)


def profiles_of(cfg: CoreConfig, registry: PointRegistry) -> list[dict[str, Any]]:
    """The profiles of the devices configured in `cfg`: Modbus devices, Pico boards and the Modbus
    devices behind them, CoAP nodes and CoAP client devices.  (Points that appear only at run
    time, a rule's LET or a CoAP node's `auto_register`, are in the profiles the running gateway
    registers.)"""
    from picogate.edgex._config import EdgexSection
    from picogate.edgex._model import device_profile

    edgex = cfg.section("edgex") or EdgexSection()
    out = []
    for status in sorted(registry.devices(), key=lambda d: d.name):
        points = sorted(registry.points_of(status.name), key=lambda p: p.name)
        out.append(
            device_profile(
                edgex.profile_prefix + status.name,
                status.name,
                points,
                batch_command=edgex.batch_command,
                labels=edgex.labels,
            )
        )
    return out


def _profiles(args: argparse.Namespace) -> int:
    import yaml

    from picogate.config import ConfigError

    try:
        cfg = args.load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    profiles = profiles_of(cfg, args.declared_points(cfg))
    if not profiles:
        print(f"{args.config}: no devices with points: no profiles to write", file=sys.stderr)
        return 1
    if args.output is None:
        yaml.safe_dump_all(profiles, sys.stdout, sort_keys=False, allow_unicode=True)
        return 0
    out: Path = args.output
    try:
        out.mkdir(parents=True, exist_ok=True)
        for p in profiles:
            path = out / f"{p['name']}.yaml"
            path.write_text(yaml.safe_dump(p, sort_keys=False, allow_unicode=True))
            print(path)
    except OSError as exc:
        print(f"picogate edgex profiles: cannot write to {out}: {exc}", file=sys.stderr)
        return 1
    return 0
