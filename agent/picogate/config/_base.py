"""Building blocks shared by every section of the schema (the core's and the plug-ins' sections)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from picogate._model import NAME_PATTERN

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """`500ms` / `10s` / `5m` / `1h` / a number of seconds → seconds as float."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 500ms, 10s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"must be a duration such as 500ms, 10s, 5m or 1h, not {value!r}")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value: Any) -> Any:
    """The name of an environment variable; the message never repeats the value (it may be the
    password itself, put where its variable's name belongs)."""
    if isinstance(value, str) and not _ENV_NAME_RE.match(value):
        raise ValueError(
            "must be the name of an environment variable (letters, digits and '_', e.g. MQTT_PASSWORD) "
            "that holds the password, not the password itself"
        )
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]
UnitId = Annotated[int, Field(ge=0, le=255)]
EnvName = Annotated[str, AfterValidator(_env_name)]
"""The name of an environment variable (that holds a secret)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


StrictModel = _Model
"""The base of every section: unknown keys are errors, models are frozen."""


class Deadband(_Model):
    value: float = 0.0
    percent: bool = False


def parse_deadband(value: Any) -> Any:
    if isinstance(value, Deadband | dict):
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        return {"value": float(value.strip()[:-1]), "percent": True}
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number (absolute) or a percentage such as '2%'")
    return {"value": float(value), "percent": False}
