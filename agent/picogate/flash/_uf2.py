"""UF2 images (https://github.com/microsoft/uf2, the format's spec): parsing and checks, no I/O.

Written here rather than taken from a library: the format is 512-byte blocks with three magic
numbers, and what we need — every block checked, family ids against the board's chip, the
RP2350's leading "absolute" block — is a few dozen lines; the PyPI packages around (uf2conv
copies) convert files but do not validate them.

Block layout (little-endian 32-bit words): magic0, magic1, flags, target address, payload size,
block number, number of blocks, file size or family id (flag 0x2000), 476 bytes of data, magic end.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from picogate.flash._errors import Uf2Error, WrongFamily

__all__ = [
    "ABSOLUTE",
    "BLOCK",
    "FAMILIES",
    "RP2040",
    "RP2350_ARM_S",
    "RP2350_RISCV",
    "Uf2Image",
    "check_uf2",
    "chip_of_board_id",
    "make_uf2",
    "parse_info_uf2",
    "parse_uf2",
]

BLOCK = 512
MAGIC0 = 0x0A324655  # "UF2\n"
MAGIC1 = 0x9E5D5157
MAGIC_END = 0x0AB16F30
FLAG_NOT_MAIN_FLASH = 0x00000001
FLAG_FILE_CONTAINER = 0x00001000
FLAG_FAMILY = 0x00002000
MAX_PAYLOAD = 476

RP2040 = 0xE48BFF56
ABSOLUTE = 0xE48BFF57
DATA = 0xE48BFF58
RP2350_ARM_S = 0xE48BFF59
RP2350_RISCV = 0xE48BFF5A
RP2350_ARM_NS = 0xE48BFF5B

FAMILIES: Mapping[int, str] = {
    RP2040: "RP2040",
    ABSOLUTE: "absolute",
    DATA: "data",
    RP2350_ARM_S: "RP2350 (ARM secure)",
    RP2350_RISCV: "RP2350 (RISC-V)",
    RP2350_ARM_NS: "RP2350 (ARM non-secure)",
}
# The families a chip's bootrom accepts for a main image.
CHIP_FAMILIES: Mapping[str, frozenset[int]] = {
    "RP2040": frozenset({RP2040}),
    "RP2350": frozenset({RP2350_ARM_S, RP2350_RISCV, RP2350_ARM_NS}),
}

_HEAD = struct.Struct("<8I")
_END = struct.Struct("<I")


def _family_name(fid: int) -> str:
    return FAMILIES.get(fid, f"unknown family {fid:#010x}")


@dataclass(frozen=True)
class Uf2Image:
    """What a valid UF2 file holds: its main family, blocks and the flash range it writes."""

    family: int
    blocks: int
    payload: int
    start: int
    end: int
    leading_absolute: int = 0
    families: dict[int, int] = field(default_factory=dict)

    @property
    def chip(self) -> str:
        for chip, fams in CHIP_FAMILIES.items():
            if self.family in fams:
                return chip
        return _family_name(self.family)

    @property
    def family_name(self) -> str:
        return _family_name(self.family)


def parse_uf2(data: bytes, *, where: str = "") -> Uf2Image:
    """Check every block of `data` and return what it holds; Uf2Error names the block at fault."""
    if not data:
        raise Uf2Error("empty file, not a UF2 image", where=where)
    if len(data) % BLOCK:
        raise Uf2Error(
            f"{len(data)} bytes is not a whole number of {BLOCK}-byte UF2 blocks (truncated?)", where=where
        )
    counts: dict[int, int] = {}
    seen: dict[int, set[int]] = {}
    totals: dict[int, int] = {}
    main: int | None = None
    leading_absolute = 0
    start, end, payload = 2**32, 0, 0
    for i in range(len(data) // BLOCK):
        off = i * BLOCK
        m0, m1, flags, addr, size, no, total, fam = _HEAD.unpack_from(data, off)
        (mend,) = _END.unpack_from(data, off + BLOCK - 4)
        at = f"block {i} (offset {off})"
        if m0 != MAGIC0 or m1 != MAGIC1:
            raise Uf2Error(f"{at}: bad start magic {m0:#010x} {m1:#010x}, not a UF2 block", where=where)
        if mend != MAGIC_END:
            raise Uf2Error(f"{at}: bad end magic {mend:#010x}", where=where)
        if flags & FLAG_NOT_MAIN_FLASH:
            # comments / metadata: the bootloader skips them, but they count in the numbering
            if flags & FLAG_FAMILY and no < total:
                seen.setdefault(fam, set()).add(no)
            continue
        if flags & FLAG_FILE_CONTAINER:
            raise Uf2Error(f"{at}: a file container block, not a flash image", where=where)
        if not flags & FLAG_FAMILY:
            raise Uf2Error(
                f"{at}: no family id (flag 0x2000 missing): cannot tell RP2040 from RP2350 images",
                where=where,
            )
        if not 0 < size <= MAX_PAYLOAD:
            raise Uf2Error(f"{at}: payload size {size} outside 1..{MAX_PAYLOAD}", where=where)
        if total == 0 or no >= total:
            raise Uf2Error(f"{at}: block number {no} not below the block count {total}", where=where)
        if addr + size > 2**32:
            raise Uf2Error(f"{at}: target address {addr:#x} + {size} beyond 4 GiB", where=where)
        if fam == ABSOLUTE and main is None:
            leading_absolute += 1
        elif main is None:
            main = fam
        elif fam != main:
            raise Uf2Error(
                f"{at}: family {_family_name(fam)} after blocks of {_family_name(main)}: mixed image",
                where=where,
            )
        if totals.setdefault(fam, total) != total:
            raise Uf2Error(
                f"{at}: block count {total}, earlier blocks of this family said {totals[fam]}", where=where
            )
        nos = seen.setdefault(fam, set())
        if no in nos:
            raise Uf2Error(f"{at}: block number {no} appears twice", where=where)
        nos.add(no)
        counts[fam] = counts.get(fam, 0) + 1
        if fam != ABSOLUTE:
            start, end, payload = min(start, addr), max(end, addr + size), payload + size
    if main is None:
        raise Uf2Error("no flash image blocks (only absolute-family or metadata blocks)", where=where)
    for fam, total in totals.items():
        if fam == ABSOLUTE:
            continue
        if len(seen[fam]) != total:
            missing = sorted(set(range(total)) - seen[fam])
            raise Uf2Error(
                f"{len(missing)} of {total} blocks missing (first: block number {missing[0]}): truncated image",
                where=where,
            )
    return Uf2Image(
        family=main,
        blocks=counts[main],
        payload=payload,
        start=start,
        end=end,
        leading_absolute=leading_absolute,
        families=counts,
    )


def check_uf2(path: str | Path, chip: str) -> Uf2Image:
    """Parse the file at `path` and check it is for `chip` ("RP2040" or "RP2350")."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise Uf2Error(f"cannot read: {e.strerror}", where=where) from None
    image = parse_uf2(data, where=where)
    if chip not in CHIP_FAMILIES:
        raise Uf2Error(f"unknown chip {chip!r} (expected RP2040 or RP2350)", where=where)
    if image.family not in CHIP_FAMILIES[chip]:
        raise WrongFamily(
            f"this image is for {image.family_name} (family {image.family:#010x}) but the board is an "
            f"{chip}: use a MicroPython UF2 built for the {chip} "
            f"({'rp2-pico / rp2-pico-w' if chip == 'RP2040' else 'rp2-pico2 / rp2-pico2-w'} downloads)",
            where=where,
        )
    if image.leading_absolute and chip != "RP2350":
        raise WrongFamily("absolute-family blocks are for RP2350 boards only", where=where)
    return image


