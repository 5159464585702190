"""The Sparkplug B Edge Node against a primary host that is not ours (pysparkplug's codec and
paho-mqtt 1.6 in `.venv-spb`, tests/_spb.py), on mosquitto, with a pymodbus device behind the
gateway: births, DDATA, rebirth, DCMD, the host offline and back, bdSeq through restarts."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from _agent import AgentProcess, base_config, running_gateway
from _spb import SpbHost, check_seq, metric, spb_python
from picogate.mqtt import MqttClient, tls_context

GROUP = "plant"
DOC_TEXT = (Path(__file__).resolve().parents[2] / "docs" / "sparkplug.md").read_text(encoding="utf-8")
NODE = "gw1"


def boiler(port: int) -> dict[str, Any]:
    return {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "timeout": "300ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "scale": 0.1, "unit": "°C"},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True, "min": 0, "max": 900},
            {"name": "offset", "table": "holding", "address": 2, "type": "int16"},
            {"name": "flow", "table": "holding", "address": 3, "type": "float32", "order": "CDAB"},
            {"name": "burner", "table": "coil", "address": 0, "writable": True},
        ],
    }


def spb_config(tmp_path: Path, broker_port: int, dev_port: int, **sparkplug: Any) -> dict[str, Any]:
    cfg = base_config(tmp_path, broker_port, [boiler(dev_port)])
    cfg["mqtt"] = {"enabled": False}  # Sparkplug only
    cfg["sparkplug"] = {
        "group_id": GROUP,
        "servers": [{"host": "127.0.0.1", "port": broker_port}],
        "reconnect": {"min_delay": "100ms", "max_delay": "500ms"},
        "keepalive": "5s",
        **sparkplug,
    }
    return cfg


@pytest.fixture
def host_python() -> None:
    spb_python()  # skips with its reason when .venv-spb is not there


def births_of(msgs: list[dict[str, Any]], n: int = 1) -> bool:
    return sum(m.get("verb") == "DBIRTH" for m in msgs) >= n


async def test_births_ddata_rebirth_and_a_dcmd_write(
    host_python: None,
    mosquitto: Any,
    modbus_tcp_server: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="picogate.audit")
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40, (-7) & 0xFFFF, 0x0000, 0x4148]}}})
    host = SpbHost(mosquitto.port, GROUP)
    try:
        host.cmd("online")
        cfg = spb_config(tmp_path, mosquitto.port, dev.port, primary_host_id="scada")
        async with running_gateway(cfg):
            msgs = await asyncio.to_thread(host.wait_for, births_of, 15, "DBIRTH")
            nbirth = next(m for m in msgs if m.get("verb") == "NBIRTH")
            assert nbirth["topic"] == f"spBv1.0/{GROUP}/NBIRTH/{NODE}"
            assert (nbirth["qos"], nbirth["retain"], nbirth["seq"]) == (0, False, 0)
            bdseq = metric(nbirth, "bdSeq")
            assert (bdseq["datatype"], bdseq["value"]) == (4, 0)  # Int64, first CONNECT
            rebirth = metric(nbirth, "Node Control/Rebirth")
            assert (rebirth["datatype"], rebirth["value"], rebirth["alias"]) == (11, False, None)
            dbirth = next(m for m in msgs if m.get("verb") == "DBIRTH")
            assert dbirth["topic"] == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/boiler"
            assert (dbirth["qos"], dbirth["retain"], dbirth["seq"]) == (0, False, 1)
            by_name = {m["name"]: m for m in dbirth["metrics"]}
            assert set(by_name) == {"temp", "setpoint", "offset", "flow", "burner"}
            assert {n: m["datatype"] for n, m in by_name.items()} == {
                "temp": 10,  # Double: a scaled register is a float64 point
                "setpoint": 6,  # UInt16
                "offset": 2,  # Int16
                "flow": 9,  # Float
                "burner": 11,  # Boolean
            }
            assert by_name["temp"]["props"]["engUnit"] == "°C"
            assert by_name["setpoint"]["props"]["writable"] is True
            aliases = [m["alias"] for m in nbirth["metrics"] + dbirth["metrics"] if m["alias"] is not None]
            assert len(aliases) == len(set(aliases)) == len(nbirth["metrics"]) - 1 + len(dbirth["metrics"])

            # DDATA by exception: names left out, aliases resolved by the host, values decoded.
            def value_of(msgs: list[dict[str, Any]], name: str) -> Any:
                for m in reversed(msgs):
                    if m.get("device") == "boiler" and m.get("verb") in ("DDATA", "DBIRTH"):
                        for x in m["metrics"]:
                            if x["name"] == name and not x["is_null"]:
                                return x["value"]
                return None

            await asyncio.to_thread(
                host.wait_for, lambda ms: value_of(ms, "temp") == 21.5 and value_of(ms, "offset") == -7
            )
            dev.set_holding(1, 0, [230])
            msgs = await asyncio.to_thread(
                host.wait_for,
                lambda ms: any(m.get("verb") == "DDATA" and value_of([m], "temp") == 23.0 for m in ms),
                15,
                "DDATA temp 23.0",
            )
            # (what was polled before the births is historical: the DBIRTH already has newer values)
            ddata = next(m for m in msgs if m.get("verb") == "DDATA" and value_of([m], "temp") == 23.0)
            assert (ddata["qos"], ddata["retain"]) == (0, False)
            assert all(not x["has_name"] and x["alias"] is not None for x in ddata["metrics"])
            assert all(x["datatype"] is None and x["timestamp"] for x in ddata["metrics"])
            assert not any(x["is_historical"] for x in ddata["metrics"])

            # Rebirth: NBIRTH again (seq 0, the same bdSeq), then the DBIRTH.
            n_before = len(host.messages)
            host.cmd("rebirth", node=NODE)
            msgs = await asyncio.to_thread(
                host.wait_for,
                lambda ms: sum(m.get("verb") == "DBIRTH" for m in ms[n_before:]) >= 1,
                15,
                "rebirth",
            )
            again = [m for m in msgs[n_before:] if m.get("verb") == "NBIRTH"]
            assert again
            assert again[0]["seq"] == 0
            assert metric(again[0], "bdSeq")["value"] == 0

            # A DCMD write (by alias) reaches the register through the command router.
            host.cmd("dcmd", node=NODE, device="boiler", name="setpoint", value=650)
            for _ in range(100):
                if dev.get_holding(1, 1) == [650]:
                    break
                await asyncio.sleep(0.05)
            assert dev.get_holding(1, 1) == [650]
            await asyncio.to_thread(
                host.wait_for, lambda ms: value_of(ms, "setpoint") == 650, 15, "DDATA setpoint 650"
            )
            # A value out of the point's range is refused by the router: the register stays.
            host.cmd("dcmd", node=NODE, device="boiler", name="setpoint", value=1000)
            await asyncio.sleep(0.5)
            assert dev.get_holding(1, 1) == [650]
            # both audited like any write, origin sparkplug
            audits = [r.audit for r in caplog.records if r.name == "picogate.audit"]  # type: ignore[attr-defined]
            assert [(a["point"], a["value"], a["origin"], a["code"]) for a in audits] == [
                ("setpoint", 650, "sparkplug", "ok"),
                ("setpoint", 1000, "sparkplug", "out_of_range"),
            ]
            # Garbage on the DCMD topic is logged and counted; the node goes on.
            host.cmd("raw", topic=f"spBv1.0/{GROUP}/DCMD/{NODE}/boiler", payload_hex="ffff01")
            dev.set_holding(1, 2, [5])
            await asyncio.to_thread(host.wait_for, lambda ms: value_of(ms, "offset") == 5)
            check_seq(host.node_messages(NODE))
    finally:
        host.close()


async def test_host_offline_and_back_gets_the_history_in_order(
    host_python: None, mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [100, 40, 0, 0, 0]}}})
    host = SpbHost(mosquitto.port, GROUP)
    try:
        host.cmd("online")
        cfg = spb_config(tmp_path, mosquitto.port, dev.port, primary_host_id="scada")
        async with running_gateway(cfg) as gw:
            await asyncio.to_thread(host.wait_for, births_of, 15, "DBIRTH")
            host.cmd("offline")
            sink = next(s for s in gw.parts.sinks if s.name == "sparkplug")
            for _ in range(100):  # the node leaves the server (tck ...-termination-host-offline)
                if not sink.stats.connected:
                    break
                await asyncio.sleep(0.05)
            assert not sink.stats.connected
            # Values while the host is away: kept in the outbox.
            stored = [101, 102, 103, 104, 105]
            for v in stored:
                dev.set_holding(1, 0, [v])
                await asyncio.sleep(0.35)
            assert gw.parts.outbox.depth("sparkplug") > 0
            n_before = len(host.messages)
            host.cmd("online")

            def history(ms: list[dict[str, Any]]) -> list[float]:
                return [
                    x["value"]
                    for m in ms[n_before:]
                    if m.get("verb") == "DDATA"
                    for x in m["metrics"]
                    if x["is_historical"] and x["name"] == "temp"
                ]

            msgs = await asyncio.to_thread(
                host.wait_for, lambda ms: history(ms)[-1:] == [10.5], 20, "historical DDATA up to 10.5"
            )
            after = [m for m in msgs[n_before:] if m.get("verb")]
            verbs = [m.get("verb") for m in after if m.get("verb")]
            assert verbs[:2] == ["NBIRTH", "DBIRTH"], after[:3]
            assert metric(after[0], "bdSeq")["value"] == 1  # a new CONNECT
            temps = history(msgs)
            assert temps == sorted(temps)  # in order
            assert [t for t in temps if t > 10.0][-5:] == [10.1, 10.2, 10.3, 10.4, 10.5]
            dbirth = next(m for m in after if m.get("verb") == "DBIRTH")
            assert metric(dbirth, "temp")["value"] == 10.5  # the births carry the current value
            ts = [
                x["timestamp"]
                for m in after
                if m.get("verb") == "DDATA"
                for x in m["metrics"]
                if x["is_historical"]
            ]
            assert ts == sorted(ts)
            # Then live data again, not historical.
            dev.set_holding(1, 0, [200])
            await asyncio.to_thread(
                host.wait_for,
                lambda ms: any(
                    m.get("verb") == "DDATA"
                    and any(
                        x["name"] == "temp" and x["value"] == 20.0 and not x["is_historical"]
                        for x in m["metrics"]
                    )
                    for m in ms[n_before:]
                ),
            )
            check_seq(host.node_messages(NODE))
    finally:
        host.close()


async def test_bdseq_and_seq_through_broker_restart_kill_9_and_restart(
    host_python: None, mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    dev = await modbus_tcp_server({1: {"hr": {0: [100, 40, 0, 0, 0]}}})
    host = SpbHost(mosquitto.port, GROUP)
    cfg = spb_config(tmp_path, mosquitto.port, dev.port, primary_host_id="scada")
    agent = AgentProcess(cfg, tmp_path / "agent")

    def nbirths() -> list[dict[str, Any]]:
        return [m for m in host.node_messages(NODE) if m.get("verb") == "NBIRTH"]

    async def wait_nbirth(n: int) -> dict[str, Any]:
        await asyncio.to_thread(
            host.wait_for,
            lambda ms: (
                sum(m.get("verb") == "NBIRTH" for m in ms) >= n
                and sum(m.get("verb") == "DBIRTH" for m in ms) >= n
            ),
            30,
            f"NBIRTH #{n}",
        )
        return nbirths()[n - 1]

    try:
        host.cmd("online")
        agent.start()
        first = await wait_nbirth(1)
        assert metric(first, "bdSeq")["value"] == 0

        # Broker restart: the host reconnects by hand; the node with bdSeq + 1.
        mosquitto.stop()
        mosquitto.start()
        host.cmd("online")
        second = await wait_nbirth(2)
        assert metric(second, "bdSeq")["value"] == 1
        assert second["seq"] == 0

        # kill -9: the server publishes the will, NDEATH with the bdSeq of the last NBIRTH.
        # (mosquitto may have sent the first session's NDEATH, bdSeq 0, while it shut down)
        deaths = sum(m.get("verb") == "NDEATH" for m in host.node_messages(NODE))
        await asyncio.to_thread(agent.kill9)
        msgs = await asyncio.to_thread(
            host.wait_for, lambda ms: sum(m.get("verb") == "NDEATH" for m in ms) > deaths, 20, "NDEATH"
        )
        ndeath = [m for m in msgs if m.get("verb") == "NDEATH"][-1]
        assert (ndeath["qos"], ndeath["retain"], ndeath["seq"]) == (1, False, None)
        assert [x["name"] for x in ndeath["metrics"]] == ["bdSeq"]
        assert metric(ndeath, "bdSeq")["value"] == 1

        # Restarted: bdSeq goes on from the file (2), not from 0.
        agent.start()
        third = await wait_nbirth(3)
        assert metric(third, "bdSeq")["value"] == 2

        # SIGTERM: an intentional disconnect still gives the NDEATH (MQTT 5: DISCONNECT 0x04).
        assert await asyncio.to_thread(agent.terminate) == 0
        msgs = await asyncio.to_thread(
            host.wait_for, lambda ms: sum(m.get("verb") == "NDEATH" for m in ms) > deaths + 1, 20, "NDEATH #2"
        )
        assert metric([m for m in msgs if m.get("verb") == "NDEATH"][-1], "bdSeq")["value"] == 2
        check_seq(host.node_messages(NODE))
    finally:
        agent.stop()
        host.close()


async def test_tls_and_a_password(
    make_mosquitto: Any, certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Edge Node's own connection takes TLS and a user name and password, as `mqtt:` does."""
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    await asyncio.to_thread(
        subprocess.run, ["mosquitto_passwd", "-b", str(passwd), "edge", "s3cret"], check=True, timeout=30
    )
    broker = make_mosquitto(
        extra_config=[
            "allow_anonymous false",
            f"password_file {passwd}",
            f"cafile {certs / 'ca.crt'}",
            f"certfile {certs / 'server.crt'}",
            f"keyfile {certs / 'server.key'}",
        ]
    )
    monkeypatch.setenv("SPB_PASSWORD", "s3cret")
    seen: list[str] = []
    observer = MqttClient(
        host="127.0.0.1",
        port=broker.port,
        client_id="observer",
        username="edge",
        password="s3cret",
        tls=tls_context(ca_file=str(certs / "ca.crt"), cert_file=None, key_file=None),
        on_message=lambda m: seen.append(m.topic),
    )
    await observer.connect()
    observer.subscribe("spBv1.0/#", qos=1)
    cfg = base_config(tmp_path, broker.port, [])
    cfg["mqtt"] = {"enabled": False}
    cfg["sparkplug"] = {
        "group_id": GROUP,
        "servers": [{"host": "127.0.0.1", "port": broker.port}],
        "username": "edge",
        "password_env": "SPB_PASSWORD",
        "tls": {"ca_file": str(certs / "ca.crt")},
    }
    try:
        async with running_gateway(cfg):
            for _ in range(200):
                if f"spBv1.0/{GROUP}/NBIRTH/{NODE}" in seen:
                    break
                await asyncio.sleep(0.05)
        assert f"spBv1.0/{GROUP}/NBIRTH/{NODE}" in seen
        for _ in range(100):
            if f"spBv1.0/{GROUP}/NDEATH/{NODE}" in seen:
                break
            await asyncio.sleep(0.05)
        assert f"spBv1.0/{GROUP}/NDEATH/{NODE}" in seen
    finally:
        await observer.disconnect()


