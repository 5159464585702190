"""Reload of gateway.yaml in the running gateway, against pymodbus field devices and mosquitto.

A device added, changed and removed while the other devices go on polling on the same connection
(their poller is never stopped: no gap); a file with errors changes nothing and says why (log,
status topic); SIGHUP; `picogate run` watches its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from _agent import AgentProcess, base_config, eventually, recorder, values_on, wait_msgs
from picogate._registry import DeviceState, RegistryEvent
from picogate._reload import ConfigWatch, ReloadAttempt
from picogate._router import ErrorCode, WriteRequest
from picogate.gateway import Gateway, load_config
from picogate.modbus._source import ModbusLine
from picogate.pico._session import PicoBoard
from picogate.simboard import SimBoard, install_firmware

ROOT = "picogate/gw1"


def device(name: str, port: int, points: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "timeout": "300ms",
        "points": points,
        **extra,
    }


def write(path: Path, cfg: dict[str, Any]) -> None:
    """Replace the file as editors and deploy tools do: a new file renamed over the old one."""
    tmp = path.with_name(".gateway.yaml.tmp")
    tmp.write_text(yaml.safe_dump(cfg))
    tmp.replace(path)


def lines(gw: Gateway) -> dict[str, ModbusLine]:
    """The running Modbus pollers, by device."""
    return {d: c for c in gw.components if isinstance(c, ModbusLine) for d in c.devices}


@contextlib.asynccontextmanager
async def gateway_on(path: Path, *, install_signals: bool = False) -> AsyncIterator[Gateway]:
    gw = Gateway(load_config(path), drain_timeout=5, config_path=path)
    async with gw:
        task = asyncio.create_task(gw.run(install_signals=install_signals))
        async with asyncio.timeout(10):
            await gw.ready.wait()
        try:
            yield gw
        finally:
            gw.stop()
            async with asyncio.timeout(15):
                await task


ATTEMPTS: dict[int, list[ReloadAttempt]] = {}


def count_attempts(gw: Gateway) -> None:
    gw.reload_done.append(ATTEMPTS.setdefault(id(gw), []).append)


async def reloaded(gw: Gateway, count: int) -> ReloadAttempt:
    """Wait for the `count`-th reload attempt since `count_attempts`, and return it."""
    await eventually(lambda: len(ATTEMPTS[id(gw)]) >= count, 10, f"reload attempt {count}")
    return ATTEMPTS[id(gw)][count - 1]


async def test_devices_added_changed_and_removed_while_the_others_keep_polling(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    p1 = await modbus_tcp_server({1: {"hr": [11, 12]}})
    p2 = await modbus_tcp_server({1: {"hr": [21, 22]}})
    p3 = await modbus_tcp_server({1: {"hr": [31]}})
    # a and a2 share one connection (p1); b is alone on p2.
    a = device("a", p1.port, [{"name": "x", "table": "holding", "address": 0, "writable": True}])
    a2 = device("a2", p1.port, [{"name": "y", "table": "holding", "address": 1}])
    b = device("b", p2.port, [{"name": "x", "table": "holding", "address": 0}])
    c = device("c", p3.port, [{"name": "x", "table": "holding", "address": 0}])
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [a, a2, b])
    write(path, cfg)

    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with gateway_on(path) as gw:
            count_attempts(gw)
            await eventually(
                lambda: all(gw.registry.device(d).state is DeviceState.ONLINE for d in ("a", "a2", "b")),  # type: ignore[union-attr]
                what="a, a2 and b online",
            )
            line_a = lines(gw)["a"]
            task_a = gw._task_of(line_a)
            assert task_a is not None
            events: list[RegistryEvent] = []
            gw.registry.subscribe(lambda e: events.append(e) if e.device in ("a", "a2") else None)

            async def still_polling() -> None:
                polls, requests = line_a.stats.polls, p1.requests[1]
                await eventually(
                    lambda: line_a.stats.polls > polls + 2 and p1.requests[1] > requests + 2,
                    what="a and a2 polled on",
                )
                assert lines(gw)["a"] is line_a
                assert lines(gw)["a2"] is line_a
                assert gw._task_of(line_a) is task_a
                assert not task_a.done()

            # ---- added
            write(path, {**cfg, "devices": [a, a2, b, c]})
            attempt = await reloaded(gw, 1)
            assert attempt.ok, attempt.errors
            assert attempt.applied == ["devices"]
            await eventually(lambda: gw.registry.device("c") is not None, what="c registered")
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/c/x" for m in ms), what="c's data")
            await still_polling()
            line_b = lines(gw)["b"]

            # ---- changed: b gets a second point; c is left as it is
            b2 = {**b, "points": [*b["points"], {"name": "y", "table": "holding", "address": 1}]}
            line_c = lines(gw)["c"]
            write(path, {**cfg, "devices": [a, a2, b2, c]})
            attempt = await reloaded(gw, 2)
            assert attempt.ok, attempt.errors
            assert ("b", "y") in gw.registry
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/b/y" for m in ms), what="b.y")
            assert [m.json()["v"] for m in rec.on(f"{ROOT}/data/b/y")][-1] == 22
            assert lines(gw)["b"] is not line_b  # rebuilt
            assert lines(gw)["c"] is line_c  # untouched
            await still_polling()

            # ---- removed
            write(path, {**cfg, "devices": [a, a2, b2]})
            attempt = await reloaded(gw, 3)
            assert attempt.ok, attempt.errors
            assert gw.registry.device("c") is None
            assert "c" not in lines(gw)
            assert line_c.link.description not in {ln.name for ln in lines(gw).values()}
            gone = await gw.router.write(WriteRequest("c", "x", 1, origin="test"))
            assert gone.code is ErrorCode.UNKNOWN_POINT
            msgs = await wait_msgs(
                rec,
                lambda ms: any(
                    m.topic == f"{ROOT}/devices/c/status" and m.json().get("state") == "offline" for m in ms
                ),
                what="c's status: offline",
            )
            status = [m.json() for m in msgs if m.topic == f"{ROOT}/devices/c/status"][-1]
            assert "removed" in status["reason"]
            await still_polling()

            # a and a2 were never taken out, nor did their state change.
            assert events == []
            # What is written to a still works (the same writer, on the same line).
            assert (await gw.router.write(WriteRequest("a", "x", 5, origin="test"))).ok
            assert p1.get_holding(1, 0) == [5]


async def test_a_bad_file_keeps_the_running_configuration_and_says_why(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p1 = await modbus_tcp_server({1: {"hr": [11]}})
    a = device("a", p1.port, [{"name": "x", "table": "holding", "address": 0}])
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [a])
    write(path, cfg)

    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/status") as rec:
        async with gateway_on(path) as gw:
            count_attempts(gw)
            await eventually(
                lambda: ("a", "x") in gw.registry and gw.registry.device("a").state is DeviceState.ONLINE
            )  # type: ignore[union-attr]
            line_a = lines(gw)["a"]
            running = gw.config

            # A device whose poll is not a duration, another with no points, and a typo'd key.
            bad = {**a, "poll": "often"}
            path.write_text(yaml.safe_dump({**cfg, "devices": [bad]}))
            with caplog.at_level(logging.ERROR, logger="picogate"):
                attempt = await reloaded(gw, 1)
            assert gw.last_reload is attempt
            assert not attempt.ok
            assert attempt.applied == []
            assert any(str(path) in e and "poll" in e for e in attempt.errors), attempt.errors
            assert "not reloaded; the running configuration stays" in caplog.text
            assert gw.config is running
            assert lines(gw)["a"] is line_a
            polls = line_a.stats.polls
            await eventually(lambda: line_a.stats.polls > polls + 2, what="a polled on")

            msgs = await wait_msgs(
                rec,
                lambda ms: any(m.json().get("config", {}).get("ok") is False for m in ms),
                what="the status topic tells of the bad file",
            )
            told = next(m.json()["config"] for m in msgs if "config" in m.json())
            assert any("poll" in e for e in told["errors"]), told
            metrics = gw.parts.metrics.render().decode()
            assert 'picogate_config_reloads_total{result="error"} 1.0' in metrics
            assert "picogate_config_reload_failed 1.0" in metrics

            # Not YAML at all: the same.
            path.write_text("devices: [\n")
            attempt = await reloaded(gw, 2)
            assert not attempt.ok
            assert any(f"{path}:" in e for e in attempt.errors), attempt.errors
            assert lines(gw)["a"] is line_a

            # Fixed: applied, and the status topic says so.
            a_slower = {**a, "poll": "200ms"}
            write(path, {**cfg, "devices": [a_slower]})
            attempt = await reloaded(gw, 3)
            assert attempt.ok, attempt.errors
            assert lines(gw)["a"] is not line_a
            assert "picogate_config_reload_failed 0.0" in gw.parts.metrics.render().decode()
            await wait_msgs(
                rec,
                lambda ms: any(m.json().get("config", {}).get("ok") is True for m in ms),
                what="the status topic tells the reload went through",
            )


async def test_core_keys_are_applied_at_the_next_start_the_routers_limits_at_once(
    mosquitto: Any, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [])
    write(path, cfg)
    async with gateway_on(path) as gw:
        count_attempts(gw)
        write(
            path,
            {
                **cfg,
                "outbox": {"synchronous": "full"},
                "metrics": {"enabled": False, "port": 9999},
                "commands": {"deadline": {"mqtt": "3s"}, "queue_per_device": 4},
            },
        )
        attempt = await reloaded(gw, 1)
        assert attempt.ok, attempt.errors
        assert attempt.restart == ["outbox.synchronous", "metrics.port", "commands.queue_per_device"]
        assert attempt.applied == ["commands"]
        assert gw.config.outbox.synchronous == "normal"  # as it runs
        assert gw.router.policy.deadline_for("mqtt") == 3.0  # at once
        assert gw.router.policy.queue_per_device == 32


async def test_sighup_reloads(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Without the file watch (as on a file system without inotify), SIGHUP alone reloads."""

    async def no_watch(self: ConfigWatch) -> None:
        await self._stop.wait()

    monkeypatch.setattr(ConfigWatch, "_watch", no_watch)
    p1 = await modbus_tcp_server({1: {"hr": [11]}})
    a = device("a", p1.port, [{"name": "x", "table": "holding", "address": 0}])
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [])
    write(path, cfg)
    async with gateway_on(path, install_signals=True) as gw:
        count_attempts(gw)
        write(path, {**cfg, "devices": [a]})
        await asyncio.sleep(0.5)
        assert gw.registry.device("a") is None  # nothing watches the file
        os.kill(os.getpid(), signal.SIGHUP)
        await reloaded(gw, 1)
        await eventually(lambda: ("a", "x") in gw.registry, what="a added on SIGHUP")


