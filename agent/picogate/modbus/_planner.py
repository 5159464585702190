"""Modbus request planner: the fewest reads that cover a device's points.  Pure, no I/O.

Points of one table are sorted by address and merged greedily: a point joins the request being
built when the gap from the request's end to the point's start is at most `max_gap` and the merged
span stays within the limit (125 registers, 2000 bits, or less if the device says so).  Points
that read the same registers (bits of one register, a uint16 and an int32 view of the same
words) share a request.  The result is ordered by table (coil, discrete_input, holding, input),
then by start address, so the same points always give the same plan.

The poller reads each `Request` and hands every member its words:

    words = read(req.table, req.start, req.count)          # exactly req.count registers or bits
    for key, offset in req.members:
        value = decode(encodings[key], req.slice(words, offset, encodings[key].width))
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from picogate.modbus._codec import Encoding, Table

__all__ = ["MAX_READ_BITS", "MAX_READ_REGISTERS", "Request", "plan"]

MAX_READ_REGISTERS = 125
"""Protocol limit of FC 3 and FC 4 (read holding / input registers)."""

MAX_READ_BITS = 2000
"""Protocol limit of FC 1 and FC 2 (read coils / discrete inputs)."""

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")

_TABLE_ORDER = {table: i for i, table in enumerate(Table)}


@dataclass(frozen=True, slots=True)
class Request(Generic[K]):
    """One read: `count` registers (or bits) of `table` from `start`.

    `members` holds (key, offset) for every point the read serves: the point's first word is
    `words[offset]`.  Members are ordered by offset; several may share an offset.
    """

    table: Table
    start: int
    count: int
    members: tuple[tuple[K, int], ...]

    @property
    def end(self) -> int:
        """First address after the request."""
        return self.start + self.count

    def slice(self, words: Sequence[W], offset: int, width: int) -> Sequence[W]:
        """The `width` words of the member at `offset`, out of the words this request read."""
        if len(words) != self.count:
            raise ValueError(
                f"{self.table} read at {self.start} expects {self.count} words, got {len(words)}"
            )
        return words[offset : offset + width]


def plan(
    points: Sequence[tuple[K, Encoding]],
    *,
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
    max_gap: int = 0,
    no_merge: bool = False,
) -> list[Request[K]]:
    """The reads that cover `points`, each a (key, encoding) pair with a unique key.

    `max_registers` and `max_bits` are the device's limits per read, clamped to the protocol's
    (125 and 2000).  `max_gap` is the largest run of unused registers (or bits) read to join two
    points into one request; 0 joins only adjacent or overlapping points.  `no_merge` gives each
    point its own request, for devices that refuse reads spanning several points; points with
    exactly the same span still share one.

    Raises ValueError for a limit below 1, a negative gap, a duplicate key, or a point wider than
    its table's limit.
    """
    if max_registers < 1 or max_bits < 1:
        raise ValueError(
            f"read limits must be at least 1 (max_registers={max_registers}, max_bits={max_bits})"
        )
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more, not {max_gap}")
    limits = {
        Table.COIL: min(max_bits, MAX_READ_BITS),
        Table.DISCRETE_INPUT: min(max_bits, MAX_READ_BITS),
        Table.HOLDING: min(max_registers, MAX_READ_REGISTERS),
        Table.INPUT: min(max_registers, MAX_READ_REGISTERS),
    }

    # (table rank, address, width, input position, key): sorting gives the plan's order.
    spans: list[tuple[int, int, int, int, K]] = []
    seen: set[K] = set()
    for i, (key, enc) in enumerate(points):
        if key in seen:
            raise ValueError(f"point {key!r} is listed twice")
        seen.add(key)
        width = enc.width
        if width > limits[enc.table]:
            raise ValueError(
                f"point {key!r} spans {width} {'bits' if enc.table.is_bit else 'registers'}; "
                f"one {enc.table} read carries at most {limits[enc.table]}"
            )
        if enc.address < 0 or enc.address + width - 1 > 0xFFFF:
            raise ValueError(f"point {key!r} at {enc.table} {enc.address} runs past address 65535")
        spans.append((_TABLE_ORDER[enc.table], enc.address, width, i, key))
    spans.sort(key=lambda s: s[:4])

    tables = list(Table)
    requests: list[Request[K]] = []
    rank = -1
    start = end = 0
    members: list[tuple[K, int]] = []

    def flush() -> None:
        if members:
            requests.append(Request(tables[rank], start, end - start, tuple(members)))
            members.clear()

    for point_rank, address, width, _, key in spans:
        stop = address + width
        if point_rank == rank and members:
            if no_merge:
                joins = address == start and stop == end
            else:
                joins = address - end <= max_gap and max(end, stop) - start <= limits[tables[rank]]
            if joins:
                members.append((key, address - start))
                end = max(end, stop)
                continue
        flush()
        rank, start, end = point_rank, address, stop
        members.append((key, 0))
    flush()
    return requests
