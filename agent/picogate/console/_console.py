"""The console's own endpoints (`/console/api/…`, docs/console.md) and its page (`/console/`), on
the gateway's HTTP server next to the local API (`/api/v1/…`), whose JSON model the page reads
for devices, points, rules and writes.

What the console adds to the local API:

| endpoint | role | what |
|---|---|---|
| `GET /console/api/alarms` | viewer | active alarms (with acknowledgement and the rule's place), history |
| `POST /console/api/alarms/{id}/ack` | operator | acknowledge an active alarm |
| `GET /console/api/trend?point=dev.pt` | viewer | the point's recent samples |
| `GET /console/api/rules/files`, `…/file?name=` | viewer | the rule files and their text |
| `POST /console/api/rules/check` | engineer | check an edited file with the running set |
| `POST /console/api/rules/replay` | engineer | replay recent history (or a CSV) through it |
| `PUT /console/api/rules/file` | engineer | save it (only when it checks clean) |

The page follows changes on the local API's live stream (`GET /api/v1/events?devices=…`,
throttled there: at most one batch a second, only the devices the page shows), and reads the
alarms again when its `alerts` event says they changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from aiohttp import web

from picogate._http import new_app
from picogate._model import PointType, Quality, Reading
from picogate.console._alarms import Active, AlarmBook
from picogate.console._auth import json_error, json_response, need, user_of
from picogate.console._config import ConsoleSection
from picogate.console._trend import Trends
from picogate.console._users import Role

if TYPE_CHECKING:
    from picogate._host import Host
    from picogate.rules import LiveRules, RuleError

log = logging.getLogger("picogate.console")
audit_log = logging.getLogger("picogate.audit")

MAX_RULE_TEXT = 1 << 20
"""Characters of an edited rule file (the rule language's own limit for a file is 1 MiB)."""
MAX_CSV = 1 << 20
"""Bytes of an uploaded replay CSV."""
MAX_EDIT_BODY = 3 << 20
"""Bytes of a rule editor request: the file and a CSV, as JSON strings (escaping adds some)."""
MAX_REPLAY_READINGS = 200_000
STATIC = ("index.html", "console.js", "console.css")


def _ms(ns: int) -> int:
    return ns // 1_000_000


def _problem(e: RuleError) -> dict[str, Any]:
    return {
        "file": e.file,
        "line": e.line,
        "col": e.col,
        "length": e.length,
        "message": e.message,
        "suggestion": e.suggestion,
        "text": e.format(),
    }


def _file_problem(name: str, message: str) -> dict[str, Any]:
    return {
        "file": name,
        "line": 1,
        "col": 1,
        "length": 1,
        "message": message,
        "suggestion": None,
        "text": f"{name}:1:1: error: {message}",
    }


class Console:
    """The console's state and endpoints, and the service that samples the trends (a gateway
    component)."""

    name = "console"
    kind: Literal["source", "service"] = "service"

    def __init__(
        self, host: Host, cfg: ConsoleSection, *, alarms: AlarmBook, rules: Callable[[], LiveRules | None]
    ) -> None:
        self.host = host
        self.cfg = cfg
        self.alarms = alarms
        self.rules = rules
        self.trends = Trends(samples=cfg.trend.samples, max_points=cfg.trend.max_points)
        self.sweep: Callable[[], None] = lambda: None
        self._stop = asyncio.Event()
        self._save_lock = asyncio.Lock()
        self._busy = asyncio.Semaphore(1)

    def routes(self) -> list[web.RouteDef]:
        a = "/console/api"
        return [
            web.get("/console", self._to_page),
            web.get("/console/", self._page),
            web.get("/console/static/{name}", self._static),
            web.get(f"{a}/alarms", self._alarms),
            web.post(f"{a}/alarms/{{id}}/ack", self._ack),
            web.get(f"{a}/trend", self._trend),
        ]

    RULES_PREFIX = "/console/api/rules"

    def rules_app(self) -> web.Application:
        """The rule editor's endpoints, under `RULES_PREFIX`: an application of their own, whose
        bodies may hold a whole rule file and a replay CSV (`MAX_EDIT_BODY`), where the rest of
        the server takes 64 KiB at most."""
        app = new_app(max_body=MAX_EDIT_BODY)
        app.add_routes(
            [
                web.get("/files", self._rule_files),
                web.get("/file", self._rule_file),
                web.put("/file", self._save),
                web.post("/check", self._check),
                web.post("/replay", self._replay),
            ]
        )
        return app

    # ------------------------------------------------------------------ the page

    async def _to_page(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            return json_error(404, "not_found", f"no file {name[:80]!r}; the console has {', '.join(STATIC)}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        data = resources.files("picogate.console").joinpath("_static", name).read_bytes()
        kind = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.rsplit(".", 1)[1]]
        return web.Response(
            body=data,
            content_type=kind,
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            },
        )

    # ------------------------------------------------------------------ alarms

    def active(self) -> list[Active]:
        live = self.rules()
        if live is None:
            return []
        return [Active(a.rule, a.severity, a.message, a.ts) for a in live.alerts.active()]

    def where(self, rule: str) -> dict[str, Any]:
        """The rule's name (None for an unnamed rule), file, line and text."""
        live = self.rules()
        info = None
        if live is not None and live.loaded is not None:
            info = next((r for r in live.loaded.rules if r.id == rule), None)
        if info is None:
            return {
                "name": None if rule.startswith("anon-") else rule,
                "file": None,
                "line": None,
                "text": "",
            }
        return {
            "name": None if rule.startswith("anon-") else rule,
            "file": info.file,
            "line": info.line,
            "text": getattr(info, "text", ""),
        }

    async def _alarms(self, request: web.Request) -> web.Response:
        active = self.alarms.view(self.active())
        for alarm in active:
            alarm.update(self.where(alarm["rule"]))
        try:
            limit = max(1, min(int(request.query.get("history", "200")), len(self.alarms.history) or 1))
        except ValueError:
            return json_error(400, "bad_request", "history must be a number of entries, e.g. ?history=200")
        history = list(self.alarms.history)[-limit:]
        history.reverse()
        return json_response({"active": active, "history": history})

    async def _ack(self, request: web.Request) -> web.Response:
        refusal = need(request, Role.OPERATOR)
        if refusal is not None:
            return refusal
        who = user_of(request)
        assert who is not None
        wanted = request.match_info["id"]
        alarm = self.alarms.acknowledge(wanted, who[0], self.active())
        if alarm is None:
            return json_error(
                404, "not_active", f"no active alarm {wanted[:40]!r} (it may have cleared meanwhile)"
            )
        audit_log.info(
            "alarm acknowledged by %s: rule %s [%s]: %s", who[0], alarm.rule, alarm.severity, alarm.message
        )
        [view] = list(self.alarms.view([alarm]))
        return json_response({**view, **self.where(alarm.rule)})

    # ------------------------------------------------------------------ trends

    async def _trend(self, request: web.Request) -> web.Response:
        key = request.query.get("point", "")
        device, dot, point = key.partition(".")
        info = self.host.registry.find(device, point) if dot else None
        if info is None:
            return json_error(
                404,
                "unknown_point",
                f"no point {key[:80]!r}: give ?point=device.point (GET /api/v1/points lists them)",
            )
        try:
            since = int(request.query.get("since", "0")) // 1000
        except ValueError:
            return json_error(400, "bad_request", "since must be milliseconds since 1970")
        series = self.trends.series(device, point, since=since) or []
        return json_response(
            {
                "point": key,
                "unit": info.unit,
                "step_s": self.cfg.trend.step,
                "kept_s": self.cfg.trend.step * self.cfg.trend.samples,
                "numeric": info.type is not PointType.STRING,
                "samples": [[s * 1000, v] for s, v in series],
            }
        )

    def sample(self) -> None:
        self.trends.sample(self.host.pipeline.latest.values())

    # ------------------------------------------------------------------ rules

    def _live_rules(self) -> LiveRules | web.Response:
        live = self.rules()
        if live is None:
            return json_error(
                409, "no_rules", "this gateway runs no rules (gateway.yaml has no rules section)"
            )
        return live

    async def _rule_files(self, request: web.Request) -> web.Response:
        live = self._live_rules()
        if isinstance(live, web.Response):
            return live
        names = await asyncio.to_thread(live.rule_names)
        return json_response(
            {"directory": str(live.directory), "pattern": live.config.pattern, "files": names}
        )

    async def _rule_file(self, request: web.Request) -> web.Response:
        live = self._live_rules()
        if isinstance(live, web.Response):
            return live
        name = request.query.get("name", "")
        try:
            path = live.rule_path(name)
            text = await asyncio.to_thread(path.read_text, "utf-8")
        except ValueError as exc:
            return json_error(400, "bad_name", str(exc))
        except FileNotFoundError:
            return json_error(404, "not_found", f"no rule file {name!r} in {live.directory}")
        except OSError as exc:
            return json_error(500, "unreadable", f"{name}: cannot read: {exc.strerror or exc}")
        return json_response({"name": name, "text": text})

    async def _edit(self, request: web.Request) -> tuple[LiveRules, str, str, dict[str, Any]] | web.Response:
        """The engineer's edited file from the body: (rules service, name, text, body)."""
        refusal = need(request, Role.ENGINEER)
        if refusal is not None:
            return refusal
        live = self._live_rules()
        if isinstance(live, web.Response):
            return live
        raw = await _read_body(request, MAX_EDIT_BODY)
        if raw is None:
            return json_error(413, "too_large", f"the request is larger than {MAX_EDIT_BODY:,} bytes at most")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return json_error(400, "bad_request", 'send {"name": "boiler.rules", "text": "..."} as JSON')
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("name"), str)
            or not isinstance(body.get("text"), str)
        ):
            return json_error(400, "bad_request", 'send {"name": "boiler.rules", "text": "..."} as JSON')
        name, text = body["name"], body["text"]
        if len(text) > MAX_RULE_TEXT:
            return json_error(413, "too_large", f"a rule file holds at most {MAX_RULE_TEXT:,} characters")
        try:
            live.rule_path(name)
        except ValueError as exc:
            return json_error(400, "bad_name", str(exc))
        return live, name, text, body

    async def _trial(
        self, live: LiveRules, name: str, text: str
    ) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
        from picogate.rules import RuleErrors

        try:
            async with self._busy:  # compiling a large set takes a second of CPU: one at a time
                ruleset = await asyncio.to_thread(live.trial, name, text)
        except RuleErrors as exc:
            return None, [_problem(e) for e in exc.errors], [_problem(w) for w in exc.warnings]
        except RecursionError:
            return None, [_file_problem(name, "an expression is nested too deeply")], []
        except Exception as exc:  # a bug in the compiler must not answer 500 to the editor
            log.exception("console: checking %s failed", name)
            return None, [_file_problem(name, f"internal compiler error: {type(exc).__name__}: {exc}")], []
        return ruleset, [], [_problem(w) for w in ruleset.warnings]

    async def _check(self, request: web.Request) -> web.Response:
        edit = await self._edit(request)
        if isinstance(edit, web.Response):
            return edit
        live, name, text, _ = edit
        ruleset, errors, warnings = await self._trial(live, name, text)
        return json_response(
            {
                "ok": not errors,
                "errors": errors,
                "warnings": warnings,
                "rules": len(ruleset.rules) if ruleset is not None else None,
            }
        )

    async def _replay(self, request: web.Request) -> web.Response:
        edit = await self._edit(request)
        if isinstance(edit, web.Response):
            return edit
        live, name, text, body = edit
        ruleset, errors, warnings = await self._trial(live, name, text)
        if ruleset is None:
            return json_response({"ok": False, "errors": errors, "warnings": warnings}, 422)
        csv = body.get("csv")
        if csv is not None:
            if not isinstance(csv, str) or len(csv) > MAX_CSV:
                return json_error(
                    400, "bad_csv", f"csv must be the text of a CSV file of at most {MAX_CSV:,} bytes"
                )
            readings = await asyncio.to_thread(_read_csv, csv, list(self.host.registry))
            if isinstance(readings, str):
                return json_error(400, "bad_csv", readings)
            source = "csv"
        else:
            wanted = {key for info in ruleset.rules for key in info.points}
            readings = self._recent(wanted)
            source = "history"
        from picogate.rules import replay

        async with self._busy:
            lines, cut = await asyncio.to_thread(replay, ruleset, readings)
        return json_response(
            {
                "ok": True,
                "warnings": warnings,
                "source": source,
                "readings": len(readings),
                "from": _ms(readings[0].ts) if readings else None,
                "to": _ms(readings[-1].ts) if readings else None,
                "lines": [{"ts": _ms(x.ts), "rule": x.rule, "what": x.what} for x in lines],
                "cut": cut,
            }
        )

    def _recent(self, keys: set[str]) -> list[Reading]:
        """The trend rings of the points `keys` (device.point) as readings, oldest first: the
        gateway's recent history of what the rules read, MAX_REPLAY_READINGS at most (the newest)."""
        registry = self.host.registry
        out: list[Reading] = []
        rings = [(k, r) for k, r in self.trends.rings.items() if f"{k[0]}.{k[1]}" in keys]
        for (device, point), ring in rings:
            info = registry.find(device, point)
            is_bool = info is not None and info.type is PointType.BOOL
            for sec, value in ring:
                v: bool | float = bool(value) if is_bool else value
                out.append(Reading(device, point, v, sec * 1_000_000_000, Quality.GOOD))
        out.sort(key=lambda r: r.ts)
        return out[-MAX_REPLAY_READINGS:]

    async def _save(self, request: web.Request) -> web.Response:
        edit = await self._edit(request)
        if isinstance(edit, web.Response):
            return edit
        live, name, text, _ = edit
        who = user_of(request)
        assert who is not None
        async with self._save_lock:
            ruleset, errors, warnings = await self._trial(live, name, text)
            if ruleset is None:
                return json_response(
                    {
                        "ok": False,
                        "errors": errors,
                        "warnings": warnings,
                        "error": "not saved: the file has errors (the running rules stay)",
                    },
                    422,
                )
            path = live.rule_path(name)
            try:
                await asyncio.to_thread(_write_atomic, path, text)
            except OSError as exc:
                return json_error(500, "not_saved", f"{name}: cannot write: {exc.strerror or exc}")
        audit_log.info("rule file %s saved by %s (%d rules in the set)", name, who[0], len(ruleset.rules))
        if not live.config.watch:
            live.request_reload()
        return json_response({"ok": True, "saved": name, "warnings": warnings, "rules": len(ruleset.rules)})

    # ------------------------------------------------------------------ the component

    async def run(self) -> None:
        """Sample the trends every `trend.step`; end expired sessions every minute."""
        step = self.cfg.trend.step
        next_sweep = time.monotonic() + 60
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:
                log.exception("console: sampling the trends failed")
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + 60
                self.sweep()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step):
                    await self._stop.wait()
        self.alarms.close()

    def stop(self) -> None:
        self._stop.set()


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` (read in pieces: the server's own bound,
    64 KiB, is for the other endpoints)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a hidden temporary file renamed over it (the rules' watcher
    ignores hidden files, and sees the rename as one change)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_csv(text: str, points: list[Any]) -> list[Reading] | str:
    """An uploaded CSV read like `picogate rules test --replay` reads a file."""
    from picogate.rules import read_replay

    fd, tmp = tempfile.mkstemp(prefix="picogate-replay-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        readings = read_replay(Path(tmp), points)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    if isinstance(readings, str):
        return readings.replace(tmp, "the CSV")
    return readings
