"""The typed schema of `gateway.yaml`: the core's sections, and the whole file composed from them
and the sections the plug-ins register.

`config/` knows no protocol: each plug-in describes its section (`Section`: its key, its model,
its default, the devices it names, checks that need the whole file, keys it renamed) and the
gateway composes them with `compose()`.  Every model forbids unknown keys, so a typo is an error
that names the key, not a silent default.  Durations are written `500ms`, `10s`, `5m`, `1h` (or a
bare number of seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, create_model, model_validator

from picogate.config._base import Name, Port, _Model, parse_duration
from picogate.config._commands import CommandsSection

Location = tuple[str | int, ...]
"""A place in the file as pydantic gives it: keys and list indexes."""


@dataclass(frozen=True, slots=True)
class Section:
    """One top-level key of `gateway.yaml` that a plug-in owns.

    `annotation` is its type (a model, `Model | None`, a list); `default` or `default_factory`
    what it is when absent.  The hooks see the validated value:

    - `devices(value)` yields `(where, device name)` for the devices it names: device names are
      one namespace across every section.
    - `check(value, config)` raises ValueError for what needs the whole file.
    - `after_load(value)` yields `(location under the key, message)` for what is checked once the
      file is valid (work too big for a pydantic validator: a Pico board's derived configuration).
    - `warnings(value)` yields `(location under the key, message)` for what is valid but probably
      not meant (`address: 40001` on a holding register); the file loads.
    - `renamed` maps an old key of this section to where it moved (a dotted path from the root):
      the old spelling is still read, with a deprecation note, and giving both is an error.
    """

    key: str
    annotation: Any
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    doc: str = ""
    devices: Callable[[Any], Iterable[tuple[str, str]]] | None = None
    check: Callable[[Any, CoreConfig], None] | None = None
    after_load: Callable[[Any], Iterable[tuple[Location, str]]] | None = None
    warnings: Callable[[Any], Iterable[tuple[Location, str]]] | None = None
    renamed: Mapping[str, str] = field(default_factory=dict)


class GatewaySection(_Model):
    id: Name = "gateway"
    """Gateway id: the `<gw>` level of every MQTT topic."""
    data_dir: Path = Path("/var/lib/picogate")
    """Where the outbox and other state live."""


class OutboxSection(_Model):
    path: Path | None = None
    """Default: `<data_dir>/outbox.sqlite`."""
    max_records: Annotated[int, Field(ge=1000)] = 2_000_000
    """When full, the oldest records are dropped (counted, reported on the status topic and metrics)."""
    synchronous: Literal["full", "normal"] = "full"
    """`full`: a committed reading survives power loss; `normal`: survives a crash of the agent."""
    commit_interval: Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=5)] = 0.01
    """The shortest time between two commits, each taking what arrived meanwhile (group commit);
    polled readings wait half of it for the rest of their slot, readings whose sender waits (Pico,
    CoAP) at most 2 ms. Shorter: less latency, more fsyncs (CPU, disk wear)."""
    max_pending_mb: Annotated[int, Field(ge=1, le=4096)] = 64
    """Readings waiting for a commit, in MB. While commits work, polling waits when this much is
    waiting; while they fail (disk full), readings are kept in memory up to this much, then the
    oldest are dropped and counted (`lost`)."""
    max_parked: Annotated[int, Field(ge=100)] = 100_000
    """Messages the broker (or core-data) refused are parked, up to this many (the oldest dropped
    and counted beyond), and sent again at the next start and every `parked_retry`."""
    parked_retry: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 600.0
    """How often parked messages are tried again while the gateway runs (0: only at start)."""


class MetricsSection(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9108


class ClockSection(_Model):
    check_sync: bool = True
    """Flag readings `uncertain` while the system clock is not NTP-synchronised."""


class CoreConfig(_Model):
    """The core's sections; `compose()` adds the plug-ins' sections to it."""

    sections: ClassVar[tuple[Section, ...]] = ()

    gateway: GatewaySection = GatewaySection()
    """This gateway: its id and where it keeps state."""
    outbox: OutboxSection = OutboxSection()
    metrics: MetricsSection = MetricsSection()
    clock: ClockSection = ClockSection()
    commands: CommandsSection = CommandsSection()
    """Deadlines, queues, sizes and rate limits of writes (config/_commands.py)."""

    @model_validator(mode="after")
    def _sections_together(self) -> CoreConfig:
        for section in self.sections:
            value = getattr(self, section.key)
            for old, new in section.renamed.items():
                if value is not None and getattr(value, old, None) is not None:
                    self._move(f"{section.key}.{old}", new, getattr(value, old))
            if section.check is not None:
                section.check(value, self)
        # Device names are one namespace, whichever section names them.
        names: dict[str, str] = {}
        for section in self.sections:
            if section.devices is None:
                continue
            for where, name in section.devices(getattr(self, section.key)):
                other = names.setdefault(name, where)
                if other != where:
                    raise ValueError(f"{where}: device name {name!r} is also used by {other}")
        return self

    def _move(self, old: str, new: str, value: Any) -> None:
        """Read the old spelling of a moved key as the new one (unless the new one is given)."""
        *parents, last = new.split(".")
        chain: list[BaseModel] = [self]
        for key in parents:
            child = getattr(chain[-1], key)
            assert isinstance(child, BaseModel), new
            chain.append(child)
        if last in chain[-1].model_fields_set:
            raise ValueError(f"{old} is the old name of {new}: give only {new}")
        updated: Any = value
        for model, key in zip(reversed(chain), [last, *reversed(parents)], strict=True):
            updated = model.model_copy(update={key: updated})
        # `updated` is now a copy of self: take its top-level section over (self is frozen).
        self.__dict__[parents[0] if parents else last] = getattr(updated, parents[0] if parents else last)

    def section(self, key: str) -> Any:
        """The value of a plug-in's section (`config.section("rules")`)."""
        return getattr(self, key)

    def deprecations(self) -> list[str]:
        """A note for each old spelling of a moved key that the file uses."""
        notes = []
        for section in self.sections:
            value = getattr(self, section.key)
            for old, new in section.renamed.items():
                if value is not None and getattr(value, old, None) is not None:
                    notes.append(f"{section.key}.{old} is deprecated: it is read as {new}; rename it")
        return notes

    def after_load(self) -> list[tuple[Location, str]]:
        """What the sections check once the file is valid: `(location, message)` for each problem."""
        problems: list[tuple[Location, str]] = []
        for section in self.sections:
            if section.after_load is not None:
                value = getattr(self, section.key)
                problems += [((section.key, *loc), msg) for loc, msg in section.after_load(value)]
        return problems

    def warnings(self) -> list[tuple[Location, str]]:
        """What the sections find valid but probably not meant: `(location, message)` for each."""
        found: list[tuple[Location, str]] = []
        for section in self.sections:
            if section.warnings is not None:
                value = getattr(self, section.key)
                found += [((section.key, *loc), msg) for loc, msg in section.warnings(value)]
        return found

    def outbox_path(self) -> Path:
        return self.outbox.path or self.gateway.data_dir / "outbox.sqlite"


def compose(sections: Sequence[Section], *, name: str = "GatewayConfig") -> type[CoreConfig]:
    """The model of the whole file: the core's sections and `sections`, in that order."""
    fields: dict[str, Any] = {}
    for section in sections:
        if section.key in CoreConfig.model_fields or section.key in fields:
            raise ValueError(f"two sections named {section.key!r}")
        if section.default_factory is not None:
            spec = Field(default_factory=section.default_factory, description=section.doc)
        else:
            spec = Field(default=section.default, description=section.doc)
        fields[section.key] = (section.annotation, spec)
    model: type[CoreConfig] = create_model(name, __base__=CoreConfig, **fields)
    model.sections = tuple(sections)
    return model
