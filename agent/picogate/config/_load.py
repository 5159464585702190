"""Loading `gateway.yaml`: every problem in the file at once, each with its line, column and key path.

The file is composed with PyYAML (SafeLoader) into a node tree that keeps every node's position;
the tree is turned into plain Python here (so duplicate keys are caught, which PyYAML silently
drops), validated against the schema, and pydantic's errors are mapped back to the line and column
of the node they are about and rewritten as plain sentences:

    gateway.yaml:14:9: devices[2].points[5].address: must be 0..65535

Numbers written with leading zeros are not YAML 1.1 octal: they are passed on as written, so a
numeric field reads them as decimal (`ref: 00010` is reference 10, coil address 9, as YAML 1.2
would read it) and a Modicon coil reference cannot silently become another coil.  Top-level keys
starting with `x-` are dropped before validation: they hold templates for `<<: *name` merges.
"""

from __future__ import annotations

import difflib
import enum
import re
import string
import types
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from picogate._errors import PicogateError
from picogate._model import NAME_PATTERN
from picogate._secrets import MASK, is_secret_key, maskable, redact_with, remember
from picogate.config._base import parse_duration
from picogate.config._schema import CoreConfig

__all__ = ["ConfigError", "ConfigIssue", "load_config", "parse_config"]

C = TypeVar("C", bound=CoreConfig)

PathElement = str | int
"""A mapping key (always as text) or a list index."""
KeyPath = tuple[PathElement, ...]

_MAX_NODES = 200_000
"""Nodes a file may expand to (aliases can multiply a small file into a huge one)."""

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_INT_TAG = "tag:yaml.org,2002:int"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_LEADING_ZERO_INT = re.compile(r"^[-+]?0[0-7_]+$")  # what YAML 1.1 reads as octal

# `key:` in a source line, block or flow style (keys are bounded: linear in the line's length);
# the value of a secret's key is masked up to the end of its scalar.
_KEY = re.compile(
    r"""(?<![^\s{,\[])(?P<key>"[^"\n]{0,128}"|'[^'\n]{0,128}'|[^\s:{}\[\],'"#][^:{}\[\],#\n]{0,127}?)"""
    r"""[ \t]*:(?=[ \t]|$)"""
)
_PLAIN_END = re.compile(r"[,}\]]|\s#")  # where a plain scalar ends (flow style, or a comment)
_SUBPATH = re.compile(
    r"^(?P<path>[A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (?P<rest>.*)$", re.DOTALL
)
_SUBPATH_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")

# --------------------------------------------------------------------------- issues and the error


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file.  `line` and `column` are 1-based, None if unknown.

    A warning (`level="warning"`: the file loads, but probably does not say what was meant)
    carries its source line (secrets masked) and where the caret goes in it."""

    file: str
    line: int | None
    column: int | None
    path: str
    """Key path such as `devices[2].points[5].address`; empty for the file as a whole."""
    message: str
    level: Literal["error", "warning"] = "error"
    source_line: str = field(default="", compare=False)
    caret: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.level == "warning":
            where += ": warning"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"

    def format(self) -> str:
        """`str()`, then the source line and a caret under the column (when the issue has them)."""
        if not self.source_line or self.line is None:
            return str(self)
        width = len(str(self.line))
        out = [str(self), f" {self.line} | {self.source_line}"]
        if self.caret is not None:
            pad = "".join("\t" if c == "\t" else " " for c in self.source_line[: self.caret - 1])
            out.append(f" {'':>{width}} | {pad}^")
        return "\n".join(out)


class ConfigError(PicogateError):
    """The configuration cannot be used.  `issues` lists every problem found, in file order.

    `str()` gives one line per issue (`file:line:column: path: message`), each followed by the
    offending source line and a caret under the column, as a compiler prints them.  No secret is
    ever shown: the values of secrets' keys (`password`, `pw`, `mqtt_password`, …) are masked in
    the quoted lines, and so is every value in `secrets` wherever it appears.
    """

    def __init__(
        self, issues: list[ConfigIssue], *, source: str | None = None, secrets: Iterable[str] = ()
    ) -> None:
        super().__init__(issues)
        self.issues = issues
        self.where = issues[0].file if issues else ""
        self.source = source
        self.secrets = frozenset(s for s in secrets if s)

    def __str__(self) -> str:
        source_lines = self.source.splitlines() if self.source is not None else []
        shown = [i.line for i in self.issues if i.line is not None and i.line <= len(source_lines)]
        width = len(str(max(shown))) if shown else 1
        out: list[str] = []
        for issue in self.issues:
            out.append(redact_with(str(issue), self.secrets))
            if issue.line is None or not 1 <= issue.line <= len(source_lines):
                continue
            text, column = _mask_secrets(source_lines[issue.line - 1], issue.column, self.secrets)
            out.append(f" {issue.line:>{width}} | {text}")
            if column is not None:
                # Copy tabs so that the caret lines up whatever the terminal's tab width.
                pad = "".join("\t" if c == "\t" else " " for c in text[: column - 1])
                out.append(f" {'':>{width}} | {pad}^")
        return "\n".join(out)


def _secret_spans(line: str, secrets: Iterable[str]) -> list[tuple[int, int]]:
    """Where `line` shows a secret: the value of a secret's key, or one of `secrets` anywhere."""
    spans: list[tuple[int, int]] = []
    for m in _KEY.finditer(line):
        if is_secret_key(m.group("key")):
            value = _value_span(line, m.end())
            if value is not None:
                spans.append(value)
    for secret in secrets:
        start = line.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = line.find(secret, start + len(secret))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _value_span(line: str, at: int) -> tuple[int, int] | None:
    """The value that starts after `key:` at `at` (spaces skipped): a quoted scalar, a flow
    collection, or a plain scalar up to a `,` `}` `]`, a comment or the end of the line.  None
    when there is none on this line (a block follows)."""
    start = at
    while start < len(line) and line[start] in " \t":
        start += 1
    if start >= len(line) or line[start] == "#":
        return None
    if line[start] in "{[":  # a flow collection: all of it (to its first closing bracket)
        close = line.find("]" if line[start] == "[" else "}", start)
        return start, (close + 1 if close != -1 else len(line))
    quote = line[start]
    if quote in "\"'":
        i = start + 1
        while i < len(line):
            if quote == '"' and line[i] == "\\":
                i += 2  # an escape: \" does not close it
                continue
            if line[i] == quote:
                if quote == "'" and line.startswith("''", i):
                    i += 2  # '' is a quote inside single quotes
                    continue
                return start, i + 1
            i += 1
        return start, len(line)
    end = _PLAIN_END.search(line, start)
    return start, (end.start() if end is not None else len(line))