async def test_picogate_run_watches_its_file(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    p1 = await modbus_tcp_server({1: {"hr": [11]}})
    a = device("a", p1.port, [{"name": "x", "table": "holding", "address": 0}])
    cfg = base_config(tmp_path, mosquitto.port, [])
    agent = AgentProcess(cfg, tmp_path / "agent")
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        agent.start()
        try:
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/status" for m in ms), what="agent up")
            agent.config_path.write_text("devices: [{name: a, type: modbus_tcp\n")
            await wait_msgs(
                rec,
                lambda ms: any(
                    m.topic == f"{ROOT}/status" and m.json().get("config", {}).get("ok") is False for m in ms
                ),
                what="the bad file told on the status topic",
            )
            write(agent.config_path, {**cfg, "devices": [a]})
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/a/x" for m in ms), what="a's data")
            assert agent.terminate() == 0
        finally:
            agent.stop()
        log = agent.log()
        assert "not reloaded; the running configuration stays" in log
        assert "reloaded: devices applied" in log


# --------------------------------------------------------------------------- Pico boards


@pytest.fixture
def simboard(tmp_path: Path) -> Iterator[Any]:
    """The firmware on MicroPython's unix port behind a pty: `simboard(uid)` → a started board."""
    boards: list[SimBoard] = []

    def start(uid: str) -> SimBoard:
        d = tmp_path / f"board{len(boards)}"
        install_firmware(d, scenario=json.dumps({"adc": {"26": 1.25}}))
        b = SimBoard(d, uid=uid).start()
        boards.append(b)
        return b

    yield start
    for b in boards:
        b.stop()


def board(name: str, port: str, scale: float) -> dict[str, Any]:
    io = [{"name": "level", "kind": "adc", "pin": "GP26", "scale": scale, "every": "200ms"}]
    return {"name": name, "port": port, "heartbeat": "300ms", "safe_timeout": "3s", "io": io}


def boards(gw: Gateway) -> dict[str, PicoBoard]:
    return {c.cfg.name: c for c in gw.components if isinstance(c, PicoBoard)}


async def test_a_changed_board_is_rebuilt_alone(mosquitto: Any, simboard: Any, tmp_path: Path) -> None:
    one, two = simboard("E6614103E7000001"), simboard("E6614103E7000002")
    path = tmp_path / "gateway.yaml"
    cfg = base_config(
        tmp_path, mosquitto.port, [], boards=[board("one", one.port, 40), board("two", two.port, 40)]
    )
    write(path, cfg)
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with gateway_on(path) as gw:
            count_attempts(gw)
            for name in ("one", "two"):
                await eventually(
                    lambda n=name: 50.0 in values_on(rec, f"{ROOT}/data/{n}/level"), 30, f"{name}"
                )
            first = boards(gw)["one"]
            task = gw._task_of(first)
            assert task is not None
            events: list[RegistryEvent] = []
            gw.registry.subscribe(lambda e: events.append(e) if e.device == "one" else None)

            write(path, {**cfg, "boards": [board("one", one.port, 40), board("two", two.port, 80)]})
            attempt = await reloaded(gw, 1)
            assert attempt.ok, attempt.errors
            assert attempt.applied == ["boards"]
            await eventually(lambda: 100.0 in values_on(rec, f"{ROOT}/data/two/level"), 30, "two's new scale")
            readings = first.stats.readings
            await eventually(lambda: first.stats.readings > readings + 2, 10, "one reports on")

            write(path, {**cfg, "boards": [board("one", one.port, 40)]})
            attempt = await reloaded(gw, 2)
            assert attempt.ok, attempt.errors
            assert gw.registry.device("two") is None
            assert list(boards(gw)) == ["one"]
            readings = first.stats.readings
            await eventually(lambda: first.stats.readings > readings + 2, 10, "one reports on")
            assert boards(gw)["one"] is first
            assert gw._task_of(first) is task
            assert not task.done()
            assert events == []


# --------------------------------------------------------------------------- CoAP


async def test_coap_nodes_and_clients_are_rebuilt_apart(mosquitto: Any, tmp_path: Path) -> None:
    import aiocoap
    from aiocoap import resource
    from aiocoap.numbers.codes import Code

    from _peers import free_port
    from picogate.coap._client import CoapClientSource
    from picogate.coap._server import CoapServer

    class Level(resource.Resource):
        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(payload=b"7", content_format=50)

    device_port, server_port = free_port(), free_port()
    site = resource.Site()
    site.add_resource(("level",), Level())
    site.add_resource(("other",), Level())
    peer = await aiocoap.Context.create_server_context(
        site, bind=("127.0.0.1", device_port), transports=["udp6"]
    )
    ctx = await aiocoap.Context.create_client_context(transports=["udp6"])

    def client(*paths: str) -> dict[str, Any]:
        resources = [{"point": p.strip("/"), "path": p, "type": "int32", "interval": "100ms"} for p in paths]
        return {
            "name": "sensor",
            "host": "127.0.0.1",
            "port": device_port,
            "timeout": "2s",
            "resources": resources,
        }

    def coap(nodes: list[str], *paths: str) -> dict[str, Any]:
        return {
            "bind": "127.0.0.1",
            "port": server_port,
            "nodes": [{"name": n, "points": {"temp": {"type": "float64"}}} for n in nodes],
            "clients": [client(*paths)],
        }

    def parts(gw: Gateway) -> tuple[CoapServer, CoapClientSource]:
        (server,) = [c for c in gw.components if isinstance(c, CoapServer)]
        (source,) = [c for c in gw.components if isinstance(c, CoapClientSource)]
        return server, source

    async def post(node: str) -> aiocoap.Message:
        msg = aiocoap.Message(
            code=Code.POST, uri=f"coap://127.0.0.1:{server_port}/r/{node}", payload=b'{"temp": 1.5}'
        )
        msg.opt.content_format = 50
        async with asyncio.timeout(10):
            return await ctx.request(msg).response

    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [], coap=coap(["node1"], "/level"))
    write(path, cfg)
    try:
        async with gateway_on(path) as gw:
            count_attempts(gw)
            server, source = parts(gw)
            await eventually(lambda: source.requests > 0, what="the client polls")
            async with asyncio.timeout(5):
                await server.ready.wait()
            assert (await post("node1")).code == Code.CHANGED

            # A node added: the server is rebuilt, the client polls on.
            write(path, {**cfg, "coap": coap(["node1", "node2"], "/level")})
            attempt = await reloaded(gw, 1)
            assert attempt.ok, attempt.errors
            new_server, same = parts(gw)
            assert same is source
            assert new_server is not server
            async with asyncio.timeout(5):
                await new_server.ready.wait()
            assert (await post("node2")).code == Code.CHANGED
            requests = source.requests
            await eventually(lambda: source.requests > requests + 2, what="the client polls on")

            # A resource added to the client: the client is rebuilt, the server stays.
            write(path, {**cfg, "coap": coap(["node1", "node2"], "/level", "/other")})
            attempt = await reloaded(gw, 2)
            assert attempt.ok, attempt.errors
            kept, new_source = parts(gw)
            assert kept is new_server
            assert new_source is not source
            await eventually(lambda: ("sensor", "other") in gw.registry, what="sensor.other")
            await eventually(lambda: new_source.requests > 2, what="the new client polls")
            assert (await post("node1")).code == Code.CHANGED
    finally:
        await ctx.shutdown()
        await peer.shutdown()


