"""The command router: every error code, with a fake writer; one audit line per write."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from picogate._model import PointInfo, PointType, Value
from picogate._registry import DeviceState, PointRegistry
from picogate._router import (
    CommandRouter,
    ErrorCode,
    FunctionWriter,
    WriteError,
    WriteRequest,
    WriteResult,
    WriteTicket,
)

DEV = "plc"


class FakeWriter:
    """Records writes; can be told to fail, or to hang before or after sending."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Value]] = []
        self.fail: Exception | None = None
        self.hang_before_send = False
        self.hang = False

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        if self.hang_before_send:
            await asyncio.sleep(3600)
        ticket.send()
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail is not None:
            raise self.fail
        self.writes.append((point.name, value))


def info(name: str, type_: PointType, **kw: Any) -> PointInfo:
    return PointInfo(device=DEV, name=name, type=type_, writable=kw.pop("writable", True), **kw)


POINTS = [
    info("flag", PointType.BOOL),
    info("i16", PointType.INT16),
    info("u16", PointType.UINT16),
    info("i32", PointType.INT32),
    info("u32", PointType.UINT32),
    info("i64", PointType.INT64),
    info("u64", PointType.UINT64),
    info("f32", PointType.FLOAT32),
    info("f64", PointType.FLOAT64),
    info("text", PointType.STRING),
    info("limited", PointType.FLOAT64, min=-10, max=10),
    info("ilimited", PointType.UINT16, min=5, max=50),
    info("temp", PointType.FLOAT64, writable=False),
]


@pytest.fixture
def setup() -> tuple[CommandRouter, FakeWriter, PointRegistry]:
    registry = PointRegistry()
    for p in POINTS:
        registry.add(p)
    router = CommandRouter(registry, timeout=0.2)
    writer = FakeWriter()
    router.register_writer(DEV, writer)
    return router, writer, registry


async def write(
    router: CommandRouter, point: str, value: object, device: str = DEV, rid: str = "r1"
) -> WriteResult:
    return await router.write(WriteRequest(device, point, value, origin="test", request_id=rid))


OK_CASES = [
    ("flag", True, True),
    ("flag", 0, False),
    ("flag", 1.0, True),
    ("i16", -32768, -32768),
    ("i16", 32767, 32767),
    ("u16", 65535, 65535),
    ("u16", 7.0, 7),  # an integral float is an integer
    ("i32", -(2**31), -(2**31)),
    ("u32", 2**32 - 1, 2**32 - 1),
    ("i64", -(2**63), -(2**63)),
    ("u64", 2**64 - 1, 2**64 - 1),
    ("f32", 1.5, 1.5),
    ("f64", 3, 3),
    ("text", "hello", "hello"),
    ("limited", -10, -10),
    ("limited", 10.0, 10.0),
    ("ilimited", 5, 5),
]


@pytest.mark.parametrize(("point", "value", "written"), OK_CASES)
async def test_ok_writes_are_converted(setup: Any, point: str, value: object, written: Value) -> None:
    router, writer, _ = setup
    result = await write(router, point, value)
    assert (result.ok, result.code, result.error) == (True, ErrorCode.OK, "")
    assert result.value == written
    assert type(result.value) is type(written)
    assert writer.writes == [(point, written)]
    assert result.request_id == "r1"


BAD_TYPE_CASES = [
    ("flag", 2),
    ("flag", "true"),
    ("flag", None),
    ("i16", 1.5),
    ("i16", "1"),
    ("i16", True),  # a bool is not a number here
    ("u16", None),
    ("u16", [1]),
    ("i32", 2.5),
    ("u32", {"v": 1}),
    ("i64", float("nan")),
    ("u64", float("inf")),
    ("f32", float("nan")),
    ("f32", "1.5"),
    ("f64", float("-inf")),
    ("f64", False),
    ("text", 5),
    ("text", None),
]


@pytest.mark.parametrize(("point", "value"), BAD_TYPE_CASES)
async def test_bad_type(setup: Any, point: str, value: object) -> None:
    router, writer, _ = setup
    result = await write(router, point, value)
    assert (result.ok, result.code) == (False, ErrorCode.BAD_TYPE)
    assert point in result.error
    assert not writer.writes


OUT_OF_RANGE_CASES = [
    ("i16", -32769),
    ("i16", 32768),
    ("u16", -1),
    ("u16", 65536),
    ("i32", 2**31),
    ("u32", -1),
    ("u32", 2**32),
    ("i64", 2**63),
    ("u64", 2**64),
    ("u64", -1.0),
    ("limited", 10.5),
    ("limited", -11),
    ("ilimited", 4),
    ("ilimited", 51),
]


@pytest.mark.parametrize(("point", "value"), OUT_OF_RANGE_CASES)
async def test_out_of_range(setup: Any, point: str, value: object) -> None:
    router, writer, _ = setup
    result = await write(router, point, value)
    assert (result.ok, result.code) == (False, ErrorCode.OUT_OF_RANGE)
    assert point in result.error
    assert not writer.writes


