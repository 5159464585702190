"""EdgeX over REST against a strict stand-in for core-data and core-metadata: forwarding with
201 checks, 409 on replay counted as delivered, an outage (server down → outbox → replay, nothing
lost), registration that creates or updates and checks each entry of the 207 replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _agent import base_config, eventually, running_gateway
from _edgex import FakeEdgex
from picogate._model import PointInfo, PointType, Quality
from picogate.edgex._forward import REST_SINK


def boiler(port: int) -> dict[str, Any]:
    return {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "50ms",
        "timeout": "300ms",
        "max_silence": "50ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "scale": 0.1, "unit": "°C"},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True},
        ],
    }


def rest_cfg(
    tmp_path: Path, broker_port: int, dev_port: int, fake: FakeEdgex, **extra: Any
) -> dict[str, Any]:
    cfg = base_config(
        tmp_path,
        broker_port,
        [boiler(dev_port)],
        edgex={
            "transports": ["rest"],
            "version": 4,
            "core_data": fake.url,
            "core_metadata": fake.url,
            "device_service": {"enabled": False},
            **extra,
        },
    )
    cfg["mqtt"]["enabled"] = False
    return cfg


def stored(fake: FakeEdgex) -> set[tuple[str, str, int]]:
    return {
        (r["deviceName"], r["resourceName"], r["origin"])
        for req in fake.events.values()
        for r in req["event"]["readings"]
    }


async def test_outage_and_replay_lose_nothing(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    fake = await FakeEdgex().start()
    sent: set[tuple[str, str, int]] = set()

    def published(readings: Any) -> None:
        sent.update((r.device, r.point, r.ts) for r in readings if r.quality is not Quality.BAD)

    cfg = rest_cfg(tmp_path, mosquitto.port, dev.port, fake, register_on_start=False)
    cfg["outbox"]["commit_interval"] = "10ms"
    async with running_gateway(cfg) as gw:
        gw.pipeline.listeners.append(published)
        rest = next(s for s in gw.parts.sinks if s.name == REST_SINK)
        await eventually(lambda: len(fake.events) >= 3, what="events in core-data")
        assert fake.bad_requests == []

        # core-data goes away: readings wait in the outbox
        port = fake.port
        await fake.stop()
        await eventually(lambda: gw.parts.outbox.depth(REST_SINK) >= 5, what="outbox filling")
        assert not rest.stats.connected or rest.stats.failures > 0

        # back, but the first replies are lost after storing: the replay gets 409, counted as delivered
        fake.lose_replies = 2
        await fake.start(port)
        await eventually(lambda: fake.duplicates >= 1, what="a 409 on replay")
        await eventually(lambda: gw.parts.outbox.depth(REST_SINK) == 0, what="outbox drained")
        gw.pipeline.listeners.remove(published)
        # while the sink runs: a reading published just before the listener went may still be on
        # its way from the outbox (after the gateway stops it would wait there, on disk)
        await eventually(lambda: sent <= stored(fake), what="every published reading stored in core-data")
    assert fake.bad_requests == []
    await fake.stop()


async def test_refused_event_is_dropped_and_counted_not_retried_forever(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    fake = await FakeEdgex().start()
    fake.fail_next[("POST", "/event")] = 400
    async with running_gateway(
        rest_cfg(tmp_path, mosquitto.port, dev.port, fake, register_on_start=False)
    ) as gw:
        rest = next(s for s in gw.parts.sinks if s.name == REST_SINK)
        await eventually(lambda: len(fake.events) >= 2, what="later events still delivered")
        assert rest.sink.refused == 1  # type: ignore[attr-defined]
        assert fake.bad_requests == []
    await fake.stop()


async def test_registration_creates_updates_and_retries(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}}})
    fake = await FakeEdgex().start()
    # the service exists already (409 → PATCH); the first profile call fails (retried)
    fake.services["picogate"] = {"name": "picogate", "baseAddress": "http://old:1", "adminState": "UNLOCKED"}
    fake.fail_next[("POST", "/deviceprofile")] = 500
    async with running_gateway(rest_cfg(tmp_path, mosquitto.port, dev.port, fake)) as gw:
        registrar = next(c for c in gw.parts.components if c.name == "edgex-register")
        await eventually(lambda: registrar.registered.is_set(), what="registered")  # type: ignore[attr-defined]
        assert fake.bad_requests == []
        assert ("PATCH", "/deviceservice") in fake.calls
        assert fake.services["picogate"]["baseAddress"] == "http://127.0.0.1:59999"
        assert fake.devices["boiler"]["protocols"] == {
            "modbus-tcp": {"Address": "127.0.0.1", "Port": str(dev.port), "UnitID": "1"}
        }
        assert registrar.rounds >= 2  # type: ignore[attr-defined]
        # a point that appears at run time (a Pico board, a rule) is registered too
        gw.registry.add(PointInfo("boiler", "extra", PointType.INT32, origin="rules"))
        await eventually(
            lambda: "extra" in {r["name"] for r in fake.profiles["picogate-boiler"]["deviceResources"]},
            what="profile updated with the new point",
        )
        assert fake.bad_requests == []
    # a second start: everything exists → updates (PUT profile, PATCH device), still registered
    fake.calls.clear()
    async with running_gateway(rest_cfg(tmp_path, mosquitto.port, dev.port, fake)) as gw:
        registrar = next(c for c in gw.parts.components if c.name == "edgex-register")
        await eventually(lambda: registrar.registered.is_set(), what="registered again")  # type: ignore[attr-defined]
        assert {("PUT", "/deviceprofile"), ("PATCH", "/device")} <= set(fake.calls)
    # a device entry refused in the 207 reply is not taken for success
    fake.devices.clear()
    fake.profiles.clear()

    async def refuse(device: dict[str, Any]) -> str:
        return "refused by the test"

    fake.validate_device = refuse
    async with running_gateway(rest_cfg(tmp_path, mosquitto.port, dev.port, fake)) as gw:
        registrar = next(c for c in gw.parts.components if c.name == "edgex-register")
        await eventually(lambda: "refused by the test" in registrar.last_error, what="entry error seen")  # type: ignore[attr-defined]
        assert not registrar.registered.is_set()  # type: ignore[attr-defined]
    await fake.stop()
