"""The command router's bounds, with fake writers: deadlines (stale, outcome_unknown), ids
(a repeat is answered, not written again), rate limits (held back, rate_limited), the device
queue (busy), unforeseen exceptions, and values cut short in results and the audit log."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest

from picogate._model import PointInfo, PointType, Value
from picogate._registry import DeviceState, PointRegistry
from picogate._router import (
    CommandRouter,
    ErrorCode,
    RateLimit,
    WriteError,
    WritePolicy,
    WriteRequest,
    WriteTicket,
    brief,
    coerce,
)
from picogate.modbus._codec import CodecError, Encoding, encode

DEV, OTHER = "plc", "pump"


class Writer:
    """Records what reached the device; `gate` holds writes after they were sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Value]] = []
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.hold_before_send = asyncio.Event()
        self.hold_before_send.set()
        self.fail: BaseException | None = None

    async def write(self, point: PointInfo, value: Value, ticket: WriteTicket) -> None:
        self.calls += 1
        await self.hold_before_send.wait()
        ticket.send()
        self.sent.append((point.name, value))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail


def make(**policy: Any) -> tuple[CommandRouter, Writer, Writer, PointRegistry]:
    registry = PointRegistry()
    for dev in (DEV, OTHER):
        registry.add(PointInfo(dev, "sp", PointType.UINT16, writable=True))
        registry.add(PointInfo(dev, "other", PointType.UINT16, writable=True))
    registry.add(PointInfo(DEV, "f", PointType.FLOAT64, writable=True))
    registry.add(PointInfo(DEV, "text", PointType.STRING, writable=True))
    router = CommandRouter(registry, policy=WritePolicy(**policy))
    a, b = Writer(), Writer()
    router.register_writer(DEV, a)
    router.register_writer(OTHER, b)
    return router, a, b, registry


def req(value: object = 1, *, point: str = "sp", device: str = DEV, **kw: Any) -> WriteRequest:
    kw.setdefault("origin", "mqtt")
    return WriteRequest(device, point, value, **kw)


def test_no_code_says_timeout() -> None:
    """`timeout` was reported for writes that were applied; the codes now say what happened."""
    codes = {c.value for c in ErrorCode}
    assert "timeout" not in codes
    assert {"busy", "stale", "outcome_unknown", "rate_limited"} <= codes


# --------------------------------------------------------------------------- deadlines


def test_deadline_counts_from_reception_per_origin_and_age_only_shortens_it() -> None:
    router, *_ = make(deadlines={"mqtt": 10.0, "rule": 5.0, "coap": 5.0, "edgex": 10.0}, default_deadline=7.0)
    t = 1000.0
    assert router.deadline_of(req(received=t)) == t + 10
    assert router.deadline_of(req(received=t, origin="rule:r1")) == t + 5
    assert router.deadline_of(req(received=t, origin="coap:[::1]:5683")) == t + 5
    assert router.deadline_of(req(received=t, origin="tool")) == t + 7
    assert router.deadline_of(req(received=t, age=3.0)) == t + 7  # ts 3 s old: 3 s less
    assert router.deadline_of(req(received=t, age=-60.0)) == t + 10  # a clock ahead never extends it


async def test_a_command_that_waited_past_its_deadline_is_stale_and_not_written() -> None:
    """Before: the deadline started only when the router ran the write, so a command that had
    queued (behind a semaphore, in a broker) moved the device long after it was sent."""
    router, writer, _, _ = make()
    result = await router.write(req(received=time.monotonic() - 11))
    assert (result.ok, result.code) == (False, ErrorCode.STALE)
    assert writer.calls == 0


async def test_an_old_ts_is_stale_whatever_the_origin() -> None:
    router, writer, _, _ = make()
    for origin in ("mqtt", "edgex", "coap:[::1]:1", "rule:x", "tool"):
        result = await router.write(req(origin=origin, age=60.0))
        assert result.code is ErrorCode.STALE, origin
        assert "60.0 s old" in result.error
    assert writer.calls == 0


async def test_not_sent_by_the_deadline_is_stale_sent_but_unconfirmed_is_outcome_unknown() -> None:
    router, writer, _, _ = make(deadlines={"mqtt": 0.1})
    writer.hold_before_send.clear()  # e.g. waiting behind other writes on the line
    result = await router.write(req(1, request_id="a"))
    assert result.code is ErrorCode.STALE
    writer.hold_before_send.set()
    await asyncio.sleep(0.05)  # the writer resumes: its ticket refuses to send
    assert writer.sent == []

    writer.gate.clear()  # sent, the device does not confirm
    result = await router.write(req(2, request_id="b"))
    assert result.code is ErrorCode.OUTCOME_UNKNOWN
    assert writer.sent == [("sp", 2)]


