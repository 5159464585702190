"""Messages the broker refuses are parked, not deleted: the rest flows on, the status topic and the
metrics say how many wait, and they are sent again once the cause is fixed (at the latest at the
next start).  The broker is a real mosquitto with an ACL (MQTT 5: a refused PUBLISH gets a PUBACK
with reason code 0x87, not authorised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _agent import base_config, eventually, recorder, running_gateway, wait_msgs

ROOT = "picogate/gw1"


def device(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "points": [{"name": "v", "table": "holding", "address": 0}],
    }


def acl(tmp_path: Path, *, secret_allowed: bool) -> str:
    path = tmp_path / f"acl-{secret_allowed}"
    lines = ["topic read #", f"topic readwrite {ROOT}/status", f"topic readwrite {ROOT}/devices/#"]
    lines.append(f"topic readwrite {ROOT}/data/meter/#")
    if secret_allowed:
        lines.append(f"topic readwrite {ROOT}/data/secret/#")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_refused_messages_are_parked_and_sent_again_after_a_restart(
    make_mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path
) -> None:
    broker = make_mosquitto(extra_config=[f"acl_file {acl(tmp_path, secret_allowed=False)}"])
    meter = await modbus_tcp_server({1: {"hr": [7]}})
    secret = await modbus_tcp_server({1: {"hr": [41]}})
    cfg = base_config(tmp_path, broker.port, [device("meter", meter.port), device("secret", secret.port)])
    with recorder(broker.host, broker.port, f"{ROOT}/#") as rec:
        async with running_gateway(cfg) as gw:
            outbox = gw.parts.outbox
            await wait_msgs(rec, lambda ms: any(m.topic == f"{ROOT}/data/meter/v" for m in ms), 10)
            await eventually(lambda: outbox.parked("mqtt") >= 1, 10, "the refused message parked")
            meter.set_holding(1, 0, [8])  # the rest flows on
            await wait_msgs(
                rec, lambda ms: any(m.topic == f"{ROOT}/data/meter/v" and m.json()["v"] == 8 for m in ms), 10
            )
            await eventually(lambda: outbox.depth("mqtt") == 0, 10, "nothing stuck in the outbox")
            gw.parts.shared.status_changed()  # as when the outbox or the clock changes
            await wait_msgs(
                rec,
                lambda ms: any(
                    m.topic == f"{ROOT}/status" and m.json().get("outbox", {}).get("parked", 0) >= 1
                    for m in ms
                ),
                10,
                "the status topic counting parked messages",
            )
        assert not rec.on(f"{ROOT}/data/secret/v")
    # The cause is fixed (the ACL allows the topic): the next start sends what was parked.
    broker.stop()
    fixed = make_mosquitto(port=broker.port, extra_config=[f"acl_file {acl(tmp_path, secret_allowed=True)}"])
    secret.set_holding(1, 0, [42])
    with recorder(fixed.host, fixed.port, f"{ROOT}/data/secret/#") as rec:
        async with running_gateway(cfg) as gw:
            got = await wait_msgs(
                rec, lambda ms: any(m.json()["v"] == 41 for m in ms), 10, "the parked value"
            )
            await wait_msgs(rec, lambda ms: any(m.json()["v"] == 42 for m in ms), 10, "the new value")
            assert gw.parts.outbox.parked("mqtt") == 0
    parked = [m for m in got if m.json()["v"] == 41]
    assert not parked[0].retain
