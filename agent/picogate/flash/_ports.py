"""Finding boards: USB serial ports and UF2 bootloader drives from sysfs, mounts, port holders.

pyserial's `list_ports` reads the real /sys and cannot be pointed elsewhere; the bootloader's
mass-storage drive is not a serial port at all. So this walks sysfs itself (a few files per
device), with every root injectable (`Roots`, or the environment variables `PICOGATE_SYSFS`,
`PICOGATE_DEVFS`, `PICOGATE_MOUNTS`, `PICOGATE_PROCFS`) so that tests run on a fake tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from picogate.flash._errors import FlashError, PortPermission
from picogate.flash._uf2 import chip_of_board_id, parse_info_uf2

__all__ = [
    "BOOTLOADER_PIDS",
    "RPI_VID",
    "Roots",
    "Uf2Drive",
    "UsbPort",
    "find_uf2_drives",
    "find_usb_ports",
    "mount_drive",
    "port_holders",
]

RPI_VID = 0x2E8A
BOOTLOADER_PIDS = {0x0003: "RP2040", 0x000F: "RP2350"}
MICROPYTHON_PID = 0x0005


@dataclass(frozen=True)
class Roots:
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    mounts: Path = Path("/proc/self/mounts")
    proc: Path = Path("/proc")

    @classmethod
    def from_env(cls) -> Roots:
        env = os.environ
        return cls(
            sys=Path(env.get("PICOGATE_SYSFS", "/sys")),
            dev=Path(env.get("PICOGATE_DEVFS", "/dev")),
            mounts=Path(env.get("PICOGATE_MOUNTS", "/proc/self/mounts")),
            proc=Path(env.get("PICOGATE_PROCFS", "/proc")),
        )


@dataclass(frozen=True)
class UsbPort:
    """A USB serial port of a Raspberry Pi (VID 2E8A) device."""

    device: str
    vid: int
    pid: int
    serial: str
    product: str = ""
    manufacturer: str = ""

    @property
    def vid_pid(self) -> str:
        return f"{self.vid:04X}:{self.pid:04X}"


@dataclass(frozen=True)
class Uf2Drive:
    """A board in its UF2 bootloader: the block device of its mass-storage drive."""

    device: str
    vid: int
    pid: int
    serial: str
    chip: str
    mountpoint: str | None = None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def vid_pid(self) -> str:
        return f"{self.vid:04X}:{self.pid:04X}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _usb_device(start: Path, sys_root: Path) -> Path | None:
    """The USB device directory (with idVendor) that `start` (a sysfs path) belongs to."""
    try:
        p = start.resolve()
        top = sys_root.resolve()
    except OSError:
        return None
    while p != top and p != p.parent:
        if (p / "idVendor").is_file():
            return p
        p = p.parent
    return None


def _ids(dev: Path) -> tuple[int, int] | None:
    try:
        return int(_read(dev / "idVendor"), 16), int(_read(dev / "idProduct"), 16)
    except ValueError:
        return None


def find_usb_ports(roots: Roots | None = None) -> list[UsbPort]:
    """Serial ports (ttyACM*, …) of USB devices with the Raspberry Pi vendor id, by device name."""
    roots = roots or Roots.from_env()
    out: list[UsbPort] = []
    tty = roots.sys / "class" / "tty"
    try:
        names = sorted(os.listdir(tty))
    except OSError:
        return out
    for name in names:
        dev = _usb_device(tty / name / "device", roots.sys)
        if dev is None:
            continue
        ids = _ids(dev)
        if ids is None or ids[0] != RPI_VID:
            continue
        serial = _read(dev / "serial")
        device = roots.dev / name
        alias = roots.dev / f"picogate-{serial}"  # tools/99-picogate.rules: stable across replugs
        if serial and alias.exists() and os.path.realpath(alias) == os.path.realpath(device):
            device = alias
        out.append(
            UsbPort(
                device=str(device),
                vid=ids[0],
                pid=ids[1],
                serial=serial,
                product=_read(dev / "product"),
                manufacturer=_read(dev / "manufacturer"),
            )
        )
    return out


def _unescape(field_: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_)


def _mounts(roots: Roots) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _read(roots.mounts).splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.setdefault(_unescape(parts[0]), _unescape(parts[1]))
    return out


def find_uf2_drives(roots: Roots | None = None) -> list[Uf2Drive]:
    """Boards in the UF2 bootloader (2E8A:0003 RP2040, 2E8A:000F RP2350) by their block device;
    the drive's INFO_UF2.TXT is read when it is mounted."""
    roots = roots or Roots.from_env()
    out: list[Uf2Drive] = []
    block = roots.sys / "block"
    try:
        names = sorted(os.listdir(block))
    except OSError:
        return out
    mounts = _mounts(roots)
    for name in names:
        dev = _usb_device(block / name, roots.sys)
        if dev is None:
            continue
        ids = _ids(dev)
        if ids is None or ids[0] != RPI_VID or ids[1] not in BOOTLOADER_PIDS:
            continue
        # the FAT lives in the first partition, or on the whole disk when there is no table
        parts = sorted(p.name for p in (block / name).iterdir() if (p / "partition").is_file())
        node = str(roots.dev / (parts[0] if parts else name))
        mountpoint = mounts.get(node) or mounts.get(str(roots.dev / name))
        info: dict[str, str] = {}
        chip = BOOTLOADER_PIDS[ids[1]]
        if mountpoint:
            info = parse_info_uf2(_read(Path(mountpoint) / "INFO_UF2.TXT"))
            chip = chip_of_board_id(info) or chip
        out.append(Uf2Drive(node, ids[0], ids[1], _read(dev / "serial"), chip, mountpoint, info))
    return out


def mount_drive(drive: Uf2Drive) -> str:
    """Mount a bootloader drive that is not mounted (headless gateways do not auto-mount):
    `udisksctl` (no root needed where polkit allows it), else `mount` as root. Returns the mount
    point; PortPermission says what to do when neither works."""
    if drive.mountpoint:
        return drive.mountpoint
    udisks = shutil.which("udisksctl")
    if udisks:
        proc = subprocess.run(
            [udisks, "mount", "--no-user-interaction", "-b", drive.device],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        m = re.search(r" at (.+?)\.?\s*$", proc.stdout.strip())
        if proc.returncode == 0 and m:
            return m.group(1)
    if os.geteuid() == 0:
        target = tempfile.mkdtemp(prefix="picogate-uf2-")
        proc = subprocess.run(
            ["mount", "-t", "vfat", "-o", "sync", drive.device, target],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode == 0:
            return target
        os.rmdir(target)
        raise FlashError(f"mount failed: {proc.stderr.strip()}", where=drive.device)
    raise PortPermission(
        "the bootloader drive is not mounted and mounting it needs privileges: run "
        f"`udisksctl mount -b {drive.device}` or `sudo mount {drive.device} /mnt` and pass "
        "--drive /mnt, or run picogate flash as root",
        where=drive.device,
    )


def port_holders(port: str, *, proc: Path | None = None) -> list[tuple[int, str]]:
    """Other processes that have `port` open: (pid, command line). Only the processes this user
    may inspect (all of them as root)."""
    proc = proc or Roots.from_env().proc
    try:
        target = os.path.realpath(port)
    except OSError:
        return []
    me = os.getpid()
    out: list[tuple[int, str]] = []
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        if pid == me:
            continue
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) == target:
                    cmd = (
                        (proc / str(pid) / "cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode(errors="replace")
                    )
                    out.append((pid, cmd.strip()))
                    break
            except OSError:
                continue
    return out
