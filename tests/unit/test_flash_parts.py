"""The flasher's pure parts: link frames (shared vectors), the upload plan, board names, the
firmware build and its cache, tray.yaml, sysfs discovery on a fake tree, open errors."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from pathlib import Path

import pytest
import serial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _flash import FakeTree
from picogate.flash import _link
from picogate.flash._board import BoardConn
from picogate.flash._build import build_firmware, firmware_hash, mpy_cross_for
from picogate.flash._deploy import board_name, make_plan, manifest_hash
from picogate.flash._errors import FlashError, PortBusy, PortPermission
from picogate.flash._ports import find_uf2_drives, find_usb_ports, port_holders
from picogate.flash._tray import load_tray

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "cases" / "link" / "vectors.json").read_text())
MPY = 6 | (3 << 8)


# --- link frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["good"], ids=lambda c: c["line"][:30])
def test_good_vectors(case: dict[str, object]) -> None:
    line = str(case["line"]).encode()
    f = _link.parse(line)
    assert f is not None
    assert (f.marker, f.seq, f.type, f.body) == (
        case["marker"],
        case["seq"],
        case["type"],
        case["body"] or "",
    )
    if not line.endswith(b"\r\n"):
        assert _link.encode(f.seq, f.type, f.body, marker=f.marker) == line


@pytest.mark.parametrize("case", VECTORS["bad"], ids=lambda c: str(c.get("error")))
def test_bad_vectors_are_not_frames(case: dict[str, object]) -> None:
    line = str(case["line"]).encode("latin-1") if "line" in case else bytes.fromhex(str(case["hex"]))
    if len(line) > VECTORS["max_line"]:
        return  # the length limit is the session's business; the codec sees a long valid-looking line
    assert _link.parse(line) is None


def test_hello_parsing() -> None:
    good = next(c for c in VECTORS["good"] if c["type"] == "hello" and c["marker"] == "@")
    f = _link.parse(good["line"].encode())
    assert f is not None
    assert _link.parse_hello(f)["hash"] == "3b9c2e7d41aa"  # type: ignore[index]
    assert _link.parse_hello(_link.Frame("#", 0, "hello", "{}")) is None
    assert _link.parse_hello(_link.Frame("@", 0, "hello", "[1]")) is None
    assert _link.parse_hello(_link.Frame("@", 0, "hello", "{bad")) is None
    host = _link.parse(_link.hello("picogate-flash"))
    assert host is not None
    assert json.loads(host.body)["proto"] == 1


# --- the plan -------------------------------------------------------------------------------------


class _Fw:
    def __init__(self, hashes: dict[str, str]) -> None:
        self.hashes = hashes
        self.hash = firmware_hash(hashes)


FW = _Fw({"main.py": "m1", "picogate_fw/app.mpy": "a2", "picogate_fw/link.mpy": "l2"})


def test_clean_board_uploads_everything() -> None:
    plan = make_plan(FW, {"live": {}, "staged": {}, "manifest": None})  # type: ignore[arg-type]
    assert plan.upload == ["main.py", "picogate_fw/app.mpy", "picogate_fw/link.mpy"]
    assert plan.dirs == ["pg_new", "pg_new/picogate_fw"]
    assert not plan.up_to_date


def test_unchanged_files_are_copied_on_the_board_and_staged_ones_kept() -> None:
    info = {
        "live": {"main.py": "m1", "picogate_fw/app.mpy": "a1", "picogate_fw/link.mpy": "l1"},
        "staged": {"pg_new/picogate_fw/app.mpy": "a2", "pg_new/picogate_fw/old.mpy": "x"},
        "manifest": json.dumps({"hash": "oldhash"}),
    }
    plan = make_plan(FW, info)  # type: ignore[arg-type]
    assert plan.copy == ["main.py"]
    assert plan.keep == ["picogate_fw/app.mpy"]
    assert plan.upload == ["picogate_fw/link.mpy"]
    assert plan.remove == ["picogate_fw/old.mpy"]


def test_up_to_date_needs_the_files_and_the_manifest() -> None:
    live = dict(FW.hashes)
    assert make_plan(FW, {"live": live, "manifest": json.dumps({"hash": FW.hash})}).up_to_date  # type: ignore[arg-type]
    assert not make_plan(FW, {"live": live, "manifest": None}).up_to_date  # type: ignore[arg-type]
    extra = dict(live, **{"picogate_fw/app.py": "stale"})
    assert not make_plan(FW, {"live": extra, "manifest": json.dumps({"hash": FW.hash})}).up_to_date  # type: ignore[arg-type]
    leftover = {"live": live, "manifest": json.dumps({"hash": FW.hash}), "staged": {"pg_new/main.py": "m1"}}
    plan = make_plan(FW, leftover)  # type: ignore[arg-type]
    assert plan.up_to_date
    assert plan.clean_staging


def test_manifest_hash_and_board_names() -> None:
    assert manifest_hash({"manifest": "not json"}) is None
    assert manifest_hash({"manifest": "[]"}) is None
    assert manifest_hash({"manifest": '{"hash": 5}'}) is None
    names = {
        "Raspberry Pi Pico with RP2040": "pico",
        "Raspberry Pi Pico W with RP2040": "pico_w",
        "Raspberry Pi Pico2 with RP2350": "pico2",
        "Raspberry Pi Pico 2 W with RP2350": "pico2_w",
    }
    for machine, name in names.items():
        assert board_name({"platform": "rp2", "machine": machine}) == name
    assert board_name({"platform": "linux", "board_env": "pico2"}) == "pico2"


# --- the build --------------------------------------------------------------------------------------


def test_build_compiles_once_then_comes_from_the_cache(tmp_path: Path) -> None:
    a = build_firmware(MPY, cache=tmp_path)
    assert a.compiled == len(a.files) - 1
    assert a.cached == 0
    assert a.files["main.py"].startswith(b"#")
    assert all(v[:2] == b"M\x06" for k, v in a.files.items() if k.endswith(".mpy"))
    b = build_firmware(MPY, cache=tmp_path)
    assert (b.compiled, b.cached) == (0, len(a.files) - 1)
    assert b.hash == a.hash
    assert json.loads(b.manifest())["files"] == b.hashes


def test_build_for_an_older_mpy_version_uses_the_archived_compiler(tmp_path: Path) -> None:
    assert "mpy-cross" in mpy_cross_for(5)
    assert mpy_cross_for(5) != mpy_cross_for(MPY)
    with pytest.raises(FlashError, match=r"loads \.mpy version 99, which no mpy-cross here writes"):
        mpy_cross_for(99)


def test_build_errors(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match="no firmware there"):
        build_firmware(MPY, source=tmp_path, cache=tmp_path / "c")
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "picogate_fw").mkdir()
    (tmp_path / "picogate_fw" / "__init__.py").write_text('VERSION = "9.9"\n')
    (tmp_path / "picogate_fw" / "bad.py").write_text("def (:\n")
    with pytest.raises(FlashError, match=r"bad\.py: mpy-cross failed: .*line 1 SyntaxError: invalid syntax"):
        build_firmware(MPY, source=tmp_path, cache=tmp_path / "c")


# --- tray.yaml --------------------------------------------------------------------------------------


def test_tray(tmp_path: Path) -> None:
    f = tmp_path / "tray.yaml"
    f.write_text("gateway: line1\nname: 'io_{n}_{serial_short}'\nboards:\n  e6614103e7000001: press\n")
    tray = load_tray(f)
    assert tray.name_for("E6614103E7000001", 1) == "press"
    assert tray.name_for("E6614103E7ABCDEF", 2) == "io_2_abcdef"
    assert tray.parallel == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gateway: [1\n", r"tray.yaml:2:1: not valid YAML"),
        ("- a\n", "must be a mapping"),
        ("gateway: line1\ncolour: red\n", "colour: Extra inputs are not permitted"),
        ("parallel: 0\n", "parallel: Input should be greater than or equal to 1"),
        ("gateway: 'bad name!'\n", "gateway: String should match pattern"),
        ("name: 'io_{uid}'\n", r"name: bad template 'io_\{uid\}'"),
        ("name: 'IO-{n}'\n", r"name: template 'IO-\{n\}' gives names like 'IO-1', which is not a valid name"),
        ("boards:\n  E6614103E7000001: Press-1\n", "boards.E6614103E7000001: String should match pattern"),
        (
            "boards:\n  E6614103E70001: press\n",
            r"boards: 'E6614103E70001' is not a USB serial number: 16 hex digits \(0-9, A-F\)",
        ),
    ],
)
def test_bad_tray(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "tray.yaml"
    f.write_text(text)
    with pytest.raises(FlashError, match=message):
        load_tray(f)


def test_tray_entries_that_match_no_board_found(tmp_path: Path) -> None:
    f = tmp_path / "tray.yaml"
    f.write_text("boards:\n  E6614103E7000001: press\n  E6614103E7000002: oven\n  6614103270000003: saw\n")
    tray = load_tray(f)
    assert tray.unmatched(["e6614103e7000001", None]) == ["E6614103E7000002", "6614103270000003"]
    assert tray.unmatched([]) == list(tray.boards)


def test_missing_tray(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match="cannot read"):
        load_tray(tmp_path / "nope.yaml")


# --- sysfs ------------------------------------------------------------------------------------------


def test_usb_ports_and_drives_from_a_fake_tree(tmp_path: Path) -> None:
    tree = FakeTree(tmp_path)
    tree.add_tty("ttyACM0", "/dev/null", serial="E6614103E7000001")
    tree.add_tty("ttyUSB0", "/dev/null", serial="FTDI1", vid=0x0403, pid=0x6001)  # not a Pico
    mnt = tmp_path / "RPI RP2"
    mnt.mkdir()
    (mnt / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    tree.add_drive("sda", serial="E6614103E7000002", mount=mnt)
    tree.add_drive("sdb", serial="E6614103E7000003", pid=0x000F)  # RP2350, not mounted
    (ports,) = [find_usb_ports(tree.roots())]
    assert [(p.device, p.vid_pid, p.serial) for p in ports] == [
        (str(tree.dev / "ttyACM0"), "2E8A:0005", "E6614103E7000001")
    ]
    # with the udev rule's stable name, that is the port shown
    os.symlink("ttyACM0", tree.dev / "picogate-E6614103E7000001")
    assert [p.device for p in find_usb_ports(tree.roots())] == [str(tree.dev / "picogate-E6614103E7000001")]
    drives = find_uf2_drives(tree.roots())
    assert [(d.device, d.chip, d.mountpoint, d.serial) for d in drives] == [
        (str(tree.dev / "sda1"), "RP2040", str(mnt), "E6614103E7000002"),
        (str(tree.dev / "sdb1"), "RP2350", None, "E6614103E7000003"),
    ]
    assert drives[0].info["Board-ID"] == "RPI-RP2"


def test_empty_or_missing_tree(tmp_path: Path) -> None:
    tree = FakeTree(tmp_path)
    assert find_usb_ports(tree.roots()) == []
    assert find_uf2_drives(tree.roots()) == []


def test_port_holders_on_a_fake_proc(tmp_path: Path) -> None:
    port = tmp_path / "ttyACM0"
    port.write_text("")
    for pid, target, cmd in (
        (101, port, b"python3\0-m\0picogate\0run\0"),
        (102, tmp_path / "other", b"vim\0"),
    ):
        (tmp_path / "proc" / str(pid) / "fd").mkdir(parents=True)
        os.symlink(target, tmp_path / "proc" / str(pid) / "fd" / "3")
        (tmp_path / "proc" / str(pid) / "cmdline").write_bytes(cmd)
    assert port_holders(str(port), proc=tmp_path / "proc") == [(101, "python3 -m picogate run")]


# --- opening a port ---------------------------------------------------------------------------------


def _raise(code: int, text: str):  # type: ignore[no-untyped-def]
    def fake(*_a: object, **_k: object) -> None:
        raise serial.SerialException(code, text)

    return fake


def test_open_errors_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICOGATE_PROCFS", str(tmp_path / "noproc"))
    port = str(tmp_path / "ttyACM0")
    monkeypatch.setattr(serial, "Serial", _raise(errno.EACCES, "could not open port: Permission denied"))
    with pytest.raises(
        PortPermission, match=r"ttyACM0: permission denied.*usermod -aG dialout.*99-picogate.rules"
    ):
        BoardConn(port).open()
    monkeypatch.setattr(serial, "Serial", _raise(errno.EWOULDBLOCK, "Could not exclusively lock port"))
    with pytest.raises(PortBusy, match="busy: held by another process"):
        BoardConn(port).open()
    monkeypatch.setattr(serial, "Serial", _raise(errno.ENOENT, "could not open port"))
    with pytest.raises(FlashError, match=r"no such port \(unplugged\?\)"):
        BoardConn(port).open()
    monkeypatch.setattr(serial, "Serial", _raise(errno.EIO, "I/O error"))
    with pytest.raises(FlashError, match="cannot open"):
        BoardConn(port).open(wait=0.2)


def test_udev_rules_are_well_formed() -> None:
    """Every rule: comma-separated KEY op "value" pairs (continuations joined), known operators,
    and the names the docs promise."""
    text = (Path(__file__).resolve().parents[2] / "tools" / "99-picogate.rules").read_text()
    rules = [r for r in text.replace("\\\n", " ").splitlines() if r.strip() and not r.startswith("#")]
    assert len(rules) == 4
    pair = re.compile(r'^\s*([A-Z_]+(?:\{[A-Za-z_]+\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*$')
    for rule in rules:
        for part in rule.split('", '):
            part = part if part.endswith('"') else part + '"'
            assert pair.match(part), f"bad rule part {part!r} in {rule!r}"
    assert 'SYMLINK+="picogate-$attr{serial}"' in text
    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in text
    assert 'ATTRS{idProduct}=="0003|000f"' in text


def test_unmounted_drive_without_privileges_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from picogate.flash import _ports

    monkeypatch.setattr(_ports.shutil, "which", lambda _name: None)
    monkeypatch.setattr(_ports.os, "geteuid", lambda: 1000)
    drive = _ports.Uf2Drive("/dev/sda1", 0x2E8A, 0x0003, "E6614103E7000001", "RP2040")
    with pytest.raises(
        PortPermission, match=r"/dev/sda1: the bootloader drive is not mounted.*udisksctl mount -b /dev/sda1"
    ):
        _ports.mount_drive(drive)
    assert (
        _ports.mount_drive(_ports.Uf2Drive("/dev/sda1", 0x2E8A, 3, "", "RP2040", mountpoint="/mnt/x"))
        == "/mnt/x"
    )


def test_boards_mount_says_what_to_do_without_privileges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from picogate.flash import _ports
    from picogate.flash._select import list_boards

    tree = FakeTree(tmp_path)
    tree.add_drive("sda", serial="E6614103E7000002", pid=0x000F)
    (row,) = list_boards(roots=tree.roots())
    assert (row.mode, row.board, row.mountpoint) == ("bootloader", "RP2350", None)
    assert "drive not mounted" in (row.note or "")
    monkeypatch.setattr(_ports.shutil, "which", lambda _name: None)
    monkeypatch.setattr(_ports.os, "geteuid", lambda: 1000)
    (row,) = list_boards(roots=tree.roots(), mount=True)
    assert "udisksctl mount -b" in (row.note or "")
    # a drive mounted meanwhile (udisksctl's answer) is read
    mnt = tmp_path / "RP2350"
    mnt.mkdir()
    (mnt / "INFO_UF2.TXT").write_text("UF2 Bootloader v1.0\nModel: Raspberry Pi RP2350\nBoard-ID: RP2350\n")
    monkeypatch.setattr("picogate.flash._select.mount_drive", lambda _d: str(mnt))
    (row,) = list_boards(roots=tree.roots(), mount=True)
    assert row.mountpoint == str(mnt)
    assert row.note == "UF2 bootloader (RP2350)"
