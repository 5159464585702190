"""`picogate watch`: the live view of a running gateway, drawn from its local API's snapshot
(`GET /api/v1/snapshot`).

`render(snapshot, …)` is pure: a snapshot (plain JSON) in, a rich renderable out, fitted to the
terminal.  What matters most comes first when lines are short: the header, the active alerts, the
devices and points, then the rules, the last writes.  An unnamed rule is shown by its place
(file:line) and its text, as written.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from picogate.api._client import ApiClient

UNFITTED = 1_000_000
"""The height of a view printed once: every line of it."""

_STATE = {"online": "green", "offline": "red", "unknown": "yellow"}
_QUALITY = {"good": "green", "uncertain": "yellow", "bad": "red"}
_RULE = {"active": "bold red", "idle": "green", "unknown": "yellow", "errored": "bold magenta"}
_SEVERITY = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def value_text(point: Mapping[str, Any]) -> str:
    value = point.get("value")
    if value is None:
        return "—" if point.get("quality") else "…"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) and abs(value) < 1e9 else f"{value:g}"
    return str(value)


def age_text(ts_ms: int | None, now_ms: int) -> str:
    if not ts_ms:
        return "—"
    seconds = max(0.0, (now_ms - ts_ms) / 1000)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def rule_label(rule: Mapping[str, Any]) -> str:
    """A named rule by its name; an unnamed one by its file:line and its text (first line)."""
    if rule.get("name"):
        return str(rule["name"])
    place = f"{rule.get('file')}:{rule.get('line')}"
    text = str(rule.get("text") or "").strip()
    first = text.splitlines()[0].strip() if text else str(rule.get("id"))
    more = " …" if text.count("\n") else ""
    return f"{place} {first}{more}"


def render(
    snapshot: Mapping[str, Any],
    *,
    url: str = "",
    width: int = 100,
    height: int = 40,
    now_ms: int | None = None,
    problem: str = "",
) -> RenderableType:
    """The whole view, fitted to `height` lines (see the module docstring)."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    gw: Mapping[str, Any] = snapshot.get("gateway", {})
    status: Mapping[str, Any] = snapshot.get("status", {})
    parts: list[RenderableType] = []
    room = height - 1  # the cursor's line
    head = Text.assemble(
        ("Picogate", "bold cyan"),
        f" · gateway {gw.get('id', '?')} {gw.get('version', '')} · up {_uptime(gw.get('uptime_s'))}",
        (f" · {url}" if url else "", "dim"),
        (" · Ctrl-C stops", "dim"),
    )
    parts.append(head)
    room -= _lines(head, width)
    if problem:
        parts.append(Text(f"  {problem}", style="bold red"))
        room -= 1
    summary = _summary(status)
    parts.append(summary)
    room -= _lines(summary, width)

    alerts = _alerts(snapshot.get("alerts", {}).get("active", []), now, width)
    for line in alerts:
        if room <= 2:
            break
        parts.append(line)
        room -= 1

    rules = _rules(snapshot.get("rules", {}), now)
    writes = _writes(snapshot.get("writes", []), now)
    reserve = min(len(rules), 4) + min(len(writes), 3)  # a little of each below the table
    devices = snapshot.get("devices", [])
    table, rows, left_out = _points_table(devices, now, max_rows=max(2, room - reserve - 3))
    parts.append(table)
    room -= rows + 2 + min(len(devices), rows)  # the header, its rule, a rule after each device
    if left_out:
        parts.append(Text(f"  … {left_out} more points (a taller terminal shows them)", style="dim"))
        room -= 1
    for line in rules:
        if room <= min(len(writes), 3):
            break
        parts.append(line)
        room -= 1
    for line in writes:
        if room <= 0:
            break
        parts.append(line)
        room -= 1
    return Group(*parts)