async def test_the_docs_example_as_a_new_user_would(
    host_python: None, mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """docs/sparkplug.md's gateway.yaml, pointed at a local device and broker: a host that has never
    seen the gateway builds the tag tree from the births alone and writes the setpoint back."""
    match = re.search(r"^```yaml\n(.*?)^```$", DOC_TEXT, re.S | re.M)
    assert match is not None
    cfg = yaml.safe_load(match.group(1))
    dev = await modbus_tcp_server({1: {"hr": {0: [215, 40]}, "co": {0: [True]}}})
    cfg["gateway"]["data_dir"] = str(tmp_path / "data")
    cfg["devices"][0] |= {"host": "127.0.0.1", "port": dev.port}
    cfg["sparkplug"]["servers"] = [{"host": "127.0.0.1", "port": mosquitto.port}]
    cfg |= {"metrics": {"enabled": False}, "clock": {"check_sync": False}}
    group, node = cfg["sparkplug"]["group_id"], cfg["sparkplug"]["edge_node_id"]
    host = SpbHost(mosquitto.port, group, cfg["sparkplug"]["primary_host_id"])
    try:
        host.cmd("online")
        async with running_gateway(cfg):
            msgs = await asyncio.to_thread(host.wait_for, births_of, 15, "DBIRTH")
            tree = {
                (m["device"], x["name"]): x["value"]
                for m in msgs
                if m.get("verb") == "DBIRTH" and m["node"] == node
                for x in m["metrics"]
            }
            assert tree == {("boiler", "temp"): 21.5, ("boiler", "setpoint"): 40, ("boiler", "burner"): True}
            host.cmd("dcmd", node=node, device="boiler", name="setpoint", value=650)
            for _ in range(100):
                if dev.get_holding(1, 1) == [650]:
                    break
                await asyncio.sleep(0.05)
            assert dev.get_holding(1, 1) == [650]
    finally:
        host.close()
