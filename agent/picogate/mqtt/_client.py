"""The only module that imports the MQTT library (gmqtt, pinned).

gmqtt was chosen on measurement (bench/ and docs/architecture.md): at QoS 1 against a local
mosquitto it publishes about 2.4 times as many messages per second as paho-mqtt for the same CPU.
This wrapper gives the rest of the agent what it needs and nothing else:

- `publish()` returns a future resolved when the broker acknowledged the message (PUBACK), so the
  outbox deletes a record only once the broker has it;
- the connection is one attempt: when it drops, every pending future fails with `MqttLost` and
  the owner (the sink wrapper) reconnects with its own jittered backoff and replays from the
  outbox.  gmqtt's built-in reconnect and in-memory replay are switched off.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gmqtt import Client as _GmqttClient
from gmqtt import Message as _GmqttMessage
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

log = logging.getLogger("picogate.mqtt")


class MqttLost(ConnectionError):
    """The connection to the broker dropped (or was never made)."""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class _AckTracker:
    """Stands in for gmqtt's in-flight storage: gmqtt calls it on publish and on PUBACK."""

    def __init__(self) -> None:
        self.last_mid = 0
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.slots: asyncio.Semaphore | None = None  # QoS 1 messages in flight, at most

    # gmqtt's storage interface
    def push_message(self, mid: int, raw_package: bytes) -> None:
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        fut = self.waiting.pop(mid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(None)
            if self.slots is not None:
                self.slots.release()

    @property
    def is_empty(self) -> bool:
        return True  # nothing for gmqtt to replay: the outbox replays

    def get_all(self) -> list[tuple[int, bytes]]:
        return []

    def clear(self) -> None:
        pass

    async def wait_empty(self) -> None:
        return None

    def fail_all(self, exc: BaseException) -> None:
        waiting, self.waiting = self.waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(exc)


class _Client(_GmqttClient):  # type: ignore[misc]
    async def reconnect(self, delay: bool = False) -> None:
        """Reconnection belongs to our sink wrapper (jittered backoff, replay from the outbox)."""
        return None


class MqttClient:
    """One connection attempt to one broker."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        protocol: str = "5",
        keepalive: float = 30.0,
        will: Will | None = None,
        on_message: Callable[[IncomingMessage], None] | None = None,
        max_inflight: int = 1000,
    ) -> None:
        self._max_inflight = max_inflight
        self.inflight_limit = max_inflight
        self.host = host
        self.port = port
        self._tls = tls
        self._version = MQTTv50 if protocol == "5" else MQTTv311
        self._keepalive = max(1, int(keepalive))
        self._acks = _AckTracker()
        will_msg = None
        if will is not None:
            will_msg = _GmqttMessage(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client = _Client(client_id, clean_session=True, will_message=will_msg, persistent_storage=self._acks)
        if username is not None:
            self._client.set_auth_credentials(username, password)
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._user_on_message = on_message
        self.lost: asyncio.Future[None] | None = None
        self._closing = False

    async def connect(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self.lost = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._client.connect(
                    self.host, self.port, ssl=self._tls or False, keepalive=self._keepalive, version=self._version
                )
        except TimeoutError as exc:
            raise MqttLost(f"broker {self.host}:{self.port} did not answer within {timeout:g} s") from exc
        except OSError as exc:
            raise MqttLost(f"cannot connect to broker {self.host}:{self.port}: {exc.strerror or exc}") from exc
        except Exception as exc:  # gmqtt raises its own errors for refused CONNACKs
            raise MqttLost(f"broker {self.host}:{self.port} refused the connection: {exc}") from exc
        if not self._client.is_connected:
            raise MqttLost(f"broker {self.host}:{self.port} refused the connection")
        # MQTT 5: the broker's Receive Maximum (mosquitto: max_inflight_messages, 20 by default)
        # bounds the QoS 1 messages in flight; gmqtt enforces it by refusing to allocate an id,
        # so we wait for a free slot instead.  MQTT 3.1.1 has no such limit: ours applies.
        broker_max = int(getattr(self._client._package_handler.id_generator, "_max", 65536)) - 1
        self.inflight_limit = max(1, min(self._max_inflight, broker_max))
        self._acks.slots = asyncio.Semaphore(self.inflight_limit)

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected) and self.lost is not None and not self.lost.done()

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None] | None:
        """Send as soon as the in-flight window allows; for QoS 1 return a future resolved on
        PUBACK (or failed with MqttLost)."""
        slots = self._acks.slots
        if qos and slots is not None and slots.locked():
            lost = self.lost
            acquire = asyncio.ensure_future(slots.acquire())
            if lost is not None:
                await asyncio.wait({acquire, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                raise MqttLost("connection lost")
        elif qos and slots is not None:
            await slots.acquire()  # free: returns at once
        if not self.connected:
            if qos and slots is not None:
                slots.release()
            raise MqttLost("not connected")
        self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.waiting[self._acks.last_mid] = fut
        return fut

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._client.subscribe(topic, qos=qos)

    async def disconnect(self) -> None:
        self._closing = True
        if self._client.is_connected:
            try:
                async with asyncio.timeout(2):
                    await self._client.disconnect()
            except (TimeoutError, OSError, RuntimeError) as exc:
                log.debug("disconnect: %s", exc)
        self._fail(MqttLost("disconnected"))

    def _fail(self, exc: MqttLost) -> None:
        self._acks.fail_all(exc)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def _on_disconnect(self, client: Any, packet: Any, exc: BaseException | None = None) -> None:
        if not self._closing:
            log.warning("connection to broker %s:%s lost", self.host, self.port)
        self._fail(MqttLost(f"connection to broker {self.host}:{self.port} lost"))

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        if self._user_on_message is not None:
            try:
                self._user_on_message(IncomingMessage(topic, bytes(payload), qos, bool(properties.get("retain"))))
            except Exception:  # a bad message must never take the connection down
                log.exception("error handling message on %s", topic)
        return 0


def tls_context(
    *, ca_file: str | None, cert_file: str | None, key_file: str | None, insecure: bool = False
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