def _uptime(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _summary(status: Mapping[str, Any]) -> Text:
    health: Mapping[str, Any] = status.get("health", {})
    outbox: Mapping[str, Any] = status.get("outbox", {})
    text = Text("  ")
    state = str(health.get("status", "?"))
    text.append(f"● {state}  ", style="green" if state == "ok" else "bold yellow")
    for name, sink in health.get("sinks", {}).items():
        up = sink.get("connected")
        text.append(f"{name} ", style="bold")
        text.append("connected  " if up else "NOT connected  ", style="green" if up else "red")
    text.append("outbox ", style="bold")
    text.append(f"{outbox.get('depth', 0)}  ", style="yellow" if outbox.get("depth", 0) > 100 else "")
    if outbox.get("parked"):
        text.append(f"parked {outbox['parked']}  ", style="yellow")
    if outbox.get("failing"):
        text.append("outbox commits FAILING  ", style="bold red")
    if not status.get("clock_synced", True):
        text.append("clock not synchronised  ", style="yellow")
    return text


def _alerts(active: Sequence[Mapping[str, Any]], now: int, width: int) -> list[Text]:
    if not active:
        return [Text("  no active alerts", style="dim")]
    lines = [Text(f"  {len(active)} active alert{'s' * (len(active) != 1)}", style="bold red")]
    for a in reversed(active):  # the newest first
        severity = str(a.get("severity", ""))
        line = Text("  ▲ ", style=_SEVERITY.get(severity, "bold"), no_wrap=True, overflow="ellipsis")
        line.append(f"{severity:8} ", style=_SEVERITY.get(severity, "bold"))
        line.append(str(a.get("message", "")), style="bold")
        rule = a.get("rule", "")
        where = f"{a.get('file')}:{a.get('line')}" if a.get("file") else ""
        label = str(rule) if not str(rule).startswith("anon-") else where or str(rule)
        line.append(f"  {label}", style="dim")
        if str(rule).startswith("anon-") and a.get("text"):
            line.append(f"  {str(a['text']).splitlines()[0].strip()}", style="dim")
        line.append(f"  since {age_text(a.get('ts'), now)}", style="dim")
        lines.append(line)
    return lines


def _points_table(devices: Sequence[Mapping[str, Any]], now: int, *, max_rows: int) -> tuple[Table, int, int]:
    """The devices and their points, at most `max_rows` rows: (table, rows, points left out)."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column("device", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("point ✎ writable", no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("value", justify="right", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("unit", no_wrap=True, overflow="ellipsis", max_width=8)
    table.add_column("quality", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    rows = 0
    total = sum(max(1, len(d.get("points", []))) for d in devices)
    for d in devices:
        points = d.get("points", [])
        state = str(d.get("state", "unknown"))
        first = [Text(str(d.get("name")), style="bold"), Text(f"● {state}", style=_STATE.get(state, ""))]
        if state == "offline" and d.get("reason"):
            first.append(Text(f"({d['reason']})", style="dim"))
        while len(first) > max(1, len(points)):  # fewer points than lines: on one line
            last = first.pop()
            first[-1] = Text.assemble(first[-1], " ", last)
        for i, p in enumerate(points or [{}]):
            if rows >= max_rows - (1 if rows + 1 < total else 0):
                return table, rows, total - rows
            name = Text(str(p.get("point", "")))
            if p.get("writable"):
                name.append(" ✎", style="cyan")
            quality = str(p.get("quality") or "")
            table.add_row(
                first[i] if i < len(first) else "",
                name,
                Text(value_text(p), style="bold" if p.get("value") is not None else "dim"),
                str(p.get("unit") or ""),
                Text(quality, style=_QUALITY.get(quality, "")),
                age_text(p.get("ts"), now),
                end_section=i == len(points) - 1,
            )
            rows += 1
    return table, rows, 0


def _rules(rules: Mapping[str, Any], now: int) -> list[Text]:
    if not rules.get("enabled"):
        return []
    items: Sequence[Mapping[str, Any]] = rules.get("rules", [])
    shown = [r for r in items if r.get("kind") != "let"]
    head = Text("  rules ", style="bold")
    version = rules.get("version")
    head.append(
        f"version {version}: {len(shown)} rule{'s' * (len(shown) != 1)}" if version else "none loaded",
        style="dim",
    )
    lines = [head]
    for error in rules.get("errors", [])[:2]:
        where = f"{error.get('file')}:{error.get('line')}:{error.get('col')}"
        lines.append(
            Text(
                f"  reload failed, last good set kept: {where}: {error.get('message')}",
                style="bold red",
                no_wrap=True,
                overflow="ellipsis",
            )
        )
    order = {"errored": 0, "active": 1, "unknown": 2, "idle": 3}
    for r in sorted(shown, key=lambda r: order.get(str(r.get("state")), 4)):
        state = str(r.get("state", "unknown"))
        line = Text("  ● ", style=_RULE.get(state, ""), no_wrap=True, overflow="ellipsis")
        line.append(f"{state:7} ", style=_RULE.get(state, ""))
        line.append(rule_label(r))
        if r.get("last_fired"):
            line.append(
                f"  fired {r.get('fired', 0)}×, last {age_text(r['last_fired'], now)} ago", style="dim"
            )
        if r.get("reason") and state != "idle":
            line.append(f"  {r['reason']}", style="dim")
        lines.append(line)
    return lines


def _writes(writes: Sequence[Mapping[str, Any]], now: int) -> list[Text]:
    if not writes:
        return []
    lines = [Text("  last writes", style="bold")]
    for w in reversed(writes[-5:]):
        ok = bool(w.get("ok"))
        line = Text("  ", no_wrap=True, overflow="ellipsis")
        line.append(f"{age_text(w.get('ts'), now):>7} ago  ", style="dim")
        line.append(
            f"{w.get('key')} = {json.dumps(w.get('value'), ensure_ascii=False)} by {w.get('origin')} → "
        )
        line.append(str(w.get("code")), style="green" if ok else "red")
        if w.get("error"):
            line.append(f" ({w['error']})", style="dim")
        lines.append(line)
    return lines


def _lines(text: Text, width: int) -> int:
    return max(1, math.ceil(text.cell_len / max(width, 1)))


def watch(
    client: ApiClient, *, interval: float = 1.0, once: bool = False, console: Console | None = None
) -> int:
    """Draw the view until Ctrl-C (or once).  A gateway that goes away is shown as such and asked
    again at every refresh; one that never answered raises GatewayUnreachable."""
    from rich.live import Live

    from picogate.api._client import GatewayUnreachable

    console = console or Console()
    snapshot = client.get("/snapshot")
    if once or not console.is_terminal:
        # printed once (or into a file, a pipe): all of it, however long
        console.print(render(snapshot, url=client.url, width=console.size.width, height=UNFITTED))
        return 0
    problem = ""
    try:
        with Live(console=console, auto_refresh=False, screen=True) as live:
            while True:
                size = console.size
                live.update(
                    render(snapshot, url=client.url, width=size.width, height=size.height, problem=problem),
                    refresh=True,
                )
                time.sleep(interval)
                try:
                    snapshot, problem = client.get("/snapshot"), ""
                except GatewayUnreachable as exc:
                    problem = f"{exc.what.split('. ', 1)[0]}; showing the last view, trying again"
    except KeyboardInterrupt:
        pass
    return 0
