"""compile_rules: parse, check against the points, generate code."""

from __future__ import annotations

import bisect
import hashlib
import marshal
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from types import CodeType

from picogate._model import PointInfo, PointType
from picogate.rules import _ast as A
from picogate.rules._check import ANY, BOOL, NUM, STR, check, nodes, ptype, refs
from picogate.rules._codegen import NS, Gen, canon
from picogate.rules._errors import RuleError, RuleErrors
from picogate.rules._limits import MAX_FILE_BYTES, MAX_STATEMENTS, MAX_TOKENS, MAX_TOTAL_BYTES, size
from picogate.rules._overlap import extent, overlap
from picogate.rules._parse import parse_file
from picogate.rules._ruleset import RuleInfo, RuleSet

_LET_TYPES = {NUM: PointType.FLOAT64, BOOL: PointType.BOOL, STR: PointType.STRING, ANY: PointType.FLOAT64}


RULE_TEXT_MAX = 2000
"""Characters of a rule's text kept in its RuleInfo (the API and `picogate watch` show it)."""


def _written(lines: Mapping[str, list[str]], starts: Mapping[str, list[int]], st: A.Rule | A.Let) -> str:
    """The statement as written: its lines (`lines`: each file's, split once), up to the next
    statement of its file (`starts`: the first lines of its statements, sorted), without the blank
    and comment lines that follow it."""
    src = lines.get(st.file, [])
    first = starts.get(st.file, [])
    i = bisect.bisect_right(first, st.pos.line)
    own = src[st.pos.line - 1 : first[i] - 1 if i < len(first) else len(src)]
    while own and (not own[-1].strip() or own[-1].lstrip().startswith("#")):
        own.pop()
    written = "\n".join(line.rstrip() for line in own)
    return written if len(written) <= RULE_TEXT_MAX else written[:RULE_TEXT_MAX] + "..."


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_IDENT = re.compile(r"\b(?:([PHW])(\d+)\b|([SRTFL])(\d+)\b|K\[(\d+)\]|_(\d+)\b)")
_CODE_CACHE: dict[str, CodeType] = {}
_CODE_CACHE_MAX = 50_000


class _Names:
    """Stable names in the generated code: a function's text depends only on what it does, not on
    where its rule or point sits in the set, so that an unchanged function is not compiled again."""

    def __init__(
        self, *, points: list[str], windows: list[str], rules: list[str], consts: list[object]
    ) -> None:
        self.points, self.windows, self.rules = points, windows, rules
        self.consts = [f"C{_hash(type(c).__name__ + ':' + repr(c))}" for c in consts]
        self.const_values = dict(zip(self.consts, consts, strict=True))

    def rename(self, chunk: str) -> str:
        temps: dict[str, str] = {}

        def sub(m: re.Match[str]) -> str:
            pw, i, kind, j, k, tmp = m.groups()
            if pw is not None:
                return pw + (self.windows[int(i)] if pw == "W" else self.points[int(i)])
            if kind is not None:
                return kind + self.rules[int(j)]
            if k is not None:
                return self.consts[int(k)]
            return temps.setdefault(tmp, f"_{len(temps) + 1}")

        return _IDENT.sub(sub, chunk)


def _compiled(chunk: str) -> CodeType:
    """One function's code object; the same text is compiled once (a reload recompiles only what
    changed)."""
    code = _CODE_CACHE.get(chunk)
    if code is None:
        code = compile(chunk, "<rules>", "exec")
        if len(_CODE_CACHE) >= _CODE_CACHE_MAX:
            _CODE_CACHE.clear()
        _CODE_CACHE[chunk] = code
    return code


def _smallest_duration(r: A.Rule) -> float:
    found = [2.0] + [x.seconds for x in nodes((r.when, r.clear)) if isinstance(x, A.Dur)]
    return max(0.1, min(1.0, min(found) / 2))


def _overlaps(
    rules: list[A.Rule],
    types: dict[str, str],
    infos: dict[str, PointInfo],
    lets: dict[str, A.Expr],
    error: Callable[..., RuleError],
) -> list[RuleError]:
    """A warning for each rule whose ON and CLEAR conditions can both be true (_overlap.py)."""
    out = []
    for r in rules:
        witness = overlap(r, types, infos, lets)
        if witness is not None and r.clear is not None:
            out.append(
                error(
                    r.file,
                    extent(r.clear),
                    f"ON and CLEAR can both be true (when {witness}): while they are, the rule fires and "
                    "clears again at every evaluation (CLEAR must be false whenever ON is true)",
                    level="warning",
                )
            )
    return out