# --------------------------------------------------------------------------- the MQTT sink


async def test_the_broker_changed_while_the_devices_poll_on(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    first, second = make_mosquitto(), make_mosquitto()
    p1 = await modbus_tcp_server({1: {"hr": [1]}})
    a = device("a", p1.port, [{"name": "x", "table": "holding", "address": 0}])
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, first.port, [a])
    write(path, cfg)
    with (
        recorder(first.host, first.port, f"{ROOT}/data/#") as rec1,
        recorder(second.host, second.port, f"{ROOT}/#") as rec2,
    ):
        async with gateway_on(path) as gw:
            count_attempts(gw)
            await wait_msgs(
                rec1, lambda ms: 1 in values_on(rec1, f"{ROOT}/data/a/x"), what="a.x on the first"
            )
            line_a = lines(gw)["a"]

            write(path, {**cfg, "mqtt": {**cfg["mqtt"], "port": second.port}})
            attempt = await reloaded(gw, 1)
            assert attempt.ok, attempt.errors
            assert attempt.applied == ["mqtt"]
            for value in (2, 3, 4):
                p1.set_holding(1, 0, [value])
                await wait_msgs(
                    rec2, lambda ms, v=value: v in values_on(rec2, f"{ROOT}/data/a/x"), what=f"a.x = {value}"
                )
            assert lines(gw)["a"] is line_a
            await wait_msgs(
                rec2,
                lambda ms: any(m.topic == f"{ROOT}/status" and m.json()["state"] == "online" for m in ms),
                what="the status on the second broker",
            )

            # Per-device messages as well: a new encoder, the same sink settings otherwise.
            write(path, {**cfg, "mqtt": {**cfg["mqtt"], "port": second.port, "publish": "both"}})
            attempt = await reloaded(gw, 2)
            assert attempt.ok, attempt.errors
            p1.set_holding(1, 0, [5])
            await wait_msgs(rec2, lambda ms: 5 in values_on(rec2, f"{ROOT}/data/a/x"), what="a.x = 5")
            await wait_msgs(
                rec2, lambda ms: any(m.topic == f"{ROOT}/data/a" for m in ms), what="a's per-device message"
            )
            assert len(gw.pipeline.encoders) == 1
    # Nothing is left in the outbox for the broker.
    assert gw.parts.outbox.depth("mqtt") == 0


