"""Reading and compiling a set of rule files, and the compiler process that does it off the
gateway's event loop.

The gateway starts `main()` in a fresh interpreter (never a fork of the gateway and its threads)
and talks to it over its stdin/stdout: frames of an 8-byte big-endian length and a pickle.  It sends "ready", then answers every `CompileJob` with a
`CompileOutcome`, until its stdin closes (the gateway stopped or died) or it receives None.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import pickle
import re
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from picogate._errors import PicogateError
from picogate._model import PointInfo, PointType
from picogate.rules._compile import compile_rules
from picogate.rules._errors import RuleError, RuleErrors
from picogate.rules._limits import MAX_FILE_BYTES, MAX_TOTAL_BYTES
from picogate.rules._limits import size as limit_size
from picogate.rules._ruleset import RuleSet

PointRow = tuple[str, str, str, str, bool, float | None, float | None, str]
"""device, name, type, unit, writable, min, max, origin: what the checker needs of a point."""


def point_rows(points: Iterable[PointInfo]) -> tuple[PointRow, ...]:
    return tuple((p.device, p.name, p.type.value, p.unit, p.writable, p.min, p.max, p.origin) for p in points)


def point_infos(rows: Iterable[PointRow]) -> list[PointInfo]:
    return [
        PointInfo(device, name, PointType(type_), unit=unit, writable=writable, min=lo, max=hi, origin=origin)
        for device, name, type_, unit, writable, lo, hi, origin in rows
    ]


@dataclass(frozen=True, slots=True)
class CompileJob:
    """What the worker needs: where the files are, and the gateway's points (LETs excluded)."""

    dir: str
    pattern: str
    recursive: bool
    points: tuple[PointRow, ...]
    """The points as plain rows (`point_rows`): 15,000 of them pickle in a few milliseconds, where
    PointInfo objects take 70 ms of the event loop."""
    last_digest: str = ""
    """The digest of the last attempt: the same files and points again → no compilation."""


@dataclass(slots=True)
class CompileOutcome:
    digest: str
    files: list[str]
    ruleset: RuleSet | None
    errors: list[RuleError]
    unchanged: bool = False
    compile_s: float = 0.0


def rule_files(directory: Path, pattern: str, *, recursive: bool) -> list[Path]:
    """The rule files of `directory`, sorted; hidden files (editors' locks and temporaries) and
    anything that is not a regular file are left out."""
    found = directory.rglob(pattern) if recursive else directory.glob(pattern)
    out = []
    for path in found:
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            out.append(path)
    return sorted(out)


def file_error(name: str, message: str) -> RuleError:
    return RuleError(file=name, line=1, col=1, message=message, suggestion=None, source_line="")


_LOOKS_LIKE_RULES = re.compile(r"^(?P<stem>.+?)\.rules?(?:\..*)?$", re.IGNORECASE)


def skipped_files(directory: Path, pattern: str, *, recursive: bool) -> list[RuleError]:
    """A warning for each file of `directory` that looks like a rule file (`door.rules.txt`,
    `door.rule`, `door.RULES`) but does not match `pattern`, so is not read."""
    if not directory.is_dir():
        return []
    taken = set(rule_files(directory, pattern, recursive=recursive))
    found = directory.rglob("*") if recursive else directory.glob("*")
    out = []
    for path in sorted(found):
        rel = path.relative_to(directory)
        m = _LOOKS_LIKE_RULES.match(path.name)
        if (
            m is None
            or path in taken
            or any(part.startswith(".") for part in rel.parts)
            or not path.is_file()
        ):
            continue
        wanted = m.group("stem") + pattern.lstrip("*") if pattern.startswith("*.") else None
        fix = f": rename it {wanted}" if wanted is not None and fnmatch.fnmatch(wanted, pattern) else ""
        message = f"this file is not read: rule files are named {pattern}{fix}"
        out.append(replace(file_error(rel.as_posix(), message), level="warning"))
    return out


class NotUtf8(PicogateError, ValueError):
    """A rule file that is not UTF-8: the first byte that is not, the line it is on, and the fix."""

    def __init__(self, data: bytes, at: int) -> None:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            self.line, self.col, self.source_line = 1, 1, ""
            super().__init__(
                'not UTF-8 text but UTF-16 (what Notepad calls "Unicode"): save the file as UTF-8'
            )
            return
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        self.line = data.count(b"\n", 0, at) + 1
        self.col = len(data[start:at].decode("utf-8", "replace")) + 1
        text = data[start : end if end != -1 else len(data)].decode("cp1252", "replace")
        self.source_line = "".join(c if c.isprintable() or c == "\t" else "?" for c in text)
        shown = bytes([data[at]]).decode("cp1252", "replace")
        guess = (
            f" ('{shown}' in Latin-1 or Windows-1252)" if shown.isprintable() and shown != "\ufffd" else ""
        )
        super().__init__(
            f"not UTF-8 text: byte {data[at]:#04x}{guess} on line {self.line}; save the file as UTF-8 "
            "(in Notepad: Save As, Encoding UTF-8)"
        )

    def error(self, name: str) -> RuleError:
        return RuleError(name, self.line, self.col, str(self), None, self.source_line)


