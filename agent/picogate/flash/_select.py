"""Which boards: listing (`picogate boards`), selection (--port/--serial/--all), the UF2 step,
and stopping the agent that holds a port (--stop-agent)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from picogate.flash._board import BoardConn
from picogate.flash._errors import FlashError, NoBoard, PortBusy
from picogate.flash._ports import (
    RPI_VID,
    Roots,
    Uf2Drive,
    find_uf2_drives,
    find_usb_ports,
    mount_drive,
    port_holders,
)
from picogate.flash._uf2 import check_uf2, chip_of_board_id, parse_info_uf2

__all__ = [
    "BoardInfo",
    "Target",
    "enter_bootloader",
    "install_micropython",
    "list_boards",
    "select_targets",
    "stop_agent",
]

# What a board at its REPL says about itself (cheap: no file hashing), then back to the friendly REPL.
_INFO_LIGHT = """
import sys, os, json, binascii
def _rd(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
uid = None
try:
    import machine
    uid = binascii.hexlify(machine.unique_id()).decode().upper()
except Exception:
    pass
print(json.dumps({'manifest': _rd('pg_fw.json'), 'mpy': getattr(sys.implementation, '_mpy', 0),
    'mp': '.'.join(str(x) for x in sys.implementation.version[:3]),
    'machine': getattr(sys.implementation, '_machine', ''), 'platform': sys.platform,
    'board_env': os.getenv('PICOGATE_BOARD') if hasattr(os, 'getenv') else None, 'uid': uid}))
"""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@dataclass
class BoardInfo:
    """One row of `picogate boards`."""

    port: str | None
    serial: str | None = None
    vid_pid: str | None = None
    mode: str = "unknown"  # app, repl, bootloader, busy, no-access, silent
    board: str | None = None
    micropython: str | None = None
    firmware: str | None = None
    hash: str | None = None
    drive: str | None = None
    mountpoint: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _probe_port(port: str, serial: str | None, vid_pid: str | None) -> BoardInfo:
    from picogate.flash import _deploy

    row = BoardInfo(port=port, serial=serial, vid_pid=vid_pid)
    conn = BoardConn(port, timeout=3.0)
    try:
        conn.open()
        # never interrupt a board that is booting or running: hello only, a REPL is asked only when
        # the board showed one
        p = conn.probe(timeout=3.0, interrupt=False)
        if p.hello is None and b"picogate: starting" in p.seen:
            p = conn.probe(timeout=5.0, interrupt=False)  # in its boot window: the hello follows
        if p.hello is not None:
            h = p.hello
            row.mode = "app"
            row.board, row.micropython, row.firmware, row.hash = (
                h.get("board"),
                h.get("mp"),
                h.get("fw"),
                h.get("hash"),
            )
            row.serial = row.serial or h.get("uid")
        elif any(
            sign in p.seen for sign in (b">>> ", b"raw REPL", b"picogate: maintenance", b"picogate: safe")
        ):
            try:
                conn.enter_raw(attempts=1)
                info = conn.exec_json(_INFO_LIGHT)
                conn.ser.write(b"\r\x02")  # back to the friendly REPL, as we found it
            except FlashError:
                row.mode = "silent"
                row.note = "neither the link's hello nor a REPL"
            else:
                row.mode = "repl"
                row.board = _deploy.board_name(info)
                row.micropython = info.get("mp")
                row.hash = _deploy.manifest_hash(info)
                row.firmware = _deploy.manifest_version(info)
                row.serial = row.serial or info.get("uid")
                row.note = "at its REPL (maintenance or safe mode, or no Picogate firmware)"
        else:
            row.mode = "silent"
            row.note = "no hello on the link and no REPL prompt (busy in a program, or not MicroPython)"
    except PortBusy as e:
        row.mode = "busy"
        row.note = str(e)
    except FlashError as e:
        row.mode = "no-access"
        row.note = str(e)
    finally:
        conn.close()
    return row


def list_boards(
    ports: Sequence[str] = (), *, roots: Roots | None = None, probe: bool = True, mount: bool = False
) -> list[BoardInfo]:
    """Every Raspberry Pi USB serial port (plus `ports`), probed in parallel, and every board in
    its UF2 bootloader (with `mount`, drives that are not mounted are mounted to read INFO_UF2.TXT)."""
    roots = roots or Roots.from_env()
    usb = find_usb_ports(roots)
    todo: list[tuple[str, str | None, str | None]] = [(u.device, u.serial or None, u.vid_pid) for u in usb]
    known = {os.path.realpath(t[0]) for t in todo}
    todo += [(p, None, None) for p in ports if os.path.realpath(p) not in known]
    rows: list[BoardInfo]
    if probe and todo:
        with ThreadPoolExecutor(max_workers=min(8, len(todo))) as ex:
            rows = list(ex.map(lambda t: _probe_port(*t), todo))
    else:
        rows = [BoardInfo(port=p, serial=s, vid_pid=v) for p, s, v in todo]
    for d in find_uf2_drives(roots):
        mount_note = None
        if mount and not d.mountpoint:
            try:
                mountpoint = mount_drive(d)
            except FlashError as e:
                mount_note = str(e)
            else:
                info = parse_info_uf2(_read_text(Path(mountpoint) / "INFO_UF2.TXT"))
                d = replace(d, mountpoint=mountpoint, info=info, chip=chip_of_board_id(info) or d.chip)
        rows.append(
            BoardInfo(
                port=None,
                serial=d.serial or None,
                vid_pid=d.vid_pid,
                mode="bootloader",
                board=d.chip,
                drive=d.device,
                mountpoint=d.mountpoint,
                note=mount_note
                or (
                    f"UF2 bootloader ({d.info.get('Board-ID', d.chip)})"
                    if d.mountpoint
                    else "UF2 bootloader, drive not mounted (picogate flash mounts it; boards --mount)"
                ),
            )
        )
    return rows


@dataclass
class Target:
    """A board to flash: its serial port, or its UF2 drive (first gets MicroPython)."""

    port: str | None = None
    serial: str | None = None
    drive: Uf2Drive | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.serial or self.port or (self.drive.device if self.drive else "?")


def select_targets(
    *, ports: Sequence[str], serials: Sequence[str], all_: bool, roots: Roots | None = None
) -> list[Target]:
    roots = roots or Roots.from_env()
    usb = find_usb_ports(roots)
    drives = find_uf2_drives(roots)
    by_real = {os.path.realpath(u.device): u for u in usb}
    out: list[Target] = []
    for p in ports:
        if not os.path.exists(p):
            raise NoBoard(f"no such port {p} (see `picogate boards`)")
        u = by_real.get(os.path.realpath(p))
        out.append(Target(port=p, serial=u.serial if u else None))
    for s in serials:
        hits = [Target(port=u.device, serial=u.serial) for u in usb if u.serial.upper() == s.upper()]
        hits += [Target(serial=d.serial, drive=d) for d in drives if d.serial.upper() == s.upper()]
        if not hits:
            raise NoBoard(f"no board with USB serial {s} connected (see `picogate boards`)")
        out.append(hits[0])
    if all_:
        seen = {os.path.realpath(t.port) for t in out if t.port}
        out += [Target(port=u.device, serial=u.serial) for u in usb if os.path.realpath(u.device) not in seen]
        out += [Target(serial=d.serial, drive=d) for d in drives if d.serial not in {t.serial for t in out}]
        if not out:
            raise NoBoard(_NO_BOARD)
        return out
    if out:
        return out
    found = [Target(port=u.device, serial=u.serial) for u in usb] + [
        Target(serial=d.serial, drive=d) for d in drives
    ]
    if not found:
        raise NoBoard(_NO_BOARD)
    if len(found) > 1:
        names = ", ".join(f"{t.port or t.drive.device if t.drive else '?'} ({t.serial})" for t in found)
        raise NoBoard(f"{len(found)} boards connected ({names}): choose with --port, --serial, or --all")
    return found


_NO_BOARD = (
    "no board found: no USB serial port with vendor 2E8A and no UF2 bootloader drive. Plug a Pico in "
    "(hold BOOTSEL while plugging for its bootloader); `picogate boards` lists what is seen"
)


def install_micropython(
    drive: Uf2Drive,
    uf2: Path,
    *,
    roots: Roots | None = None,
    timeout: float = 60.0,
    log: Callable[[str], None] = lambda _m: None,
) -> str:
    """Check `uf2` against the drive's chip, copy it onto the drive, and wait for the board's
    serial port (same USB serial) to appear. Returns the port."""
    roots = roots or Roots.from_env()
    check_uf2(uf2, drive.chip)
    mountpoint = mount_drive(drive)
    before = {u.device for u in find_usb_ports(roots)}
    target = Path(mountpoint) / uf2.name
    log(f"{drive.device}: copying {uf2.name} to {mountpoint}")
    try:
        with open(uf2, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 64 * 1024)
            dst.flush()
            with contextlib.suppress(OSError):
                os.fsync(dst.fileno())  # the bootloader reboots as the last block lands
    except PermissionError:
        raise FlashError(
            f"cannot write to {mountpoint}: permission denied (mount it as your user, e.g. "
            f"`udisksctl mount -b {drive.device}`, or run as root)",
            where=drive.device,
        ) from None
    except OSError as e:
        if not _appeared(roots, drive, before):
            # the drive may vanish as the board reboots: that is success if the port shows up
            log(f"{drive.device}: write ended with {e.strerror}; waiting for the board")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = _appeared(roots, drive, before)
        if port:
            return port
        time.sleep(0.1)
    raise FlashError(
        f"MicroPython was copied but no serial port with USB serial {drive.serial or '?'} appeared within "
        f"{timeout:.0f} s (is the UF2 file a MicroPython build?)",
        where=drive.device,
    )


def _chip(board: str | None) -> str:
    return "RP2350" if (board or "").startswith("pico2") else "RP2040"


def enter_bootloader(
    port: str, serial: str | None, uf2: Path, *, roots: Roots | None = None, timeout: float = 30.0
) -> Uf2Drive:
    """Send a board running MicroPython to its UF2 bootloader (the link's `boot`, or
    machine.bootloader() at its REPL) and wait for its drive (same USB serial). The image is
    checked against the board's chip first, so a wrong one leaves the board as it was."""
    from picogate.flash import _deploy

    roots = roots or Roots.from_env()
    conn = BoardConn(port)
    try:
        conn.open()
        p = conn.probe()
        if p.hello is not None:
            serial = serial or p.hello.get("uid")
            check_uf2(uf2, _chip(p.hello.get("board")))
            ack = conn.request("boot")
            if not ack or not ack.get("ok"):
                raise FlashError("the application did not take the link's `boot` command", where=port)
        else:
            conn.enter_raw()
            info = conn.exec_json(_INFO_LIGHT)
            serial = serial or info.get("uid")
            try:
                check_uf2(uf2, _chip(_deploy.board_name(info)))
            except FlashError:
                conn.ser.write(b"\r\x02")
                raise
            conn.bootloader()
    finally:
        conn.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in find_uf2_drives(roots):
            if serial and d.serial.upper() == serial.upper():
                return d
        time.sleep(0.1)
    raise FlashError(
        f"the board left for its bootloader but no UF2 drive with USB serial {serial or '?'} appeared within "
        f"{timeout:.0f} s",
        where=port,
    )


def _appeared(roots: Roots, drive: Uf2Drive, before: set[str]) -> str | None:
    for u in find_usb_ports(roots):
        if u.vid != RPI_VID or not os.path.exists(u.device):
            continue
        if drive.serial and u.serial.upper() == drive.serial.upper():
            return u.device
        if not drive.serial and u.device not in before:
            return u.device
    return None


def stop_agent(err: PortBusy, *, log: Callable[[str], None], wait: float = 15.0) -> None:
    """Stop the agent holding a port: `systemctl stop` when it runs as picogate.service (so that
    systemd does not start it again), else SIGTERM; then wait for the port to be free."""
    if not err.agent or err.pid is None:
        raise err
    unit = None
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{err.pid}/cgroup").read_text().splitlines():
            if line.rstrip().endswith(".service"):
                unit = line.rsplit("/", 1)[-1].strip()
    if unit and unit.startswith("picogate") and shutil.which("systemctl"):
        log(f"stopping {unit} (systemctl stop); start it again with `systemctl start {unit}`")
        subprocess.run(["systemctl", "stop", unit], check=False, timeout=60)
    else:
        log(f"stopping the Picogate agent (pid {err.pid}, SIGTERM); start it again afterwards")
        with contextlib.suppress(ProcessLookupError):
            os.kill(err.pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not port_holders(err.where):
            return
        time.sleep(0.1)
    raise FlashError(f"the agent (pid {err.pid}) still holds the port after {wait:.0f} s", where=err.where)
