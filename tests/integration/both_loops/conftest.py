"""Tests in this folder run on both event loops: asyncio's own, and uvloop, which the agent runs on
(`picogate run`) and whose transports, timers and rounding differ from asyncio's.  Elsewhere the
tests run on asyncio's loop alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
