"""The broker ACL of docs/operations.md, run by mosquitto: the gateway's user publishes its data,
states, alerts and results and receives commands; only the central system's user may send a
command; any other user (the gateway's included) may not."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from _agent import base_config, eventually, recorder, running_gateway, wait_msgs
from _peers import MosquittoBroker

ROOT = Path(__file__).resolve().parents[2]
GW = "picogate/line3"
USERS = {"picogate-line3": "gw-pw-1", "central": "central-pw-2", "viewer": "viewer-pw-3"}


def documented_acl() -> str:
    """The ACL file shown in docs/operations.md (the block that starts with its path)."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```text\n(.*?)```", text, re.S)
    acl = [b for b in blocks if b.startswith("# /etc/mosquitto/picogate.acl")]
    assert len(acl) == 1, "docs/operations.md shows the ACL file once"
    return acl[0]


class AclBroker(MosquittoBroker):
    """The test broker, with users and the documented ACL; no anonymous access."""

    def __init__(self, workdir: Path, passwd: Path, acl: Path) -> None:
        self.passwd, self.acl = passwd, acl
        super().__init__(workdir)

    def _config(self, extra: list[str]) -> str:
        text = super()._config([f"password_file {self.passwd}", f"acl_file {self.acl}", *extra])
        return text.replace("allow_anonymous true", "allow_anonymous false")


def client(broker: MosquittoBroker, user: str, topic: str) -> Any:
    return recorder(broker.host, broker.port, topic, username=user, password=USERS[user])


async def test_only_the_central_system_may_send_commands(tmp_path: Path, modbus_tcp_server: Any) -> None:
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, pw in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, timeout=30)  # noqa: ASYNC221
    acl = tmp_path / "picogate.acl"
    acl.write_text(documented_acl())
    broker = AclBroker(tmp_path / "broker", passwd, acl).start()

    dev = await modbus_tcp_server({1: {"hr": [20, 50]}})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "hot.rules").write_text('ON boiler.temp > 10 THEN alert("warm")\n')
    (tmp_path / "gw-pw").write_text(USERS["picogate-line3"])
    boiler = {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": dev.port,
        "poll": "100ms",
        "points": [
            {"name": "temp", "table": "holding", "address": 0},
            {"name": "setpoint", "table": "holding", "address": 1, "writable": True},
        ],
    }
    cfg = base_config(
        tmp_path,
        broker.port,
        [boiler],
        gateway={"id": "line3"},
        mqtt={"username": "picogate-line3", "password_file": str(tmp_path / "gw-pw")},
        rules={"dir": str(rules_dir), "debounce": "50ms", "status_interval": "200ms"},
    )
    try:
        with (
            client(broker, "central", "picogate/#") as central,
            client(broker, "viewer", f"{GW}/data/#") as viewer,
            client(broker, "picogate-line3", f"{GW}/cmd/#") as gateway_user,
        ):
            async with running_gateway(cfg) as gw:
                # Everything the gateway publishes is allowed (and the central system reads it).
                for topic in (
                    "status",
                    "data/boiler/temp",
                    "devices/boiler/status",
                    "alerts",
                    "rules/status",
                ):
                    await wait_msgs(
                        central, lambda ms, t=topic: any(m.topic == f"{GW}/{t}" for m in ms), what=topic
                    )
                await wait_msgs(viewer, lambda ms: any(m.topic == f"{GW}/data/boiler/temp" for m in ms))

                # Others may not command: the viewer, and the gateway's own user.
                set_topic = f"{GW}/cmd/boiler/setpoint/set"
                viewer.publish(set_topic, {"v": 666, "id": "viewer"})
                gateway_user.publish(set_topic, {"v": 777, "id": "gateway-user"})
                # The central system may.
                central.publish(set_topic, {"v": 60, "id": "central"})
                results = await wait_msgs(
                    central, lambda ms: any(m.topic.endswith("/result") for m in ms), what="a result"
                )
                result = next(m.json() for m in results if m.topic.endswith("/result"))
                assert result["id"] == "central"
                assert result["ok"] is True
                assert dev.get_holding(1, 1) == [60]
                # Give a forbidden command every chance to arrive: nothing more is written or answered.
                polls = gw.pipeline.received
                await eventually(lambda: gw.pipeline.received >= polls + 20, what="more polls")
                assert [w.values for w in dev.writes] == [(60,)]
                assert [m.json()["id"] for m in central.messages if m.topic.endswith("/result")] == [
                    "central"
                ]
                assert gw.parts.sinks[0].stats.connected
    finally:
        broker.stop()
