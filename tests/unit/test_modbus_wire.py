"""The agent's Modbus frame codec (modbus/_wire.py): data-driven cases, the firmware's RTU vectors,
pymodbus as a second implementation, and properties (random bytes give a result or a WireError)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu import bit_message as bm
from pymodbus.pdu import register_message as rm

from picogate.modbus._wire import (
    Desync,
    ExceptionReply,
    Mismatch,
    Request,
    WireError,
    check_reply,
    crc16,
    find_rtu_reply,
    frame_gap,
    mask_write_request,
    mbap_frame,
    mbap_one,
    mbap_split,
    read_request,
    rtu_frame,
    rtu_frame_length,
    scan_rtu,
    wire_time,
    write_request,
)

REPO = Path(__file__).resolve().parents[2]
CASES: dict[str, Any] = yaml.safe_load((REPO / "tests/cases/modbus_wire/cases.yaml").read_text())
VECTORS: dict[str, Any] = json.loads((REPO / "tests/cases/mb_rtu/vectors.json").read_text())


def build(r: dict[str, Any]) -> Request:
    if r["fc"] == 22:
        return mask_write_request(r["unit"], r["address"], r["and_mask"], r["or_mask"])
    if "values" in r:
        return write_request(r["unit"], r["fc"], r["address"], r["values"])
    return read_request(r["unit"], r["fc"], r["address"], r["count"])


def _names(cases: list[dict[str, Any]]) -> list[str]:
    return [c.get("name") or json.dumps(c["request"]) + c.get("pdu", "") for c in cases]


# -- requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["requests"], ids=_names(CASES["requests"]))
def test_requests(case: dict[str, Any]) -> None:
    req = build(case["request"])
    assert mbap_frame(0x0102, req).hex() == case["tcp"]
    if "rtu" in case:
        assert rtu_frame(req).hex() == case["rtu"]
        assert crc16(rtu_frame(req)) == 0


@pytest.mark.parametrize("case", CASES["requests"], ids=_names(CASES["requests"]))
def test_requests_agree_with_pymodbus(case: dict[str, Any]) -> None:
    req = build(case["request"])
    pdu = DecodePDU(True).decode(req.pdu)  # pymodbus, as a server, parses our request PDU
    assert pdu is not None
    assert pdu.function_code == req.fc
    pdu.dev_id, pdu.transaction_id = req.unit, 0x0102
    assert FramerSocket(DecodePDU(False)).buildFrame(pdu) == mbap_frame(0x0102, req)


@pytest.mark.parametrize("case", CASES["bad_requests"], ids=_names(CASES["bad_requests"]))
def test_bad_requests(case: dict[str, Any]) -> None:
    if "rtu_error" in case:
        req = build(case["request"])
        with pytest.raises(WireError, match="^" + case["rtu_error"]):
            rtu_frame(req)
    else:
        with pytest.raises(WireError, match="^" + case["error"].replace("(", r"\(").replace(")", r"\)")):
            build(case["request"])


@pytest.mark.parametrize("case", VECTORS["reads"] + VECTORS["writes"], ids=lambda c: c["hex"])
def test_firmware_vectors(case: dict[str, Any]) -> None:
    """The same frames as the firmware's RTU codec (tests/cases/mb_rtu/vectors.json)."""
    if "n" in case:
        req = read_request(case["u"], case["fc"], case["a"], case["n"])
    else:
        req = write_request(case["u"], case["fc"], case["a"], case["v"])
    assert rtu_frame(req).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["crc"], ids=lambda c: c["hex"] or "empty")
def test_crc(case: dict[str, Any]) -> None:
    assert crc16(bytes.fromhex(case["hex"])) == case["crc"]


@pytest.mark.parametrize("case", VECTORS["gap"], ids=lambda c: f"{c['baud']}{c['parity']}{c['stop']}")
def test_frame_gap(case: dict[str, Any]) -> None:
    gap = frame_gap(case["baud"], case["bits"], case["parity"], case["stop"])
    assert abs(gap * 1e6 - case["us"]) < 1


def test_wire_time() -> None:
    assert wire_time(8, 9600) == pytest.approx(8 * 10 / 9600)
    assert wire_time(25, 115200, 8, "E", 1) == pytest.approx(25 * 11 / 115200)


# -- replies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["replies"], ids=_names(CASES["replies"]))
def test_replies(case: dict[str, Any]) -> None:
    req = build(case["request"])
    pdu = bytes.fromhex(case["pdu"])
    if "exception" in case:
        with pytest.raises(ExceptionReply) as exc:
            check_reply(req, pdu)
        assert exc.value.code == case["exception"]
        assert str(exc.value).startswith(f"device answered exception {case['exception']} (")
    elif "mismatch" in case:
        with pytest.raises(Mismatch) as mm:
            check_reply(req, pdu)
        assert str(mm.value).startswith(case["mismatch"])
    else:
        assert check_reply(req, pdu) == case["values"]