# --------------------------------------------------------------------------- rules


async def test_the_rules_section_changed_and_a_rules_dir_that_is_missing(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    from picogate.rules import LiveRules

    p1 = await modbus_tcp_server({1: {"hr": [10]}})
    a = device("a", p1.port, [{"name": "x", "table": "holding", "address": 0}])
    first, second = tmp_path / "rules1", tmp_path / "rules2"
    first.mkdir()
    second.mkdir()
    (first / "d.rules").write_text("LET a.double = a.x * 2\n")
    (second / "t.rules").write_text("LET a.triple = a.x * 3\n")
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [a], rules={"dir": str(first)})
    write(path, cfg)

    def live(gw: Gateway) -> LiveRules:
        (service,) = [c for c in gw.components if isinstance(c, LiveRules)]
        return service

    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with gateway_on(path) as gw:
            count_attempts(gw)
            await wait_msgs(rec, lambda ms: 20 in values_on(rec, f"{ROOT}/data/a/double"), what="a.double")
            old = live(gw)
            await eventually(lambda: old.worker.pid is not None, what="the compiler process")
            line_a = lines(gw)["a"]

            # A directory that does not exist: the rules go on as they ran.
            write(path, {**cfg, "rules": {"dir": str(tmp_path / "nowhere")}})
            attempt = await reloaded(gw, 1)
            assert not attempt.ok
            assert any(e.startswith("rules: rules.dir:") and "nowhere" in e for e in attempt.errors), attempt
            assert gw.config.section("rules").dir == first
            assert ("a", "double") in gw.registry
            p1.set_holding(1, 0, [11])
            await wait_msgs(
                rec, lambda ms: 22 in values_on(rec, f"{ROOT}/data/a/double"), what="a.double = 22"
            )

            # Another directory: the rules are those of the new one.
            write(path, {**cfg, "rules": {"dir": str(second)}})
            attempt = await reloaded(gw, 2)
            assert attempt.ok, attempt.errors
            await wait_msgs(rec, lambda ms: 33 in values_on(rec, f"{ROOT}/data/a/triple"), what="a.triple")
            assert ("a", "double") not in gw.registry
            assert old not in gw.components
            assert old.worker.pid is None  # the old compiler process has ended
            assert lines(gw)["a"] is line_a