def _mask_secrets(line: str, column: int | None, secrets: Iterable[str] = ()) -> tuple[str, int | None]:
    """`password: hunter2` → `password: ********`, in block or flow style: never echo a secret.

    Returns the masked line and `column` (1-based) moved to where it now falls.
    """
    out: list[str] = []
    done = 0
    moved = 0  # how far the column moves: the change in length of the secrets before it
    inside: int | None = None  # the column falls in a secret: where the mask starts
    for start, end in _secret_spans(line, secrets):
        out += [line[done:start], MASK]
        done = end
        if column is not None and start < column <= end:
            inside = start + 1 + moved
        if column is not None and end < column:
            moved += len(MASK) - (end - start)
    out.append(line[done:])
    if column is None:
        return "".join(out), None
    return "".join(out), inside if inside is not None else column + moved


# --------------------------------------------------------------------------- entry points


def load_config(path: str | Path, schema: type[C], *, warnings: list[ConfigIssue] | None = None) -> C:
    """Read and validate a `gateway.yaml` against `schema` (the composed model of the whole file,
    `picogate.gateway.GatewayConfig`).  Raises ConfigError listing every problem found; adds to
    `warnings` what is valid but probably not meant (`address: 40001`, `poll: 1000`)."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(name, None, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(name, None, None, "", "is a directory, not a file")]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigIssue(name, None, None, "", f"cannot read: {reason}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        raise ConfigError([ConfigIssue(name, line, column, "", message)]) from None
    return parse_config(text, schema, filename=name, warnings=warnings)


def parse_config(
    text: str, schema: type[C], *, filename: str = "<string>", warnings: list[ConfigIssue] | None = None
) -> C:
    """Validate the text of a `gateway.yaml` against `schema`.  Raises ConfigError listing every
    problem found; what the sections check once the file is valid (`CoreConfig.after_load`) is
    reported the same way.  What is valid but probably not meant (`CoreConfig.warnings`, a bare
    number of seconds above a minute) is added to `warnings`, in file order."""
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters at once
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_issue(exc, text, filename)], source=text) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_syntax_issue(exc, filename)], source=text) from None
        except yaml.reader.ReaderError as exc:
            raise ConfigError([_reader_issue(exc, text, filename)], source=text) from None
        except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error is one of the above
            raise ConfigError([ConfigIssue(filename, None, None, "", str(exc))], source=text) from None
        except RecursionError:
            issue = ConfigIssue(filename, None, None, "", "nested too deeply")
            raise ConfigError([issue], source=text) from None
        # A valid file needs no positions: they are recorded (by converting again) only once
        # there is a problem to report.  For 500 devices × 30 points they would be ~80,000
        # entries, 12 MB at the peak of the agent's start-up, most of it never given back.
        tree = _Tree(loader, filename)
        try:
            data = tree.convert_root(root)
        finally:
            # The values of secrets' keys (`password: …`, `pw: …`, also unknown or misspelled ones)
            # are masked wherever they would be shown: in this error, and in every log line.
            secrets = maskable(tree.secrets)
            remember(secrets)

        def placed() -> _Tree:
            nonlocal tree
            if not tree.record:
                tree = _Tree(loader, filename, record=True)
                tree.convert_root(root)  # the same data and issues, now with their places
            return tree

        issues = list(tree.issues)
        if data is not None:
            try:
                config = schema.model_validate(data)
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    issue = _validation_issue(err, data, placed(), filename, schema)
                    if not any(_under(issue.path, broken) for broken in tree.broken):
                        issues.append(issue)
            else:
                if not issues:
                    # Checks that run once the file is valid, reported as a validator's would be.
                    for loc, message in config.after_load():
                        err = ErrorDetails(type="value_error", loc=loc, msg=message, input=None)
                        issues.append(_validation_issue(err, data, placed(), filename, schema))
                    if not issues:
                        if warnings is not None:
                            warnings += _warnings(config, data, placed, filename, schema, text, secrets)
                        return config
    finally:
        loader.dispose()
    if not issues:  # pragma: no cover - a YAML problem always leaves an issue
        issues.append(ConfigIssue(filename, None, None, "", "invalid configuration"))
    issues = [replace(i, message=redact_with(i.message, secrets)) for i in issues]
    raise ConfigError(_ordered(issues), source=text, secrets=secrets)


def _warnings(
    config: CoreConfig,
    data: Any,
    placed: Callable[[], _Tree],
    filename: str,
    schema: type[BaseModel],
    text: str,
    secrets: frozenset[str],
) -> list[ConfigIssue]:
    """The file's warnings; `placed()` gives the tree with every key's place, built only when
    there is a warning to place."""
    found = []
    for loc, message in config.warnings():
        err = ErrorDetails(type="value_error", loc=loc, msg=message, input=None)
        found.append(_validation_issue(err, data, placed(), filename, schema))
    found += _bare_durations(data, schema, placed, filename)
    lines = text.splitlines()
    out = []
    for issue in _ordered(found):
        source, caret = "", None
        if issue.line is not None and 1 <= issue.line <= len(lines):
            source, caret = _mask_secrets(lines[issue.line - 1], issue.column, secrets)
        message = redact_with(issue.message, secrets)
        out.append(replace(issue, message=message, level="warning", source_line=source, caret=caret))
    return out


def _bare_durations(
    data: Any, schema: type[BaseModel], placed: Callable[[], _Tree], filename: str
) -> list[ConfigIssue]:
    """`poll: 1000`: a duration written as a bare number of seconds above a minute (most likely
    milliseconds, or a unit forgotten)."""
    out = []
    stack: list[tuple[KeyPath, Any, Any, list[Any]]] = [((), data, schema, [])]
    while stack:
        path, value, annotation, constraints = stack.pop()
        annotation, discriminator = _unwrap(annotation, constraints)
        if discriminator is not None and _is_union(annotation):
            tag = value.get(discriminator) if isinstance(value, dict) else None
            annotation, constraints = _tagged_members(annotation, discriminator).get(str(tag)), []
        if _is_model(annotation) and isinstance(value, dict):
            for key, sub in value.items():
                info = annotation.model_fields.get(key) if isinstance(key, str) else None
                if info is not None:
                    stack.append(((*path, key), sub, info.annotation, list(info.metadata)))
        elif get_origin(annotation) is list and isinstance(value, list):
            item = (get_args(annotation) or (None,))[0]
            stack += [((*path, i), v, item, []) for i, v in enumerate(value)]
        elif get_origin(annotation) is dict and isinstance(value, dict):
            args = get_args(annotation)
            stack += [
                ((*path, _key_text(k)), v, args[1] if len(args) == 2 else None, []) for k, v in value.items()
            ]
        elif any(getattr(c, "func", None) is parse_duration for c in constraints) and (
            seconds := _bare_seconds(value)
        ):
            mark = _find_mark(placed(), path, prefer_key=False)
            n = _num(seconds)
            message = (
                f"{n} without a unit is {n} seconds ({_spoken(seconds)}): write {n}ms for milliseconds, "
                f"or {n}s if seconds are meant"
            )
            line = mark.line + 1 if mark is not None else None
            column = mark.column + 1 if mark is not None else None
            out.append(ConfigIssue(filename, line, column, _path_text(path), message))
    return out


_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")


def _bare_seconds(value: Any) -> float | None:
    """A number without a unit (or its text, `"90"`) above 60, else None."""
    if isinstance(value, str) and _BARE_NUMBER.match(value):
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 60:
        return float(value)
    return None


def _spoken(seconds: float) -> str:
    """1000 → `16 min 40 s`."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            parts.append(f"{int(seconds // size)} {unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{_num(round(seconds, 3))} s")
    return " ".join(parts)


def _ordered(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line or 0, i.column or 0))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


# --------------------------------------------------------------------------- YAML → plain Python


def _syntax_issue(exc: yaml.MarkedYAMLError, filename: str) -> ConfigIssue:
    """PyYAML's messages, reworded where a plain sentence says more."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    context = exc.context or ""
    since = f"line {exc.context_mark.line + 1}" if exc.context_mark is not None else "above"
    explained = True
    if "mapping values are not allowed" in problem:
        message = "unexpected ':' here (check the indentation, or quote a value that contains ': ')"
    elif "cannot start any token" in problem and "'\\t'" in problem:
        message = "a tab character: indent with spaces"
    elif "could not find expected ':'" in problem:
        message = "expected 'key: value' (is a ':' missing?)"
        key = _key_without_colon(exc)
        if key is not None and exc.context_mark is not None:
            # PyYAML notices on the next line; the ':' is missing after the key on this one.
            word, start = key
            message = f"a ':' is missing after '{word}' (write '{word}: value')"
            at_line, at_column = start.line + 1, start.column + 1 + len(word)
            return ConfigIssue(filename, at_line, at_column, "", f"YAML syntax: {message}")
    elif "expected <block end>" in problem:
        message = f"bad indentation: this does not line up with the block that starts on {since}"
    elif "single document" in context:
        message = "a second YAML document ('---'): gateway.yaml holds exactly one"
    elif "<stream end>" in problem and "flow sequence" in context:
        message = f"the '[' on {since} is never closed (a ']' is missing)"
    elif "<stream end>" in problem and "flow mapping" in context:
        message = f"the '{{' on {since} is never closed (a '}}' is missing)"
    elif "end of stream" in problem and "quoted scalar" in context:
        message = f"the quote on {since} is never closed"
    else:
        message = problem
        explained = False
    if (
        not explained
        and exc.context
        and exc.context_mark is not None
        and mark is not None
        and exc.context_mark.line != mark.line
    ):
        message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return ConfigIssue(filename, line, column, "", f"YAML syntax: {message}")


_FIRST_WORD = re.compile(r"[^\s:#]+")


def _key_without_colon(exc: yaml.MarkedYAMLError) -> tuple[str, yaml.Mark] | None:
    """`host 10.0.0.5`: the first word of the line where the key began, and that line's mark."""
    mark = exc.context_mark
    if mark is None or mark.buffer is None or exc.context != "while scanning a simple key":
        return None
    word = _FIRST_WORD.match(mark.buffer, mark.pointer)
    return (word.group(0), mark) if word is not None else None


def _reader_issue(exc: yaml.reader.ReaderError, text: str, filename: str) -> ConfigIssue:
    position = min(max(exc.position, 0), len(text))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return ConfigIssue(filename, line, column, "", f"control character U+{exc.character:04X} is not allowed")


@dataclass(slots=True)
class _Place:
    """Where a key path sits in the file: its key (for mapping entries) and its value."""

    key: yaml.Mark | None
    value: yaml.Mark
    value_blank: bool  # the value is an empty null (`key:` and nothing after it)

    def mark(self, *, prefer_key: bool = False) -> yaml.Mark:
        if self.key is None:
            return self.value
        if prefer_key or self.value_blank or self.value.line != self.key.line:
            return self.key
        return self.value


class _TooBig(Exception):
    pass


@dataclass
class _Tree:
    """Turns a composed node tree into plain Python, recording where every key path sits."""

    loader: yaml.SafeLoader
    filename: str
    record: bool = False
    """Record where every key path sits (`places`): only needed to report a problem."""
    places: dict[KeyPath, _Place] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    """Key paths whose value could not be read; validation errors under them are noise."""
    secrets: set[str] = field(default_factory=set)
    """The text of every scalar under a secret's key (`password`, `pw`, `mqtt_password`, …)."""
    _budget: int = _MAX_NODES
    _active: set[int] = field(default_factory=set)

    def convert_root(self, root: yaml.Node | None) -> dict[Any, Any] | None:
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL_TAG):
            return {}  # an empty file: every default
        try:
            data = self.convert(root, (), None)
        except _TooBig:
            self.issue(root.start_mark, "", f"the file expands to more than {_MAX_NODES} values (aliases?)")
            return None
        except RecursionError:
            self.issue(root.start_mark, "", "nested too deeply")
            return None
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else f"the value {_show(data)}"
            self.issue(
                root.start_mark,
                "",
                f"the top level must be a mapping of sections (gateway:, mqtt:, devices:, ...), not {kind}",
            )
            return None
        # `x-...` keys hold YAML anchors for `<<: *name` merges and are not configuration.
        return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}

    def issue(self, mark: yaml.Mark | None, path: str, message: str) -> None:
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        self.issues.append(ConfigIssue(self.filename, line, column, path, message))

    def convert(self, node: yaml.Node, path: KeyPath, key_mark: yaml.Mark | None) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise _TooBig
        if self.record:
            blank = isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and node.value == ""
            self.places[path] = _Place(key_mark, node.start_mark, blank)
        if id(node) in self._active:
            self.issue(node.start_mark, _path_text(path), "an alias refers to a collection that contains it")
            self.broken.add(_path_text(path))
            return None
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            self._active.add(id(node))
            try:
                return self._mapping(node, path, key_mark)
            finally:
                self._active.discard(id(node))
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            self._active.add(id(node))
            try:
                return [self.convert(item, (*path, i), None) for i, item in enumerate(node.value)]
            finally:
                self._active.discard(id(node))
        return self._construct(node, path)

    def _construct(self, node: yaml.Node, path: KeyPath) -> Any:
        """A scalar (or an explicitly tagged collection such as !!set), by the SafeLoader's rules."""
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag == _INT_TAG
            and _LEADING_ZERO_INT.match(node.value)
            and node.style is None
        ):
            # YAML 1.1 would read this as octal.  Kept as its text, a numeric field reads it as
            # decimal, and `ref` can still see the leading zero of a 6-digit coil reference.
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            problem = exc.problem or "cannot read this value"
            if "could not determine a constructor" in problem:
                problem = f"unsupported YAML tag '{_short_tag(node.tag)}'"
            self.issue(exc.problem_mark or node.start_mark, _path_text(path), problem)
        except (ValueError, TypeError, ArithmeticError, AttributeError) as exc:
            kind = _short_tag(node.tag).removeprefix("!!")
            self.issue(node.start_mark, _path_text(path), f"cannot read {node.value!r} as {kind}: {exc}")
        self.broken.add(_path_text(path))
        return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, key_mark: yaml.Mark | None) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merges: list[yaml.Node] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                if isinstance(value_node, yaml.SequenceNode):
                    merges.extend(value_node.value)
                else:
                    merges.append(value_node)
            else:
                own.append((key_node, value_node))
        # `<<: *defaults` first, so that the mapping's own keys override what it merges; among
        # several merged mappings the first one wins, as in YAML's merge key specification.
        for source in reversed(merges):
            if not isinstance(source, yaml.MappingNode):
                self.issue(
                    source.start_mark, _path_text(path), "'<<' must be given a mapping (or a list of them)"
                )
                continue
            merged = self.convert(source, path, key_mark)
            if isinstance(merged, dict):
                result.update(merged)
        if self.record and merges:
            self.places[path] = _Place(key_mark, node.start_mark, False)

        first_seen: dict[Hashable, yaml.Mark] = {}
        for key_node, value_node in own:
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(
                    key_node.start_mark, _path_text(path), "a key must be plain text, not a list or mapping"
                )
                continue
            key = self._construct(key_node, (*path, key_node.value))
            if key is None and key_node.tag != _NULL_TAG:
                continue  # already reported
            if not isinstance(key, Hashable):
                self.issue(key_node.start_mark, _path_text(path), "a key must be plain text")
                continue
            sub = (*path, _key_text(key))
            if is_secret_key(key_node.value):
                self._collect_secrets(value_node)
            earlier = first_seen.get(key)
            if earlier is not None:
                self.issue(
                    key_node.start_mark,
                    _path_text(sub),
                    f"duplicate key {_key_text(key)!r} (also on line {earlier.line + 1}; "
                    "YAML would silently keep only the last one)",
                )
            else:
                first_seen[key] = key_node.start_mark
            result[key] = self.convert(value_node, sub, key_node.start_mark)
        return result

    def _collect_secrets(self, node: yaml.Node) -> None:
        stack: list[yaml.Node] = [node]
        seen: set[int] = set()
        while stack and len(seen) < _MAX_NODES:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n, yaml.ScalarNode):
                self.secrets.add(str(n.value))
            elif isinstance(n, yaml.SequenceNode):
                stack.extend(n.value)
            elif isinstance(n, yaml.MappingNode):
                stack.extend(value for _key, value in n.value)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _path_text(path: KeyPath) -> str:
    out = ""
    for element in path:
        if isinstance(element, int):
            out += f"[{element}]"
        else:
            out += f".{element}" if out else element
    return out


