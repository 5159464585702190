"""What the demo shows: a live terminal view (rich), or a one-line summary for logs.

The view reads the running gateway's own state: the registry (devices, points), the pipeline's
latest readings and what it published, the outbox depth and the MQTT sink's statistics.  The
"last MQTT messages" panel is fed by a separate subscriber on the demo broker, so it shows what
really went through the broker, command results included.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from picogate._gateway import Gateway
from picogate._model import PointInfo, PointType, Quality, Reading, Value
from picogate._registry import DeviceState
from picogate._router import WriteRequest, WriteResult
from picogate.demo._rules_view import rules_panel, rules_summary
from picogate.mqtt import IncomingMessage

_STATE_STYLE = {DeviceState.ONLINE: "green", DeviceState.OFFLINE: "red", DeviceState.UNKNOWN: "yellow"}
_QUALITY_STYLE = {Quality.GOOD: "green", Quality.UNCERTAIN: "yellow", Quality.BAD: "red"}
_LEVEL_STYLE = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


@dataclass(frozen=True, slots=True)
class DemoInfo:
    """Where things are, for the header and the hints."""

    gateway_id: str
    root: str
    """Topic root, `picogate/demo`."""
    broker_host: str
    broker_port: int
    broker_kind: str
    metrics_url: str | None
    workdir: str
    links: dict[str, str] = field(default_factory=dict)
    """device → where the gateway reaches it (`tcp 127.0.0.1:5020 unit 1`)."""
    console: str | None = None
    """The operator console's address and the demo's login."""


def hints(info: DemoInfo) -> list[str]:
    """The commands a newcomer can paste into another terminal."""
    target = f"-h {info.broker_host} -p {info.broker_port}"
    boiler = f"{info.root}/cmd/boiler/setpoint/set"
    pump = f"{info.root}/cmd/pump/speed_setpoint/set"
    lines = [
        f"watch:    mosquitto_sub {target} -t '{info.root}/#' -v",
        f'command:  mosquitto_pub {target} -t {boiler} -m \'{{"v": 70, "id": "try1"}}\'',
        f'          mosquitto_pub {target} -t {pump} -m \'{{"v": 2500, "id": "try2"}}\'',
    ]
    if info.console:
        lines.append(f"console:  {info.console}")
    if shutil.which("mosquitto_sub") is None:
        lines.append("          (mosquitto_sub/mosquitto_pub: sudo apt-get install mosquitto-clients)")
    return lines


def format_value(info: PointInfo | None, value: Value | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{_decimals(info)}f}"
    return str(value)


def _decimals(info: PointInfo | None) -> int:
    """As many decimals as the register carries: ×0.1 → 1, ×0.001 → 3; 2 for real floats."""
    if info is None:
        return 2
    raw_type = info.attrs.get("type", "")
    try:
        scale = abs(float(info.attrs.get("scale", "1")))
    except ValueError:
        scale = 1.0
    if raw_type.startswith(("int", "uint")) and 0 < scale < 1:
        return min(6, math.ceil(-math.log10(scale) - 1e-9))
    return 2


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


class LogTail(logging.Handler):
    """Keeps the last few log lines for the live view (the terminal belongs to the view)."""

    def __init__(self, size: int = 4) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[tuple[str, str]] = deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.levelname, self.format(record)))
        except Exception:  # never let the view break logging
            self.handleError(record)


@dataclass(frozen=True, slots=True)
class _Totals:
    readings: int
    published: int
    delivered: int
    outbox: int
    connected: bool


@dataclass(slots=True)
class _Message:
    at: float
    topic: str
    payload: str
    retained: bool


class DemoView:
    """Collects what the gateway does and renders it."""

    def __init__(
        self, gw: Gateway, info: DemoInfo, *, log_tail: LogTail | None = None, max_messages: int = 8
    ) -> None:
        self.gw = gw
        self.info = info
        self.started = time.monotonic()
        self.messages: deque[_Message] = deque(maxlen=max_messages)
        self.messages_seen = 0
        self.published_at: dict[tuple[str, str], int] = {}
        self.writes = 0
        self.writes_ok = 0
        self.last_write = ""
        self.log_tail = log_tail if log_tail is not None else LogTail()
        gw.pipeline.listeners.append(self.on_published)
        gw.router.observe(self.on_write)

    # ------------------------------------------------------------------ feeds

    def on_published(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            self.published_at[(r.device, r.point)] = r.ts

    def on_write(self, request: WriteRequest, result: WriteResult, seconds: float) -> None:
        self.writes += 1
        self.writes_ok += result.ok
        outcome = "ok" if result.ok else f"{result.code.value}: {result.error}"
        self.last_write = (
            f"{request.device}.{request.point} = {request.value!r} by {request.origin} → {outcome}"
            f"   ({self.writes_ok} of {self.writes} writes ok)"
        )

    def on_message(self, msg: IncomingMessage) -> None:
        self.messages_seen += 1
        payload = msg.payload.decode("utf-8", "replace")
        self.messages.append(_Message(time.time(), msg.topic, payload, msg.retain))

    # ------------------------------------------------------------------ text

    def _totals(self) -> _Totals:
        p = self.gw.parts
        sink = p.sinks[0].stats if p.sinks else None
        return _Totals(
            readings=p.pipeline.received,
            published=p.pipeline.published,
            delivered=sink.delivered if sink else 0,
            outbox=p.outbox.depth(),
            connected=bool(sink and sink.connected),
        )

    def summary(self) -> str:
        """One line for `--no-tui`: device states, counters, a few key values."""
        t = self._totals()
        devices = ", ".join(f"{d.name} {d.state.value}" for d in self.gw.registry.devices())
        latest = self.gw.pipeline.latest
        shown = []
        for key in (("boiler", "temperature"), ("boiler", "setpoint"), ("pump", "speed"), ("tank", "level")):
            r = latest.get(key)
            if r is not None:
                info = self.gw.registry.find(*key)
                shown.append(f"{r.device}.{r.point}={format_value(info, r.value)}{r.unit and ' ' + r.unit}")
        broker = "connected" if t.connected else "NOT connected"
        return (
            f"devices: {devices} | readings {t.readings}, published {t.published}, "
            f"outbox {t.outbox}, delivered {t.delivered} records, broker {broker} | {' '.join(shown)}"
            f"{rules_summary(self.gw)}"
        )

    # ------------------------------------------------------------------ the live view

    def render(self, width: int = 120, height: int = 50) -> RenderableType:
        """The whole view, fitted to `width` × `height` (80 × 24 included).  First the broker's
        address and the try-it commands (the README points to them), the devices and the totals;
        then, as room allows, the other hints, the rules, the last write, the MQTT messages and
        the log tail.  The points are a table when it fits, else one line per device."""
        info = self.info
        uptime = time.monotonic() - self.started
        head = Text.assemble(
            ("Picogate demo", "bold cyan"),
            f" · gateway {info.gateway_id} · up {uptime:.0f} s",
            (" · Ctrl-C stops", "dim"),
            no_wrap=True,
            overflow="ellipsis",
        )
        compact = height < 40
        spacers = not compact  # a blank line above the table, the totals and the messages
        totals = self._totals_line()
        room = height - 1 - _lines(totals, width) - 1 - (3 if spacers else 0)

        hint_lines = [Text(f"  broker:   {info.broker_kind} on {info.broker_host}:{info.broker_port}")]
        for line in hints(info):
            hint_lines.append(_fit_command("  " + line, width))
        if info.metrics_url:
            hint_lines.append(Text(f"  metrics:  {info.metrics_url}", style="dim"))
        # The broker, `watch:` and the first command first: without them the demo cannot be tried.
        essential = 3
        shown_hints: list[Text] = []
        for text in hint_lines[:essential]:
            if _lines(text, width) <= room:
                shown_hints.append(text)
                room -= _lines(text, width)

        devices = len(self.gw.registry.devices())
        points: RenderableType
        table = self._points_table(compact=compact, links=width >= 100)
        table_lines = table.row_count + 2 + (0 if compact else devices - 1)
        extra = hint_lines[essential:]
        if table_lines <= room:
            points, room = table, room - table_lines
        else:
            lines = self._device_lines(max(room, 1))
            points, room = Group(*lines), room - len(lines)
        for text in extra:
            if _lines(text, width) > room:
                break
            shown_hints.append(text)
            room -= _lines(text, width)

        parts: list[RenderableType] = [head, *shown_hints]
        parts += [Text("")] * spacers + [points] + [Text("")] * spacers + [totals]
        rules = rules_panel(self.gw)
        if rules is not None and _lines(rules, width) + rules.plain.count("\n") <= room:
            parts.append(rules)
            room -= _lines(rules, width) + rules.plain.count("\n")
        if self.last_write and room >= 1:
            parts.append(
                Text.assemble(("  last write: ", "bold"), self.last_write, no_wrap=True, overflow="ellipsis")
            )
            room -= 1
        rows = min(len(self.messages), room - 3)  # the title, the header and its rule
        if rows > 0:
            parts += [Text("")] * spacers + [self._messages_table(rows)]
            room -= rows + 3 + spacers
        for level, line in list(self.log_tail.lines)[-room:] if room > 0 else []:
            parts.append(
                Text("  " + line, style=_LEVEL_STYLE.get(level, "dim"), no_wrap=True, overflow="ellipsis")
            )
        return Group(*parts)

    def _device_lines(self, rows: int) -> list[Text]:
        """One line per device (`boiler ● online  temperature 64.2 °C  pressure 1.50 bar …`), cut
        at the terminal's edge: the points of a terminal too short for the table."""
        gw = self.gw
        statuses = list(gw.registry.devices())
        out = []
        for n, status in enumerate(statuses):
            if n == rows - 1 and len(statuses) > rows:
                out.append(
                    Text(f"  … {len(statuses) - n} more devices (a taller terminal shows them)", style="dim")
                )
                break
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(f"{status.name} ", style="bold")
            line.append(f"● {status.state.value} ", style=_STATE_STYLE.get(status.state, ""))
            for point in gw.registry.points_of(status.name):
                reading = gw.pipeline.latest.get((status.name, point.name))
                line.append(f" {point.name}", style="cyan" if point.writable else "")
                if reading is None:
                    line.append(" …", style="dim")
                    continue
                style = _value_style(point, reading.value) if reading.quality is Quality.GOOD else "red"
                line.append(f" {format_value(point, reading.value)}", style=style)
                if point.unit:
                    line.append(f" {point.unit}")
            out.append(line)
        return out

    def _points_table(self, *, compact: bool = False, links: bool = True) -> Table:
        gw = self.gw
        now = time.time_ns()
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
        table.add_column("device", no_wrap=True)
        table.add_column("point ✎ writable", no_wrap=True)
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("unit", no_wrap=True)
        table.add_column("quality", no_wrap=True)
        table.add_column("read", justify="right", no_wrap=True)
        table.add_column("published", justify="right", no_wrap=True)
        for status in gw.registry.devices():
            infos = gw.registry.points_of(status.name)
            first_col = [
                Text(status.name, style="bold"),
                Text(f"● {status.state.value}", style=_STATE_STYLE.get(status.state, "")),
                Text(self.info.links.get(status.name, "") if links else "", style="dim"),
            ]
            for i, point in enumerate(infos):
                reading = gw.pipeline.latest.get((status.name, point.name))
                sent = self.published_at.get((status.name, point.name))
                name = Text(point.name)
                if point.writable:
                    name.append(" ✎", style="cyan")
                if reading is None:
                    value, quality, read_age = Text("…", style="dim"), Text(""), None
                else:
                    value = Text(format_value(point, reading.value), style=_value_style(point, reading.value))
                    quality = Text(reading.quality.value, style=_QUALITY_STYLE.get(reading.quality, ""))
                    read_age = (now - reading.ts) / 1e9
                table.add_row(
                    first_col[i] if i < len(first_col) else "",
                    name,
                    value,
                    point.unit,
                    quality,
                    format_age(read_age),
                    format_age(None if sent is None else (now - sent) / 1e9),
                    end_section=not compact and i == len(infos) - 1,
                )
        return table

    def _totals_line(self) -> Text:
        t = self._totals()
        text = Text("  ")
        for label, number in (("readings", t.readings), ("published", t.published)):
            text.append(f"{label} ", style="bold")
            text.append(f"{number}  ")
        # The outbox and the sink count records (one record may carry several readings).
        text.append("outbox ", style="bold")
        text.append(f"{t.outbox}  ", style="yellow" if t.outbox > 100 else "")
        text.append("delivered ", style="bold")
        text.append(f"{t.delivered} records  ")
        text.append("broker ", style="bold")
        if t.connected:
            text.append("● connected", style="green")
        else:
            text.append("● not connected", style="red")
        return text

    def _messages_table(self, rows: int) -> Table:
        table = Table(
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            show_edge=False,
            title=f"last MQTT messages on {self.info.root}/#  ({self.messages_seen} seen)",
            title_justify="left",
            title_style="bold",
        )
        table.add_column("time", no_wrap=True, style="dim", min_width=8)
        table.add_column("topic", no_wrap=True, overflow="ellipsis", max_width=48)
        table.add_column("payload", no_wrap=True, overflow="ellipsis")
        for m in list(self.messages)[-rows:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(m.at))
            topic = m.topic.removeprefix(self.info.root + "/")
            style = "cyan" if "/cmd/" in m.topic else ""
            table.add_row(
                stamp, Text(topic, style=style), Text(m.payload + (" (retained)" if m.retained else ""))
            )
        return table


def _lines(text: Text, width: int) -> int:
    """Terminal lines `text` takes when wrapped at `width` columns."""
    return sum(max(1, math.ceil(Text(line).cell_len / max(width, 1))) for line in text.plain.split("\n"))


def _fit_command(line: str, width: int) -> Text:
    """A hint's command, continued on further lines (` \\`) at its options when it is wider than
    the terminal, so that it still pastes as one command (a line wrapped by the view would not)."""
    style = "dim" if line.lstrip().startswith("(") else ""
    if len(line) <= width:
        return Text(line, style=style)
    parts = re.split(r" (?=-[a-z] )", line)
    out = [parts[0]]
    for part in parts[1:]:
        if len(out[-1]) + 1 + len(part) + 2 <= width:
            out[-1] += " " + part
        else:
            out.append("      " + part)
    return Text(" \\\n".join(out), style=style)


def _value_style(info: PointInfo, value: Value | None) -> str:
    if info.type is PointType.BOOL:
        return "bold green" if value else "dim"
    return "bold"
