"""Test helpers around the agent: an MQTT recorder (paho, the reference client), a gateway run
in-process, and the agent as a real subprocess (`picogate run`) for kill -9 tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml

from picogate._gateway import Gateway
from picogate.gateway import GatewayConfig


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttRecorder:
    """Subscribes (QoS 1) and records every message; thread-safe waits with bounded timeouts."""

    def __init__(
        self,
        host: str,
        port: int,
        topic: str = "#",
        *,
        client_id: str = "",
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.messages: list[Msg] = []
        self._cond = threading.Condition()
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=paho.MQTTv311
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(self.topic, qos=1)
        self._client.reconnect_delay_set(0.1, 1)

    def _on_message(self, client: Any, userdata: Any, m: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Msg(m.topic, bytes(m.payload), bool(m.retain), m.qos))
            self._cond.notify_all()

    def start(self) -> MqttRecorder:
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: Any, *, qos: int = 1, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        self._client.publish(topic, data, qos=qos, retain=retain).wait_for_publish(5)

    def on(self, topic: str) -> list[Msg]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, pred: Callable[[list[Msg]], bool], timeout: float = 10.0, what: str = "") -> list[Msg]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    raise AssertionError(f"timed out waiting for {what or pred}; topics seen: {topics[:30]}")
                self._cond.wait(left)
            return list(self.messages)

    def wait_topic(self, topic: str, timeout: float = 10.0, count: int = 1) -> list[Msg]:
        self.wait_for(lambda ms: sum(m.topic == topic for m in ms) >= count, timeout, f"{count}× {topic}")
        return self.on(topic)


@contextlib.contextmanager
def recorder(host: str, port: int, topic: str = "#", **kw: Any) -> Iterator[MqttRecorder]:
    rec = MqttRecorder(host, port, topic, **kw).start()
    try:
        yield rec
    finally:
        rec.stop()


def base_config(
    tmp_path: Path, broker_port: int, devices: list[dict[str, Any]], **sections: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "gateway": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "reconnect": {"min_delay": "100ms", "max_delay": "1s"},
        },
        "outbox": {"synchronous": "normal"},
        "metrics": {"enabled": False},
        "clock": {"check_sync": False},
        "devices": devices,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@contextlib.asynccontextmanager
async def running_gateway(cfg: dict[str, Any] | GatewayConfig) -> AsyncIterator[Gateway]:
    """The gateway in this event loop; stopped cleanly (outbox flushed) at exit.

    `cfg` is a dict (validated here) or a ready `GatewayConfig` (e.g. one built with
    `model_copy(update=...)` to go below a schema minimum in a test)."""
    config = cfg if isinstance(cfg, GatewayConfig) else GatewayConfig.model_validate(cfg)
    gw = Gateway(config, drain_timeout=5)
    async with gw:
        task = asyncio.create_task(gw.run(install_signals=False))
        async with asyncio.timeout(10):
            await gw.ready.wait()
        try:
            yield gw
        finally:
            gw.stop()
            async with asyncio.timeout(15):
                await task


class AgentProcess:
    """`picogate run -c <file>` as a child process (for SIGTERM / kill -9 tests)."""

    def __init__(self, cfg: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "picogate", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def eventually(
    pred: Callable[[], bool], within: float = 10.0, what: str = "", interval: float = 0.02
) -> None:
    """Poll `pred` in the running loop (peers keep serving meanwhile) until true; fail after `within` s."""
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what or pred}")
        await asyncio.sleep(interval)


async def wait_msgs(
    rec: MqttRecorder, pred: Callable[[list[Msg]], bool], within: float = 10.0, what: str = ""
) -> list[Msg]:
    """`rec.wait_for` off the event loop, so that in-loop peers (pymodbus servers) keep answering."""
    return await asyncio.to_thread(rec.wait_for, pred, within, what)


def values_on(rec: MqttRecorder, topic: str) -> list[Any]:
    """The `v` of every JSON message received on `topic`, in arrival order."""
    return [m.json()["v"] for m in rec.on(topic)]
