"""Prometheus metrics of the Modbus lines (added to the gateway's /metrics by modbus/_attach.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from picogate._metrics import counter
from picogate.modbus._source import ModbusLine

_DISCARDED = ("late", "foreign", "mismatched", "garbage", "desync")


def collector(lines: Sequence[ModbusLine]) -> Callable[[], Iterable[Any]]:
    def collect() -> Iterable[Any]:
        yield counter(
            "picogate_polls", "Polls started", ["line"], (([ln.name], ln.stats.polls) for ln in lines)
        )
        yield counter(
            "picogate_modbus_requests",
            "Modbus requests",
            ["line"],
            (([ln.name], ln.stats.requests) for ln in lines),
        )
        yield counter(
            "picogate_modbus_errors",
            "Failed Modbus requests",
            ["line", "kind"],
            [([ln.name, "timeout"], ln.stats.timeouts) for ln in lines]
            + [([ln.name, "exception"], ln.stats.exceptions) for ln in lines]
            + [([ln.name, "any"], ln.stats.failures) for ln in lines],
        )
        yield counter(
            "picogate_modbus_discarded",
            "What Modbus links received and discarded: late replies, frames of other units, replies "
            "that did not fit their request, garbage bytes, broken Modbus TCP streams",
            ["line", "reason"],
            [([ln.name, reason], getattr(ln.link.stats, reason)) for ln in lines for reason in _DISCARDED],
        )

    return collect