# --------------------------------------------------------------------------- pydantic errors


@dataclass(slots=True)
class _Target:
    """What a pydantic error location points at, found by walking the schema beside the data."""

    path: list[PathElement] = field(default_factory=list)
    annotation: Any = None
    """The expected type at `path` (None when unknown)."""
    constraints: list[Any] = field(default_factory=list)
    owner: type[BaseModel] | None = None
    """The model whose field (or unknown key) the last element of `path` is."""
    discriminator: str | None = None
    members: dict[str, type[BaseModel]] = field(default_factory=dict)
    """The models of a tagged union at `path`, by tag."""
    chosen: dict[str, type[BaseModel]] = field(default_factory=dict)
    """The models of the last tagged union passed on the way (to say where a key belongs)."""


def _unwrap(annotation: Any, constraints: list[Any]) -> tuple[Any, str | None]:
    """Strip Annotated[...] and Optional[...]; collect constraints; return (type, discriminator)."""
    discriminator: str | None = None
    while True:
        if get_origin(annotation) is Annotated:
            base, *extras = get_args(annotation)
            for extra in extras:
                if isinstance(extra, FieldInfo):
                    constraints.extend(extra.metadata)
                    if isinstance(extra.discriminator, str):
                        discriminator = extra.discriminator
                else:
                    constraints.append(extra)
            annotation = base
            continue
        if _is_union(annotation):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation, discriminator


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tagged_members(annotation: Any, discriminator: str) -> dict[str, type[BaseModel]]:
    members: dict[str, type[BaseModel]] = {}
    for member in get_args(annotation):
        if _is_model(member) and discriminator in member.model_fields:
            for tag in get_args(member.model_fields[discriminator].annotation):
                members[str(tag)] = member
    return members