async def test_a_write_waiting_for_a_rebuilt_device_is_refused_at_once(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """Writes queued behind a slow one when the device's line is rebuilt: the line serves what it
    can before it is stopped (3 s); what was never sent is refused `device_offline` then, not left
    to run into its deadline."""
    p1 = await modbus_tcp_server({1: {"hr": [1, 2]}})
    x = {"name": "x", "table": "holding", "address": 0, "writable": True}
    a = device("a", p1.port, [x], timeout="10s", poll="1h")
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [a], commands={"deadline": {"other": "30s"}})
    write(path, cfg)
    async with gateway_on(path) as gw:
        count_attempts(gw)
        line = lines(gw)["a"]
        await eventually(lambda: gw.registry.device("a").state is DeviceState.ONLINE)  # type: ignore[union-attr]
        p1.set_delay(1, 5.0)  # every request now waits 5 s for its answer
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(gw.router.write(WriteRequest("a", "x", 7, origin="test")))
        await eventually(
            lambda: line.stats.polls >= 1 and p1.requests[1] >= 2, what="the first write on the wire"
        )
        last = asyncio.create_task(gw.router.write(WriteRequest("a", "x", 8, origin="test")))
        await eventually(lambda: gw.router.pending("a") == 2, what="the second write queued")
        write(path, {**cfg, "devices": [{**a, "poll": "2h"}]})
        attempt = await reloaded(gw, 1)
        assert attempt.ok, attempt.errors
        result = await last
        assert result.code is ErrorCode.DEVICE_OFFLINE, result
        assert "nothing written" in result.error
        assert loop.time() - started < 20  # before its 30 s deadline
        first.cancel()
        assert p1.get_holding(1, 0) != [8]