async def test_unknown_point_and_device(setup: Any) -> None:
    router, writer, _ = setup
    assert (await write(router, "nosuch", 1)).code is ErrorCode.UNKNOWN_POINT
    assert (await write(router, "flag", True, device="other")).code is ErrorCode.UNKNOWN_POINT
    assert not writer.writes


async def test_read_only(setup: Any) -> None:
    router, writer, _ = setup
    result = await write(router, "temp", 1.0)
    assert (result.ok, result.code) == (False, ErrorCode.READ_ONLY)
    assert not writer.writes


async def test_checks_come_before_the_device_state(setup: Any) -> None:
    """A bad value is reported as such even when the device is offline."""
    router, _, registry = setup
    registry.set_device_state(DEV, DeviceState.OFFLINE, reason="no reply")
    assert (await write(router, "i16", "x")).code is ErrorCode.BAD_TYPE
    assert (await write(router, "temp", 1)).code is ErrorCode.READ_ONLY


async def test_offline_device(setup: Any) -> None:
    router, writer, registry = setup
    registry.set_device_state(DEV, DeviceState.OFFLINE, reason="no reply")
    result = await write(router, "u16", 1)
    assert (result.ok, result.code) == (False, ErrorCode.DEVICE_OFFLINE)
    assert "no reply" in result.error
    assert not writer.writes
    registry.set_device_state(DEV, DeviceState.ONLINE)
    assert (await write(router, "u16", 1)).ok
    # unknown (not polled yet) is not offline: the write is tried
    registry.set_device_state(DEV, DeviceState.UNKNOWN)
    assert (await write(router, "u16", 2, rid="r2")).ok


async def test_no_writer_is_offline(setup: Any) -> None:
    router, _, _ = setup
    router.unregister_writer(DEV)
    result = await write(router, "u16", 1)
    assert (result.ok, result.code) == (False, ErrorCode.DEVICE_OFFLINE)


async def test_sent_but_not_confirmed_by_the_deadline_is_outcome_unknown(setup: Any) -> None:
    router, writer, _ = setup
    writer.hang = True
    async with asyncio.timeout(5):
        result = await write(router, "u16", 1)
    assert (result.ok, result.code) == (False, ErrorCode.OUTCOME_UNKNOWN)
    assert "may or may not" in result.error


async def test_not_sent_by_the_deadline_is_stale(setup: Any) -> None:
    router, writer, _ = setup
    writer.hang_before_send = True
    async with asyncio.timeout(5):
        result = await write(router, "u16", 1)
    assert (result.ok, result.code) == (False, ErrorCode.STALE)
    assert "nothing written" in result.error


@pytest.mark.parametrize(
    "code",
    [ErrorCode.DEVICE_ERROR, ErrorCode.OUTCOME_UNKNOWN, ErrorCode.DEVICE_OFFLINE, ErrorCode.OUT_OF_RANGE],
)
async def test_writer_errors_pass_through(setup: Any, code: ErrorCode) -> None:
    router, writer, _ = setup
    writer.fail = WriteError(code, "exception 4 (server device failure)")
    result = await write(router, "u16", 1)
    assert (result.ok, result.code, result.error) == (False, code, "exception 4 (server device failure)")


async def test_function_writer() -> None:
    registry = PointRegistry()
    registry.add(info("u16", PointType.UINT16))
    seen: list[Value] = []

    async def fn(point: PointInfo, value: Value) -> None:
        seen.append(value)

    router = CommandRouter(registry)
    router.register_writer(DEV, FunctionWriter(fn))
    assert (await write(router, "u16", 9)).ok
    assert seen == [9]


async def test_one_audit_line_per_write_and_observers(setup: Any, caplog: pytest.LogCaptureFixture) -> None:
    router, _writer, _ = setup
    observed: list[tuple[str, ErrorCode]] = []
    router.observe(lambda req, res, secs: observed.append((req.point, res.code)))
    writer_ok = ("u16", 3)
    cases = [writer_ok, ("temp", 1), ("nosuch", 1), ("i16", 99999), ("flag", "x")]
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        for point, value in cases:
            await router.write(WriteRequest(DEV, point, value, origin="rule:r1", request_id=f"id-{point}"))
    audit = [r for r in caplog.records if r.name == "picogate.audit"]
    assert len(audit) == len(cases)
    codes = ["ok", "read_only", "unknown_point", "out_of_range", "bad_type"]
    for rec, (point, value), code in zip(audit, cases, codes, strict=True):
        msg = rec.getMessage()
        assert f"{DEV}.{point}={value!r}" in msg
        assert "rule:r1" in msg
        assert f"id=id-{point}" in msg
        assert f"-> {code}" in msg
        data = rec.audit  # type: ignore[attr-defined]
        assert (data["device"], data["point"], data["value"], data["origin"], data["code"]) == (
            DEV,
            point,
            value,
            "rule:r1",
            code,
        )
        assert data["id"] == f"id-{point}"
        assert isinstance(data["ms"], float)
        assert (data["error"] == "") == (code == "ok")
    assert [c.value for _, c in observed] == codes


def test_result_json() -> None:
    res = WriteResult(False, ErrorCode.STALE, "too old", request_id="x")
    assert res.as_json() == b'{"id":"x","ok":false,"code":"stale","error":"too old"}'