def test_ticket_refuses_to_send_after_its_deadline_or_once_abandoned() -> None:
    ticket = WriteTicket(time.monotonic() + 60, "plc.sp")
    ticket.send()
    assert ticket.sent
    late = WriteTicket(time.monotonic() - 0.001, "plc.sp")
    with pytest.raises(WriteError) as exc:
        late.send()
    assert exc.value.code is ErrorCode.STALE
    assert not late.sent
    given_up = WriteTicket(time.monotonic() + 60, "plc.sp")
    given_up.abandoned = True
    with pytest.raises(WriteError):
        given_up.send()


# --------------------------------------------------------------------------- ids


async def test_a_repeated_id_gets_the_first_result_and_is_not_written_again() -> None:
    router, writer, _, _ = make()
    writer.gate.clear()
    first = asyncio.create_task(router.write(req(5, request_id="c1")))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(router.write(req(5, request_id="c1")))  # a retry while in progress
    await asyncio.sleep(0.01)
    writer.gate.set()
    r1, r2 = await first, await second
    assert (r1.code, r2.code) == (ErrorCode.OK, ErrorCode.OK)
    assert r2.request_id == "c1"
    r3 = await router.write(req(5, request_id="c1"))  # a retry after the result
    assert r3.code is ErrorCode.OK
    assert writer.sent == [("sp", 5)]
    assert router.stats.duplicates == 2
    # the same id from another origin, or for another point, is another command
    assert (await router.write(req(5, request_id="c1", origin="edgex"))).ok
    assert (await router.write(req(5, request_id="c1", point="other"))).ok
    assert len(writer.sent) == 3


async def test_an_id_reused_for_another_value_is_refused() -> None:
    router, writer, _, _ = make()
    assert (await router.write(req(5, request_id="c1"))).ok
    result = await router.write(req(6, request_id="c1"))
    assert result.code is ErrorCode.BAD_REQUEST
    assert "new id" in result.error
    assert writer.sent == [("sp", 5)]


async def test_an_id_is_remembered_for_one_deadline_after_its_result() -> None:
    router, writer, _, _ = make(deadlines={"mqtt": 0.05})
    assert (await router.write(req(5, request_id="c1"))).ok
    await asyncio.sleep(0.1)
    assert (await router.write(req(5, request_id="c1"))).ok
    assert writer.sent == [("sp", 5), ("sp", 5)]


async def test_a_refused_command_can_be_sent_again_with_its_id() -> None:
    """Nothing was written, so the retry (once the device is back) is a new try."""
    router, writer, _, registry = make()
    registry.set_device_state(DEV, DeviceState.OFFLINE, reason="no reply")
    assert (await router.write(req(5, request_id="c1"))).code is ErrorCode.DEVICE_OFFLINE
    registry.set_device_state(DEV, DeviceState.ONLINE)
    assert (await router.write(req(5, request_id="c1"))).ok
    assert writer.sent == [("sp", 5)]


async def test_an_unconfirmed_write_is_not_repeated_by_a_retry() -> None:
    router, writer, _, _ = make(deadlines={"mqtt": 0.1})
    writer.gate.clear()
    assert (await router.write(req(5, request_id="c1"))).code is ErrorCode.OUTCOME_UNKNOWN
    writer.gate.set()
    router.policy = WritePolicy()  # longer deadlines from now on; the id is still remembered
    assert (await router.write(req(5, request_id="c1"))).code is ErrorCode.OUTCOME_UNKNOWN
    assert writer.sent == [("sp", 5)]


# --------------------------------------------------------------------------- rate limit


async def test_writes_beyond_the_burst_are_held_back_then_written_in_order() -> None:
    router, writer, _, _ = make(rate_limit=RateLimit(interval=0.02, burst=2))
    results = await asyncio.gather(*(router.write(req(i, request_id=f"w{i}")) for i in range(5)))
    assert [r.code for r in results] == [ErrorCode.OK] * 5
    assert writer.sent == [("sp", i) for i in range(5)]
    assert router.stats.held["plc.sp"] == 3
    assert router.summary()["held"] == 3


async def test_a_write_whose_turn_comes_after_its_deadline_is_rate_limited_at_once() -> None:
    """Two rules that undo each other must not wear out the device: writes beyond the limit are
    refused, counted and reported, and nothing waits for them."""
    router, writer, _, _ = make(rate_limit=RateLimit(interval=60.0, burst=2), deadlines={"rule": 5.0})
    codes = [(await router.write(req(i % 2, origin="rule:flip"))).code for i in range(6)]
    assert codes == [ErrorCode.OK, ErrorCode.OK] + [ErrorCode.RATE_LIMITED] * 4
    assert len(writer.sent) == 2
    assert router.stats.rate_limited["plc.sp"] == 4
    assert (await router.write(req(1, point="other"))).ok  # another point has its own limit
    metrics = "\n".join(str(m) for m in router.collect())
    assert "plc.sp" in metrics


