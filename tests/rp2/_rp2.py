"""Helpers of the rp2 tier: the board's flash filesystem read and written on the host, a firmware
version's files, the link's hello, a UART0 pty for Modbus peers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picogate.flash._build import firmware_hash

REPO = Path(__file__).resolve().parents[2]


def picogate(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "picogate", *args], capture_output=True, text=True, timeout=timeout
    )


def flash(port: str, *args: str) -> dict[str, Any]:
    """`picogate flash --port PORT --json ARGS`: its result record (and the exit status as "rc")."""
    r = picogate("flash", "--port", port, "--json", *args)
    try:
        (rec,) = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(
            f"picogate flash printed no result (rc {r.returncode}): {r.stdout}{r.stderr}"
        ) from None
    rec["rc"] = r.returncode
    return dict(rec)


@dataclass(frozen=True)
class Flashed:
    image: Path
    result: dict[str, Any]

    @property
    def hash(self) -> str:
        return str(self.result["hash"])


class FlashImage:
    """The littlefs filesystem in an emulated board's 2 MiB flash image, on the host (the board must
    be stopped: the emulator saves the image when it stops). MicroPython's rp2 port keeps it at the
    end of the flash (RPI_PICO: the last 1408 KiB, 4 KiB blocks, littlefs v2)."""

    def __init__(self, path: Path) -> None:
        from littlefs import LittleFS

        self.path = Path(path)
        data = self.path.read_bytes()
        self.offset = next(
            o for o in range(0, len(data), 4096) if data[o + 8 : o + 16] == b"littlefs"
        )  # the superblock starts the region
        region = data[self.offset :]
        self.fs = LittleFS(
            block_size=4096,
            block_count=len(region) // 4096,
            read_size=32,
            prog_size=32,
            lookahead_size=32,
            mount=False,
        )
        self.fs.context.buffer[:] = region
        self.fs.mount()

    def files(self) -> dict[str, str]:
        """path → sha256 of every file ('' for a folder, named with a trailing /)."""
        out: dict[str, str] = {}
        for root, dirs, names in self.fs.walk("/"):
            base = root.strip("/")
            for d in dirs:
                out[(base + "/" if base else "") + d + "/"] = ""
            for n in names:
                p = (base + "/" if base else "") + n
                out[p] = hashlib.sha256(self.read(p)).hexdigest()
        return out

    def exists(self, path: str) -> bool:
        try:
            self.fs.stat(path)
            return True
        except Exception:  # littlefs.errors.LittleFSError: no such entry
            return False

    def read(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return bytes(f.read())

    def text(self, path: str) -> str | None:
        return self.read(path).decode() if self.exists(path) else None

    def write(self, path: str, data: bytes) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if not self.exists(d):
                self.fs.mkdir(d)
        with self.fs.open(path, "wb") as f:
            f.write(data)

    def remove(self, path: str) -> None:
        self.fs.remove(path)

    def save(self) -> None:
        data = bytearray(self.path.read_bytes())
        data[self.offset :] = bytes(self.fs.context.buffer)
        self.path.write_bytes(bytes(data))

    def version(self, root: str = "") -> str:
        """The hash of the one whole version in `root` (main.py, picogate_fw/, pg_fw.json), "dev"
        without manifest; AssertionError when its files are not exactly the manifest's."""
        pre = root + "/" if root else ""
        files = {
            p[len(pre) :]: h
            for p, h in self.files().items()
            if p.startswith(pre)
            and h
            and (p[len(pre) :] == "main.py" or p[len(pre) :].startswith("picogate_fw/"))
        }
        assert "main.py" in files, f"{root or '/'}: no main.py ({sorted(self.files())})"
        assert any(p.startswith("picogate_fw/app.") for p in files), f"{root or '/'}: no picogate_fw"
        man = self.text(pre + "pg_fw.json")
        if man is None:
            return "dev"
        doc = json.loads(man)
        assert files == doc["files"], (
            f"{root or '/'}: not the manifest's files ({set(files) ^ set(doc['files'])})"
        )
        assert firmware_hash(files) == doc["hash"]
        return str(doc["hash"])


_HELLO = re.compile(rb"@\d+ hello (\{.*?\}) [0-9a-f]{8}\n")


def wait_hello(board: Any, *, since: int = 0, timeout: float = 60.0) -> tuple[bytes, dict[str, Any]]:
    """Wait for the board's next whole hello frame; (the output up to it, its body)."""
    deadline = time.monotonic() + timeout
    seen = board.wait_output(b"@0 hello ", since=since, timeout=timeout)
    while not _HELLO.search(seen):
        seen = board.wait_output(
            b"\n", since=board.output_pos(), timeout=max(0.1, deadline - time.monotonic())
        )
        seen = board.output(since)
    m = _HELLO.search(seen)
    assert m is not None
    return seen, dict(json.loads(m.group(1)))


def hello_of(output: bytes, index: int = -1) -> dict[str, Any]:
    """The body of a hello frame in the board's output (the last one by default)."""
    found = _HELLO.findall(output)
    assert found, f"no hello in {output[-400:]!r}"
    return dict(json.loads(found[index]))


def make_version(root: Path, tag: str, *, every_file: bool = True) -> Path:
    """A copy of firmware/ as version `tag`: its VERSION, one file only it has, and (`every_file`)
    every module and main.py changed too."""
    shutil.copytree(
        REPO / "firmware", root, ignore=shutil.ignore_patterns("__pycache__", "sim", "mypy.ini", "*.md")
    )
    pkg = root / "picogate_fw"
    init = pkg / "__init__.py"
    init.write_text(init.read_text().replace('VERSION = "', f'VERSION = "{tag}-'))
    (pkg / f"only_{tag}.py").write_text(f"TAG = {tag!r}\n")
    if every_file:
        for module in pkg.glob("*.py"):
            module.write_text(module.read_text() + f"\n_BUILD = {tag!r}\n")
        (root / "main.py").write_text((root / "main.py").read_text() + f"\n# version {tag}\n")
    return root


class UartPty:
    """UART0's socket on a pty (socat), for a serial peer (a pymodbus RTU server opens `path_a`).
    Quacks like tests/_peers.SocatPtyPair where ModbusRtuPeer needs it."""

    def __init__(self, sock: str, workdir: Path) -> None:
        from _peers import _Process

        self.path_a = str(workdir / "uart0")
        self.path_b = sock
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_a)
        binary = shutil.which("socat")
        assert binary is not None, "socat is not installed: run tools/bootstrap.sh"
        self._process = _Process(
            "socat",
            [binary, "-d", "-d", f"PTY,link={self.path_a},raw,echo=0", f"UNIX-CONNECT:{sock}"],
            workdir / "socat-uart0.log",
        )

    def start(self) -> UartPty:
        self._process.spawn()
        self._process.wait_until(lambda: os.path.exists(self.path_a), 10, f"creating {self.path_a}")
        return self

    def stop(self) -> None:
        self._process.stop(5)


def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
