"""The gateway's own I/O end to end: real Blinka on its OS-agnostic test board, the real
CircuitPython drivers on register-level chip models (tests/_local.py), the gateway in-process,
mosquitto.  What needs a real Raspberry Pi is listed in docs/local-io.md."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from _agent import base_config, eventually, recorder, running_gateway, values_on, wait_msgs
from _local import Ads1115Model, Bme280Model, ModelBus, Sht3xModel, Sht4xModel, bench, output_level

pytestmark = pytest.mark.integration

ROOT = "picogate/gw1"
DATA = f"{ROOT}/data/gw_io"


def _source(gw: Any) -> Any:
    return next(c for c in gw.components if c.name == "local-gw_io")


def _qualities(rec: Any, topic: str) -> list[str]:
    return [m.json()["q"] for m in rec.on(topic)]


def _section(**over: Any) -> dict[str, Any]:
    io = [
        {"name": "door", "kind": "di", "pin": "Dx_INPUT_TRUE_PULL_UP", "pull": "up", "invert": True},
        {"name": "run", "kind": "di", "pin": "Dx_INPUT_FALSE"},
        {"name": "pulses", "kind": "cnt", "pin": "Dx_INPUT_TOGGLE", "debounce": 0, "every": "100ms"},
        {"name": "level", "kind": "adc", "pin": "Ax_INPUT_FIXED_INT_PI", "every": "100ms", "scale": 0.001},
        {"name": "relay", "kind": "do", "pin": "Dx_OUTPUT", "safe": False},
        {"name": "fan", "kind": "pwm", "pin": "Ax_OUTPUT", "init": 0.25, "safe": 0.0},
        {"name": "room", "kind": "bme280", "every": "100ms"},
        {"name": "air", "kind": "sht3x", "every": "100ms"},
    ]
    return {"name": "gw_io", "sample": "10ms", "timeout": "500ms", "backoff_max": "400ms", "io": io, **over}


async def test_inputs_sensors_and_a_write_through_mqtt(mosquitto: Any, tmp_path: Path) -> None:
    cfg = base_config(tmp_path, mosquitto.port, [], local=_section())
    with (
        bench({0x77: Bme280Model(21.5, 45.0, 1013.0), 0x44: Sht3xModel(22.25, 40.0)}),
        recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec,
    ):
        async with running_gateway(cfg) as gw:
            await wait_msgs(
                rec,
                lambda ms: len(values_on(rec, f"{DATA}/pulses")) >= 3 and bool(rec.on(f"{DATA}/air_h")),
                what="counter and sensor readings",
            )
            source = _source(gw)
            assert output_level(source, "fan") == round(0.25 * 65535)

            rec.publish(f"{ROOT}/cmd/gw_io/relay/set", {"v": True, "id": "r1"})
            rec.publish(f"{ROOT}/cmd/gw_io/fan/set", {"v": 0.6, "id": "f1"})
            rec.publish(f"{ROOT}/cmd/gw_io/fan/set", {"v": 1.5, "id": "f2"})
            await wait_msgs(rec, lambda ms: sum(m.topic.endswith("/result") for m in ms) >= 3, what="results")
            results = {m.json()["id"]: m.json() for m in rec.messages if m.topic.endswith("/result")}
            assert results["r1"]["code"] == "ok", results
            assert results["f1"]["code"] == "ok", results
            assert results["f2"]["code"] == "out_of_range"
            assert output_level(source, "relay") == 1
            assert output_level(source, "fan") == round(0.6 * 65535)
            await wait_msgs(rec, lambda ms: True in values_on(rec, f"{DATA}/relay"), what="relay true")
        # Stopped: the safe values are on the pins, and published.
        assert output_level(source, "relay") is None or source.outputs["relay"].obj is None
    assert values_on(rec, f"{DATA}/relay")[-1] is False
    assert values_on(rec, f"{DATA}/fan")[-1] == 0.0
    assert values_on(rec, f"{DATA}/door") == [False]  # the pin reads high, inverted
    assert values_on(rec, f"{DATA}/run") == [False]
    counts = values_on(rec, f"{DATA}/pulses")
    assert counts == sorted(counts)
    assert counts[-1] > counts[0]
    assert values_on(rec, f"{DATA}/level")[0] == pytest.approx(31.415)
    assert values_on(rec, f"{DATA}/room_t")[0] == pytest.approx(21.5, abs=0.01)
    assert values_on(rec, f"{DATA}/room_h")[0] == pytest.approx(45.0, abs=0.05)
    assert values_on(rec, f"{DATA}/room_p")[0] == pytest.approx(1013.0, abs=0.05)
    assert values_on(rec, f"{DATA}/air_t")[0] == pytest.approx(22.25, abs=0.01)
    assert values_on(rec, f"{DATA}/air_h")[0] == pytest.approx(40.0, abs=0.01)
    msg = rec.on(f"{DATA}/room_t")[0].json()
    assert (msg["unit"], msg["q"]) == ("°C", "good")
    assert rec.on(f"{DATA}/room_p")[0].json()["unit"] == "hPa"


async def test_the_safe_state_is_applied_at_stop(mosquitto: Any, tmp_path: Path) -> None:
    """A relay switched on by a command is off again once the gateway stopped, on the pin."""
    cfg = base_config(tmp_path, mosquitto.port, [], local=_section(io=_section()["io"][4:6]))
    async with running_gateway(cfg) as gw:
        source = _source(gw)
        await eventually(lambda: all(o.obj is not None for o in source.outputs.values()), what="outputs open")
        pin = source.outputs["relay"].obj._pin
        pwm = source.outputs["fan"].obj
        from picogate._router import WriteRequest

        assert (await gw.router.write(WriteRequest("gw_io", "relay", True, origin="test"))).ok
        assert (await gw.router.write(WriteRequest("gw_io", "fan", 0.9, origin="test"))).ok
        assert pin.current_value == 1
        assert pwm.duty_cycle == round(0.9 * 65535)
    assert pin.current_value == 0
    assert pwm.duty_cycle == 0


@pytest.mark.parametrize("fault", ["silent", "garbage"])
async def test_a_sensor_that_fails_goes_bad_and_comes_back(
    mosquitto: Any, tmp_path: Path, fault: str
) -> None:
    io = [
        {"name": "room", "kind": "bme280", "every": "100ms"},
        {"name": "air", "kind": "sht3x", "every": "100ms"},
    ]
    cfg = base_config(tmp_path, mosquitto.port, [], local=_section(io=io))
    room, air = Bme280Model(20.0, 50.0, 1000.0), Sht3xModel(25.0, 30.0)
    with bench({0x77: room, 0x44: air}), recorder(mosquitto.host, mosquitto.port, f"{DATA}/#") as rec:
        async with running_gateway(cfg) as gw:
            await wait_msgs(rec, lambda ms: bool(rec.on(f"{DATA}/room_p")) and bool(rec.on(f"{DATA}/air_h")))
            room.mode = air.mode = fault  # type: ignore[assignment]
            for topic in ("room_t", "room_h", "room_p", "air_t", "air_h"):
                path = f"{DATA}/{topic}"
                await wait_msgs(rec, lambda ms, p=path: "bad" in _qualities(rec, p), what=path)
            # Retried with backoff (100 ms doubling to 400 ms): at most 4 tries a second, not 10.
            sensors = {s.io.name: s for s in _source(gw)._sensors}
            before = {name: s.backoff.failures for name, s in sensors.items()}
            await asyncio.sleep(1.0)
            tries = {name: s.backoff.failures - before[name] for name, s in sensors.items()}
            assert all(1 <= n <= 5 for n in tries.values()), tries
            room.set(23.0, 55.0, 990.0)
            air.temperature = 26.5
            room.mode = air.mode = "ok"
            await wait_msgs(
                rec, lambda ms: 23.0 in [round(v or 0, 2) for v in values_on(rec, f"{DATA}/room_t")]
            )
            await wait_msgs(
                rec, lambda ms: 26.5 in [round(v or 0, 2) for v in values_on(rec, f"{DATA}/air_t")]
            )
            source = _source(gw)
            assert source.stats.failures
            assert ModelBus.opened == 1  # one bus for both chips, kept across their failures
    assert _qualities(rec, f"{DATA}/room_t")[-1] == "good"
    assert _qualities(rec, f"{DATA}/air_h")[-1] == "good"


async def test_a_hung_driver_call_is_given_up_and_costs_one_thread(mosquitto: Any, tmp_path: Path) -> None:
    """A chip that holds the bus: its reads time out (points bad), later calls on that bus are
    refused at once instead of queueing threads, and it comes back once the bus is free."""
    io = [{"name": "room", "kind": "bme280", "every": "50ms"}]
    cfg = base_config(tmp_path, mosquitto.port, [], local=_section(io=io, timeout="200ms"))
    room = Bme280Model()
    with bench({0x77: room}), recorder(mosquitto.host, mosquitto.port, f"{DATA}/#") as rec:
        async with running_gateway(cfg) as gw:
            await wait_msgs(rec, lambda ms: bool(rec.on(f"{DATA}/room_t")))

            def bus_threads() -> list[str]:
                return [t.name for t in threading.enumerate() if t.name.startswith("picogate-i2c")]

            assert bus_threads() == ["picogate-i2c SDA/SCL"]
            room.release.clear()
            room.mode = "hang"
            await wait_msgs(rec, lambda ms: "bad" in _qualities(rec, f"{DATA}/room_t"), what="bad")
            await asyncio.sleep(1.0)  # several retries meanwhile
            assert bus_threads() == ["picogate-i2c SDA/SCL"]
            source = _source(gw)
            assert sum(w.timeouts for w in source.buses.values()) == 1
            metrics = gw.parts.metrics.render().decode()
            assert 'picogate_local_driver_timeouts_total{device="gw_io",worker="i2c SDA/SCL"} 1.0' in metrics
            assert 'picogate_local_failures_total{device="gw_io",reason="timeout"}' in metrics
            room.mode = "ok"
            room.release.set()
            await wait_msgs(
                rec, lambda ms: _qualities(rec, f"{DATA}/room_t")[-1] == "good", what="good again"
            )


async def test_ds18b20_through_a_fake_w1_tree(mosquitto: Any, tmp_path: Path) -> None:
    w1 = tmp_path / "w1"
    sensor = w1 / "28-0316a2794eff"
    sensor.mkdir(parents=True)
    (w1 / "w1_bus_master1").mkdir()
    good = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t={}\n"
    (sensor / "w1_slave").write_text(good.format(23125))
    io = [{"name": "tank", "kind": "ds18b20", "every": "100ms"}]
    cfg = base_config(tmp_path, mosquitto.port, [], local=_section(io=io, w1_path=str(w1)))
    with recorder(mosquitto.host, mosquitto.port, f"{DATA}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(rec, lambda ms: 23.125 in values_on(rec, f"{DATA}/tank"))
            (sensor / "w1_slave").write_text(good.replace("YES", "NO").format(23125))
            await wait_msgs(rec, lambda ms: "bad" in _qualities(rec, f"{DATA}/tank"), what="crc NO → bad")
            (sensor / "w1_slave").write_text(good.format(-1500))
            await wait_msgs(rec, lambda ms: -1.5 in values_on(rec, f"{DATA}/tank"), what="back")
    assert rec.on(f"{DATA}/tank")[0].json()["unit"] == "°C"


async def test_sht4x_and_ads1115_channels(mosquitto: Any, tmp_path: Path) -> None:
    io = [
        {"name": "box", "kind": "sht4x", "addr": 0x46, "every": "100ms"},
        {"name": "level", "kind": "ads1115", "channel": 0, "scale": 25, "unit": "%", "every": "100ms"},
        {"name": "supply", "kind": "ads1115", "channel": 3, "gain": "2/3", "every": "100ms"},
    ]
    cfg = base_config(tmp_path, mosquitto.port, [], local=_section(io=io))
    chips = {0x46: Sht4xModel(23.5, 35.0), 0x48: Ads1115Model((2.0, 0.0, 0.0, 5.0))}
    with bench(chips), recorder(mosquitto.host, mosquitto.port, f"{DATA}/#") as rec:
        async with running_gateway(cfg):
            await wait_msgs(
                rec, lambda ms: all(rec.on(f"{DATA}/{p}") for p in ("box_t", "box_h", "level", "supply"))
            )
    assert values_on(rec, f"{DATA}/box_t")[0] == pytest.approx(23.5, abs=0.01)
    assert values_on(rec, f"{DATA}/box_h")[0] == pytest.approx(35.0, abs=0.01)
    assert values_on(rec, f"{DATA}/level")[0] == pytest.approx(50.0, abs=0.01)  # 2.0 V × 25
    assert rec.on(f"{DATA}/level")[0].json()["unit"] == "%"
    assert values_on(rec, f"{DATA}/supply")[0] == pytest.approx(5.0, abs=0.001)
    assert rec.on(f"{DATA}/supply")[0].json()["unit"] == "V"


async def test_reconfigured_the_outputs_go_safe_and_the_new_section_runs(
    mosquitto: Any, tmp_path: Path
) -> None:
    from picogate.local import LocalSection

    cfg = base_config(tmp_path, mosquitto.port, [], local=_section(io=_section()["io"][4:5]))
    async with running_gateway(cfg) as gw:
        old = _source(gw)
        await eventually(lambda: old.outputs["relay"].obj is not None, what="relay open")
        pin = old.outputs["relay"].obj._pin
        from picogate._router import WriteRequest

        assert (await gw.router.write(WriteRequest("gw_io", "relay", True, origin="test"))).ok
        new = LocalSection.model_validate(
            _section(io=[{"name": "run", "kind": "di", "pin": "Dx_INPUT_TRUE"}])
        )
        await gw.reconfigure("local", new)
        assert pin.current_value == 0  # the old section's safe value
        await eventually(lambda: gw.pipeline.latest.get(("gw_io", "run")) is not None, what="the new input")
        assert gw.registry.find("gw_io", "relay") is None
        result = await gw.router.write(WriteRequest("gw_io", "relay", True, origin="test"))
        assert result.code.value == "unknown_point"
