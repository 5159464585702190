"""Connecting to the broker: TLS with a CA, username/password, MQTT 3.1.1 and 5, metrics and health."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from _agent import base_config, running_gateway
from _peers import MosquittoBroker, free_port

ROOT = "picogate/gw1"


class SecureBroker(MosquittoBroker):
    """TLS-only listener with a password file (no anonymous access)."""

    def __init__(self, workdir: Path, certs: Path, passwd: Path) -> None:
        self.certs, self.passwd = certs, passwd
        super().__init__(workdir)

    def _config(self, extra: list[str]) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.certs / 'ca.crt'}",
            f"certfile {self.certs / 'server.crt'}",
            f"keyfile {self.certs / 'server.key'}",
            "allow_anonymous false",
            f"password_file {self.passwd}",
            "persistence false",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        return "\n".join([*lines, ""])


def _device(port: int) -> dict[str, Any]:
    return {
        "name": "boiler",
        "type": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll": "100ms",
        "points": [{"name": "temp", "table": "holding", "address": 0}],
    }


def _tls_subscriber(port: int, certs: Path, topic: str, got: list[tuple[str, bytes]]) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    c.username_pw_set("reader", "reader-pw")
    c.tls_set(ca_certs=str(certs / "ca.crt"))
    c.on_message = lambda cl, u, m: got.append((m.topic, bytes(m.payload)))
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, 1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_tls_with_password_from_env(
    protocol: str, certs: Path, tmp_path: Path, modbus_tcp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    for user, pw in (("gateway", "s3cret-gw"), ("reader", "reader-pw")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, timeout=30)  # noqa: ASYNC221
    broker = SecureBroker(tmp_path / "broker", certs, passwd).start()
    try:
        dev = await modbus_tcp_server({1: {"hr": [42]}})
        got: list[tuple[str, bytes]] = []
        sub = _tls_subscriber(broker.port, certs, f"{ROOT}/#", got)
        monkeypatch.setenv("PG_MQTT_PW", "s3cret-gw")
        cfg = base_config(
            tmp_path,
            broker.port,
            [_device(dev.port)],
            mqtt={
                "host": "localhost",
                "username": "gateway",
                "password_env": "PG_MQTT_PW",
                "protocol": protocol,
                "tls": {"ca_file": str(certs / "ca.crt")},
            },
        )
        try:
            async with running_gateway(cfg):
                for _ in range(100):
                    if any(t == f"{ROOT}/data/boiler/temp" for t, _ in got):
                        break
                    await asyncio.sleep(0.1)
        finally:
            sub.loop_stop()
            sub.disconnect()
        values = [json.loads(p)["v"] for t, p in got if t == f"{ROOT}/data/boiler/temp"]
        assert values
        assert values[0] == 42
        assert "s3cret-gw" not in broker.log_text()
    finally:
        broker.stop()


async def test_wrong_password_keeps_data_in_outbox(
    certs: Path,
    tmp_path: Path,
    modbus_tcp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gateway", "right"], check=True, timeout=30)  # noqa: ASYNC221
    broker = SecureBroker(tmp_path / "broker", certs, passwd).start()
    try:
        dev = await modbus_tcp_server({1: {"hr": [42]}})
        pw_file = tmp_path / "pw"
        pw_file.write_text("wrong\n")
        cfg = base_config(
            tmp_path,
            broker.port,
            [_device(dev.port)],
            mqtt={
                "username": "gateway",
                "password_file": str(pw_file),
                "tls": {"ca_file": str(certs / "ca.crt")},
            },
        )
        async with running_gateway(cfg) as gw:
            for _ in range(200):  # bounded: 20 s, generous for a loaded machine
                if gw.parts.outbox.depth("mqtt") > 0 and gw.parts.sinks[0].stats.failures >= 2:
                    break
                await asyncio.sleep(0.1)
            assert gw.parts.outbox.depth("mqtt") > 0  # accepted, waiting for the broker
            assert gw.parts.sinks[0].stats.failures >= 2  # it keeps trying, with backoff
            assert not gw.parts.sinks[0].stats.connected
        assert "wrong" not in caplog.text  # the secret is never logged
    finally:
        broker.stop()


async def test_metrics_and_healthz(mosquitto: Any, modbus_tcp_server: Any, tmp_path: Path) -> None:
    dev = await modbus_tcp_server({1: {"hr": [42]}})
    port = free_port()
    cfg = base_config(tmp_path, mosquitto.port, [_device(dev.port)], metrics={"enabled": True, "port": port})
    async with running_gateway(cfg) as gw:
        for _ in range(50):
            if gw.parts.sinks[0].stats.delivered > 0:
                break
            await asyncio.sleep(0.1)

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        status, text = await asyncio.to_thread(get, "/metrics")
        assert status == 200
        for name in (
            "picogate_polls_total",
            "picogate_modbus_requests_total",
            "picogate_modbus_discarded_total",
            "picogate_modbus_request_seconds_bucket",
            "picogate_outbox_depth",
            "picogate_messages_delivered_total",
            "picogate_outbox_dropped_total",
            "picogate_outbox_commits_total",
            'picogate_device_online{device="boiler"} 1.0',
        ):
            assert name in text, name
        status, body = await asyncio.to_thread(get, "/healthz")
        health = json.loads(body)
        assert status == 200
        assert health["status"] == "ok"
        assert health["devices"] == {"boiler": "online"}
        assert health["sinks"]["mqtt"]["connected"] is True
        status, _ = await asyncio.to_thread(get, "/nope")
        assert status == 404
