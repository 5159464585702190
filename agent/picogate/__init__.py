"""Picogate: an edge gateway for factories.

The public surface is small; implementation modules are private (`_model`, `_router`, ...).
"""

__version__ = "0.1.0"

from picogate._model import NAME_PATTERN, PointInfo, PointType, Quality, Reading, Value
from picogate._registry import DeviceState, DeviceStatus, PointRegistry
from picogate._router import (
    CommandRouter,
    ErrorCode,
    WriteError,
    Writer,
    WriteRequest,
    WriteResult,
)

__all__ = [
    "NAME_PATTERN",
    "CommandRouter",
    "DeviceState",
    "DeviceStatus",
    "ErrorCode",
    "PointInfo",
    "PointRegistry",
    "PointType",
    "Quality",
    "Reading",
    "Value",
    "WriteError",
    "WriteRequest",
    "WriteResult",
    "Writer",
    "__version__",
]