def _locate(loc: tuple[int | str, ...], data: Any, schema: type[BaseModel]) -> _Target:
    target = _Target(annotation=schema)
    for element in loc:
        annotation, discriminator = _unwrap(target.annotation, target.constraints)
        if discriminator is not None and _is_union(annotation):
            members = _tagged_members(annotation, discriminator)
            if isinstance(element, str) and element in members:
                # pydantic names the union member it chose: not a key in the file.
                target.annotation, target.constraints = members[element], []
                target.discriminator, target.members, target.chosen = None, {}, members
                continue
        if isinstance(element, str) and ("[" in element or element.startswith("function-")):
            continue  # a validator's name, not a key in the file
        if _is_model(annotation) and isinstance(element, str):
            target.owner = annotation
            info = annotation.model_fields.get(element)
            target.annotation = info.annotation if info is not None else None
            target.constraints = list(info.metadata) if info is not None else []
        elif get_origin(annotation) in (list, tuple, set, frozenset) and isinstance(element, int):
            args = get_args(annotation)
            target.annotation, target.constraints = (args[0] if args else None), []
            target.owner = None
        elif get_origin(annotation) is dict:
            args = get_args(annotation)
            target.annotation, target.constraints = (args[1] if len(args) == 2 else None), []
            target.owner = None
        else:
            target.annotation, target.constraints, target.owner = None, [], None
        if isinstance(element, int) and not isinstance(data, list):
            target.path.append(str(element))  # an integer key of a mapping, not an index
        else:
            target.path.append(element)
        data = _child(data, element)
    annotation, discriminator = _unwrap(target.annotation, target.constraints)
    target.annotation = annotation
    if discriminator is not None and _is_union(annotation):
        target.discriminator = discriminator
        target.members = _tagged_members(annotation, discriminator)
    return target


