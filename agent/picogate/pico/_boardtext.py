"""Text a board sends for the gateway's log (`log` frames, boot messages, tracebacks): escaped so
that it stays one line of the log whatever it holds, and rate-limited per board.  Pure, no I/O.

A board's text is not the gateway's: a `log` frame whose JSON holds "\\n2026-… picogate.audit:
write …" would otherwise print a line indistinguishable from a real audit line.
"""

from __future__ import annotations

MAX_TEXT = 1000
"""Characters of one board message kept (a frame is at most 1024 bytes anyway)."""


def escape(text: object, limit: int = MAX_TEXT) -> str:
    """`text` on one line: control and other non-printable characters (newlines, tabs, ESC, the
    Unicode line and paragraph separators, …) and the backslash shown as Python escapes
    (`\\n`, `\\x1b`, `\\u2028`, `\\\\`); longer than `limit` characters, cut with `…`."""
    s = text if isinstance(text, str) else str(text)
    cut = len(s) > limit
    if cut:
        s = s[:limit]
    if s.isprintable() and "\\" not in s:
        return s + "…" if cut else s
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out) + ("…" if cut else "")


class TextLimiter:
    """A token bucket for a board's log lines: `burst` at once, then `rate` a second.  Lines held
    back are counted; `summary()` says how many once the board is quiet again (or every
    `summary_every` seconds while it floods), so the log shows that something was suppressed."""

    def __init__(self, *, rate: float = 1.0, burst: int = 20, summary_every: float = 60.0) -> None:
        self.rate = rate
        self.burst = burst
        self.summary_every = summary_every
        self.tokens = float(burst)
        self.updated: float | None = None
        self.held = 0
        """Lines held back since the last summary."""
        self.held_since = 0.0
        self.logged_total = 0
        self.held_total = 0

    def _refill(self, now: float) -> None:
        if self.updated is not None:
            self.tokens = min(float(self.burst), self.tokens + max(now - self.updated, 0.0) * self.rate)
        self.updated = now

    def admit(self, now: float) -> bool:
        """True when a line may be logged now (then it counts against the bucket)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.logged_total += 1
            return True
        if not self.held:
            self.held_since = now
        self.held += 1
        self.held_total += 1
        return False

    def summary(self, now: float) -> tuple[int, float] | None:
        """(lines held back, over how many seconds) when it is time to say so, else None: once a
        line could be logged again, or `summary_every` seconds into a flood."""
        if not self.held:
            return None
        self._refill(now)
        if self.tokens < 1.0 and now - self.held_since < self.summary_every:
            return None
        held, since = self.held, self.held_since
        self.held = 0
        return held, now - since


__all__ = ["MAX_TEXT", "TextLimiter", "escape"]