async def test_a_serial_bus_is_opened_again_with_its_changed_devices(
    mosquitto: Any, modbus_rtu_server: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    rtu = await modbus_rtu_server({1: {"hr": [41]}, 2: {"hr": [42]}})
    tcp = await modbus_tcp_server({1: {"hr": [11]}})

    def on_bus(name: str, unit: int, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "type": "modbus_rtu",
            "port": rtu.device,
            "baudrate": rtu.baudrate,
            "unit_id": unit,
            "poll": "100ms",
            "timeout": "300ms",
            "points": [{"name": "x", "table": "holding", "address": 0}],
            **extra,
        }

    a = device("a", tcp.port, [{"name": "x", "table": "holding", "address": 0}])
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, [a, on_bus("r1", 1)])
    write(path, cfg)
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/data/#") as rec:
        async with gateway_on(path) as gw:
            count_attempts(gw)
            await wait_msgs(rec, lambda ms: 41 in values_on(rec, f"{ROOT}/data/r1/x"), what="r1.x")
            line_a, bus = lines(gw)["a"], lines(gw)["r1"]

            # A second device on the bus: the bus is closed and opened again with both.
            write(path, {**cfg, "devices": [a, on_bus("r1", 1), on_bus("r2", 2, poll="200ms")]})
            attempt = await reloaded(gw, 1)
            assert attempt.ok, attempt.errors
            await wait_msgs(rec, lambda ms: 42 in values_on(rec, f"{ROOT}/data/r2/x"), what="r2.x")
            assert lines(gw)["r1"] is lines(gw)["r2"] is not bus
            rtu.set_holding(1, 0, [43])
            await wait_msgs(rec, lambda ms: 43 in values_on(rec, f"{ROOT}/data/r1/x"), what="r1.x = 43")
            assert lines(gw)["a"] is line_a
            assert gw.registry.device("r1").state is DeviceState.ONLINE  # type: ignore[union-attr]