async def test_a_point_can_have_its_own_rate_limit() -> None:
    router, writer, _, _ = make(point_limits={"plc.sp": RateLimit(interval=60.0, burst=1)})
    assert (await router.write(req(1))).ok
    assert (await router.write(req(2))).code is ErrorCode.RATE_LIMITED
    for i in range(5):
        assert (await router.write(req(i, point="other"))).ok  # the default: 10 at once
    assert writer.sent[0] == ("sp", 1)


# --------------------------------------------------------------------------- busy


async def test_a_full_device_queue_refuses_busy_and_other_devices_go_on() -> None:
    router, slow, _, _ = make(queue_per_device=2, rate_limit=RateLimit(interval=0))
    slow.gate.clear()
    waiting = [asyncio.create_task(router.write(req(i))) for i in range(2)]
    await asyncio.sleep(0.01)
    assert router.pending(DEV) == 2
    refused = await router.write(req(9))
    assert (refused.code, refused.ok) == (ErrorCode.BUSY, False)
    assert (await router.write(req(1, device=OTHER))).ok  # not held up by the slow device
    slow.gate.set()
    assert [r.code for r in await asyncio.gather(*waiting)] == [ErrorCode.OK] * 2
    assert slow.sent == [("sp", 0), ("sp", 1)]
    assert router.pending(DEV) == 0


# --------------------------------------------------------------------------- never a crash


async def test_an_unforeseen_exception_is_that_writes_device_error(caplog: pytest.LogCaptureFixture) -> None:
    router, writer, _, _ = make()
    writer.fail = OverflowError("int too large to convert to float")
    with caplog.at_level(logging.INFO):
        result = await router.write(req(1))
    assert (result.ok, result.code) == (False, ErrorCode.DEVICE_ERROR)
    assert "OverflowError" in result.error
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert len([r for r in caplog.records if r.name == "picogate.audit"]) == 1
    assert router.stats.unexpected == 1
    writer.fail = None
    assert (await router.write(req(2))).ok


async def test_a_failing_observer_does_not_fail_the_write() -> None:
    router, *_ = make()

    def broken(*_: Any) -> None:
        raise RuntimeError("observer bug")

    router.observe(broken)
    assert (await router.write(req(1))).ok


async def test_a_cancelled_write_leaves_one_audit_line(caplog: pytest.LogCaptureFixture) -> None:
    router, writer, _, _ = make()
    writer.gate.clear()
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        task = asyncio.create_task(router.write(req(1)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (line,) = [r for r in caplog.records if r.name == "picogate.audit"]
    assert line.audit["code"] == "outcome_unknown"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
def test_an_integer_no_float_can_hold_is_out_of_range(value: int) -> None:
    point = PointInfo(DEV, "f", PointType.FLOAT64, writable=True)
    with pytest.raises(WriteError) as exc:
        coerce(point, value)
    assert exc.value.code is ErrorCode.OUT_OF_RANGE
    assert len(str(exc.value)) < 200
    scaled = Encoding("holding", 0, PointType.INT16, scale=0.1)  # a float64 point, no max
    with pytest.raises(CodecError) as cexc:
        encode(scaled, value)
    assert cexc.value.code == "out_of_range"


# --------------------------------------------------------------------------- size


async def test_huge_values_are_cut_short_in_results_and_the_audit_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a 20 MB value came back in the result (echoed with !r) and twice in the log."""
    router, writer, _, _ = make()
    huge = "x" * 1_000_000
    nested: object = 1
    for _ in range(300):
        nested = [nested]
    with caplog.at_level(logging.INFO, logger="picogate.audit"):
        results = [
            await router.write(req(huge, request_id="big")),  # a number point: bad_type
            await router.write(req(nested, request_id="deep")),
            await router.write(req(huge, point="text", request_id="ok")),  # written
        ]
    assert [r.code for r in results] == [ErrorCode.BAD_TYPE, ErrorCode.BAD_TYPE, ErrorCode.OK]
    for r in results:
        assert len(r.as_json()) < 600, r
    lines = [r for r in caplog.records if r.name == "picogate.audit"]
    assert len(lines) == 3
    for line in lines:
        assert len(line.getMessage()) < 1000
        data = line.audit  # type: ignore[attr-defined]
        assert len(orjson.dumps(data)) < 1000
        assert data["truncated"] is True
    assert len(writer.sent[0][1]) == 1_000_000  # what is written is not cut


def test_brief_is_bounded_whatever_the_value() -> None:
    nested: object = "x"
    for _ in range(1000):
        nested = {"a": [nested]}
    for value in ("y" * 10**6, b"z" * 10**6, 10**5000, nested, list(range(10**5)), 1.5, None):
        assert len(brief(value)) <= 200
    assert brief(21.5) == "21.5"
    assert brief("on") == "'on'"
