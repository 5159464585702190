#!/usr/bin/env python3
"""pip's output (on stdin) turned into one short line per step, for the first set-up of `make`:
what is being fetched, with its size, and what is being installed, instead of a silent line for
minutes.  Every line read is also appended to the log file given as the argument (shown in full by
tools/bootstrap.sh when pip fails).

    pip install ... 2>&1 | python3 tools/pip_progress.py LOG
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator

_FETCH = re.compile(r"^\s*(Downloading|Using cached)\s+(\S+?)(?:\s+\(([^)]*)\))?\s*$")
_BUILD = re.compile(r"^\s*Building (?:wheel|editable) for (\S+) .*: started$")


def _short(url_or_file: str) -> str:
    return url_or_file.rsplit("/", 1)[-1]


def steps(lines: Iterable[str]) -> Iterator[str]:
    """The lines worth showing, numbered by package fetched."""
    fetched = 0
    total = 0.0
    for raw in lines:
        line = raw.rstrip("\n")
        if (m := _FETCH.match(line)) and not m.group(2).endswith(".metadata"):
            fetched += 1
            size = m.group(3) or ""
            total += _megabytes(size)
            verb = "downloading" if m.group(1) == "Downloading" else "cached"
            yield f"[{fetched}] {verb} {_short(m.group(2))}" + (f" ({size})" if size else "")
        elif m := _BUILD.match(line):
            yield f"building {m.group(1)}"
        elif line.startswith("Installing collected packages:"):
            names = line.split(":", 1)[1].split(",")
            what = f"{len(names)} package{'s' if len(names) != 1 else ''}"
            yield f"installing {what} ({total:.0f} MB fetched)" if total else f"installing {what}"
        elif line.startswith("Successfully installed"):
            yield "installed"
        elif line.startswith(("ERROR", "error:")):
            yield line


def _megabytes(size: str) -> float:
    m = re.match(r"^([\d.]+)\s*(kB|MB|GB|bytes)$", size.strip())
    if not m:
        return 0.0
    value = float(m.group(1))
    return value * {"bytes": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}[m.group(2)]


def main() -> int:
    log = open(sys.argv[1], "a", encoding="utf-8", errors="replace") if len(sys.argv) > 1 else None  # noqa: SIM115
    try:

        def lines() -> Iterator[str]:
            for line in sys.stdin:
                if log is not None:
                    log.write(line)
                    log.flush()
                yield line

        for step in steps(lines()):
            sys.stderr.write(f"bootstrap: {step}\n")
            sys.stderr.flush()
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
