"""Prometheus metrics of the Pico links (added to the gateway's /metrics by pico/_attach.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from picogate._metrics import counter, gauge
from picogate.pico._session import PicoBoard

_ERRORS = ("garbage", "bad_crc", "oversize", "bad_bodies", "unknown_ids", "duplicates")


def collector(boards: Sequence[PicoBoard]) -> Callable[[], Iterable[Any]]:
    def collect() -> Iterable[Any]:
        yield counter(
            "picogate_pico_frames",
            "Link frames received from / sent to a board",
            ["board", "direction"],
            [([b.cfg.name, "in"], b.stats.frames_in) for b in boards]
            + [([b.cfg.name, "out"], b.stats.frames_out) for b in boards],
        )
        yield counter(
            "picogate_pico_readings", "Readings received from a board", ["board"],
            (([b.cfg.name], b.stats.readings) for b in boards),
        )  # fmt: skip
        yield counter(
            "picogate_pico_link_errors",
            "Lines dropped by the agent (garbage, bad_crc, oversize), bad bodies, unknown ids, duplicates",
            ["board", "kind"],
            [([b.cfg.name, k], getattr(b.stats, k)) for b in boards for k in _ERRORS],
        )
        yield counter(
            "picogate_pico_bad_values",
            "Readings published bad because the board's value was not one of the point's type, by reason",
            ["board", "reason"],
            [([b.cfg.name, reason], n) for b in boards for reason, n in sorted(b.stats.bad_values.items())],
        )
        yield counter(
            "picogate_pico_board_log_lines",
            "Log lines of a board: logged, or held back by the rate limit",
            ["board", "outcome"],
            [([b.cfg.name, "logged"], b.board_text.logged_total) for b in boards]
            + [([b.cfg.name, "held_back"], b.board_text.held_total) for b in boards],
        )
        yield counter(
            "picogate_pico_resends", "Frames the agent sent again for want of an ack", ["board"],
            (([b.cfg.name], b.stats.resends) for b in boards),
        )  # fmt: skip
        yield counter(
            "picogate_pico_sessions", "Handshakes completed with a board", ["board"],
            (([b.cfg.name], b.stats.sessions) for b in boards),
        )  # fmt: skip
        yield counter(
            "picogate_pico_board_restarts", "Times a board was seen to restart", ["board"],
            (([b.cfg.name], b.stats.board_restarts) for b in boards),
        )  # fmt: skip
        yield counter(
            "picogate_pico_repl_resets", "Soft resets sent to a board found at its REPL", ["board"],
            (([b.cfg.name], b.stats.repl_resets) for b in boards),
        )  # fmt: skip
        for key, name, doc in (
            ("mem", "picogate_pico_board_heap_free_bytes", "Free heap the board reported"),
            ("q", "picogate_pico_board_queued", "Frames queued on the board, not yet acknowledged"),
            ("drop", "picogate_pico_board_dropped", "Frames the board dropped because its queue was full"),
            ("bad", "picogate_pico_board_bad_frames", "Bad frames the board received"),
        ):
            yield gauge(
                name, doc, ["board"],
                (([b.cfg.name], float(b.stats.board[key])) for b in boards
                 if isinstance(b.stats.board.get(key), int | float)),
            )  # fmt: skip

    return collect