def read_rule_text(path: Path) -> str:
    """A rule file's text.  Reads at most MAX_FILE_BYTES + 1 bytes, whatever the file's size:
    raises ValueError (a message for the operator) for a larger file or one that is not UTF-8,
    OSError if it cannot be read."""
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            try:
                size = os.fstat(f.fileno()).st_size
            except OSError:
                size = len(data)
            raise ValueError(
                f"the file is {max(size, len(data)):,} bytes; a rule file may hold at most {MAX_FILE_BYTES:,} "
                f"({limit_size(MAX_FILE_BYTES)}): split it into several files"
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(data, exc.start) from None


def read_rule_files(
    directory: Path, pattern: str, *, recursive: bool
) -> tuple[dict[str, str], list[RuleError]]:
    """`{name relative to directory: text}`, and an error for each file that cannot be read.  Once
    the files read hold more than MAX_TOTAL_BYTES, the others are not read (an error says so)."""
    files: dict[str, str] = {}
    errors: list[RuleError] = []
    if not directory.is_dir():
        return files, [
            file_error(str(directory), "the rules directory does not exist (or is not a directory)")
        ]
    total = 0
    for path in rule_files(directory, pattern, recursive=recursive):
        name = path.relative_to(directory).as_posix()
        try:
            text = read_rule_text(path)
        except FileNotFoundError:
            continue  # removed between the listing and the read: the next event reloads again
        except NotUtf8 as exc:
            errors.append(exc.error(name))
            continue
        except ValueError as exc:
            errors.append(file_error(name, str(exc)))
            continue
        except OSError as exc:
            errors.append(file_error(name, f"cannot read the file: {exc.strerror or exc}"))
            continue
        total += len(text.encode("utf-8"))
        if total > MAX_TOTAL_BYTES:
            errors.append(
                file_error(
                    name,
                    f"the rule files hold more than {MAX_TOTAL_BYTES:,} bytes ({limit_size(MAX_TOTAL_BYTES)}) "
                    "together, passed with this file: this file and the ones after it are not read",
                )
            )
            break
        files[name] = text
    return files, errors


def _points_key(p: PointInfo) -> str:
    return f"{p.device}.{p.name}:{p.type.value}:{int(p.writable)}:{p.min}:{p.max}"


def set_digest(files: dict[str, str], points: Iterable[PointInfo]) -> str:
    """Identifies one attempt: the files' names and texts, and the points they are checked against."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(b"\0")
        h.update(files[name].encode())
        h.update(b"\0")
    for key in sorted(_points_key(p) for p in points):
        h.update(key.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def run_job(job: CompileJob) -> CompileOutcome:
    """Read and compile the whole set (in the worker process, or in-process at start)."""
    started = time.perf_counter()
    files, errors = read_rule_files(Path(job.dir), job.pattern, recursive=job.recursive)
    points = point_infos(job.points)
    digest = set_digest(files, points)
    names = sorted(files) + sorted(e.file for e in errors if e.file not in files)
    if digest == job.last_digest and not errors:
        return CompileOutcome(digest, names, None, [], unchanged=True)
    ruleset: RuleSet | None = None
    try:
        ruleset = compile_rules(files, points)
    except RuleErrors as exc:
        errors.extend(exc.errors)
    except RecursionError:
        errors.append(file_error(names[0] if names else job.dir, "an expression is nested too deeply"))
    except Exception as exc:  # a bug in the compiler must not take the gateway's rules down
        errors.append(
            file_error(
                names[0] if names else job.dir, f"internal compiler error: {type(exc).__name__}: {exc}"
            )
        )
    if errors:
        ruleset = None
    elif ruleset is not None:
        ruleset.warnings.extend(skipped_files(Path(job.dir), job.pattern, recursive=job.recursive))
    errors.sort(key=lambda e: (e.file, e.line, e.col))
    return CompileOutcome(digest, names, ruleset, errors, compile_s=time.perf_counter() - started)


# --------------------------------------------------------------------------- frames


HEADER = 8
MAX_FRAME = 1 << 31
"""Larger is not a frame but a corrupted stream (something else wrote to the process's stdout)."""


def frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


def _read_frame(stream: IO[bytes]) -> Any:
    header = stream.read(HEADER)
    if len(header) < HEADER:
        raise EOFError
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the gateway decides
    with contextlib.suppress(OSError):
        os.nice(5)  # on a busy or single-core gateway the data path comes first, a reload second
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        stdout.write(frame("ready"))
        stdout.flush()
        while (job := _read_frame(stdin)) is not None:
            stdout.write(frame(run_job(job)))
            stdout.flush()
