"""`picogate service install|status` and `picogate completion bash|zsh`; each handler imports what
it needs when it runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any


def add_commands(
    sub: argparse._SubParsersAction[Any],
    *,
    load_config: Callable[[Path], Any],
    parser: Callable[[], argparse.ArgumentParser],
) -> None:
    """`load_config(path)` reads a gateway.yaml (raises ConfigError); `parser()` builds the whole
    command's parser (for its completion)."""
    service = sub.add_parser("service", help="install the gateway as a systemd service; its status")
    service_sub = service.add_subparsers(dest="service_command", metavar="ACTION")
    service.set_defaults(func=lambda args: _help(service))

    install = service_sub.add_parser(
        "install",
        help="write the systemd unit, the udev rules and a default configuration; the service user",
        description="Install Picogate as the systemd service `picogate`: the unit "
        "(/etc/systemd/system/picogate.service, running this installation's picogate), the udev "
        "rules for Pico boards (/etc/udev/rules.d/99-picogate.rules), a default configuration when "
        "there is none (never overwritten), the service user in dialout (and gpio, i2c where the "
        "system has them), then udev and systemd reloaded and the service enabled.",
    )
    install.add_argument(
        "--dry-run", action="store_true", help="show what would be written and run; change nothing"
    )
    install.add_argument("--user", default="picogate", help="the service user (default picogate)")
    install.add_argument(
        "--config", "-c", default="/etc/picogate/gateway.yaml", help="the configuration the service runs"
    )
    install.add_argument("--start", action="store_true", help="start the service now as well")
    install.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install into this directory (an image being built): files only, the commands are listed",
    )
    install.set_defaults(func=_install)

    status = service_sub.add_parser("status", help="installed? enabled? running? healthy?")
    status.add_argument("--config", "-c", type=Path, default=None, help="default: the one the unit runs")
    status.add_argument(
        "--root", type=Path, default=Path("/"), help="look at an installation in this directory"
    )
    status.set_defaults(func=_status, load_config=load_config)

    completion = sub.add_parser(
        "completion",
        help="print the shell completion script for bash or zsh",
        description='Print a completion script. bash: eval "$(picogate completion bash)" in ~/.bashrc, '
        "or save it as /etc/bash_completion.d/picogate; zsh: "
        'eval "$(picogate completion zsh)" in ~/.zshrc, after compinit.',
    )
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(func=_completion, parser=parser)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _install(args: argparse.Namespace) -> int:
    import os

    from picogate._paths import data_dir, service_file
    from picogate.install._apply import apply, existing_groups, groups_of, hostname, picogate_executable, show
    from picogate.install._plan import plan_install

    root: Path = args.root
    if not args.dry_run and root == Path("/") and os.geteuid() != 0:
        print(
            "picogate service install: run it as root (sudo picogate service install), "
            "or see what it would do with --dry-run",
            file=sys.stderr,
        )
        return 1
    try:
        plan = plan_install(
            executable=picogate_executable(),
            user=args.user,
            config=PurePosixPath(args.config),
            unit_template=service_file("picogate.service").read_text(encoding="utf-8"),
            udev_rules=service_file("99-picogate.rules").read_text(encoding="utf-8"),
            default_config=(data_dir("examples") / "default-gateway.yaml").read_text(encoding="utf-8"),
            groups_present=existing_groups(),
            user_groups=groups_of(args.user) if root == Path("/") else None,
            hostname=hostname(),
            start=args.start,
        )
    except ValueError as exc:
        print(f"picogate service install: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        show(plan, root, sys.stdout)
        return 0
    try:
        status = apply(plan, root, sys.stdout)
    except OSError as exc:
        print(f"picogate service install: {exc}", file=sys.stderr)
        return 1
    if status == 0 and root == Path("/"):
        what = "started" if args.start else "enabled (start it: systemctl start picogate)"
        print(f"picogate service {what}; edit {args.config}, then: picogate service status")
    return status


def _status(args: argparse.Namespace) -> int:
    from picogate.install._status import collect

    st = collect(args.root, load_config=args.load_config, config=args.config)
    width = max(len(name) for name, _ in st.lines)
    for name, text in st.lines:
        print(f"{name + ':':<{width + 1}} {text}")
    if st.running and st.healthy:
        return 0
    return 3  # as `systemctl status` says "not running"


def _completion(args: argparse.Namespace) -> int:
    from picogate.install._completion import completion_script

    sys.stdout.write(completion_script(args.parser(), args.shell))
    return 0