def _line(text: str, n: int) -> str:
    """Line n (1-based) of text, without splitting the rest."""
    parts = text.split("\n", n)
    return parts[n - 1] if 0 < n <= len(parts) else ""


def _parse_all(files: Mapping[str, str], errors: list[RuleError]) -> list[A.Statement]:
    """The statements of every file, within the limits of the whole set (_limits.py): bytes of all
    files, tokens, rules and LETs.  Past a limit, the files after it are not read."""
    statements: list[A.Statement] = []
    total_bytes = 0
    tokens = 0
    for name in sorted(files):
        text = files[name]
        total_bytes += (
            len(text) if len(text) > MAX_TOTAL_BYTES else len(text.encode("utf-8", "surrogatepass"))
        )
        if total_bytes > MAX_TOTAL_BYTES:
            errors.append(
                RuleError(
                    name,
                    1,
                    1,
                    f"the rule files hold more than {MAX_TOTAL_BYTES:,} bytes ({size(MAX_TOTAL_BYTES)}) together, "
                    "passed with this file: this file and the ones after it are not read",
                    None,
                    "",
                )
            )
            break
        parsed = parse_file(name, text, MAX_TOKENS - tokens)
        tokens += parsed.tokens
        errors.extend(parsed.errors)
        room = MAX_STATEMENTS - len(statements)
        if len(parsed.statements) > room:
            over = parsed.statements[room]
            errors.append(
                RuleError(
                    name,
                    over.pos.line,
                    over.pos.col,
                    f"more than {MAX_STATEMENTS:,} rules and LETs in the rule files together: this is where "
                    "the limit is passed (docs/rules.md, Limits)",
                    None,
                    _line(text, over.pos.line),
                )
            )
            statements.extend(parsed.statements[:room])
            break
        statements.extend(parsed.statements)
        if tokens > MAX_TOKENS:
            break
    return statements


