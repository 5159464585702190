"""`picogate users add|passwd|remove|list`: the console's users file (docs/console.md)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate.config import CoreConfig

DEFAULT_USERS = Path("/etc/picogate/users.json")


def add_commands(sub: argparse._SubParsersAction[Any], *, load_config: Callable[[Path], CoreConfig]) -> None:
    users = sub.add_parser(
        "users",
        help="manage the operator console's users (docs/console.md)",
        description="Manage the users of the operator console: each has a role (viewer: sees; operator: "
        "also acknowledges alarms and writes setpoints; engineer: also edits rules) and a password, kept "
        "as an argon2 hash.  The file is the console section's `users` (with --config), --file, or "
        f"{DEFAULT_USERS}.  A running gateway sees changes at once.",
    )
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", type=Path, help="gateway.yaml: use its console.users file")
        p.add_argument("-f", "--file", type=Path, help=f"the users file (default {DEFAULT_USERS})")
        p.set_defaults(func=users_command, load_config=load_config)

    add = usub.add_parser("add", help="add a user (asks for the password twice)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "engineer"])
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    common(add)
    passwd = usub.add_parser("passwd", help="set a user's password (and, with --role, its role)")
    passwd.add_argument("name")
    passwd.add_argument("--role", choices=["viewer", "operator", "engineer"])
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    common(passwd)
    remove = usub.add_parser("remove", help="remove a user (their sessions end at once)")
    remove.add_argument("name")
    common(remove)
    listing = usub.add_parser("list", help="list the users and their roles")
    common(listing)


def _file(args: argparse.Namespace) -> Path | str:
    if args.file is not None:
        return Path(args.file)
    if args.config is not None:
        from picogate.config import ConfigError

        try:
            cfg = args.load_config(args.config)
        except ConfigError as exc:
            return str(exc)
        section = cfg.section("console")
        if section is None:
            return f"{args.config}: has no console section (add `console: {{}}`, or give --file)"
        return Path(section.users)
    return DEFAULT_USERS


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    try:
        first = getpass.getpass(f"password for {args.name}: ")
        second = getpass.getpass("again: ")
    except (EOFError, KeyboardInterrupt):
        print("", file=sys.stderr)
        return None
    if first != second:
        print("picogate users: the two passwords differ; nothing changed", file=sys.stderr)
        return None
    return first


def users_command(args: argparse.Namespace) -> int:
    from picogate.console._users import Role, Users, UsersError

    path = _file(args)
    if isinstance(path, str):
        print(path, file=sys.stderr)
        return 1
    users = Users(path)
    action = args.users_command
    try:
        if action == "list":
            found = users.load()
            if not found:
                print(f"{path}: no users (add one: picogate users add NAME --role engineer)")
            for u in sorted(found.values(), key=lambda u: u.name):
                print(f"{u.name}  {u.role.label}")
            return 0
        if action == "remove":
            users.remove(args.name)
            print(f"{path}: user {args.name} removed")
            return 0
        password = _password(args)
        if password is None:
            return 1
        if action == "add":
            users.add(args.name, Role.parse(args.role), password)
            print(f"{path}: user {args.name} added ({args.role})")
        else:
            users.set_password(args.name, password, role=Role.parse(args.role) if args.role else None)
            print(f"{path}: password of {args.name} changed" + (f", role {args.role}" if args.role else ""))
    except UsersError as exc:
        print(f"picogate users: {exc}", file=sys.stderr)
        return 1
    return 0
