"""The firmware's Modbus RTU codec (firmware/picogate_fw/mb_rtu.py) on CPython.

The same vectors (tests/cases/mb_rtu/vectors.json) are checked on MicroPython by
tests/firmware/mp/mp_mb_rtu.py; here they are also checked against pymodbus, so a vector file that
drifted from the protocol fails as well as a codec that drifted from the vectors.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu import bit_message as bm
from pymodbus.pdu import register_message as rm

REPO = Path(__file__).resolve().parents[2]
VECTORS: dict[str, Any] = json.loads((REPO / "tests/cases/mb_rtu/vectors.json").read_text())


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mb_rtu() -> ModuleType:
    return _load("picogate_fw_mb_rtu", REPO / "firmware/picogate_fw/mb_rtu.py")


def _framer(server: bool) -> FramerRTU:
    return FramerRTU(DecodePDU(server))


def _frame(pdu: ModbusPDU, unit: int) -> bytes:
    pdu.dev_id = unit
    return _framer(False).buildFrame(pdu)


def test_same_vectors_as_on_micropython(mb_rtu: ModuleType) -> None:
    sys.modules.setdefault("picogate_fw", ModuleType("picogate_fw"))
    sys.modules["picogate_fw"].mb_rtu = mb_rtu  # type: ignore[attr-defined]
    checker = _load("mp_mb_rtu", REPO / "tests/firmware/mp/mp_mb_rtu.py")
    assert checker.check_vectors(mb_rtu, VECTORS) >= 70


_READS = {
    1: bm.ReadCoilsRequest,
    2: bm.ReadDiscreteInputsRequest,
    3: rm.ReadHoldingRegistersRequest,
    4: rm.ReadInputRegistersRequest,
}


@pytest.mark.parametrize("case", VECTORS["reads"], ids=lambda c: f"u{c['u']}-fc{c['fc']}-{c['a']}+{c['n']}")
def test_read_requests_match_pymodbus(case: dict[str, Any]) -> None:
    frame = _frame(_READS[case["fc"]](address=case["a"], count=case["n"]), case["u"])
    assert frame.hex() == case["hex"]


def _write_pdu(fc: int, a: int, v: list[Any]) -> ModbusPDU:
    if fc == 5:
        return bm.WriteSingleCoilRequest(address=a, bits=[bool(v[0])])
    if fc == 6:
        return rm.WriteSingleRegisterRequest(address=a, registers=v)
    if fc == 15:
        return bm.WriteMultipleCoilsRequest(address=a, bits=[bool(x) for x in v])
    return rm.WriteMultipleRegistersRequest(address=a, registers=v)


@pytest.mark.parametrize("case", VECTORS["writes"], ids=lambda c: f"u{c['u']}-fc{c['fc']}-{c['a']}")
def test_write_requests_match_pymodbus(case: dict[str, Any]) -> None:
    assert _frame(_write_pdu(case["fc"], case["a"], case["v"]), case["u"]).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["replies"], ids=lambda c: f"{c['status']}-{c['rep'][:16]}")
def test_reply_status_agrees_with_pymodbus(case: dict[str, Any]) -> None:
    """pymodbus (as a client) decodes exactly the replies our codec calls ok or exc, with the same
    data; for crc and bad ones, pymodbus either finds no frame or a frame that does not fit."""
    rep = bytes.fromhex(case["rep"])
    req = bytes.fromhex(case["req"])
    used, unit, _, pdu_bytes = _framer(False).decode(rep)
    crc_ok = len(rep) >= 4 and FramerRTU.compute_CRC(rep[:-2]) == int.from_bytes(rep[-2:], "big")
    if case["status"] in ("ok", "exc"):
        assert used == len(rep)
        assert unit == req[0]
        pdu = DecodePDU(False).decode(pdu_bytes)
        assert pdu is not None
        if case["status"] == "exc":
            assert pdu.function_code == req[1] | 0x80
            assert pdu.exception_code == case["exc"]
        else:
            assert pdu.function_code == req[1]
            if req[1] <= 4:
                assert rep[3:-2].hex() == case["data"]
    elif case["status"] == "crc":
        assert not crc_ok or len(rep) < 5
    else:  # bad: CRC right, but not the reply to this request
        assert crc_ok
        assert unit != req[0] or rep[1] not in (req[1], req[1] | 0x80) or rep != _expected_shape(req, rep)


def _expected_shape(req: bytes, rep: bytes) -> bytes:
    """`rep` if its length and echo fit the request, else an empty frame (never equal)."""
    fc = req[1]
    if rep[1] == fc | 0x80:
        return rep if len(rep) == 5 else b""
    if fc <= 4:
        n = int.from_bytes(req[4:6], "big")
        nb = (n + 7) // 8 if fc <= 2 else 2 * n
        return rep if len(rep) == 5 + nb and rep[2] == nb else b""
    return rep if len(rep) == 8 and rep[2:6] == req[2:6] else b""


def test_crc_table_is_the_modbus_one(mb_rtu: ModuleType) -> None:
    assert len(mb_rtu._T) == 256
    for i in range(256):
        assert mb_rtu._T[i] == FramerRTU.crc16_table[i], i


def test_builders_reject_what_pymodbus_would_send_wrong(mb_rtu: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^u: 0 is not a unit id"):
        mb_rtu.build_read(bytearray(8), 0, 3, 0, 1)
    with pytest.raises(ValueError, match=r"^v\[1\]: True is not a register value"):
        mb_rtu.build_write(1, 16, 0, [1, True])


# -- properties: random input gives a status, never a crash ---------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    unit=st.integers(1, 247),
    fc=st.sampled_from([1, 2, 3, 4]),
    addr=st.integers(0, 65535),
    n=st.integers(1, 2000),
    reply=st.binary(max_size=300),
)
def test_any_reply_bytes_give_a_status(
    mb_rtu: ModuleType, unit: int, fc: int, addr: int, n: int, reply: bytes
) -> None:
    n = min(n, 125 if fc > 2 else 2000, 65536 - addr)
    req = bytearray(8)
    mb_rtu.build_read(req, unit, fc, addr, n)
    rep = bytearray(reply) + bytearray(4)
    status = mb_rtu.check_reply(req, rep, len(reply))
    assert status in (mb_rtu.OK, mb_rtu.EXC, mb_rtu.CRC, mb_rtu.BAD)
    if status == mb_rtu.OK:  # only a CRC-valid frame of exactly the expected shape
        assert len(reply) == mb_rtu.reply_len(req)
        assert FramerRTU.compute_CRC(reply[:-2]) == int.from_bytes(reply[-2:], "big")


@settings(max_examples=200, deadline=None)
@given(
    unit=st.integers(1, 247),
    fc=st.sampled_from([3, 4]),
    addr=st.integers(0, 65535),
    regs=st.lists(st.integers(0, 65535), min_size=1, max_size=125),
    flip=st.integers(0, 10_000),
)
def test_a_real_reply_is_ok_and_any_single_bit_flip_is_caught(
    mb_rtu: ModuleType, unit: int, fc: int, addr: int, regs: list[int], flip: int
) -> None:
    addr = min(addr, 65536 - len(regs))
    req = bytearray(8)
    mb_rtu.build_read(req, unit, fc, addr, len(regs))
    pdu = (rm.ReadHoldingRegistersResponse if fc == 3 else rm.ReadInputRegistersResponse)(registers=regs)
    reply = _frame(pdu, unit)
    assert mb_rtu.check_reply(req, bytearray(reply), len(reply)) == mb_rtu.OK
    bad = bytearray(reply)
    bit = flip % (8 * len(bad))
    bad[bit // 8] ^= 1 << (bit % 8)
    assert mb_rtu.check_reply(req, bad, len(bad)) in (mb_rtu.CRC, mb_rtu.BAD)