def parse_info_uf2(text: str) -> dict[str, str]:
    """`INFO_UF2.TXT` ("UF2 Bootloader v3.0", "Model: …", "Board-ID: RPI-RP2") → {"Model": …, …}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
        elif line.strip():
            out.setdefault("Bootloader", line.strip())
    return out


def chip_of_board_id(info: Mapping[str, str]) -> str | None:
    """The chip a bootloader drive belongs to, from INFO_UF2.TXT's Board-ID (or Model)."""
    board_id = info.get("Board-ID", "").upper()
    model = info.get("Model", "").upper()
    if board_id.startswith("RPI-RP2") or model.endswith("RP2"):
        return "RP2040"
    if "RP2350" in board_id or "RP2350" in model:
        return "RP2350"
    return None


def make_uf2(payload: bytes, family: int, *, base: int = 0x10000000, chunk: int = 256) -> bytes:
    """Write `payload` as UF2 blocks of `chunk` bytes for `family` at `base` (tests, tools)."""
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
    out = bytearray()
    for no, piece in enumerate(pieces):
        block = bytearray(BLOCK)
        _HEAD.pack_into(
            block, 0, MAGIC0, MAGIC1, FLAG_FAMILY, base + no * chunk, chunk, no, len(pieces), family
        )
        block[32 : 32 + len(piece)] = piece
        _END.pack_into(block, BLOCK - 4, MAGIC_END)
        out += block
    return bytes(out)
