"""The poller's decoding of a reply: the shortcut for plain 16-bit registers gives exactly what
the codec gives, for every register value and byte order; anything else goes through the codec."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from picogate._model import Quality
from picogate._registry import PointRegistry
from picogate.modbus import ModbusTcpDevice
from picogate.modbus._codec import decode
from picogate.modbus._source import ModbusLine

POINTS: list[dict[str, Any]] = [
    {"name": "u", "table": "holding", "address": 0, "type": "uint16"},
    {"name": "s", "table": "holding", "address": 1, "type": "int16"},
    {"name": "u_badc", "table": "holding", "address": 2, "type": "uint16", "order": "BADC"},
    {"name": "s_badc", "table": "holding", "address": 3, "type": "int16", "order": "BADC"},
    {"name": "scaled", "table": "holding", "address": 4, "type": "int16", "scale": 0.1},
    {"name": "bit", "table": "holding", "address": 5, "bit": 3},
    {"name": "f", "table": "holding", "address": 6, "type": "float32"},
    {"name": "u32", "table": "holding", "address": 8, "type": "uint32", "order": "CDAB"},
]


async def _nothing(*_: Any) -> None:
    pass


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_the_shortcut_decodes_as_the_codec_does(order: str) -> None:
    cfg = ModbusTcpDevice.model_validate(
        {"name": "d", "type": "modbus_tcp", "host": "127.0.0.1", "byte_order": order, "points": POINTS}
    )
    line = ModbusLine([cfg], registry=PointRegistry(), emit=_nothing, status_changed=_nothing)
    dev = line.devices["d"]
    (group,) = dev.groups
    for word in (0, 1, 0x7F, 0x80, 0x1234, 0x7FFF, 0x8000, 0xFEDC, 0xFFFF):
        words = [word] * 10
        for req in group.requests:
            got = line._decode(dev, req, words[: req.count], 5)
            for r, (point, offset) in zip(got, req.members, strict=True):
                enc = dev.encodings[point]
                want = decode(enc, words[offset : offset + enc.width])
                if isinstance(want, float) and not math.isfinite(want):
                    assert (r.value, r.quality) == (None, Quality.BAD)
                    continue
                assert r.quality is Quality.GOOD
                assert (r.value, type(r.value)) == (want, type(want)), (point, hex(word))


def test_a_register_that_is_not_a_register_is_bad() -> None:
    cfg = ModbusTcpDevice.model_validate(
        {"name": "d", "type": "modbus_tcp", "host": "127.0.0.1", "points": POINTS[:2]}
    )
    line = ModbusLine([cfg], registry=PointRegistry(), emit=_nothing, status_changed=_nothing)
    dev = line.devices["d"]
    (req,) = dev.groups[0].requests
    got = line._decode(dev, req, [70000, -1], 5)
    assert [(r.point, r.value, r.quality) for r in got] == [
        ("u", None, Quality.BAD),
        ("s", None, Quality.BAD),
    ]


async def test_poll_0_polls_again_as_soon_as_the_reply_came() -> None:
    """`poll: 0` means as fast as the device answers: after a poll the next one is due at once,
    not on a grid (a 1 ms grid caps a device at 1,000 polls a second, and any jitter loses turns)."""
    cfg = ModbusTcpDevice.model_validate(
        {"name": "d", "type": "modbus_tcp", "host": "127.0.0.1", "poll": 0, "points": POINTS[:2]}
    )
    line = ModbusLine([cfg], registry=PointRegistry(), emit=_nothing, status_changed=_nothing)

    class Link:
        timeout = 1.0

        async def read(self, unit: int, table: Any, start: int, count: int) -> list[int]:
            return [1] * count

    line.link = Link()  # type: ignore[assignment]
    dev = line.devices["d"]
    (group,) = dev.groups
    assert group.interval == 0
    for _ in range(3):
        await line._poll(dev, group)
        assert group.next_due <= time.monotonic()
    assert line.stats.polls == 3


def test_poll_below_0_is_refused() -> None:
    with pytest.raises(ValueError, match="poll"):
        ModbusTcpDevice.model_validate({"name": "d", "type": "modbus_tcp", "host": "127.0.0.1", "poll": -1})


def test_devices_laid_out_alike_share_encodings_and_decoding_plans() -> None:
    """500 devices of one model hold one encoding and one decoding plan entry per register, not
    one per device; a device laid out otherwise keeps its own."""
    cfgs = [
        ModbusTcpDevice.model_validate(
            {"name": name, "type": "modbus_tcp", "host": "127.0.0.1", "port": port, "points": POINTS}
        )
        for name, port in (("a", 502), ("b", 503))
    ]
    other = ModbusTcpDevice.model_validate(
        {"name": "c", "type": "modbus_tcp", "host": "127.0.0.1", "byte_order": "CDAB", "points": POINTS}
    )
    lines = [
        ModbusLine([cfg], registry=PointRegistry(), emit=_nothing, status_changed=_nothing)
        for cfg in (*cfgs, other)
    ]
    (a,), (b,), (c,) = (list(line.devices.values()) for line in lines)
    assert all(a.encodings[p] is b.encodings[p] for p in a.encodings)
    assert a.encodings["f"] is not c.encodings["f"]
    assert a.encodings["f"] != c.encodings["f"]  # another word order
    for line, dev in zip(lines, (a, b, c), strict=True):
        for req in dev.groups[0].requests:
            line._decode(dev, req, [0] * req.count, 5)
    plans = [[m for req in d.groups[0].requests for m in d.members[id(req)]] for d in (a, b, c)]
    assert all(x is y for x, y in zip(plans[0], plans[1], strict=True))
