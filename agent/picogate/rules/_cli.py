"""`picogate rules check` and `picogate rules test --replay` (the operators' tools)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from picogate._model import PointInfo, Reading


def add_commands(
    sub: argparse._SubParsersAction[Any], *, load_points: Callable[[Path], list[PointInfo]]
) -> None:
    """Add subparsers to `sub`; each sets `func=handler` (handler(args) -> exit status).
    `load_points(path)` gives the points a gateway.yaml declares (raises ConfigError)."""
    rules = sub.add_parser("rules", help="check and test rule files (docs/rules.md)")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rsub.add_parser(
        "check",
        help="check rule files: every error with file:line:col, the line and a caret",
        description="Check rule files (a directory means its *.rules files).  Exit status 1 on error, 0 when "
        "clean.  With --config the points and their types are checked against gateway.yaml's devices.",
    )
    check.add_argument("-c", "--config", type=Path, help="gateway.yaml whose devices' points the rules use")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(func=check_command, load_points=load_points)
    test = rsub.add_parser(
        "test",
        help="replay recorded readings through rules on a virtual clock (touches nothing)",
        description="Replay readings from a CSV file (columns ts, device, point, value and optionally quality; "
        "ts in seconds or ISO 8601) through the rules with a virtual clock, and print each firing, clear, "
        "alert, set, publish and log with its time.  No device and no broker is touched.",
    )
    test.add_argument("-c", "--config", type=Path, help="gateway.yaml whose devices' points the rules use")
    test.add_argument("--replay", type=Path, required=True, metavar="READINGS.csv")
    test.add_argument("files", nargs="+", type=Path, metavar="FILE")
    test.set_defaults(func=test_command, load_points=load_points)


def _read_rules(paths: list[Path], skipped: list[Any]) -> dict[str, str] | str:
    """The files' texts (a directory: its *.rules files; a warning in `skipped` for each file
    there that looks like a rule file but is not one), or what went wrong."""
    from picogate.rules._limits import MAX_TOTAL_BYTES, size
    from picogate.rules._worker import NotUtf8, read_rule_text, skipped_files

    files: dict[str, str] = {}
    total = 0
    for p in paths:
        found = sorted(p.glob("*.rules")) if p.is_dir() else [p]
        if p.is_dir():
            skipped += [
                replace(w, file=str(p / w.file)) for w in skipped_files(p, "*.rules", recursive=False)
            ]
        if p.is_dir() and not found:
            more = "".join("\n" + w.format().splitlines()[0] for w in skipped)
            return f"{p}: no *.rules files in this directory{more}"
        for f in found:
            try:
                text = read_rule_text(f)
            except FileNotFoundError:
                return f"{f}: no such file"
            except NotUtf8 as exc:
                return exc.error(str(f)).format()
            except ValueError as exc:  # too large
                return f"{f}: cannot read: {exc}"
            except OSError as exc:
                return f"{f}: cannot read: {exc.strerror or exc}"
            total += len(text.encode("utf-8"))
            if total > MAX_TOTAL_BYTES:
                return (
                    f"{f}: the rule files hold more than {MAX_TOTAL_BYTES:,} bytes ({size(MAX_TOTAL_BYTES)}) "
                    "together: check fewer at a time (or split the set)"
                )
            files[str(f)] = text
    return files


def _points(args: argparse.Namespace) -> list[PointInfo] | str | None:
    if args.config is None:
        return None
    from picogate.config import ConfigError

    try:
        points: list[PointInfo] = args.load_points(args.config)
    except ConfigError as exc:
        return str(exc)
    return points


def _compile(args: argparse.Namespace) -> Any:
    from picogate.rules._compile import compile_rules
    from picogate.rules._errors import RuleError, RuleErrors

    skipped: list[RuleError] = []
    files = _read_rules(args.files, skipped)
    if isinstance(files, str):
        print(f"picogate rules: {files}", file=sys.stderr)
        return None
    points = _points(args)
    if isinstance(points, str):
        print(points, file=sys.stderr)
        return None
    if points is None:
        print("note: no --config given: point names and types are not checked", file=sys.stderr)
    try:
        ruleset = compile_rules(files, points)
    except RuleErrors as exc:
        warnings = [*exc.warnings, *skipped]
        _print_problems([*exc.errors, *warnings])
        n = len(exc.errors)
        print(f"{n} error{'s' if n != 1 else ''}{_warnings(warnings)}", file=sys.stderr)
        return None
    ruleset.warnings.extend(skipped)
    _print_problems(ruleset.warnings)
    return ruleset, points


def _print_problems(problems: list[Any]) -> None:
    for e in sorted(problems, key=lambda e: (e.file, e.line, e.col)):
        print(e.format())


def _warnings(warnings: list[Any]) -> str:
    n = len(warnings)
    return f", {n} warning{'s' if n != 1 else ''}" if n else ""


def check_command(args: argparse.Namespace) -> int:
    """Exit status 1 on errors; warnings alone leave it 0 (the gateway loads such a set)."""
    done = _compile(args)
    if done is None:
        return 1
    rs = done[0]
    print(f"{len(rs.files)} file(s), {len(rs.rules)} rule(s) and LET(s): OK{_warnings(rs.warnings)}")
    return 0


def _stamp(ts: int) -> str:
    import datetime as dt

    d = dt.datetime.fromtimestamp(ts / 1e9, tz=dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _parse_ts(text: str) -> int:
    import datetime as dt

    text = text.strip()
    try:
        x = float(text)
    except ValueError:
        d = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if d.tzinfo is None:
            d = d.replace(tzinfo=dt.UTC)
        return int(d.timestamp() * 1e9)
    if not -1e11 < x < 1e19:  # beyond year 5000 in seconds, or not a number (nan, inf)
        raise ValueError(text)
    if x > 1e15:  # already nanoseconds
        return int(x)
    return round(x * 1e9)


def _value(text: str, ptype: str | None) -> Any:
    t = text.strip()
    if t == "":
        return None
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if ptype == "bool" and t in ("0", "1"):
        return t == "1"
    if ptype == "string":
        return t
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+\s*$")
_NUMBER_AND_UNIT = re.compile(r"^\s*([-+]?\d+(?:[.,]\d+)?)\s*([^\d\s.,+-].*)$")


def _delimiter(path: Path) -> str:
    """`;` for a file whose first data line has 3 or 4 of them and fewer commas (Excel's CSV in
    locales with a decimal comma), else `,`."""
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for _, line in zip(range(1000), f, strict=False):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            return ";" if line.count(";") in (3, 4) and line.count(",") < 3 else ","
    return ","


def read_replay(
    path: Path,
    points: list[PointInfo] | None,
    *,
    used: set[str] | None = None,
    warnings: list[str] | None = None,
) -> list[Reading] | str:
    """Readings from a CSV file (ts, device, point, value[, quality]); a header row is optional.
    Excel's exports are read too: a byte order mark ("CSV UTF-8"), `;` between the columns.
    `warnings` gets a line, with its row number, for each value that is probably not what was
    meant (`80,5`, `80 °C`) and for each point that is not known (`points`, or without them the
    points the rules use, `used`)."""
    import csv
    import difflib

    from picogate._model import Quality, Reading

    notes: list[str] = warnings if warnings is not None else []
    types = {p.key: p.type.value for p in points} if points is not None else {}
    known = set(types) if points is not None else (used or set())
    unknown: dict[str, list[int]] = {}
    out: list[Reading] = []
    try:
        delimiter = _delimiter(path)
        with path.open(newline="", encoding="utf-8-sig") as f:
            for n, row in enumerate(csv.reader(f, delimiter=delimiter), 1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                if n == 1 and row[0].strip().lower() in ("ts", "time", "timestamp"):
                    continue
                hint = ""
                whole, decimals = (row[3].strip(), row[4].strip()) if len(row) in (5, 6) else ("", "")
                if delimiter == "," and whole.lstrip("+-").isdigit() and decimals.isdigit():
                    hint = f" (a decimal comma? write {whole}.{decimals})"
                if len(row) not in (4, 5):
                    return f"{path}:{n}: expected ts,device,point,value[,quality], got {len(row)} column(s){hint}"
                try:
                    ts = _parse_ts(row[0])
                except (ValueError, OverflowError):
                    return f"{path}:{n}: bad timestamp {row[0]!r} (seconds since 1970, or ISO 8601)"
                dev, pt = row[1].strip(), row[2].strip()
                key = f"{dev}.{pt}"
                ptype = types.get(key)
                text = row[3]
                if ptype != "string" and _DECIMAL_COMMA.match(text):
                    notes.append(f"{path}:{n}: {text.strip()!r} read as {text.strip().replace(',', '.')}")
                    text = text.replace(",", ".")
                value = _value(text, ptype)
                if isinstance(value, str) and ptype != "string":
                    unit = _NUMBER_AND_UNIT.match(value)
                    fix = f": write {unit.group(1).replace(',', '.')}, without the unit" if unit else ""
                    notes.append(f"{path}:{n}: {key} = {value!r} is not a number{fix} (read as a bad value)")
                if known and key not in known:
                    unknown.setdefault(key, []).append(n)
                q = row[4].strip().lower() if len(row) == 5 and row[4].strip() else "good"
                if q not in ("good", "bad", "uncertain"):
                    return f"{path}:{n}: quality is good, bad or uncertain, not {row[4]!r}{hint}"
                quality = Quality(q) if value is not None else Quality.BAD
                out.append(Reading(dev, pt, None if quality is Quality.BAD else value, ts, quality))
    except FileNotFoundError:
        return f"{path}: no such file"
    except UnicodeDecodeError as exc:
        return f'{path}: not UTF-8 text (byte {exc.start}): save it as "CSV UTF-8"'
    except (OSError, csv.Error) as exc:
        return f"{path}: cannot read: {exc}"
    for key, rows in unknown.items():
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        where = "gateway.yaml has no point" if points is not None else "no rule uses"
        if points is None and not close:
            continue  # a column no rule reads: nothing wrong with it
        count = f"{len(rows)} reading{'s' if len(rows) != 1 else ''}"
        notes.append(f"{path}:{rows[0]}: {where} {key}{hint}: its {count} change nothing")
    out.sort(key=lambda r: r.ts)
    return out


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class _Printer:
    """Actions that print instead of acting (and report every write as done)."""

    def __init__(self) -> None:
        self.clock = 0
        self.engine: Any = None
        self.held: list[str] = []
        """The lines of one step (a reading, a timer), printed after the LET values it computed."""

    def line(self, ts: int, rule: str, what: str) -> None:
        self.held.append(f"{_stamp(ts)}  {rule}  {what}")

    def flush(self, lets: list[str]) -> None:
        for text in [*lets, *self.held]:
            print(text)
        self.held = []

    def alert(self, rule: str, severity: str, message: str, state: str, ts: int) -> None:
        self.line(ts, rule, f"alert {state} {severity}: {message}")

    def set(self, rule: str, device: str, point: str, value: object) -> None:
        self.line(self.clock, rule, f"set {device}.{point} = {_shown(value)}")
        self.engine.write_result(rule, True, "")

    def publish(self, rule: str, topic: str, value: object, ts: int) -> None:
        self.line(ts, rule, f"publish {topic} {value!r}")

    def log(self, rule: str, message: str) -> None:
        self.line(self.clock, rule, f"log: {message}")


def test_command(args: argparse.Namespace) -> int:
    from picogate.rules._engine import RuleEngine

    done = _compile(args)
    if done is None:
        return 1
    rs, points = done
    notes: list[str] = []
    used = {key for rule in rs.rules for key in rule.points} | {p.key for p in rs.lets}
    readings = read_replay(args.replay, points, used=used, warnings=notes)
    if isinstance(readings, str):
        print(readings, file=sys.stderr)
        return 1
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if not readings:
        print(f"{args.replay}: no readings", file=sys.stderr)
        return 1
    out = _Printer()
    out.clock = readings[0].ts
    engine = RuleEngine(
        out, now=lambda: out.clock, on_transition=lambda rule, what, ts: out.line(ts, rule, what)
    )
    out.engine = engine
    engine.load(rs)

    units = {p.key: p.unit for p in rs.lets}

    def show_lets(derived: list[Reading]) -> None:
        lets = []
        for d in derived:
            shown = (
                "unknown"
                if d.value is None
                else (f"{d.value:.6g}" if isinstance(d.value, float) else _shown(d.value))
                + (f" {units[d.key]}" if units.get(d.key) else "")
            )
            lets.append(f"{_stamp(d.ts)}  {d.key}  LET = {shown}")
        out.flush(lets)

    def run_timers(until: int) -> None:
        for _ in range(1_000_000):
            d = engine.next_deadline()
            if d is None or d > until:
                return
            out.clock = d
            show_lets(engine.tick(d))

    for r in readings:
        run_timers(r.ts)
        out.clock = r.ts
        show_lets(engine.process([r]))
    run_timers(readings[-1].ts)
    out.flush([])
    print(f"{len(readings)} reading(s) replayed", file=sys.stderr)
    return 0
