"""The plug-in shape: every plug-in registers its section and attaches through a narrow host, which
takes it out again (stop) and attaches it anew (reconfigure) in a running gateway."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from picogate._host import Host, Plugin
from picogate._model import PointInfo, PointType, Reading, Value
from picogate._registry import PointRegistry
from picogate._router import FunctionWriter, WriteRequest
from picogate.config import ConfigError, CoreConfig, Section, StrictModel, compose
from picogate.gateway import PLUGINS, Gateway, GatewayConfig, parse_config


def test_every_plugin_has_its_own_section() -> None:
    keys = [p.section.key for p in PLUGINS]
    assert keys == ["devices", "mqtt", "boards", "coap", "local", "rules", "edgex", "sparkplug", "console"]
    assert [p.name for p in PLUGINS] == [
        "modbus",
        "mqtt",
        "pico",
        "coap",
        "local",
        "rules",
        "edgex",
        "sparkplug",
        "console",
    ]
    for key in keys:
        assert key in GatewayConfig.model_fields
    assert set(CoreConfig.model_fields) == {"gateway", "outbox", "metrics", "clock", "commands"}


def test_two_sections_with_one_key_are_refused() -> None:
    with pytest.raises(ValueError, match="two sections named 'mqtt'"):
        compose([Section("mqtt", int, default=0), Section("mqtt", int, default=0)])


def test_a_moved_key_is_read_with_its_old_spelling() -> None:
    cfg = parse_config("mqtt: {command_ttl: 3s}\n")
    assert cfg.section("commands").deadline.mqtt == 3.0
    assert cfg.deprecations() == [
        "mqtt.command_ttl is deprecated: it is read as commands.deadline.mqtt; rename it"
    ]
    with pytest.raises(ConfigError, match=r"give only commands\.deadline\.mqtt"):
        parse_config("mqtt: {command_ttl: 3s}\ncommands: {deadline: {mqtt: 4s}}\n")


# --------------------------------------------------------------------------- a plug-in of its own


class FakeSection(StrictModel):
    points: tuple[str, ...] = ("a",)


class Ticker:
    """A source component: emits one reading per point every 10 ms until stopped."""

    kind: Literal["source", "service"] = "source"

    def __init__(self, host: Host, cfg: FakeSection) -> None:
        self.name = "fake-ticker"
        self.host, self.cfg = host, cfg
        self.stopped = asyncio.Event()
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        while not self.stopped.is_set():
            ts = asyncio.get_running_loop().time()
            readings = [Reading("fake", p, 1.0, int(ts * 1e9)) for p in self.cfg.points]
            await self.host.pipeline.emit(readings, wait=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), 0.01)

    def stop(self) -> None:
        self.stopped.set()


TICKERS: list[Ticker] = []


async def _attach(host: Host, cfg: FakeSection | None) -> None:
    if cfg is None:
        return
    for p in cfg.points:
        host.registry.add(PointInfo("fake", p, PointType.FLOAT64, writable=True, origin="fake"))
    host.track_points(("fake", p) for p in cfg.points)

    async def write(point: PointInfo, value: Value) -> None:
        return None

    host.register_writer("fake", FunctionWriter(write))
    host.add_collector(lambda: [])
    ticker = Ticker(host, cfg)
    TICKERS.append(ticker)
    host.add_component(ticker)


FAKE: Plugin[FakeSection | None] = Plugin("fake", Section("fake", FakeSection | None, default=None), _attach)


async def test_a_plugin_is_stopped_and_reconfigured_through_its_host(tmp_path: Path) -> None:
    schema = compose([FAKE.section])
    cfg = schema.model_validate(
        {
            "gateway": {"id": "gw", "data_dir": str(tmp_path)},
            "metrics": {"enabled": False},
            "outbox": {"synchronous": "normal"},
            "clock": {"check_sync": False},
            "fake": {"points": ["a"]},
        }
    )
    TICKERS.clear()
    thresholds = gc.get_threshold()
    async with Gateway(cfg, plugins=[FAKE]) as gw:
        task = asyncio.create_task(gw.run(install_signals=False))
        await asyncio.wait_for(gw.ready.wait(), 10)
        # full collections (of what was not frozen) ten times rarer while it runs
        assert gc.get_threshold() == (*thresholds[:2], max(thresholds[2], 100))
        first = TICKERS[0]
        assert first.runs == 1
        assert ("fake", "a") in gw.registry
        ok = await gw.router.write(WriteRequest("fake", "a", 2.0, origin="test"))
        assert ok.ok, ok

        assert gc.get_freeze_count() > 0  # what was built at start is out of the full collections
        await gw.stop_plugin("fake")
        assert gc.get_freeze_count() == 0  # a plug-in taken out is left to the collector
        assert first.stopped.is_set()
        assert ("fake", "a") not in gw.registry
        assert first not in gw.components
        gone = await gw.router.write(WriteRequest("fake", "a", 2.0, origin="test"))
        assert gone.code.value == "unknown_point"

        await gw.reconfigure("fake", FakeSection(points=("b", "c")))
        second = TICKERS[1]
        for _ in range(100):  # started in the running gateway's task group
            if second.runs:
                break
            await asyncio.sleep(0.01)
        assert second.runs == 1
        assert ("fake", "b") in gw.registry
        assert ("fake", "c") in gw.registry
        assert (await gw.router.write(WriteRequest("fake", "c", 1.0, origin="test"))).ok
        gw.stop()
        await asyncio.wait_for(task, 20)
    assert second.stopped.is_set()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds  # the process's own again


def test_declared_points_come_from_each_plugins_declare() -> None:
    cfg = parse_config(
        "devices:\n  - {name: boiler, type: modbus_tcp, host: 127.0.0.1, points: [{name: t, ref: 40001}]}\n"
        "coap: {nodes: [{name: yard, points: {temp: {}}}]}\n"
    )
    registry = PointRegistry()
    for plugin in PLUGINS:
        if plugin.declare is not None:
            plugin.declare(cfg.section(plugin.section.key), registry)
    assert sorted(registry.keys()) == ["boiler.t", "yard.temp"]
    assert registry.device_address("boiler") == {
        "modbus-tcp": {"Address": "127.0.0.1", "Port": "502", "UnitID": "1"}
    }


def test_the_composed_schema_is_a_pydantic_model() -> None:
    assert issubclass(GatewayConfig, BaseModel)
    assert GatewayConfig.sections == tuple(p.section for p in PLUGINS)


# --------------------------------------------------------------------------- parts: rebuilt alone


class PartsSection(StrictModel):
    devices: tuple[str, ...] = ()


async def _attach_parts(host: Host, cfg: PartsSection | None) -> None:
    for name in cfg.devices if cfg is not None else ():
        _start_part(host, name)


def _start_part(host: Host, name: str) -> None:
    part = host.part(name)
    part.registry.add(PointInfo(name, "v", PointType.FLOAT64, writable=True, origin="parts"))
    part.track_points([(name, "v")])

    async def write(point: PointInfo, value: Value) -> None:
        return None

    part.register_writer(name, FunctionWriter(write))
    ticker = Ticker(part, FakeSection(points=("v",)))
    ticker.name = f"ticker-{name}"
    TICKERS.append(ticker)
    part.add_component(ticker)


async def _update_parts(host: Host, old: PartsSection | None, new: PartsSection | None) -> None:
    before, after = set(old.devices if old else ()), set(new.devices if new else ())
    for name in sorted(before - after):
        await host.drop_part(name)
    for name in sorted(after - before):
        _start_part(host, name)


PARTS: Plugin[PartsSection | None] = Plugin(
    "parts", Section("parts", PartsSection | None, default=None), _attach_parts, update=_update_parts
)


async def test_a_part_is_stopped_alone_and_the_plugin_stops_every_part(tmp_path: Path) -> None:
    schema = compose([PARTS.section])
    cfg = schema.model_validate(
        {
            "gateway": {"id": "gw", "data_dir": str(tmp_path)},
            "metrics": {"enabled": False},
            "outbox": {"synchronous": "normal"},
            "clock": {"check_sync": False},
            "parts": {"devices": ["a", "b"]},
        }
    )
    TICKERS.clear()
    async with Gateway(cfg, plugins=[PARTS]) as gw:
        task = asyncio.create_task(gw.run(install_signals=False))
        await asyncio.wait_for(gw.ready.wait(), 10)
        a, b = TICKERS
        await gw.update("parts", PartsSection(devices=("a", "b")), PartsSection(devices=("a", "c")))
        c = TICKERS[2]
        for _ in range(100):
            if c.runs:
                break
            await asyncio.sleep(0.01)
        assert c.runs == 1
        assert b.stopped.is_set()
        assert not a.stopped.is_set()
        assert a.runs == 1
        assert ("b", "v") not in gw.registry
        assert ("c", "v") in gw.registry
        assert (
            await gw.router.write(WriteRequest("b", "v", 1.0, origin="test"))
        ).code.value == "unknown_point"
        assert (await gw.router.write(WriteRequest("c", "v", 1.0, origin="test"))).ok
        assert sorted(c.name for c in gw.components) == ["ticker-a", "ticker-c"]

        await gw.stop_plugin("parts")  # every part
        assert a.stopped.is_set()
        assert c.stopped.is_set()
        assert len(gw.registry) == 0
        assert gw.components == []

        # Attached anew while running: its parts start at once.
        await gw.reconfigure("parts", PartsSection(devices=("d",)))
        d = TICKERS[3]
        for _ in range(100):
            if d.runs:
                break
            await asyncio.sleep(0.01)
        assert d.runs == 1
        assert ("d", "v") in gw.registry
        gw.stop()
        await asyncio.wait_for(task, 20)


async def test_a_reconfigured_plugin_leaves_no_registry_listener_behind(tmp_path: Path) -> None:
    cfg = parse_config(
        f"gateway: {{id: gw, data_dir: {tmp_path}}}\nmetrics: {{enabled: false}}\nclock: {{check_sync: false}}\n"
        "devices:\n  - {name: boiler, type: modbus_tcp, host: 127.0.0.1, points: [{name: t, ref: 40001}]}\n"
        "edgex: {transports: [bus, rest], device_service: {enabled: false}}\n"
    )
    async with Gateway(cfg) as gw:
        listeners = len(gw.registry._listeners)
        for _ in range(3):
            await gw.reconfigure("edgex", cfg.section("edgex"))
        assert len(gw.registry._listeners) == listeners


async def test_a_reload_that_fails_unexpectedly_is_reported_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import picogate._gateway

    path = tmp_path / "gateway.yaml"
    path.write_text(f"gateway: {{data_dir: {tmp_path}}}\nmetrics: {{enabled: false}}\n")
    cfg = GatewayConfig.model_validate(
        {
            "gateway": {"data_dir": str(tmp_path)},
            "metrics": {"enabled": False},
            "clock": {"check_sync": False},
        }
    )
    async with Gateway(cfg, config_path=path) as gw:

        def broken(_path: object) -> CoreConfig:
            raise RuntimeError("a bug")

        monkeypatch.setattr(picogate._gateway, "load_config", broken)
        attempt = await gw.reload()
        assert not attempt.ok
        assert attempt.errors == [f"{path}: cannot be read: a bug"]
        assert gw.config is cfg
        assert gw.status()["config"] == {"ok": False, "ts": attempt.ts, "errors": attempt.errors}


def test_a_gateway_without_rules_does_not_load_the_rules_compiler() -> None:
    """lark and the compiler are loaded when rules run, not because the gateway (its local API)
    names the rules service: about 3 MB of a gateway's memory."""
    import subprocess
    import sys

    code = "import sys, picogate.gateway, picogate._gateway; print('lark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