async def test_rules_never_miss_the_points_of_rebuilt_devices(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """Two slow devices rebuilt by one reload: each one's points leave and come back in the same
    turn, so the rules, which check themselves again when points come and go, never see one
    missing (they would report an unknown point and keep their last set)."""
    from picogate.rules import LiveRules

    peers = [await modbus_tcp_server({1: {"hr": [v]}}) for v in (1, 2)]
    devices = [
        device(name, peer.port, [{"name": "x", "table": "holding", "address": 0}], timeout="3s")
        for name, peer in zip(("a", "b"), peers, strict=True)
    ]
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "sum.rules").write_text("LET a.sum = a.x + b.x\n")
    path = tmp_path / "gateway.yaml"
    cfg = base_config(tmp_path, mosquitto.port, devices, rules={"dir": str(rules_dir), "debounce": "50ms"})
    write(path, cfg)
    async with gateway_on(path) as gw:
        count_attempts(gw)
        (live,) = [c for c in gw.components if isinstance(c, LiveRules)]
        rule_attempts: list[Any] = []
        live.reload_done.append(rule_attempts.append)
        await eventually(lambda: all(ln.stats.polls > 1 for ln in lines(gw).values()), what="both polled")
        for peer in peers:
            peer.set_delay(1, 1.0)  # a line stops only once its request is answered
        await asyncio.sleep(0.2)
        write(path, {**cfg, "devices": [{**d, "poll": "150ms"} for d in devices]})
        attempt = await reloaded(gw, 1)
        assert attempt.ok, attempt.errors
        await eventually(lambda: bool(rule_attempts), what="the rules checked again")
        await asyncio.sleep(0.5)
        assert all(a.ok for a in rule_attempts), [e.message for a in rule_attempts for e in a.errors]


# --------------------------------------------------------------------------- the watch


async def test_the_watch_follows_a_configmap_switch_and_an_edit_in_place(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as `gateway.yaml -> ..data/gateway.yaml` and switches the
    `..data` symlink to a new directory; an editor may also write the file in place."""
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "gateway.yaml").write_text(f"# {version}\n")
    (tmp_path / "..data").symlink_to("v1")
    path = tmp_path / "gateway.yaml"
    path.symlink_to("..data/gateway.yaml")
    calls: list[str] = []

    async def reload() -> None:
        calls.append(path.read_text())

    from picogate._reload import signature

    watch = ConfigWatch(path, reload, loaded=signature(path))
    task = asyncio.create_task(watch.run())
    try:
        await asyncio.sleep(0.5)
        assert calls == []
        (tmp_path / "..data_tmp").symlink_to("v2")
        (tmp_path / "..data_tmp").replace(tmp_path / "..data")  # the atomic switch
        await eventually(lambda: calls == ["# v2\n"], what="a reload after the switch")
        with (tmp_path / "v2" / "gateway.yaml").open("a") as f:  # written in place, in two pieces
            f.write("devices: []\n")
            f.flush()
            await asyncio.sleep(0.05)
            f.write("# end\n")
        await eventually(lambda: len(calls) == 2, what="one reload after the edit")
        assert calls[-1] == "# v2\ndevices: []\n# end\n"
        await asyncio.sleep(1.5)
        assert len(calls) == 2  # quiet: nothing more
    finally:
        watch.stop()
        await asyncio.wait_for(task, 5)
