"""Test helpers for the flasher: a fake sysfs/devfs/mounts tree with Pico boards in it, and
simulated boards (picogate.simboard) with a short boot window."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from picogate.simboard import SimBoard, install_firmware

BOOT_ENV = {"PICOGATE_BOOT_WINDOW_MS": "300"}


class FakeTree:
    """/sys, /dev and /proc/self/mounts for `Roots` (or the PICOGATE_* environment variables)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.mounts = root / "mounts"
        for p in (self.sys / "class" / "tty", self.sys / "block", self.dev):
            p.mkdir(parents=True, exist_ok=True)
        self.mounts.write_text("proc /proc proc rw 0 0\n")
        self._n = 0

    def env(self) -> dict[str, str]:
        return {
            "PICOGATE_SYSFS": str(self.sys),
            "PICOGATE_DEVFS": str(self.dev),
            "PICOGATE_MOUNTS": str(self.mounts),
        }

    def roots(self):  # type: ignore[no-untyped-def]
        from picogate.flash._ports import Roots

        return Roots(sys=self.sys, dev=self.dev, mounts=self.mounts)

    def _usb(self, vid: int, pid: int, serial: str, product: str) -> Path:
        self._n += 1
        dev = self.sys / "devices" / "pci0000:00" / "usb1" / f"1-{self._n}"
        dev.mkdir(parents=True)
        (dev / "idVendor").write_text(f"{vid:04x}\n")
        (dev / "idProduct").write_text(f"{pid:04x}\n")
        (dev / "serial").write_text(serial + "\n")
        (dev / "product").write_text(product + "\n")
        (dev / "manufacturer").write_text("MicroPython\n")
        return dev

    def add_tty(self, name: str, target: str, *, serial: str, vid: int = 0x2E8A, pid: int = 0x0005) -> None:
        """A USB CDC port /dev/<name> (a symlink to `target`, e.g. a simulated board's port)."""
        dev = self._usb(vid, pid, serial, "Board in FS mode")
        iface = dev / f"{dev.name}:1.0"
        (iface / "tty" / name).mkdir(parents=True)
        link = self.sys / "class" / "tty" / name
        link.mkdir()
        os.symlink(os.path.relpath(iface, link), link / "device")
        node = self.dev / name
        if node.is_symlink():
            node.unlink()
        node.symlink_to(target)

    def remove(self, name: str) -> None:
        """Unplug: the tty or block device `name` leaves sysfs and /dev."""
        import shutil as _sh

        for p in (self.sys / "class" / "tty" / name, self.sys / "block" / name):
            if p.is_symlink():
                p.unlink()
            elif p.is_dir():
                _sh.rmtree(p)
        for node in self.dev.glob(name + "*"):
            node.unlink()

    def add_drive(self, name: str, *, serial: str, pid: int = 0x0003, mount: Path | None = None) -> str:
        """A bootloader's block device /sys/block/<name> with partition <name>1; `mount`: where
        /dev/<name>1 is mounted (a directory standing for the FAT drive)."""
        dev = self._usb(0x2E8A, pid, serial, "RP2 Boot")
        blk = dev / f"{dev.name}:1.0" / "host0" / "target0:0:0" / "0:0:0:0" / "block" / name
        (blk / f"{name}1").mkdir(parents=True)
        (blk / f"{name}1" / "partition").write_text("1\n")
        os.symlink(os.path.relpath(blk, self.sys / "block"), self.sys / "block" / name)
        node = str(self.dev / f"{name}1")
        if mount is not None:
            escaped = str(mount).replace(" ", "\\040")
            with self.mounts.open("a") as f:
                f.write(f"{node} {escaped} vfat rw 0 0\n")
        return node


def start_board(d: Path, *, uid: str = "E6614103E7000001", firmware: bool = True, **kw: object) -> SimBoard:
    d.mkdir(parents=True, exist_ok=True)
    if firmware:
        install_firmware(d)
    env = dict(BOOT_ENV)
    env.update(kw.pop("env", {}) or {})  # type: ignore[arg-type]
    return SimBoard(d, uid=uid, env=env, **kw).start()  # type: ignore[arg-type]


def picogate(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "picogate", *args], capture_output=True, text=True, env=full, timeout=timeout
    )
