"""What `picogate service install` does, as data: the directories, the files (the systemd unit, the
udev rules, a default configuration) and the commands (the service user and its groups, systemd,
udev).  Pure: the caller looks up the system (groups, users, hostname) and applies the plan
(`_apply.py`), or shows it (`--dry-run`)."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["DEVICE_GROUPS", "Command", "Directory", "File", "InstallPlan", "plan_install", "unit_text"]

DEVICE_GROUPS = ("dialout", "gpio", "i2c")
"""The groups the service user joins: dialout (serial ports, Pico boards) always; gpio and i2c
(Raspberry Pi OS) where the system has them."""

UNIT_PATH = PurePosixPath("/etc/systemd/system/picogate.service")
UDEV_PATH = PurePosixPath("/etc/udev/rules.d/99-picogate.rules")
DATA_DIR = PurePosixPath("/var/lib/picogate")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_TEMPLATE_EXE = "/opt/picogate/bin/picogate"
_TEMPLATE_CONFIG = "/etc/picogate/gateway.yaml"


@dataclass(frozen=True, slots=True)
class Directory:
    path: PurePosixPath
    mode: int = 0o755


@dataclass(frozen=True, slots=True)
class File:
    """A file to write; `replace=False`: only when there is none (a configuration is never
    overwritten)."""

    path: PurePosixPath
    content: str
    mode: int = 0o644
    replace: bool = True


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    why: str


@dataclass(frozen=True, slots=True)
class InstallPlan:
    directories: tuple[Directory, ...]
    files: tuple[File, ...]
    commands: tuple[Command, ...]
    groups: tuple[str, ...]
    """The device groups of the service user."""


def _gateway_id(hostname: str) -> str:
    """A gateway id from the host's name (`line-3.plant.local` → `line-3`), or `gateway`."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", hostname.split(".")[0])[:64].strip("_-")
    return name if name and name[0].isalpha() else "gateway"


def unit_text(template: str, *, executable: str, user: str, config: str, groups: Collection[str]) -> str:
    """The systemd unit: the template (tools/systemd/picogate.service) with this installation's
    `picogate`, service user, configuration file and device groups."""
    out = []
    for line in template.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=")):
            line = line.replace(_TEMPLATE_EXE, executable).replace(_TEMPLATE_CONFIG, config)
        elif line.startswith("User="):
            line = f"User={user}"
        elif line.startswith("Group="):
            line = f"Group={user}"
        elif line.startswith("SupplementaryGroups="):
            line = f"SupplementaryGroups={' '.join(groups)}"
        out.append(line)
    return "\n".join(out) + "\n"


def plan_install(
    *,
    executable: str,
    user: str,
    config: PurePosixPath,
    unit_template: str,
    udev_rules: str,
    default_config: str,
    groups_present: Collection[str],
    user_groups: Collection[str] | None,
    hostname: str,
    start: bool = False,
) -> InstallPlan:
    """The plan; `user_groups` is None when the user does not exist yet, else its groups."""
    if not _USER_RE.match(user):
        raise ValueError(f"--user {user!r}: a user name is lower-case letters, digits, '_' and '-'")
    if not config.is_absolute():
        raise ValueError(f"--config {config}: give an absolute path (the service reads it from /)")
    groups = tuple(g for g in DEVICE_GROUPS if g == "dialout" or g in groups_present)
    cfg_text = re.sub(
        r"(?m)^(  id: )gateway(\s)", rf"\g<1>{_gateway_id(hostname)}\g<2>", default_config, count=1
    )
    directories = [Directory(config.parent), Directory(config.parent / "rules")]
    files = [
        File(
            UNIT_PATH,
            unit_text(unit_template, executable=executable, user=user, config=str(config), groups=groups),
        ),
        File(UDEV_PATH, udev_rules),
        File(config, cfg_text, replace=False),
    ]
    commands: list[Command] = []
    if user_groups is None:
        commands.append(
            Command(
                (
                    "useradd", "--system", "--user-group", "--home-dir", str(DATA_DIR), "--no-create-home",
                    "--shell", "/usr/sbin/nologin", "--groups", ",".join(groups), user,
                ),
                f"the service user {user}, in {', '.join(groups)}",
            )
        )  # fmt: skip
    else:
        missing = [g for g in groups if g not in user_groups]
        if missing:
            commands.append(
                Command(("usermod", "-aG", ",".join(missing), user), f"{user} joins {', '.join(missing)}")
            )
    commands += [
        Command(("udevadm", "control", "--reload"), "udev reads the new rules"),
        Command(("udevadm", "trigger", "--subsystem-match=tty"), "serial ports already plugged in get them"),
        Command(("systemctl", "daemon-reload"), "systemd reads the new unit"),
        Command(
            ("systemctl", "enable", *(["--now"] if start else []), "picogate.service"),
            "the gateway starts at boot" + (" and now" if start else ""),
        ),
    ]
    return InstallPlan(tuple(directories), tuple(files), tuple(commands), groups)