def _child(data: Any, element: int | str) -> Any:
    if isinstance(data, list) and isinstance(element, int):
        return data[element] if 0 <= element < len(data) else None
    if isinstance(data, dict):
        if element in data:
            return data[element]
        for key, value in data.items():
            if _key_text(key) == str(element):
                return value
    return None


def _validation_issue(
    err: ErrorDetails, data: Any, tree: _Tree, filename: str, schema: type[BaseModel]
) -> ConfigIssue:
    target = _locate(tuple(err["loc"]), data, schema)
    path: list[PathElement] = target.path
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    prefer_key = False

    if kind == "missing":
        name = path.pop() if path else "?"
        message = f"missing required key '{name}'"
    elif kind == "invalid_key":
        prefer_key = True
        message = f"a key must be text, not {_show(value)}"
        comma = _decimal_comma(data, tuple(path))
        if comma is not None:
            before, number = comma
            path[-1] = before
            whole, decimals = number.split(",")
            message = (
                f"'{before}: {number}' is read as {before}: {whole} and a key {decimals} (in {{...}} a comma "
                f"separates keys): write {before}: {whole}.{decimals}"
            )
    elif kind == "extra_forbidden":
        prefer_key = True
        message = _unknown_key(str(path[-1]) if path else "?", target.owner, target.chosen)
    elif kind == "union_tag_invalid":
        tag_key = str(ctx.get("discriminator", "'type'")).strip("'")
        tags = [str(t) for t in target.members] or _quoted_list(str(ctx.get("expected_tags", "")))
        noun = _singular(path)
        bad = str(ctx.get("tag", value))
        message = f"unknown {noun}type '{bad}'{_did_you_mean(bad, tags)}; known: {', '.join(tags)}"
        path.append(tag_key)
    elif kind == "union_tag_not_found":
        tag_key = str(ctx.get("discriminator", "'type'")).strip("'")
        tags = [str(t) for t in target.members] or _quoted_list(str(ctx.get("expected_tags", "")))
        message = f"missing required key '{tag_key}' (one of: {', '.join(tags)})"
    elif kind in ("value_error", "assertion_error"):
        message = _strip_prefix(err["msg"])
        folded = _fold_subpath(path, message)
        if folded is not None:
            path, message = folded
    elif kind in ("literal_error", "enum"):
        choices = _choices(target.annotation)
        if choices is None:
            choices = _quoted_list(str(ctx.get("expected", "")))
        message = f"must be one of: {', '.join(choices)}"
    elif kind == "string_pattern_mismatch":
        message = _pattern_message(str(ctx.get("pattern", "")), value)
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        message = _bounds_message(target.constraints, kind, ctx)
    else:
        message = _type_message(kind, err["msg"], value, ctx)

    text = _path_text(tuple(path))
    mark = _find_mark(tree, tuple(path), prefer_key=prefer_key)
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return ConfigIssue(filename, line, column, text, message)


