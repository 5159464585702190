"""The demo's MQTT broker: a private mosquitto on a free loopback port.

Without mosquitto the demo falls back to amqtt's embedded broker, but only if amqtt happens to be
installed (it is not a dependency of Picogate); otherwise it says how to install mosquitto.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from picogate.demo._proc import LOOPBACK, ChildProcess, DemoError, executable, free_port, port_open

log = logging.getLogger("picogate.demo")

START_TIMEOUT = 10.0

INSTALL_HINT = (
    "the demo needs an MQTT broker, and mosquitto is not installed.\n"
    "Install it with:  sudo apt-get install mosquitto   (Debian/Ubuntu; or run tools/bootstrap.sh)\n"
    "The demo starts its own private broker on a free 127.0.0.1 port; the system service is not used."
)


class MosquittoBroker:
    """mosquitto with a config file in the workdir; it never drops queued QoS 1 messages."""

    kind = "mosquitto"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.conf_path.write_text(self._config())
        self._process = ChildProcess("mosquitto", [binary, "-c", str(self.conf_path)], self.log_path)

    def _config(self) -> str:
        lines = [
            "# Written by `picogate demo`: a private broker for this run only.",
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous true",
            # 0: no limit on QoS 1 messages queued for a slow subscriber (the default of 1000 drops them).
            "max_queued_messages 0",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would switch to the user "mosquitto", which cannot write in a
            # root-owned workdir, and the switch would clear the parent-death signal.
            lines.append("user root")
        return "\n".join([*lines, ""])

    @property
    def running(self) -> bool:
        return self._process.running

    async def start(self) -> None:
        self._process.start()

        await self._process.wait_ready(
            lambda: port_open(self.host, self.port),
            f"listening on {self.host}:{self.port}",
            within=START_TIMEOUT,
        )

    async def stop(self) -> None:
        self._process.stop()


class AmqttBroker:
    """amqtt's broker inside the demo's own process (only when amqtt is installed)."""

    kind = "amqtt (embedded)"

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self._broker: Any = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        module: Any = importlib.import_module("amqtt.broker")
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        try:
            broker = module.Broker(config)
            await broker.start()
        except Exception as exc:  # amqtt raises its own error types
            raise DemoError(f"the embedded amqtt broker would not start: {exc}\n{INSTALL_HINT}") from exc
        self._broker = broker

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            try:
                await broker.shutdown()
            except Exception as exc:  # shutting down: report, never raise
                log.debug("amqtt shutdown: %s", exc)


Broker = MosquittoBroker | AmqttBroker


def make_broker(workdir: Path) -> Broker:
    """mosquitto if installed, else amqtt if importable, else DemoError with the install command."""
    binary = executable("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
    if binary is not None:
        return MosquittoBroker(binary, workdir)
    if importlib.util.find_spec("amqtt") is not None:
        log.warning("mosquitto is not installed: using amqtt's embedded broker instead")
        return AmqttBroker()
    raise DemoError(INSTALL_HINT)
