"""The effective configuration (`picogate config show`): every key of a loaded file, defaults filled
in, written the way the file is written (durations with their unit, deadbands as `0.2` or `1%`), so
that the output is itself a valid `gateway.yaml` that loads to the same configuration.

A model whose keys depend on one of its values (a Pico board's point: `addr` only for `kind:
sht3x`) lists the keys that apply in `applicable_keys()`; only those are shown.

Secrets never appear: the value of a key that holds one (`is_secret_key`) is `********`, and every
secret the agent knows is masked wherever else it appears (`redact`).  Old spellings of moved keys
(`Section.renamed`) are left out: their value is shown where it moved to."""

from __future__ import annotations

import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from picogate._secrets import MASK, is_secret_key, redact
from picogate.config._base import Deadband
from picogate.config._schema import CoreConfig


def effective(cfg: CoreConfig) -> dict[str, Any]:
    """`cfg` as plain data (dicts, lists, text, numbers), defaults included, secrets masked."""
    renamed = {section.key: set(section.renamed) for section in cfg.sections}
    out: dict[str, Any] = {}
    for name, info in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if value is not None:
            out[name] = _plain(value, info, skip=renamed.get(name, set()))
    return out


def show_yaml(cfg: CoreConfig, *, source: str = "") -> str:
    """The effective configuration as YAML, with a header that names `source`."""
    header = "# The effective configuration"
    if source:
        header += f" of {source}"
    header += ": every default filled in, secrets masked.\n"
    body = yaml.safe_dump(effective(cfg), sort_keys=False, allow_unicode=True, width=110)
    return redact(header + body)


def format_duration(seconds: float) -> str:
    """Seconds as a duration `gateway.yaml` reads back to the same value: `500ms`, `10s`, `5m`, `1h`."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{_number(seconds / size)}{unit}"
    if seconds < 1:
        ms = seconds * 1000
        if float(_number(ms)) / 1000 == seconds:
            return f"{_number(ms)}ms"
    return f"{_number(seconds)}s"


def _number(x: float) -> str:
    """A number without an exponent (durations are written `\\d+(.\\d+)?`)."""
    if x == int(x):
        return str(int(x))
    return f"{x:.9f}".rstrip("0").rstrip(".")


def _plain(
    value: Any, info: FieldInfo | None, *, annotation: Any = None, skip: set[str] | None = None
) -> Any:
    if annotation is None and info is not None:
        annotation = info.annotation
    if isinstance(value, Deadband):
        return f"{_number(value.value)}%" if value.percent else value.value
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        # A model whose keys depend on a value of its own (a Pico point's kind) says which apply.
        applicable = getattr(value, "applicable_keys", None)
        keys: set[str] | None = applicable() if callable(applicable) else None
        out: dict[str, Any] = {}
        for name, field in fields.items():
            if (skip and name in skip) or (keys is not None and name not in keys):
                continue
            item = getattr(value, name)
            if item is None:  # not set: what the key means when it is absent (`path: null` = the default)
                continue
            if is_secret_key(name):
                out[name] = MASK
            else:
                out[name] = _plain(item, field)
        return out
    if isinstance(value, float) and _is_duration(annotation, info):
        return format_duration(value)
    if isinstance(value, list | tuple):
        item_type = _item_annotation(annotation, 0)
        return [_plain(v, None, annotation=item_type) for v in value]
    if isinstance(value, dict):
        item_type = _item_annotation(annotation, 1)
        return {str(k): _plain(v, None, annotation=item_type) for k, v in value.items()}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _is_duration(annotation: Any, info: FieldInfo | None) -> bool:
    """Whether a field is read by the duration parser (`500ms`, `10s`), whatever the constraints
    around it (`Duration`, `PositiveDuration`, `Duration | None`, an Annotated of its own)."""
    metadata: list[Any] = list(info.metadata) if info is not None else []
    return any(_reads_duration(m) for m in metadata) or _annotation_reads_duration(annotation)


def _reads_duration(meta: Any) -> bool:
    return isinstance(meta, BeforeValidator) and "duration" in getattr(meta.func, "__name__", "")


def _annotation_reads_duration(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return any(_reads_duration(m) for m in annotation.__metadata__) or _annotation_reads_duration(
            typing.get_args(annotation)[0]
        )
    if origin is typing.Union or origin is types.UnionType:
        return any(_annotation_reads_duration(a) for a in typing.get_args(annotation))
    return False


def _item_annotation(annotation: Any, index: int) -> Any:
    """The annotation of a list's items (index 0) or a dict's values (index 1), through Optional."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _item_annotation(typing.get_args(annotation)[0], index)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            found = _item_annotation(arg, index)
            if found is not None:
                return found
        return None
    args = typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[index]
    return None