def _decimal_comma(data: Any, path: KeyPath) -> tuple[str, str] | None:
    """`{scale: 0,1}`: the integer key at `path` follows a key whose value is a whole number (the
    key before it, and `0,1` as written), else None."""
    if not path or not isinstance(path[-1], str) or not path[-1].isdigit():
        return None
    parent = data
    for element in path[:-1]:
        parent = _child(parent, element)
    if not isinstance(parent, dict):
        return None
    keys = list(parent)
    at = next((i for i, k in enumerate(keys) if _key_text(k) == path[-1] and not isinstance(k, str)), None)
    if not at:
        return None
    before, value = keys[at - 1], parent[keys[at - 1]]
    if not isinstance(before, str) or isinstance(value, bool) or not isinstance(value, int):
        return None
    return before, f"{value},{path[-1]}"


def _find_mark(tree: _Tree, path: KeyPath, *, prefer_key: bool) -> yaml.Mark | None:
    """The position of the deepest node along `path` that exists in the file."""
    for n in range(len(path), -1, -1):
        place = tree.places.get(path[:n])
        if place is not None:
            return place.mark(prefer_key=prefer_key and n == len(path))
    return None


def _fold_subpath(path: list[PathElement], message: str) -> tuple[list[PathElement], str] | None:
    """`points[3].name: 'x' is used twice` raised on `devices[0].points` → `devices[0].points[3].name`."""
    m = _SUBPATH.match(message)
    if m is None or not path or not isinstance(path[-1], str):
        return None
    sub = m.group("path")
    if "[" not in sub and "." not in sub:
        return None
    parts: list[PathElement] = [name if name else int(index) for name, index in _SUBPATH_PART.findall(sub)]
    if parts[0] != path[-1]:
        return None
    return [*path[:-1], *parts], m.group("rest")


