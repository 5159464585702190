"""Rules running in the gateway, with real peers: pymodbus devices, mosquitto, real file-system
events (inotify, picogate._watch) and the compiler process.

- end to end: a Modbus value crosses a threshold → the alert arrives on MQTT, and the rule's set()
  lands in the pymodbus server's register;
- FOR fires on time although no new sample arrives (the device is polled once an hour);
- hot reload: good → bad keeps the last good set running and publishes the errors with their
  positions; bad → good loads; an unchanged rule keeps its state across a reload, a changed one
  starts fresh; a removed active rule clears its alert; an editor's atomic save and a burst of
  saves are one reload; a failed write shows in the rule's status;
- the payloads match the examples in docs/mqtt.md.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _agent import MqttRecorder, Msg, base_config, eventually, recorder, running_gateway, wait_msgs
from picogate.rules._live import LiveRules, live_rules

ROOT = "picogate/gw1"
ALERTS = f"{ROOT}/alerts"
STATUS = f"{ROOT}/rules/status"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def boiler(port: int, *, poll: str = "100ms") -> dict[str, Any]:
    return {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": poll,
        "timeout": "500ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "unit": "°C"},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "min": 0, "max": 90},
            {"name": "burner", "table": "coil", "address": 0, "writable": True},
        ],
    }


def config(tmp_path: Path, broker_port: int, device_port: int, rules_dir: Path, **kw: Any) -> dict[str, Any]:
    poll = kw.pop("poll", "100ms")
    rules = {"dir": str(rules_dir), "debounce": "50ms", "status_interval": "200ms", **kw}
    return base_config(tmp_path, broker_port, [boiler(device_port, poll=poll)], rules=rules)


def save(path: Path, text: str) -> None:
    """As editors save: a temporary file next to it, then a rename over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def alerts(rec: MqttRecorder, rule: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
    out = [m.json() for m in rec.on(ALERTS)]
    return [a for a in out if (rule is None or a["rule"] == rule) and (state is None or a["state"] == state)]


def statuses(rec: MqttRecorder) -> list[dict[str, Any]]:
    return [m.json() for m in rec.on(STATUS)]


def has_status(pred: Callable[[dict[str, Any]], bool]) -> Callable[[list[Msg]], bool]:
    return lambda msgs: any(m.topic == STATUS and pred(m.json()) for m in msgs)


def has_alert(rule: str, state: str, count: int = 1) -> Callable[[list[Msg]], bool]:
    def pred(msgs: list[Msg]) -> bool:
        found = [m.json() for m in msgs if m.topic == ALERTS]
        return sum(a["rule"] == rule and a["state"] == state for a in found) >= count

    return pred


def rules_of(gw: Any) -> LiveRules:
    live = live_rules(gw)
    assert live is not None
    return live


def doc_example(heading: str) -> dict[str, Any]:
    """The first JSON block under `## heading` in docs/mqtt.md."""
    text = (DOCS / "mqtt.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None, heading
    value: dict[str, Any] = json.loads(block.group(1))
    return value


# --------------------------------------------------------------------------- end to end


async def test_threshold_alert_on_mqtt_and_write_lands_in_modbus(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50], "co": [True]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "boiler.rules").write_text(
        "RULE overheat\n"
        "  ON boiler.temp > 85\n"
        "  CLEAR boiler.temp < 80\n"
        '  THEN alert("Boiler at {boiler.temp} °C", severity="critical"); set(boiler.burner, false);'
        " set(boiler.setpoint, 40)\n"
        '  ELSE alert("Boiler back to normal", severity="info")\n'
        "END\n"
    )
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)) as gw:
            await wait_msgs(rec, has_status(lambda s: s["ok"] and s["version"]), what="rules status")
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/boiler/temp" for m in ms))
            assert alerts(rec) == []  # 20 °C: nothing fires
            dev.set_holding(1, 0, 90)  # the device crosses the threshold
            await wait_msgs(rec, has_alert("overheat", "active"), what="overheat alert")
            alert = alerts(rec, "overheat", "active")[0]
            assert alert["severity"] == "critical"
            assert alert["message"] == "Boiler at 90 °C"
            assert set(alert) == set(doc_example("Alerts"))
            # set() went through the command router to the device
            await eventually(lambda: dev.get_coils(1, 0) == [False], what="burner coil written")
            await eventually(lambda: dev.get_holding(1, 1) == [40], what="setpoint register written")
            writes = [(w.table, w.address, w.values) for w in dev.writes]
            assert ("co", 0, (False,)) in writes
            # once, not on every sample: more polls at 90 °C raise no second alert
            polls = gw.pipeline.received
            await eventually(lambda: gw.pipeline.received >= polls + 9, what="more polls")
            assert len(alerts(rec, "overheat", "active")) == 1
            # hysteresis: 82 °C is below 85 but not below 80: still active
            dev.set_holding(1, 0, 82)
            polls = gw.pipeline.received
            await eventually(lambda: gw.pipeline.received >= polls + 9, what="polls at 82")
            assert alerts(rec, "overheat", "cleared") == []
            dev.set_holding(1, 0, 75)
            await wait_msgs(rec, has_alert("overheat", "cleared"), what="clear")
            cleared = alerts(rec, "overheat", "cleared")
            assert [(a["severity"], a["message"]) for a in cleared] == [("info", "Boiler back to normal")]
            await wait_msgs(
                rec,
                has_status(
                    lambda s: (
                        s["rules"]["overheat"]["state"] == "idle" and s["rules"]["overheat"]["last_fired"]
                    )
                ),
                what="status idle after the clear",
            )
    status = statuses(rec)[-1]
    documented = doc_example("Rule status")
    assert set(status) == set(documented)
    assert set(status["rules"]["overheat"]) == set(documented["rules"]["boiler_overheat"])
    fired_ms = status["rules"]["overheat"]["last_fired"]
    assert abs(fired_ms - alert["ts"]) < 60_000  # milliseconds, like every ts on MQTT
    assert status["counts"]["idle"] >= 1


