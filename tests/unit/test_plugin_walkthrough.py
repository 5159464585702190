"""docs/architecture.md, "Writing a plug-in": the example plug-in, as printed, plugs into a gateway."""

from __future__ import annotations

import asyncio
import re
import types
from pathlib import Path

from picogate._registry import PointRegistry
from picogate.config import compose
from picogate.gateway import Gateway

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _example() -> types.ModuleType:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### Writing a plug-in", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block under 'Writing a plug-in'"
    module = types.ModuleType("uptime_example")
    exec(compile(match.group(1), str(DOC), "exec", dont_inherit=True), module.__dict__)  # as printed
    return module


async def test_the_walkthrough_plugin_runs_in_a_gateway(tmp_path: Path) -> None:
    example = _example()
    schema = compose([example.SECTION])
    cfg = schema.model_validate(
        {
            "gateway": {"id": "gw", "data_dir": str(tmp_path)},
            "metrics": {"enabled": False},
            "outbox": {"synchronous": "normal"},
            "clock": {"check_sync": False},
            "uptime": {"device": "edge", "every": "20ms"},
        }
    )
    async with Gateway(cfg, plugins=[example.PLUGIN]) as gw:
        assert ("edge", "uptime") in gw.registry
        task = asyncio.create_task(gw.run(install_signals=False))
        await asyncio.wait_for(gw.ready.wait(), 10)
        for _ in range(200):
            if ("edge", "uptime") in gw.pipeline.latest:
                break
            await asyncio.sleep(0.01)
        reading = gw.pipeline.latest[("edge", "uptime")]
        assert reading.unit == "s"
        assert isinstance(reading.value, float)
        await gw.stop_plugin("uptime")
        assert ("edge", "uptime") not in gw.registry
        gw.stop()
        await asyncio.wait_for(task, 20)


def test_the_walkthrough_plugin_declares_its_point() -> None:
    example = _example()
    registry = PointRegistry()
    example.PLUGIN.declare(example.UptimeSection(device="edge"), registry)
    assert registry.keys() == ["edge.uptime"]
    absent = PointRegistry()
    example.PLUGIN.declare(None, absent)
    assert len(absent) == 0