def compile_rules(files: Mapping[str, str], points: Iterable[PointInfo] | None) -> RuleSet:
    """Parse, check against the points, generate code.  Pure: plain data in and out (a worker
    process may run it).  `points` None skips the checks that need the gateway's points (unknown
    points are then accepted, untyped).  Raises RuleErrors with every error of every file."""
    errors: list[RuleError] = []
    statements = _parse_all(files, errors)
    known = {p.key: p for p in points} if points is not None else None
    checked = check(statements, known)
    split: dict[str, list[str]] = {}

    def error(
        file: str, pos: A.Pos, message: str, suggestion: str | None = None, level: str = "error"
    ) -> RuleError:
        src = split.get(file)
        if src is None:
            text = files.get(file, "")
            src = split[file] = text.split("\n") if len(text) <= MAX_FILE_BYTES else []
        return RuleError(
            file,
            pos.line,
            pos.col,
            message,
            suggestion,
            src[pos.line - 1] if 0 < pos.line <= len(src) else "",
            pos.length,
            level,
        )

    for p in checked.problems:
        errors.append(error(p.file, p.pos, p.message, p.suggestion))
    # identities
    ids: dict[str, A.Rule | A.Let] = {}
    infos: list[tuple[str, str, A.Rule | A.Let]] = []
    every: list[A.Rule | A.Let] = [*checked.lets, *checked.rules]
    st: A.Rule | A.Let
    for st in every:
        text = canon(st)
        if isinstance(st, A.Let):
            rid = st.target.key
        elif st.name is not None:
            rid = st.name
        else:
            rid = "anon-" + _hash(text)
        if rid in ids:
            first = ids[rid]
            what = f"RULE {rid} is" if isinstance(st, A.Rule) and st.name else "the same rule is"
            errors.append(
                error(st.file, st.pos, f"{what} defined twice (first at {first.file}:{first.pos.line})")
            )
            continue
        ids[rid] = st
        infos.append((rid, _hash(text), st))
    ptypes: dict[str, str] = {k: ptype(p.type) for k, p in checked.points.items()}
    ptypes.update(checked.let_types)
    warnings = _overlaps(
        checked.rules, ptypes, checked.points, {x.target.key: x.expr for x in checked.lets}, error
    )
    if errors:
        raise RuleErrors(errors, warnings)

    starts: dict[str, list[int]] = {}
    for st in every:
        starts.setdefault(st.file, []).append(st.pos.line)
    for first_lines in starts.values():
        first_lines.sort()
    texts = {f: files[f].split("\n") for f in starts if f in files and len(files[f]) <= MAX_FILE_BYTES}
    g = Gen()
    rules_plan: list[dict[str, object]] = []
    infos_out: list[RuleInfo] = []
    lets_out: list[PointInfo] = []
    let_index: dict[str, int] = {}
    for j, (rid, th, st) in enumerate(infos):
        if isinstance(st, A.Let):
            g.let(j, st, checked.let_types.get(st.target.key, ANY))
            let_index[st.target.key] = j
            keys = tuple(dict.fromkeys(r.key for r in refs(st.expr)))
            triggers = keys
            kind = "let"
            lets_out.append(
                PointInfo(
                    st.target.device,
                    st.target.point,
                    _LET_TYPES[checked.let_types.get(st.target.key, ANY)],
                    unit=st.unit,
                    origin="rules",
                    description=f"LET at {st.file}:{st.pos.line}",
                )
            )
        else:
            g.rule(j, st, ptypes)
            kind = st.kind
            keys = tuple(dict.fromkeys(r.key for r in refs((st.when, st.clear, st.then, st.orelse))))
            triggers = tuple(dict.fromkeys(r.key for r in refs((st.when, st.clear))))
        for k in keys:
            g.point(k)
        td = g.time_dependent and kind != "every"
        plan: dict[str, object] = {
            "id": rid,
            "kind": kind,
            "triggers": [g.point(k) for k in triggers],
            "refs": list(keys),
            "hold_ns": int(st.hold.seconds * NS) if isinstance(st, A.Rule) and st.hold else 0,
            "every_ns": int(st.every.seconds * NS) if isinstance(st, A.Rule) and st.every else 0,
            "recheck_ns": int(_smallest_duration(st) * NS) if td and isinstance(st, A.Rule) else 0,
            "cond_refs": list(triggers),
            "let_recheck_ns": int(1 * NS) if td and isinstance(st, A.Let) else 0,
            "clear": isinstance(st, A.Rule) and st.clear is not None,
        }
        rules_plan.append(plan)
        infos_out.append(RuleInfo(rid, kind, st.file, st.pos.line, th, keys, _written(texts, starts, st)))
    # handlers: for each point, the LETs (in dependency order) then the rules it triggers
    by_point: dict[int, tuple[list[int], list[int]]] = {}
    for j, rp in enumerate(rules_plan):
        for i in rp["triggers"]:  # type: ignore[attr-defined]
            lets_rules = by_point.setdefault(i, ([], []))
            if rp["kind"] == "let":
                lets_rules[0].append(j)
            elif rp["kind"] == "on":
                lets_rules[1].append(j)
    for key, i in list(g.points.items()):
        lets, rules = by_point.get(i, ([], []))
        g.handler(i, ptypes.get(key, ANY), lets, rules)
    point_keys = list(g.points)
    windows = sorted(g.windows.items(), key=lambda x: x[1])
    names = _Names(
        points=[_hash(k) for k in point_keys],
        windows=[_hash(f"{point_keys[i]}@{span}") for (i, span), _ in windows],
        rules=[_hash(rid) for rid, _, _ in infos],
        consts=g.consts,
    )
    chunks = [names.rename(c) for c in re.split(r"(?m)^(?=def )", "\n".join(g.lines) + "\n") if c.strip()]
    source = "".join(chunks)
    try:
        code = marshal.dumps(tuple(_compiled(c) for c in chunks))
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:  # a limit of Python's compiler
        head = every[0] if every else None
        raise RuleErrors(
            [
                error(
                    head.file if head else "",
                    head.pos if head else A.Pos(1, 1),
                    f"the rules are too complex to compile ({exc})",
                )
            ]
        ) from None
    version = _hash("\0".join(f"{n}\0{files[n]}" for n in sorted(files)) + source)
    return RuleSet(
        version=version,
        files=sorted(files),
        rules=infos_out,
        lets=lets_out,
        source=source,
        consts=names.const_values,
        code=code,
        python=sys.implementation.cache_tag or "",
        warnings=warnings,
        plan={
            "points": point_keys,
            "point_names": names.points,
            "window_names": names.windows,
            "rule_names": names.rules,
            "ptypes": {k: ptypes.get(k, ANY) for k in g.points},
            "windows": [(i, span, w in g.window_mm) for (i, span), w in windows],
            "rules": rules_plan,
            "let_points": dict(let_index.items()),
        },
    )