@pytest.mark.parametrize("case", VECTORS["replies"], ids=lambda c: c["rep"][:20] or "empty")
def test_firmware_reply_vectors(case: dict[str, Any]) -> None:
    """The firmware codec's verdict on an RTU reply is ours: ok/exc found, crc/bad not."""
    raw = bytes.fromhex(case["req"])
    fc = raw[1]
    unit, address, n = raw[0], *struct.unpack(">HH", raw[2:6])
    if fc <= 4:
        req = read_request(unit, fc, address, n)
    elif fc in (5, 6):
        req = write_request(unit, fc, address, [bool(n) if fc == 5 else n])
    elif fc == 15:
        req = write_request(unit, fc, address, [bool(raw[7 + i // 8] >> (i % 8) & 1) for i in range(n)])
    else:
        req = write_request(unit, fc, address, list(struct.unpack(f">{n}H", raw[7 : 7 + 2 * n])))
    assert rtu_frame(req) == raw
    rep = bytes.fromhex(case["rep"])
    match = find_rtu_reply(req, rep)
    if case["status"] in ("ok", "exc"):
        assert match is not None
        assert (match.start, match.end, match.exception) == (0, len(rep), case["status"] == "exc")
        if case["status"] == "ok" and fc <= 4:
            values = check_reply(req, match.pdu(rep))
            assert match.pdu(rep)[2:].hex() == case["data"]
            assert values is not None
    else:
        # The firmware judges the whole frame (its end is the line's silence); on a byte stream
        # the reply is the first whole frame that fits, and what follows it is discarded.
        assert match is None or match.end < len(rep)


# -- Modbus TCP streams ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["mbap"], ids=_names(CASES["mbap"]))
def test_mbap_split(case: dict[str, Any]) -> None:
    buf = bytearray.fromhex(case["stream"])
    if "error" in case:
        frames: list[tuple[int, int, bytes]] = []
        with pytest.raises(Desync, match="^" + case["error"].replace("(", r"\(").replace(")", r"\)")):
            frames = mbap_split(buf)
        # frames before the bad header were consumed (and lost with the connection)
        expected = case.get("frames", [])
        assert len(bytes.fromhex(case["stream"])) - len(buf) == sum(
            6 + 1 + len(p) // 2 for _, _, p in expected
        )
        assert not frames
    else:
        one = mbap_one(bytes(buf))
        got = mbap_split(buf)
        assert [[t, u, p.hex()] for t, u, p in got] == case["frames"]
        assert len(buf) == case["left"]
        assert (one is not None) == (len(got) == 1 and not case["left"])


# -- RTU streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["rtu_find"], ids=_names(CASES["rtu_find"]))
def test_rtu_find(case: dict[str, Any]) -> None:
    m = find_rtu_reply(build(case["request"]), bytes.fromhex(case["received"]))
    assert (None if m is None else [m.start, m.end, m.exception]) == case["match"]


@pytest.mark.parametrize("case", CASES["rtu_scan"], ids=_names(CASES["rtu_scan"]))
def test_rtu_scan(case: dict[str, Any]) -> None:
    assert scan_rtu(bytes.fromhex(case["received"])) == (case["units"], case["garbage"])


# -- properties: random input gives a result or a WireError, never another exception ---------------

_reads = st.builds(
    lambda unit, fc, addr, n: read_request(
        unit, fc, min(addr, 65536 - min(n, 125 if fc > 2 else 2000)), min(n, 125 if fc > 2 else 2000)
    ),
    st.integers(1, 247),
    st.sampled_from([1, 2, 3, 4]),
    st.integers(0, 65535),
    st.integers(1, 2000),
)
_writes = st.one_of(
    st.builds(
        lambda u, a, v: write_request(u, 6, a, [v]),
        st.integers(1, 247),
        st.integers(0, 65535),
        st.integers(0, 65535),
    ),
    st.builds(
        lambda u, a, v: write_request(u, 5, a, [v]), st.integers(1, 247), st.integers(0, 65535), st.booleans()
    ),
    st.builds(
        lambda u, a, vs: write_request(u, 16, min(a, 65536 - len(vs)), vs),
        st.integers(1, 247),
        st.integers(0, 65535),
        st.lists(st.integers(0, 65535), min_size=1, max_size=123),
    ),
    st.builds(
        lambda u, a, vs: write_request(u, 15, min(a, 65536 - len(vs)), vs),
        st.integers(1, 247),
        st.integers(0, 65535),
        st.lists(st.booleans(), min_size=1, max_size=1968),
    ),
    st.builds(
        lambda u, a, m1, m2: mask_write_request(u, a, m1, m2),
        st.integers(1, 247),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.integers(0, 65535),
    ),
)
_requests = st.one_of(_reads, _writes)


@settings(max_examples=400, deadline=None)
@given(req=_requests, pdu=st.binary(max_size=260))
def test_any_reply_pdu_gives_values_or_a_wire_error(req: Request, pdu: bytes) -> None:
    try:
        values = check_reply(req, pdu)
    except WireError:
        return
    assert len(pdu) == req.reply_len
    assert pdu.startswith(req.reply_prefix)
    if req.fc in (1, 2, 3, 4):
        assert values is not None
        assert len(values) == req.count
    else:
        assert values is None


@settings(max_examples=400, deadline=None)
@given(stream=st.binary(max_size=600))
def test_any_stream_gives_frames_or_a_desync(stream: bytes) -> None:
    one = mbap_one(stream)  # the shortcut for a chunk that is exactly one frame
    if one is not None:
        assert mbap_split(bytearray(stream)) == [one]
    buf = bytearray(stream)
    try:
        frames = mbap_split(buf)
    except Desync:
        return
    used = sum(7 + len(p) for _, _, p in frames)
    assert bytes(buf) == stream[used:]
    assert len(buf) < 7 or 6 + int.from_bytes(buf[4:6], "big") > len(buf)


@settings(max_examples=400, deadline=None)
@given(req=_requests, noise=st.binary(max_size=300))
def test_any_bytes_give_a_reply_that_fits_or_none(req: Request, noise: bytes) -> None:
    m = find_rtu_reply(req, noise)
    if m is not None:
        frame = noise[m.start : m.end]
        assert crc16(frame) == 0
        assert frame[0] == req.unit
        if m.exception:
            assert len(frame) == 5
            assert frame[1] == req.fc | 0x80
        else:
            assert frame[1:-2].startswith(req.reply_prefix)
            check_reply(req, m.pdu(noise))  # fits
    units, garbage = scan_rtu(noise)
    assert garbage <= len(noise)
    assert all(0 <= u <= 255 for u in units)
    rtu_frame_length(noise)


def _pymodbus_reply(req: Request, regs: list[int]) -> ModbusPDU:
    cls = rm.ReadHoldingRegistersResponse if req.fc == 3 else rm.ReadInputRegistersResponse
    return cls(registers=regs)


@settings(max_examples=200, deadline=None)
@given(
    unit=st.integers(1, 247),
    fc=st.sampled_from([3, 4]),
    regs=st.lists(st.integers(0, 65535), min_size=1, max_size=125),
    flip=st.integers(0, 10_000),
    before=st.binary(max_size=20),
)
def test_a_real_reply_is_found_and_any_bit_flip_is_caught(
    unit: int, fc: int, regs: list[int], flip: int, before: bytes
) -> None:
    """pymodbus builds the reply; we find it behind noise, and never after one flipped bit."""
    req = read_request(unit, fc, 0, len(regs))
    pdu = _pymodbus_reply(req, regs)
    pdu.dev_id = unit
    reply = FramerRTU(DecodePDU(False)).buildFrame(pdu)
    m = find_rtu_reply(req, before + reply)
    assert m is not None
    assert check_reply(req, m.pdu(before + reply)) == regs
    bad = bytearray(reply)
    bit = flip % (8 * len(bad))
    bad[bit // 8] ^= 1 << (bit % 8)
    found = find_rtu_reply(req, bytes(bad))
    assert found is None
    pdu.transaction_id = flip & 0xFFFF
    tcp = bytearray(FramerSocket(DecodePDU(False)).buildFrame(pdu))
    ((tid, u, body),) = mbap_split(tcp)
    assert (tid, u) == (flip & 0xFFFF, unit)
    assert check_reply(req, body) == regs


@settings(max_examples=200, deadline=None)
@given(
    unit=st.integers(1, 247),
    fc=st.sampled_from([1, 2]),
    bits=st.lists(st.booleans(), min_size=1, max_size=2000),
)
def test_bit_replies_agree_with_pymodbus(unit: int, fc: int, bits: list[bool]) -> None:
    req = read_request(unit, fc, 0, len(bits))
    cls = bm.ReadCoilsResponse if fc == 1 else bm.ReadDiscreteInputsResponse
    pdu = cls(bits=bits)
    pdu.dev_id = unit
    reply = FramerRTU(DecodePDU(False)).buildFrame(pdu)
    m = find_rtu_reply(req, reply)
    assert m is not None
    assert check_reply(req, m.pdu(reply)) == bits