def _strip_prefix(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _unknown_key(key: str, owner: type[BaseModel] | None, variants: dict[str, type[BaseModel]]) -> str:
    known = list(owner.model_fields) if owner is not None else []
    if is_secret_key(key) and key not in known:
        # Never "did you mean 'password_env'?": that is where the password would go next.
        return f"unknown key '{key}': {_password_hint(known)}"
    # `baudrate` on a modbus_tcp device: say which type it belongs to.
    elsewhere = [tag for tag, model in variants.items() if model is not owner and key in model.model_fields]
    if owner is not None and elsewhere:
        here = next((tag for tag, model in variants.items() if model is owner), "this")
        return f"unknown key '{key}' for a {here} device (it is a key of {' and '.join(elsewhere)})"
    return f"unknown key '{key}'{_did_you_mean(key, known)}"


def _password_hint(known: list[str]) -> str:
    ways = []
    if "password_env" in known:
        ways.append("in an environment variable named by password_env (e.g. password_env: MQTT_PASSWORD)")
    if "password_file" in known:
        ways.append("in a file named by password_file")
    if not ways:
        return "this section takes no password, and gateway.yaml never holds one"
    return f"put the password {' or '.join(ways)}, never in gateway.yaml"


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.7)
    if not close and len(word) >= 3:  # `baud` for `baudrate`, `timeout_s` for `timeout`
        close = [c for c in candidates if c.startswith(word) or word.startswith(c)][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _singular(path: list[PathElement]) -> str:
    for element in reversed(path):
        if isinstance(element, str):
            return (element[:-1] if element.endswith("s") else element) + " "
    return ""


def _quoted_list(text: str) -> list[str]:
    """pydantic's `'a', 'b' or 'c'` → [a, b, c]."""
    found = re.findall(r"'([^']*)'", text)
    return found or ([text] if text else [])


def _choices(annotation: Any) -> list[str] | None:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return None


_HEX_PATTERN = re.compile(r"^\^\[0-9A-Fa-f\]\{(\d+)\}\$$")


def _pattern_message(pattern: str, value: Any = None) -> str:
    hex_digits = _HEX_PATTERN.match(pattern)
    if hex_digits is not None:
        n = int(hex_digits.group(1))
        what = f"{n} hex digits (0-9, A-F)"
        if isinstance(value, str):
            odd = next((c for c in value if c not in string.hexdigits), None)
            if odd is not None:
                return f"must be {what}; {odd!r} is not one"
            return f"must be {what}; this has {len(value)}"
        return f"must be {what}"
    if pattern == NAME_PATTERN:
        bare = pattern.removeprefix("^").removesuffix("$")
        return f"must match {bare} (lower-case letter, then lower-case letters, digits or '_')"
    if "#+" in pattern:
        return "must be topic levels separated by '/', without '#', '+', spaces or empty levels"
    return f"must match {pattern}"


def _bounds(constraints: list[Any]) -> tuple[tuple[Any, bool] | None, tuple[Any, bool] | None]:
    """((low, inclusive) | None, (high, inclusive) | None) from annotated-types constraints."""
    low: tuple[Any, bool] | None = None
    high: tuple[Any, bool] | None = None
    for c in constraints:
        if getattr(c, "ge", None) is not None:
            low = (c.ge, True)
        if getattr(c, "gt", None) is not None:
            low = (c.gt, False)
        if getattr(c, "le", None) is not None:
            high = (c.le, True)
        if getattr(c, "lt", None) is not None:
            high = (c.lt, False)
    return low, high


def _bounds_message(constraints: list[Any], kind: str, ctx: dict[str, Any]) -> str:
    low, high = _bounds(constraints)
    if low is None and kind in ("greater_than_equal", "greater_than"):
        low = (ctx.get("ge", ctx.get("gt")), kind == "greater_than_equal")
    if high is None and kind in ("less_than_equal", "less_than"):
        high = (ctx.get("le", ctx.get("lt")), kind == "less_than_equal")
    # A duration is checked in seconds, whatever unit the file used: say so.
    unit = "s" if any(getattr(c, "func", None) is parse_duration for c in constraints) else ""
    if low is not None and high is not None and low[1] and high[1]:
        return f"must be {_num(low[0], unit)}..{_num(high[0], unit)}"
    parts = []
    if low is not None:
        parts.append(f"{'≥' if low[1] else '>'} {_num(low[0], unit)}")
    if high is not None:
        parts.append(f"{'≤' if high[1] else '<'} {_num(high[0], unit)}")
    return "must be " + " and ".join(parts)


def _num(value: Any, unit: str = "") -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{int(value)}{unit}"
    return f"{value}{unit}"


_TYPE_MESSAGES = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text (put it in quotes)",
    "string_unicode": "must be text",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
    "list_type": "must be a list",
    "path_type": "must be a file path",
    "none_required": "must be empty",
    "frozen_set_type": "must be a list",
    "set_type": "must be a list",
    "tuple_type": "must be a list",
}


_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+\s*$")


def _type_message(kind: str, msg: str, value: Any, ctx: dict[str, Any]) -> str:
    if kind in ("string_too_long", "too_long"):
        limit = ctx.get("max_length")
        unit = "characters" if kind == "string_too_long" else "items"
        return f"must be at most {limit} {unit}"
    if kind in ("string_too_short", "too_short"):
        limit = ctx.get("min_length")
        unit = "characters" if kind == "string_too_short" else "items"
        return f"must be at least {limit} {unit}"
    if value is None and kind in ("model_type", "dict_type", "model_attributes_type"):
        return "is empty: give it keys, or leave it out for the defaults"
    if kind == "int_parsing_size":
        return "is too large"
    base = _TYPE_MESSAGES.get(kind)
    if kind == "float_parsing" and isinstance(value, str) and _DECIMAL_COMMA.match(value):
        return (
            f"must be a number, not {_show(value)}: write {value.strip().replace(',', '.')} (a decimal point)"
        )
    if base is None:
        text = msg.replace("Input should be", "must be").replace("Input", "the value")
        return text[:1].lower() + text[1:]
    return f"{base}, not {_show(value)}"


def _show(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
