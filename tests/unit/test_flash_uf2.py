"""UF2 parsing against the real block structure (generated here), and malformed files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from picogate.flash._errors import Uf2Error, WrongFamily
from picogate.flash._uf2 import (
    ABSOLUTE,
    BLOCK,
    RP2040,
    RP2350_ARM_S,
    RP2350_RISCV,
    check_uf2,
    chip_of_board_id,
    make_uf2,
    parse_info_uf2,
    parse_uf2,
)

PAYLOAD = bytes(range(256)) * 12  # 12 blocks of 256 bytes


def _patch(data: bytes, block: int, offset: int, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, block * BLOCK + offset, value)
    return bytes(b)


def test_a_valid_rp2040_image() -> None:
    data = make_uf2(PAYLOAD, RP2040)
    assert len(data) == 12 * BLOCK
    assert data[:4] == b"UF2\n"
    img = parse_uf2(data)
    assert img.chip == "RP2040"
    assert img.family == RP2040
    assert img.blocks == 12
    assert img.payload == len(PAYLOAD)
    assert (img.start, img.end) == (0x10000000, 0x10000000 + len(PAYLOAD))


def test_rp2350_image_may_begin_with_an_absolute_block(tmp_path: Path) -> None:
    f = tmp_path / "pico2.uf2"
    f.write_bytes(make_uf2(b"\xff" * 256, ABSOLUTE, base=0x10FFFF00) + make_uf2(PAYLOAD, RP2350_ARM_S))
    img = check_uf2(f, "RP2350")
    assert img.family == RP2350_ARM_S
    assert img.leading_absolute == 1
    assert img.chip == "RP2350"
    f.write_bytes(make_uf2(PAYLOAD, RP2350_RISCV))
    assert check_uf2(f, "RP2350").family_name == "RP2350 (RISC-V)"


def test_metadata_blocks_are_skipped() -> None:
    data = bytearray(make_uf2(PAYLOAD, RP2040))
    struct.pack_into("<I", data, 8, 0x2000 | 0x1)  # block 0: "not main flash"
    img = parse_uf2(bytes(data))
    assert img.blocks == 11


@pytest.mark.parametrize(
    ("chip", "family", "message"),
    [
        (
            "RP2040",
            RP2350_ARM_S,
            "this image is for RP2350 (ARM secure) (family 0xe48bff59) but the board is an RP2040",
        ),
        ("RP2350", RP2040, "this image is for RP2040 (family 0xe48bff56) but the board is an RP2350"),
    ],
)
def test_wrong_family_for_the_board(tmp_path: Path, chip: str, family: int, message: str) -> None:
    f = tmp_path / "x.uf2"
    f.write_bytes(make_uf2(PAYLOAD, family))
    with pytest.raises(WrongFamily, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_uf2(f, chip)


def test_absolute_blocks_are_for_rp2350_only(tmp_path: Path) -> None:
    f = tmp_path / "x.uf2"
    f.write_bytes(make_uf2(b"\xff" * 256, ABSOLUTE) + make_uf2(PAYLOAD, RP2040))
    with pytest.raises(WrongFamily, match="absolute-family blocks are for RP2350 boards only"):
        check_uf2(f, "RP2040")


GOOD = make_uf2(PAYLOAD, RP2040)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (GOOD[:-100], "not a whole number of 512-byte UF2 blocks"),
        (GOOD[:-512], "1 of 12 blocks missing .first: block number 11.: truncated image"),
        (_patch(GOOD, 0, 0, 0x12345678), "block 0 .offset 0.: bad start magic 0x12345678"),
        (_patch(GOOD, 3, 4, 0), "block 3 .offset 1536.: bad start magic"),
        (_patch(GOOD, 2, 508, 0xDEADBEEF), "block 2 .offset 1024.: bad end magic 0xdeadbeef"),
        (_patch(GOOD, 1, 8, 0), r"block 1 .offset 512.: no family id \(flag 0x2000 missing\)"),
        (_patch(GOOD, 1, 8, 0x1000 | 0x2000), "block 1 .offset 512.: a file container block"),
        (_patch(GOOD, 0, 16, 477), "payload size 477 outside 1..476"),
        (_patch(GOOD, 0, 16, 0), "payload size 0 outside 1..476"),
        (_patch(GOOD, 4, 20, 12), "block number 12 not below the block count 12"),
        (_patch(GOOD, 5, 24, 13), "block count 13, earlier blocks of this family said 12"),
        (_patch(GOOD, 5, 20, 4), "block number 4 appears twice"),
        (_patch(GOOD, 6, 28, RP2350_ARM_S), "family RP2350 .ARM secure. after blocks of RP2040: mixed image"),
        (_patch(GOOD, 0, 12, 0xFFFFFF80), "beyond 4 GiB"),
        (make_uf2(b"\x00" * 256, ABSOLUTE), "no flash image blocks"),
        (b"\x00" * 512, "bad start magic"),
    ],
)
def test_malformed_files_name_the_fault(data: bytes, message: str) -> None:
    with pytest.raises(Uf2Error, match=message):
        parse_uf2(data, where="fw.uf2")


def test_unreadable_file_and_unknown_chip(tmp_path: Path) -> None:
    with pytest.raises(Uf2Error, match=r"missing\.uf2: cannot read"):
        check_uf2(tmp_path / "missing.uf2", "RP2040")
    f = tmp_path / "x.uf2"
    f.write_bytes(GOOD)
    with pytest.raises(Uf2Error, match="unknown chip 'ESP32'"):
        check_uf2(f, "ESP32")


def test_info_uf2() -> None:
    rp2040 = parse_info_uf2("UF2 Bootloader v3.0\r\nModel: Raspberry Pi RP2\r\nBoard-ID: RPI-RP2\r\n")
    assert rp2040 == {"Bootloader": "UF2 Bootloader v3.0", "Model": "Raspberry Pi RP2", "Board-ID": "RPI-RP2"}
    assert chip_of_board_id(rp2040) == "RP2040"
    rp2350 = parse_info_uf2("UF2 Bootloader v1.0\nModel: Raspberry Pi RP2350\nBoard-ID: RP2350\n")
    assert chip_of_board_id(rp2350) == "RP2350"
    assert chip_of_board_id(parse_info_uf2("Model: Adafruit Feather M0\nBoard-ID: SAMD21\n")) is None
