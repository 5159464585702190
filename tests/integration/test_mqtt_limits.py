"""A broker's limits under MQTT 3.1.1, where it can neither announce them nor say that it refused a
message, against the whole gateway (outbox, RunningSink, MqttSink) and a real mosquitto:

- a message over the broker's `max_packet_size` gets the connection closed, and the outbox would
  replay it first after every reconnect: `mqtt.max_packet_size` keeps it from being sent at all
  (it is parked), so there is no reconnect storm and the rest flows;
- a message its ACL refuses is acknowledged and dropped by mosquitto: the outbox cannot know, and
  deletes it (docs/mqtt.md says so, and how to see it coming).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from _agent import base_config, eventually, recorder, running_gateway, wait_msgs

ROOT = "picogate/gw1"


def device(name: str, port: int, points: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "points": [{"name": f"p{i}", "table": "holding", "address": i} for i in range(points)],
    }


async def test_a_message_over_max_packet_size_is_parked_not_replayed_into_a_reconnect_storm(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    broker = make_mosquitto(extra_config=["max_packet_size 300"])
    meter = await modbus_tcp_server({1: {"hr": [7]}})
    wide = await modbus_tcp_server({1: {"hr": list(range(10))}})  # one message of ~600 bytes
    cfg = base_config(
        tmp_path,
        broker.port,
        [device("meter", meter.port), device("wide", wide.port, points=10)],
        mqtt={"protocol": "3.1.1", "max_packet_size": 300, "publish": "device"},
    )
    with recorder(broker.host, broker.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg) as gw:
            outbox = gw.parts.outbox
            sink = gw.parts.sinks[0]
            await eventually(lambda: outbox.parked("mqtt") >= 1, 10, "the large message parked")
            for value in (8, 9, 10):  # the rest flows on, on the same connection
                meter.set_holding(1, 0, [value])
                wide.set_holding(1, 0, [100 * value + i for i in range(10)])  # more large ones
                await wait_msgs(
                    rec,
                    lambda ms, v=value: any(
                        m.topic == f"{ROOT}/data/meter" and m.json()["points"]["p0"]["v"] == v for m in ms
                    ),
                    10,
                    f"meter at {value}",
                )
            await eventually(lambda: outbox.parked("mqtt") >= 3, 10, "more large messages parked")
            await asyncio.sleep(1.0)
            assert sink.stats.connects == 1, sink.stats
            assert sink.stats.failures == 0, sink.stats
            assert outbox.depth("mqtt") == 0
    assert not rec.on(f"{ROOT}/data/wide")
    log = broker.log_text()
    assert log.count("New client connected") == 2, log  # the recorder and the gateway, once each
    assert "protocol error" not in log.lower()


def acl(tmp_path: Path) -> str:
    path = tmp_path / "acl"
    lines = ["topic read #", f"topic readwrite {ROOT}/status", f"topic readwrite {ROOT}/devices/#"]
    lines.append(f"topic readwrite {ROOT}/data/meter/#")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_mqtt311_acl_refusal_is_acknowledged_by_mosquitto_and_dropped(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """MQTT 3.1.1 has no reason codes: mosquitto answers a PUBLISH its ACL refuses with a plain
    PUBACK and drops the message. The gateway cannot tell it from a delivery: the record leaves
    the outbox, is not parked, and never reaches a subscriber; the connection stays up."""
    # mosquitto's default queue limit: with `max_queued_messages 0` (the fixture's "unlimited"),
    # mosquitto 2.0.11 closes the connection after acknowledging a refused PUBLISH (its quota
    # check counts 0 as a limit), which the next test shows
    broker = make_mosquitto(extra_config=[f"acl_file {acl(tmp_path)}", "max_queued_messages 1000"])
    meter = await modbus_tcp_server({1: {"hr": [7]}})
    secret = await modbus_tcp_server({1: {"hr": [41]}})
    cfg = base_config(
        tmp_path,
        broker.port,
        [device("meter", meter.port), device("secret", secret.port)],
        mqtt={"protocol": "3.1.1"},
    )
    with recorder(broker.host, broker.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg) as gw:
            outbox = gw.parts.outbox
            sink = gw.parts.sinks[0]
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/meter/p0" for m in ms), 10)
            await eventually(
                lambda: outbox.depth("mqtt") == 0 and sink.stats.delivered >= 2, 10, "both acknowledged"
            )
            assert outbox.parked("mqtt") == 0
            assert sink.stats.connects == 1
    assert not rec.on(f"{ROOT}/data/secret/p0")


async def test_mqtt311_acl_refusal_with_an_unlimited_queue_costs_a_reconnect_and_loses_nothing(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    """mosquitto 2.0.11 with `max_queued_messages 0` closes the connection right after the PUBACK
    of a PUBLISH its ACL refused.  The gateway reconnects; the refused record was acknowledged
    (3.1.1 has no reason codes) and leaves the outbox, and the allowed point still arrives."""
    broker = make_mosquitto(extra_config=[f"acl_file {acl(tmp_path)}", "max_queued_messages 0"])
    meter = await modbus_tcp_server({1: {"hr": [7]}})
    secret = await modbus_tcp_server({1: {"hr": [41]}})
    cfg = base_config(
        tmp_path,
        broker.port,
        [device("meter", meter.port), device("secret", secret.port)],
        mqtt={"protocol": "3.1.1"},
    )
    with recorder(broker.host, broker.port, f"{ROOT}/data/#") as rec:
        async with running_gateway(cfg) as gw:
            outbox = gw.parts.outbox
            sink = gw.parts.sinks[0]
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/meter/p0" for m in ms), 10)
            await eventually(lambda: "Bad socket read/write" in broker.log_text(), 10, "mosquitto's close")
            await eventually(
                lambda: sink.stats.connected and outbox.depth("mqtt") == 0, 10, "back, nothing left"
            )
            assert outbox.parked("mqtt") == 0
    assert not rec.on(f"{ROOT}/data/secret/p0")