async def test_for_fires_with_no_new_samples(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    """The device is polled once an hour: the only sample comes at start, the FOR timer must fire
    on its own 1 s later."""
    dev = await modbus_tcp_server({1: {"hr": [95, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "hold.rules").write_text(
        'RULE hot_for_1s\n  ON boiler.temp > 85 FOR 1s\n  THEN alert("hot for a second")\nEND\n'
    )
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir, poll="1h")) as gw:
            await eventually(lambda: gw.pipeline.received >= 3, what="the first poll (3 points)")
            received, requests = gw.pipeline.received, dev.requests[1]
            await wait_msgs(rec, has_alert("hot_for_1s", "active"), what="FOR alert")
            assert gw.pipeline.received == received  # no sample arrived in between
            assert dev.requests[1] == requests  # the device was not asked again


# --------------------------------------------------------------------------- hot reload


async def test_good_bad_good_reload_keeps_last_good_and_reports_errors(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    hot = rules_dir / "hot.rules"
    hot.write_text('RULE hot\n  ON boiler.temp > 85\n  CLEAR boiler.temp < 80\n  THEN alert("hot")\nEND\n')
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)) as gw:
            live = rules_of(gw)
            await wait_msgs(rec, has_status(lambda s: s["ok"] and s["files"] == ["hot.rules"]))
            good_version = live.loaded.version if live.loaded else None
            # good → bad: a typo in a new file and in the old one
            save(rules_dir / "typo.rules", 'ON boiler.tmp > 85 THEN alert("typo")\n')
            save(hot, 'RULE hot\n  ON boiler.temp > 85\n  THEN alert("hot") ; set(boiler.temp, 1)\nEND\n')
            # (the two saves may be one reload or two: wait for the attempt that saw both)
            both = has_status(
                lambda s: not s["ok"] and len(s["attempt"]["files"]) == 2 and len(s["errors"]) >= 2
            )
            msgs = await wait_msgs(rec, both, what="error status for both files")
            bad = next(
                m.json()
                for m in msgs
                if m.topic == STATUS and not m.json()["ok"] and len(m.json()["errors"]) >= 2
            )
            assert bad["version"] == good_version  # the last good set is still the one running
            assert bad["files"] == ["hot.rules"]
            assert set(bad["attempt"]["files"]) == {"hot.rules", "typo.rules"}
            where = {(e["file"], e["line"], e["col"]) for e in bad["errors"]}
            assert ("typo.rules", 1, 4) in where  # boiler.tmp: line 1, column 4
            assert any(e["file"] == "hot.rules" and e["line"] == 3 for e in bad["errors"])  # read-only temp
            typo = next(e for e in bad["errors"] if e["file"] == "typo.rules")
            assert typo["suggestion"] == "boiler.temp"
            assert typo["text"].startswith("typo.rules:1:4: error: ")
            assert "^" in typo["text"]
            assert live.stats.reloads_failed >= 1
            # the last good set keeps running: it still fires
            dev.set_holding(1, 0, 90)
            await wait_msgs(rec, has_alert("hot", "active"), what="alert from the last good set")
            # bad → good
            (rules_dir / "typo.rules").unlink()
            save(hot, 'RULE hot\n  ON boiler.temp > 85\n  THEN alert("hot again")\nEND\n')
            msgs = await wait_msgs(
                rec,
                has_status(lambda s: s["ok"] and s["version"] not in (None, good_version)),
                what="good again",
            )
            good = [m.json() for m in msgs if m.topic == STATUS][-1]
            assert good["errors"] == []
            assert good["files"] == ["hot.rules"]


async def test_an_edit_that_makes_on_and_clear_overlap_is_warned_and_the_chattering_shown(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """The demo's pump chattered twice a second after such an edit while its status said `idle`:
    the reload warns (the set still loads), and the status says the rule is chattering."""
    dev = await modbus_tcp_server({1: {"hr": [85, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    tank = rules_dir / "tank.rules"
    tank.write_text('RULE hot\n  ON boiler.temp > 90\n  CLEAR boiler.temp < 80\n  THEN log("hot")\nEND\n')
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)) as gw:
            live = rules_of(gw)
            await wait_msgs(rec, has_status(lambda s: s["ok"] and s["version"]), what="rules loaded")
            assert statuses(rec)[-1]["warnings"] == []
            save(tank, 'RULE hot\n  ON boiler.temp > 80\n  CLEAR boiler.temp < 90\n  THEN log("hot")\nEND\n')
            msgs = await wait_msgs(
                rec, has_status(lambda s: s["ok"] and s["warnings"]), what="a status with the warning"
            )
            status = next(m.json() for m in msgs if m.topic == STATUS and m.json()["warnings"])
            (warning,) = status["warnings"]
            assert (warning["file"], warning["line"], warning["col"]) == ("tank.rules", 3, 9)
            assert warning["message"].startswith("ON and CLEAR can both be true (when boiler.temp = 85)")
            assert warning["text"].startswith("tank.rules:3:9: warning: ")
            assert live.stats.reloads_failed == 0  # loaded all the same
            # at 85 it fires and clears at every poll (100 ms): the status says so
            await wait_msgs(
                rec,
                has_status(lambda s: s["rules"]["hot"]["chattering"]),
                what="the rule reported chattering",
            )
            chatter = next(s for s in reversed(statuses(rec)) if s["rules"]["hot"]["chattering"])["rules"][
                "hot"
            ]
            assert chatter["fired"] >= 5
            assert "ON and CLEAR conditions overlap" in chatter["reason"]
            metrics = gw.parts.metrics.render().decode()
            assert "picogate_rules_warnings 1.0" in metrics


async def test_reload_keeps_state_of_unchanged_rules_and_clears_removed_active_ones(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [90, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "a.rules").write_text('RULE steady\n  ON boiler.temp > 85\n  THEN alert("steady")\nEND\n')
    (rules_dir / "b.rules").write_text('RULE edited\n  ON boiler.temp > 85\n  THEN alert("edited v1")\nEND\n')
    (rules_dir / "c.rules").write_text(
        'RULE removed\n  ON boiler.temp > 85\n  THEN alert("removed", severity="critical")\nEND\n'
    )
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)) as gw:
            for rule in ("steady", "edited", "removed"):
                await wait_msgs(rec, has_alert(rule, "active"), what=f"{rule} active")
            live = rules_of(gw)
            loads = live.stats.reloads_ok
            # change one rule, remove another, in one burst of saves
            save(
                rules_dir / "b.rules", 'RULE edited\n  ON boiler.temp > 85\n  THEN alert("edited v2")\nEND\n'
            )
            (rules_dir / "c.rules").unlink()
            await wait_msgs(rec, has_alert("removed", "cleared"), what="removed rule cleared")
            cleared = alerts(rec, "removed", "cleared")
            assert len(cleared) == 1
            assert cleared[0]["severity"] == "critical"
            # the changed rule starts fresh: 90 °C is still above 85, so it fires again
            await wait_msgs(rec, has_alert("edited", "active", count=2), what="edited fires again")
            assert alerts(rec, "edited", "active")[-1]["message"] == "edited v2"
            # the old version was cleared first
            assert [c["message"] for c in alerts(rec, "edited", "cleared")] == ["edited v1"]
            # the unchanged one kept its state: active, not fired a second time
            polls = gw.pipeline.received
            await eventually(lambda: gw.pipeline.received >= polls + 5, what="polls after the reload")
            assert len(alerts(rec, "steady", "active")) == 1
            assert live.engine.status()["rules"]["steady"]["state"] == "active"
            assert "removed" not in live.engine.status()["rules"]
            assert live.stats.reloads_ok == loads + 1  # one reload for the burst


async def test_partial_writes_and_rapid_saves_become_one_good_reload(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(
            config(tmp_path, mosquitto.port, dev.port, rules_dir, debounce="300ms")
        ) as gw:
            live = rules_of(gw)
            await wait_msgs(rec, has_status(lambda s: s["ok"]))
            await live.worker.start()
            failed, ok = live.stats.reloads_failed, live.stats.reloads_ok
            text = 'RULE quick\n  ON boiler.temp > 85\n  THEN alert("quick")\nEND\n'
            path = rules_dir / "quick.rules"
            with path.open("w", encoding="utf-8") as f:  # written in two pieces, 50 ms apart
                f.write(text[:20])
                f.flush()
                await asyncio.sleep(0.05)
                f.write(text[20:])
            for n in range(5):  # and saved again five times in a row
                save(path, text + f"# save {n}\n")
            await eventually(lambda: live.stats.reloads_ok > ok, what="the reload")
            await asyncio.sleep(0.5)
            assert live.stats.reloads_failed == failed  # the half-written file was never compiled
            assert live.stats.reloads_ok == ok + 1
            assert [r.id for r in live.loaded.rules] == ["quick"] if live.loaded else False


async def test_failed_write_shows_in_the_rule_status(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [90, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    # setpoint's max is 90: 900 is refused by the command router at run time
    (rules_dir / "w.rules").write_text(
        "RULE too_far\n  ON boiler.temp > 85\n  THEN set(boiler.setpoint, boiler.temp * 10)\nEND\n"
    )
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)):
            msgs = await wait_msgs(
                rec,
                has_status(lambda s: s["rules"].get("too_far", {}).get("state") == "errored"),
                what="errored",
            )
            st = next(m.json() for m in reversed(msgs) if m.topic == STATUS)["rules"]["too_far"]
            assert "out_of_range" in (st["reason"] or "")
            assert dev.get_holding(1, 1) == [50]


async def test_errors_at_start_leave_the_gateway_running_without_rules(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "broken.rules").write_text('ON boiler.temp > THEN alert("x")\n')
    with recorder(mosquitto.host, mosquitto.port, f"{ROOT}/#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)):
            msgs = await wait_msgs(rec, has_status(lambda s: not s["ok"]), what="error status")
            st = next(m.json() for m in msgs if m.topic == STATUS)
            assert st["version"] is None
            assert st["errors"][0]["file"] == "broken.rules"
            assert st["errors"][0]["line"] == 1
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/boiler/temp" for m in ms))


async def test_missing_rules_directory_is_a_start_up_error(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, 1, [], mqtt={"enabled": False}, rules={"dir": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match=r"rules\.dir: .*nope does not exist"):
        async with running_gateway(cfg):
            pass


async def test_a_rules_directory_replaced_or_removed_is_watched_again(tmp_path: Path) -> None:
    """Deploy tools replace the whole directory (rename a new one over it) or remove and recreate
    it: the gateway notices, reports a missing directory, and watches the new one."""
    import shutil

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()

    def rule(name: str) -> str:
        return f'RULE {name}\n  EVERY 1h THEN log("{name}")\nEND\n'

    (rules_dir / "a.rules").write_text(rule("first"))
    cfg = base_config(
        tmp_path, 1, [], mqtt={"enabled": False}, rules={"dir": str(rules_dir), "debounce": "50ms"}
    )
    async with running_gateway(cfg) as gw:
        live = rules_of(gw)

        def loaded() -> list[str]:
            return [r.id for r in live.loaded.rules] if live.loaded else []

        assert loaded() == ["first"]
        await live.worker.start()
        # a new directory renamed over the old one
        new = tmp_path / "rules.new"
        new.mkdir()
        (new / "b.rules").write_text(rule("second"))
        rules_dir.rename(tmp_path / "rules.old")
        new.rename(rules_dir)
        await eventually(lambda: loaded() == ["second"], what="the replaced directory's rules")
        # removed: reported, the last good set stays
        shutil.rmtree(rules_dir)
        await eventually(lambda: not live.attempt.ok, what="a missing directory reported")
        assert "does not exist" in live.attempt.errors[0].message
        assert loaded() == ["second"]
        # recreated, and then edited in place: both seen
        rules_dir.mkdir()
        (rules_dir / "c.rules").write_text(rule("third"))
        await eventually(lambda: loaded() == ["third"], what="the recreated directory's rules")
        save(rules_dir / "c.rules", rule("fourth"))
        await eventually(lambda: loaded() == ["fourth"], what="an edit in the recreated directory")


async def test_publish_reaches_its_absolute_topic(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": [42, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "p.rules").write_text(
        'RULE share\n  EVERY 1s THEN publish("plant/boiler/temp_avg", avg(boiler.temp, 1m))\nEND\n'
        'RULE sneaky\n  EVERY 1s THEN publish("picogate/gw1/cmd/boiler/burner/set", 1)\nEND\n'
    )
    with recorder(mosquitto.host, mosquitto.port, "#") as rec:
        async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)) as gw:
            msgs = await wait_msgs(
                rec,
                lambda ms: any(m.topic == "plant/boiler/temp_avg" and m.json()["v"] == 42 for m in ms),
                what="the published average",
            )
            body = next(m for m in msgs if m.topic == "plant/boiler/temp_avg" and m.json()["v"] == 42)
            assert not body.retain
            assert body.json()["rule"] == "share"
            assert set(body.json()) == set(doc_example("Messages from publish()"))
            # a rule may not publish into the gateway's own command topics
            assert rules_of(gw).stats.publish_refused >= 1
            assert rec.on(f"{ROOT}/cmd/boiler/burner/set") == []
            assert dev.get_coils(1, 0) == [False]


async def test_status_after_a_broker_outage_is_the_current_one(
    mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """A reload while the broker is away: once it is back, the retained status says so."""
    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "a.rules").write_text('RULE hot\n  ON boiler.temp > 85\n  THEN alert("hot")\nEND\n')
    async with running_gateway(config(tmp_path, mosquitto.port, dev.port, rules_dir)) as gw:
        live = rules_of(gw)
        with recorder(mosquitto.host, mosquitto.port, STATUS) as rec:
            await wait_msgs(rec, has_status(lambda s: s["ok"]), what="status before the outage")
        mosquitto.stop()
        save(rules_dir / "a.rules", 'RULE hot\n  ON boiler.tmp > 85\n  THEN alert("hot")\nEND\n')
        await eventually(lambda: not live.attempt.ok, what="the failed reload")
        mosquitto.start()
        # (the MQTT sink notices the lost connection when it next has data to deliver)
        dev.set_holding(1, 0, 21)
        with recorder(mosquitto.host, mosquitto.port, STATUS) as rec:
            await wait_msgs(rec, has_status(lambda s: not s["ok"]), what="status after the outage")
        # and it is retained: a later subscriber gets the failed reload, not the state before it
        with recorder(mosquitto.host, mosquitto.port, STATUS) as rec:
            msgs = await wait_msgs(rec, lambda ms: bool(ms), what="the retained status")
            assert msgs[0].retain
            assert not msgs[0].json()["ok"]


async def test_a_rules_directory_symlink_swapped_by_a_deploy_is_followed(tmp_path: Path) -> None:
    """`/etc/picogate/rules -> releases/v1/rules`, then the link is replaced to point at v2."""
    releases = tmp_path / "releases"
    for version in ("v1", "v2"):
        (releases / version).mkdir(parents=True)
        (releases / version / "a.rules").write_text(
            f'RULE {version}\n  EVERY 1h THEN log("{version}")\nEND\n'
        )
    link = tmp_path / "rules"
    link.symlink_to(releases / "v1")
    cfg = base_config(tmp_path, 1, [], mqtt={"enabled": False}, rules={"dir": str(link), "debounce": "50ms"})
    async with running_gateway(cfg) as gw:
        live = rules_of(gw)
        assert live.loaded is not None
        assert [r.id for r in live.loaded.rules] == ["v1"]
        new_link = tmp_path / "rules.new"
        new_link.symlink_to(releases / "v2")
        new_link.replace(link)  # atomic, as deploy tools do it
        await eventually(
            lambda: live.loaded is not None and [r.id for r in live.loaded.rules] == ["v2"], what="v2 loaded"
        )
