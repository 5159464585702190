"""`gateway.yaml`: the `rules:` section: where the rule files are and how they are reloaded.

    rules:
      dir: /etc/picogate/rules      # every file matching `pattern` in it is one rule file
      pattern: "*.rules"
      debounce: 200ms               # quiet time after the last change before the set is reloaded

The whole set of files is compiled together; see docs/rules.md for the language and
docs/operations.md for hot reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator

from picogate.config import PositiveDuration, Section, parse_duration
from picogate.config import StrictModel as _Model


class RulesSection(_Model):
    """Rule files and how they are reloaded."""

    enabled: bool = True
    """Load and run the rules; `false` keeps the section but runs none."""
    dir: Path = Path("/etc/picogate/rules")
    """The directory of the rule files (a relative path is relative to the working directory)."""
    pattern: str = "*.rules"
    """Which files in `dir` are rule files (a shell pattern, matched against the file name)."""
    recursive: bool = False
    """Also load matching files in the subdirectories of `dir`."""
    watch: bool = True
    """Reload when a rule file is saved, added or removed (inotify; with `recursive`, new
    subdirectories are watched as they appear and symlinked ones are followed)."""
    force_polling: bool = False
    """Watch by scanning the directory every 0.1 s instead of with inotify: for network file
    systems (NFS, SMB), where inotify does not see changes made on other machines."""
    debounce: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.01, le=0.8)] = 0.2
    """Quiet time after the last change before the set is reloaded: an editor's save (temp file +
    rename), a file written in pieces and rapid saves become one reload."""
    compile_timeout: PositiveDuration = 30.0
    """A reload whose compilation takes longer is abandoned (the last good set stays)."""
    status_interval: Annotated[float, BeforeValidator(parse_duration), Field(ge=0.1, le=60)] = 1.0
    """The retained rules status topic is republished at most this often when rule states change."""
    alert_qos: Literal[0, 1] = 1
    """QoS of the alert messages."""
    max_pending_writes: Annotated[int, Field(ge=1, le=10_000)] = 256
    """Writes from `set()` waiting for their device at most; beyond that a write is refused and the
    rule shows the error."""

    @field_validator("pattern")
    @classmethod
    def _simple_pattern(cls, value: str) -> str:
        if not value or "/" in value or value.strip() != value:
            raise ValueError(f"must be a file-name pattern such as '*.rules', not {value!r}")
        return value


SECTION = Section("rules", RulesSection | None, default=None, doc="Rule files (rules/_config.py).")
