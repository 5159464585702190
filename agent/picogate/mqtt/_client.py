"""Our MQTT client (3.1.1 and 5): one connection to one broker, built for many QoS 1 publishes.

The packets are built and parsed by the I/O-free codec in `_codec.py`; this module owns the
connection.  It gives the rest of the agent what it needs and nothing else:

- `publish()` returns a future resolved when the broker acknowledged the message (PUBACK), so the
  outbox deletes a record only once the broker has it; `publish_many()` puts many messages into
  one `PublishBatch`, whose one future resolves when every one of them was acknowledged (the
  sink's path: a future per message was the largest single cost of one message per point);
- the connection is one attempt: when it drops, every pending future fails with `MqttLost` and
  the owner (the sink wrapper) reconnects with its own jittered backoff and replays from the
  outbox.  There is no automatic reconnect and no in-memory replay here.

Why not a library: at 15,000 QoS 1 messages/s, gmqtt and paho-mqtt spend most of their CPU on
one `send` system call and several Python objects per message.  Here everything queued during one
event-loop turn (PUBLISHes, PUBACKs for incoming messages, SUBSCRIBEs) goes out in ONE
`transport.write`, scheduled with `loop.call_soon`; each topic is validated and encoded once;
PUBACKs are matched to their futures in one loop over the decoded packets.  bench/mqtt_clients.py
measures the result against gmqtt and paho-mqtt.

Behaviour:

- In-flight window: at most `inflight_limit` QoS 1 messages await their PUBACK, the smaller of
  `max_inflight` and (MQTT 5) the broker's Receive Maximum.  `publish()` waits for a free slot,
  first come first served.  Packet ids are shared with SUBSCRIBE: the window is at most 65,519,
  so that the 16 ids kept for SUBSCRIBEs awaiting their SUBACK leave one free for every publish
  holding a slot (a broker that leaves 16 SUBSCRIBEs unanswered is disconnected).
- Flow control: when the transport's buffer is over its high-water mark (the broker reads slower
  than we write), `publish()` waits for the transport to drain before queuing more.
- Keepalive: a PINGREQ goes out when nothing was sent for `keepalive` seconds (or nothing was
  received for as long); when nothing at all arrives for 1.5 × `keepalive` the connection is
  presumed dead and closed, which fails every pending future with `MqttLost`.  In MQTT 5 a Server
  Keep Alive from the broker replaces ours, longer or shorter (§3.2.2.3.14); 0 turns keepalive
  off (no PINGREQ, no dead-connection check: TCP's own keepalive is switched on instead).
- Sessions: every connection starts clean (Clean Start / Clean Session 1, Session Expiry 0), so
  a CONNACK with Session Present 1 is a broker's error: the client closes the connection
  (§3.2.2.1.1 / §3.2.2.2), after a DISCONNECT 0x82 in MQTT 5.
- Refusals: a message the broker refuses (MQTT 5 PUBACK reason code 0x80 or more, e.g. "not
  authorized" from an ACL) fails its future with `MqttPublishRefused`, which is not a lost
  connection: the connection stays up and resending the same message would be refused again.
  `publish()` itself raises `MqttPublishRefused` for a message no broker could take (a topic with
  a wildcard), larger than our own `max_packet_size`, or that this broker announced it would
  refuse (larger than its Maximum Packet Size, retained when retain is unavailable, QoS 1 above
  its Maximum QoS).  An MQTT 3.1.1 broker cannot announce a limit nor say that it refused a
  message: mosquitto acknowledges and drops what its ACL refuses, RabbitMQ and others close the
  connection (the `MqttLost` message then names the oldest unacknowledged message's topic).
- Maximum Packet Size: `max_packet_size` bounds what we send (with the broker's, the smaller
  wins) and what we accept: MQTT 5 announces it in CONNECT, so the broker does not send larger
  messages; an MQTT 3.1.1 broker cannot know it, so a larger incoming PUBLISH is acknowledged,
  skipped as it arrives (never buffered) and logged, and not handed to `on_message`.
- Reading: when PUBACKs trickle in a few at a time (a broker acknowledges as it reads), reading
  pauses for a millisecond so that they gather in the socket: one wake-up then handles dozens of
  them instead of a handful, and the next write carries as many new messages.  With a small
  in-flight window (under 256, e.g. mosquitto's default Receive Maximum of 20) it does not pause
  while a publisher waits for a slot.  Measured: about half the CPU per message at full speed,
  and more messages per second (bench/mqtt_clients.py).
- Incoming PUBLISH: QoS 1 is acknowledged at once, then handed to `on_message`; QoS 2 (which a
  broker should not send to our QoS 1 subscriptions) is answered PUBREC/PUBCOMP and delivered
  once; a PUBREL for a packet id we hold no PUBREC for is answered PUBCOMP 0x92 (packet
  identifier not found) in MQTT 5.  An exception in `on_message` is logged and never takes the
  connection down.
- A malformed packet or protocol error from the broker closes the connection (in MQTT 5 after a
  DISCONNECT with reason 0x81 or 0x82); topic aliases are not used in either direction.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, cast

from picogate._errors import PicogateError
from picogate.mqtt._codec import (
    MAX_PACKET_SIZE,
    MQTT_5,
    MQTT_311,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBREC,
    Ack,
    Connack,
    Disconnect,
    MqttDecoder,
    MqttProtocolError,
    OversizedPublish,
    Packet,
    Pingresp,
    Puback,
    Publish,
    Pubrel,
    Suback,
    Unsuback,
    encode_ack,
    encode_connect,
    encode_disconnect,
    encode_subscribe,
    encode_varint,
    pack_publish,
    publish_topic,
    reason_name,
)

log = logging.getLogger("picogate.mqtt")

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "IncomingMessage",
    "MqttClient",
    "MqttLost",
    "MqttPublishRefused",
    "PublishBatch",
    "Will",
    "tls_context",
]

DEFAULT_MAX_PACKET_SIZE: Final = 1 << 20  # bytes: the largest packet sent or accepted, by default
MIN_MAX_PACKET_SIZE: Final = 128  # a smaller limit would refuse the gateway's own status messages


class MqttLost(PicogateError, ConnectionError):
    """The connection to the broker dropped (or was never made); the message says why."""


class MqttPublishRefused(PicogateError):
    """The broker refused one message (MQTT 5 PUBACK reason code ≥ 0x80), or `publish()` refused
    it because the broker would.  The connection is still up; the same message would be refused
    again, so retrying it is pointless."""

    def __init__(
        self, topic: str, reason_code: int, reason_string: str | None = None, *, local: bool = False
    ) -> None:
        self.topic = topic
        self.where = topic
        self.reason_code = reason_code
        self.reason = reason_name(reason_code)
        self.reason_string = reason_string
        self.local = local
        who = "refused by the client before sending" if local else "refused by the broker"
        detail = f": {reason_string}" if reason_string else ""
        super().__init__(f"message on {topic!r} {who}: {self.reason}{detail}")


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


class PublishBatch:
    """QoS 1 messages confirmed together: `done` resolves once the broker acknowledged (or
    refused) every message published into the batch and the batch is sealed.

    Made by `MqttClient.batch()`, filled by `MqttClient.publish_many()`, sealed by `seal()`.  A
    message that is refused (by the broker: MQTT 5 PUBACK reason code >= 0x80; or by the client
    before sending) does not fail the batch: it is listed in `refused` with its ordinal, its
    position among all the messages handed to the batch (0, 1, 2...).  A lost connection fails
    `done` with MqttLost, even when only one of its messages was still unacknowledged.  One
    future per batch instead of one per message: the PUBACKs only count down."""

    __slots__ = ("_count", "_outstanding", "_sealed", "done", "refused")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.refused: list[tuple[int, MqttPublishRefused]] = []
        self._count = 0  # messages handed to the batch: the next one's ordinal
        self._outstanding = 0  # QoS 1 messages sent and not yet acknowledged
        self._sealed = False

    def seal(self) -> None:
        """No more messages: `done` resolves when the last outstanding PUBACK has come."""
        self._sealed = True
        if not self._outstanding and not self.done.done():
            self.done.set_result(None)

    def drop(self) -> None:
        """After a lost connection: cancel the wait, or retrieve the error (no "exception never
        retrieved" noise)."""
        done = self.done
        if not done.done():
            done.cancel()
        elif not done.cancelled():
            done.exception()

    def _acked(self) -> None:
        self._outstanding -= 1
        if not self._outstanding and self._sealed and not self.done.done():
            self.done.set_result(None)


_IDLE, _CONNECTING, _CONNECTED, _CLOSED = range(4)
_FLUSH_BYTES: Final = 256 * 1024  # write at once, not at the end of the turn, past this many bytes
_TOPIC_CACHE_MAX: Final = 65536  # encoded topics kept (more than a gateway's points); emptied when full
_COALESCE_BELOW: Final = 64  # PUBACKs per read: fewer, and reading pauses for _COALESCE_DELAY
_COALESCE_DELAY: Final = 0.001  # seconds
_COALESCE_MIN_WINDOW: Final = 256  # in-flight slots; a smaller window pauses only when nobody waits
_DISCONNECT_WAIT: Final = 2.0  # seconds `disconnect()` waits for the socket to close
_SUBSCRIBE_IDS: Final = 16  # packet ids kept for SUBSCRIBEs awaiting their SUBACK
_MAX_WINDOW: Final = 0xFFFF - _SUBSCRIBE_IDS  # so a publish holding a slot always finds a free id


class _Protocol(asyncio.Protocol):
    """asyncio's side of the connection: forwards everything to the client."""

    __slots__ = ("client",)

    def __init__(self, client: MqttClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; uvloop's do not derive from asyncio.Transport, hence no isinstance
        self.client._connection_made(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.client._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost(exc)

    def pause_writing(self) -> None:
        self.client._paused = True

    def resume_writing(self) -> None:
        self.client._resume_writing()


class MqttClient:
    """One connection attempt to one broker; also an async context manager (connect/disconnect).

    `publish()` may be awaited by several tasks at once; everything else is for one owner.
    """

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
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f'MQTT protocol must be "5" or "3.1.1", not {protocol!r}')
        if keepalive <= 0:
            raise ValueError(f"keepalive must be positive, not {keepalive!r}")
        if will is not None and will.qos not in (0, 1, 2):
            raise ValueError(f"will QoS must be 0, 1 or 2, not {will.qos!r}")
        if not MIN_MAX_PACKET_SIZE <= max_packet_size <= MAX_PACKET_SIZE:
            raise ValueError(
                f"max_packet_size must be {MIN_MAX_PACKET_SIZE}..{MAX_PACKET_SIZE} bytes, not {max_packet_size!r}"
            )
        self.host = host
        self.port = port
        self.client_id = client_id
        self._where = f"{host}:{port}"
        self._username = username
        self._password = password if username is not None else None  # a password needs a user name
        self._tls = tls
        self._version = MQTT_5 if protocol == "5" else MQTT_311
        self._v5 = self._version == MQTT_5
        self._keepalive_wire = max(1, min(0xFFFF, int(keepalive)))
        self._keepalive = min(float(keepalive), float(self._keepalive_wire))
        self._will = will
        self._on_message = on_message
        self._max_inflight = max(1, min(_MAX_WINDOW, max_inflight))
        self.inflight_limit = self._max_inflight
        self.max_packet_size = max_packet_size
        self.dropped = 0  # incoming messages over max_packet_size, skipped (MQTT 3.1.1)
        self.connect_sent = False
        """CONNECT went out (the TCP and TLS connection was made): a failed `connect()` with this
        still False never reached the broker (Sparkplug counts CONNECT packets, not attempts)."""
        self.lost: asyncio.Future[None] | None = None

        self._state = _IDLE
        self._loop: asyncio.AbstractEventLoop  # set by connect(), used only after it
        self._up = False  # connected: CONNACK accepted, not yet closed
        self._transport: asyncio.Transport | None = None
        self._decoder = MqttDecoder(self._version, max_packet_size=max_packet_size)
        self._connack: asyncio.Future[Connack] | None = None
        self._closed: asyncio.Future[None] | None = None  # the socket is closed
        self._why = ""  # why the connection ended, for MqttLost messages
        self._closing = False  # disconnect() was called: a drop is expected, not a warning
        # sending
        self._buf = bytearray()
        self._flush_scheduled = False
        self._paused = False
        self._read_paused = False
        self._resume_waiters: list[asyncio.Future[None]] = []
        self._topics: dict[str, bytes] = {}
        self._max_packet = max_packet_size  # what we send: ours, or the broker's when smaller
        self._max_packet_broker = False  # the limit is the broker's (for the refusal's message)
        self._payload_room = max_packet_size - 8  # below this, topic + payload always fit
        self._qos1_ok = True  # MQTT 5: the broker's Maximum QoS is not 0
        self._retain_ok = True
        # QoS 1 in flight, indexed by packet id (a list: cheaper than a dict on the hot path):
        # the future to resolve on PUBACK (or the batch to count it in, with the message's
        # ordinal in the batch), and the topic for MqttPublishRefused (emptied on the PUBACK:
        # 65,535 slots holding the topics of messages long delivered were ~6 MB).  The slot count
        # includes slots handed to waiters that have not yet taken their packet id.
        self._pending: list[asyncio.Future[None] | PublishBatch | None] = [None] * 0x10000
        self._pending_topic: list[str] = [""] * 0x10000
        self._pending_ordinal: list[int] = [0] * 0x10000
        self._inflight = 0
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._subscribing: dict[int, str] = {}
        self._next_id = 0
        self._qos2_in: set[int] = set()  # incoming QoS 2 ids between PUBREC and PUBREL
        # keepalive
        self._last_send = 0.0
        self._last_recv = 0.0
        self._ping_sent = False
        self._pings = 0  # PINGREQs sent on this connection (keepalive and ping())
        self._pongs = 0  # PINGRESPs received
        self._ping_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._keepalive_on = True

    # -- life cycle --------------------------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the TCP (and TLS) connection, send CONNECT and wait for the CONNACK.

        Raises MqttLost with the reason when the broker cannot be reached, TLS fails, the broker
        refuses the connection (its reason: "not authorized", "bad user name or password"...) or
        nothing completes within `timeout` seconds."""
        if self._state != _IDLE:
            raise RuntimeError("an MqttClient connects once; make a new one to reconnect")
        loop = self._loop = asyncio.get_running_loop()
        self.lost = loop.create_future()
        self._closed = loop.create_future()
        connack = self._connack = loop.create_future()
        self._state = _CONNECTING
        where = self._where
        try:
            async with asyncio.timeout(timeout):
                try:
                    await loop.create_connection(
                        lambda: _Protocol(self),
                        self.host,
                        self.port,
                        ssl=self._tls,
                        server_hostname=self.host if self._tls is not None else None,
                    )
                except ssl.SSLError as exc:
                    detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
                    raise MqttLost(f"TLS with broker {where} failed: {detail}") from exc
                except OSError as exc:
                    over = " over TLS" if self._tls is not None else ""
                    detail = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
                    raise MqttLost(f"cannot connect to broker {where}{over}: {detail}") from exc
                ack = await connack
        except TimeoutError as exc:
            self._shutdown(f"broker {where} did not answer within {timeout:g} s")
            raise MqttLost(self._why) from exc
        except MqttLost as exc:
            self._shutdown(str(exc))
            raise
        except BaseException:
            self._shutdown("connection attempt abandoned")
            raise
        if ack.reason_code:  # refused: `_on_connack` has said why and closed
            raise MqttLost(self._why)

    def _on_connack(self, ack: Connack) -> None:
        """Apply the CONNACK at once, before any packet that arrived with it (a broker may send
        messages right after it)."""
        connack = self._connack
        assert connack is not None
        if ack.reason_code:
            why = f"broker {self._where} refused the connection: "
            why += reason_name(ack.reason_code, self._version, connack=True)
            if ack.reason_string:
                why += f" ({ack.reason_string})"
            connack.set_result(ack)
            self._shutdown(why)
            return
        if ack.session_present:
            # We always start clean: a broker that says it kept a session is wrong (§3.2.2.1.1,
            # 3.1.1 §3.2.2.2), and may replay messages of another life.  Close, after telling it.
            self._state = _CONNECTED  # the CONNACK made the connection: DISCONNECT may be sent
            self._protocol_error("CONNACK with Session Present 1 in answer to a clean start", 0x82)
            return
        if self._v5:
            self.inflight_limit = max(1, min(self._max_inflight, ack.receive_maximum))
            broker_max = ack.maximum_packet_size
            if broker_max is not None and broker_max < self._max_packet:
                self._max_packet = broker_max
                self._max_packet_broker = True
                self._payload_room = self._max_packet - 8
            self._qos1_ok = ack.maximum_qos >= 1
            self._retain_ok = ack.retain_available
            server_keepalive = ack.server_keep_alive
            if server_keepalive is not None:  # the broker's value replaces ours (§3.2.2.3.14)
                self._keepalive = float(server_keepalive)
                self._keepalive_on = server_keepalive > 0
        loop = self._loop
        self._state = _CONNECTED
        self._up = True
        self._create_future = loop.create_future
        self._call_soon = loop.call_soon
        self._last_recv = loop.time()
        if self._keepalive_on:
            self._timer = loop.call_later(self._tick_interval(), self._keepalive_tick)
        else:
            log.info(
                "broker %s turned keepalive off (Server Keep Alive 0): relying on TCP keepalive", self._where
            )
            self._tcp_keepalive()
        connack.set_result(ack)

    def _tcp_keepalive(self) -> None:
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    async def disconnect(self, *, with_will: bool = False) -> None:
        """Send DISCONNECT (the will is not published), close the socket, and fail whatever is
        still pending with MqttLost("disconnected").  Safe to call in any state.

        `with_will` (MQTT 5 only): reason code 0x04, "disconnect with will message": the broker
        publishes the will all the same (Sparkplug's NDEATH)."""
        self._closing = True
        transport = self._transport
        if self._state == _CONNECTED and transport is not None and not transport.is_closing():
            reason = 0x04 if with_will and self._v5 else 0
            self._buf += encode_disconnect(version=self._version, reason_code=reason)
            self._flush()
        self._shutdown("disconnected")
        closed = self._closed
        if transport is not None and closed is not None and not closed.done():
            try:
                async with asyncio.timeout(_DISCONNECT_WAIT):
                    await asyncio.shield(closed)
            except TimeoutError:
                transport.abort()

    async def __aenter__(self) -> MqttClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    @property
    def connected(self) -> bool:
        return self._up

    async def ping(self) -> None:
        """Send PINGREQ and wait for its PINGRESP: the broker has then read (and routed) everything
        sent before it on this connection, QoS 0 messages included.  Raises MqttLost when the
        connection ends first."""
        if not self._up:
            raise MqttLost(self._why or "not connected")
        self._pings += 1
        fut: asyncio.Future[None] = self._create_future()
        self._ping_waiters.append((self._pings, fut))
        self._send(PINGREQ)
        await fut

    # -- publishing --------------------------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue a message; it is written at the end of this event-loop turn.

        QoS 1: waits for a free in-flight slot (and for the transport to drain, when the broker
        reads slower than we write), then returns a future resolved on PUBACK, failed with
        MqttLost if the connection ends first or with MqttPublishRefused if the broker refuses
        the message.  QoS 0: returns None.  Raises MqttLost when not connected, and
        MqttPublishRefused for a message the broker cannot take (see the module docstring)."""
        if not self._up:
            raise MqttLost(self._why or "not connected")
        if self._paused:
            await self._wait_resume()
            if not self._up:
                raise MqttLost(self._why)
        topic_field = self._topics.get(topic)
        if topic_field is None:
            topic_field = self._topic_field(topic)
        if len(payload) + len(topic_field) > self._payload_room:
            self._check_size(topic, topic_field, payload, qos)
        if retain and not self._retain_ok:
            raise MqttPublishRefused(topic, 0x9A, "the broker does not support retained messages", local=True)
        if qos == 1 and self._qos1_ok:
            if self._inflight < self.inflight_limit and not self._slot_waiters:
                self._inflight += 1
            else:
                await self._wait_slot()  # returns with a slot taken for us
                if not self._up:  # lost while the slot was on its way to us
                    raise MqttLost(self._why)
            pending = self._pending
            packet_id = self._next_id
            while True:  # 1..65535, skipping ids still in flight
                packet_id = packet_id % 0xFFFF + 1
                if pending[packet_id] is None and packet_id not in self._subscribing:
                    break
            self._next_id = packet_id
            fut: asyncio.Future[None] | None = self._create_future()
            pending[packet_id] = fut
            self._pending_topic[packet_id] = topic
            self._buf += pack_publish(topic_field, payload, 0x33 if retain else 0x32, packet_id, self._v5)
        elif qos == 0:
            fut = None
            self._buf += pack_publish(topic_field, payload, 0x31 if retain else 0x30, 0, self._v5)
        elif qos == 1:
            raise MqttPublishRefused(topic, 0x9B, "the broker's Maximum QoS is 0", local=True)
        else:
            raise ValueError(f"publish supports QoS 0 and 1, not {qos!r}")
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._call_soon(self._flush)
        elif len(self._buf) >= _FLUSH_BYTES:
            self._flush()
        return fut

    def batch(self) -> PublishBatch:
        """A new, empty batch for `publish_many()`."""
        return PublishBatch(self._loop.create_future())

    async def publish_many(
        self,
        messages: Iterable[tuple[str, bytes]],
        batch: PublishBatch,
        *,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        """Queue (topic, payload) messages into `batch`, in order, each as `publish()` queues one:
        a QoS 1 message waits for an in-flight slot (and for the transport to drain), but gets no
        future of its own: the batch counts its PUBACK.  A message refused before it is sent
        (see `publish()`) is listed in `batch.refused` and the others go out.  May be called
        several times for one batch (with different QoS and retain); then `batch.seal()` and
        await `batch.done`.  Raises MqttLost when not connected or when the connection is lost
        while waiting (`batch.done` then fails too if any of its messages is unacknowledged)."""
        if qos not in (0, 1):
            raise ValueError(f"publish supports QoS 0 and 1, not {qos!r}")
        pending = self._pending
        pending_topic = self._pending_topic
        pending_ordinal = self._pending_ordinal
        subscribing = self._subscribing
        topics = self._topics
        v5 = self._v5
        flags = (0x33 if retain else 0x32) if qos else (0x31 if retain else 0x30)
        for topic, payload in messages:
            ordinal = batch._count
            batch._count = ordinal + 1
            if not self._up:
                raise MqttLost(self._why or "not connected")
            if self._paused:
                await self._wait_resume()
                if not self._up:
                    raise MqttLost(self._why)
            topic_field = topics.get(topic)
            try:
                if topic_field is None:
                    topic_field = self._topic_field(topic)
                if len(payload) + len(topic_field) > self._payload_room:
                    self._check_size(topic, topic_field, payload, qos)
                if retain and not self._retain_ok:
                    raise MqttPublishRefused(
                        topic, 0x9A, "the broker does not support retained messages", local=True
                    )
                if qos and not self._qos1_ok:
                    raise MqttPublishRefused(topic, 0x9B, "the broker's Maximum QoS is 0", local=True)
            except MqttPublishRefused as exc:
                batch.refused.append((ordinal, exc))
                continue
            if qos:
                if self._inflight < self.inflight_limit and not self._slot_waiters:
                    self._inflight += 1
                else:
                    await self._wait_slot()  # returns with a slot taken for us
                    if not self._up:  # lost while the slot was on its way to us
                        raise MqttLost(self._why)
                packet_id = self._next_id
                while True:  # 1..65535, skipping ids still in flight
                    packet_id = packet_id % 0xFFFF + 1
                    if pending[packet_id] is None and packet_id not in subscribing:
                        break
                self._next_id = packet_id
                pending[packet_id] = batch
                pending_topic[packet_id] = topic
                pending_ordinal[packet_id] = ordinal
                batch._outstanding += 1
                self._buf += pack_publish(topic_field, payload, flags, packet_id, v5)
            else:
                self._buf += pack_publish(topic_field, payload, flags, 0, v5)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._call_soon(self._flush)
            elif len(self._buf) >= _FLUSH_BYTES:
                self._flush()

    def _topic_field(self, topic: str) -> bytes:
        try:
            field = publish_topic(topic)
        except ValueError as exc:
            raise MqttPublishRefused(topic, 0x90, str(exc), local=True) from None
        if len(self._topics) >= _TOPIC_CACHE_MAX:
            self._topics.clear()
        self._topics[topic] = field
        return field

    def _check_size(self, topic: str, topic_field: bytes, payload: bytes, qos: int) -> None:
        length = len(topic_field) + len(payload) + (2 if qos else 0) + (1 if self._v5 else 0)
        size = 1 + len(encode_varint(min(length, 268_435_455))) + length
        if size > self._max_packet:
            whose = "the broker's Maximum Packet Size" if self._max_packet_broker else "max_packet_size"
            raise MqttPublishRefused(
                topic, 0x95, f"{size} bytes exceed {whose} of {self._max_packet}", local=True
            )

    async def _wait_slot(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._slot_waiters.append(waiter)
        if self._read_paused and self.inflight_limit < _COALESCE_MIN_WINDOW:
            self._resume_reading()  # the PUBACK we wait for may be in the socket already
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release_slots(1)  # handed to us just before we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            raise

    def _release_slots(self, count: int) -> None:
        """`count` messages were acknowledged: hand free slots to waiting publishers, in order.

        As soon as one slot is free, not once "enough" are: holding our next write back can
        stall against a broker that leaves Nagle's algorithm on (mosquitto does by default,
        `set_tcp_nodelay false`), whose next PUBACK then waits for our delayed TCP ACK."""
        self._inflight -= count
        waiters = self._slot_waiters
        if waiters:
            while waiters and self._inflight < self.inflight_limit:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    self._inflight += 1  # the slot now belongs to that waiter

    async def _wait_resume(self) -> None:
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._resume_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._resume_waiters:
                self._resume_waiters.remove(waiter)

    def _resume_writing(self) -> None:
        self._paused = False
        waiters, self._resume_waiters = self._resume_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _send(self, data: bytes) -> None:
        """Queue bytes for this turn's write (PUBACKs, SUBSCRIBE, PINGREQ)."""
        self._buf += data
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        buf = self._buf
        if not buf:
            return
        transport = self._transport
        self._buf = bytearray()  # the transport may keep `buf`: never touch it again
        if transport is not None and not transport.is_closing():
            transport.write(buf)
            self._last_send = self._loop.time()

    # -- subscribing -------------------------------------------------------------------------------

    def subscribe(self, topic: str, qos: int = 1, *, retain_as_published: bool = False) -> None:
        """Send SUBSCRIBE; a refusal in the SUBACK is logged.  Each connection starts clean, so
        the caller subscribes again after reconnecting.  `retain_as_published` (MQTT 5; ignored
        in 3.1.1, which has no such option) keeps the retain flag of messages published while we
        are subscribed, so that a retained message can be told from a live one."""
        if self._state != _CONNECTED:
            raise MqttLost(self._why or "not connected")
        if len(self._subscribing) >= _SUBSCRIBE_IDS:
            self._shutdown(f"broker {self._where} left {_SUBSCRIBE_IDS} SUBSCRIBEs unanswered")
            raise MqttLost(self._why)
        packet_id = self._next_id
        while True:
            packet_id = packet_id + 1 if packet_id < 0xFFFF else 1
            if self._pending[packet_id] is None and packet_id not in self._subscribing:
                break
        self._next_id = packet_id
        self._subscribing[packet_id] = topic
        self._send(
            encode_subscribe(
                packet_id,
                topic,
                qos,
                version=self._version,
                retain_as_published=retain_as_published and self._v5,
            )
        )

    # -- receiving ---------------------------------------------------------------------------------

    def _connection_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        if self._state != _CONNECTING:  # abandoned while the connection was being made
            transport.abort()
            return
        self._last_send = self._last_recv = self._loop.time()
        will = self._will
        self.connect_sent = True
        self._send(
            encode_connect(
                client_id=self.client_id,
                version=self._version,
                keepalive=self._keepalive_wire,
                clean_start=True,
                will_topic=will.topic if will is not None else None,
                will_payload=will.payload if will is not None else b"",
                will_qos=will.qos if will is not None else 0,
                will_retain=will.retain if will is not None else False,
                username=self._username,
                password=self._password,
                session_expiry=0,
                receive_maximum=0xFFFF,  # incoming messages are acknowledged as they arrive
                maximum_packet_size=self.max_packet_size,
            )
        )

    def _data_received(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return
        self._last_recv = self._loop.time()
        self._ping_sent = False
        try:
            acked, packets = self._decoder.feed_acks(data)
        except MqttProtocolError as exc:
            self._protocol_error(str(exc), exc.reason_code)
            return
        if acked:  # the hot path: plain PUBACKs, as packet ids
            if self._state != _CONNECTED:
                self._protocol_error("PUBACK before CONNACK", 0x82)
                return
            pending, topics = self._pending, self._pending_topic
            freed = 0
            for packet_id in acked:
                fut = pending[packet_id]
                if fut is None:
                    log.warning("broker %s acknowledged unknown packet id %d", self._where, packet_id)
                    continue
                pending[packet_id] = None
                topics[packet_id] = ""  # a topic is kept while its message is in flight, no longer
                if isinstance(fut, PublishBatch):
                    fut._outstanding -= 1
                    if not fut._outstanding and fut._sealed and not fut.done.done():
                        fut.done.set_result(None)
                elif not fut.done():  # the owner may have cancelled it
                    fut.set_result(None)
                freed += 1
            self._release_slots(freed)
            if len(acked) < _COALESCE_BELOW and not self._read_paused:
                self._coalesce()
        for packet in packets:
            self._packet(packet)
            if self._state == _CLOSED:
                return

    def _coalesce(self) -> None:
        """PUBACKs trickle in, a few per read (a broker acknowledges as it goes): let them
        gather in the socket for a moment instead of waking up for every few of them.  Not while
        a publisher waits for one of only a few slots: it needs each as soon as it is free."""
        if self._slot_waiters and self.inflight_limit < _COALESCE_MIN_WINDOW:
            return
        transport = self._transport
        if transport is not None:
            transport.pause_reading()
            self._read_paused = True
            self._loop.call_later(_COALESCE_DELAY, self._resume_reading)

    def _resume_reading(self) -> None:
        self._read_paused = False
        transport = self._transport
        if self._up and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _packet(self, packet: Packet) -> None:
        if self._state == _CONNECTING:
            connack = self._connack
            if isinstance(packet, Connack) and connack is not None and not connack.done():
                self._on_connack(packet)
            else:
                self._protocol_error(f"expected CONNACK first, got {packet!r}", 0x82)
            return
        if isinstance(packet, Puback):  # one with a reason code or properties (MQTT 5)
            fut = self._pending[packet.packet_id]
            if fut is None:
                log.warning("broker %s acknowledged unknown packet id %d", self._where, packet.packet_id)
                return
            self._pending[packet.packet_id] = None
            topic, self._pending_topic[packet.packet_id] = self._pending_topic[packet.packet_id], ""
            if isinstance(fut, PublishBatch):
                if packet.reason_code >= 0x80:
                    refusal = MqttPublishRefused(topic, packet.reason_code, packet.reason_string)
                    fut.refused.append((self._pending_ordinal[packet.packet_id], refusal))
                fut._acked()
            elif not fut.done():
                if packet.reason_code < 0x80:
                    fut.set_result(None)
                else:
                    fut.set_exception(MqttPublishRefused(topic, packet.reason_code, packet.reason_string))
            self._release_slots(1)
        elif isinstance(packet, Publish):
            self._incoming(packet)
        elif isinstance(packet, Pubrel):
            if packet.packet_id in self._qos2_in:
                self._qos2_in.discard(packet.packet_id)
                self._send(encode_ack(PUBCOMP, packet.packet_id, version=self._version))
            else:  # MQTT 5: "packet identifier not found" (3.1.1 has no reason codes)
                reason = 0x92 if self._v5 else 0
                self._send(encode_ack(PUBCOMP, packet.packet_id, version=self._version, reason_code=reason))
        elif isinstance(packet, OversizedPublish):
            self._oversized(packet)
        elif isinstance(packet, Suback) and not isinstance(packet, Unsuback):
            sub_topic = self._subscribing.pop(packet.packet_id, None)
            if sub_topic is None:
                log.warning("broker %s sent a SUBACK for unknown packet id %d", self._where, packet.packet_id)
            for code in packet.reason_codes:
                if code >= 0x80:
                    log.warning(
                        "broker %s refused the subscription to %s: %s",
                        self._where,
                        sub_topic,
                        reason_name(code, self._version) if self._v5 else f"failure (0x{code:02X})",
                    )
        elif isinstance(packet, Pingresp):
            self._pongs += 1
            while self._ping_waiters and self._ping_waiters[0][0] <= self._pongs:
                _, fut = self._ping_waiters.pop(0)
                if not fut.done():
                    fut.set_result(None)
        elif isinstance(packet, Unsuback):
            pass
        elif isinstance(packet, Disconnect):
            why = f"broker {self._where} closed the connection: {reason_name(packet.reason_code)}"
            if packet.reason_string:
                why += f" ({packet.reason_string})"
            log.warning("%s", why)
            self._why = why
            self._shutdown(why)
        elif isinstance(packet, Connack):
            self._protocol_error("a second CONNACK", 0x82)
        elif isinstance(packet, Ack):  # PUBREC/PUBCOMP: we never publish at QoS 2
            self._protocol_error(f"{packet!r} for a QoS 2 message this client never sent", 0x82)

    def _incoming(self, msg: Publish) -> None:
        if msg.qos == 1:
            self._send(encode_ack(PUBACK, msg.packet_id, version=self._version))
        elif msg.qos == 2:
            self._send(encode_ack(PUBREC, msg.packet_id, version=self._version))
            if msg.packet_id in self._qos2_in:
                return  # a re-sent QoS 2 message we already delivered
            self._qos2_in.add(msg.packet_id)
        handler = self._on_message
        if handler is None:
            return
        try:
            handler(IncomingMessage(msg.topic, msg.payload, msg.qos, msg.retain))
        except Exception:  # a bad message must never take the connection down
            log.exception("error handling message on %s", msg.topic)

    def _oversized(self, msg: OversizedPublish) -> None:
        """An MQTT 3.1.1 broker sent a message over our max_packet_size: acknowledge it (or it
        would be sent again at once), drop it, say so."""
        if msg.qos == 1:
            self._send(encode_ack(PUBACK, msg.packet_id, version=self._version))
        elif msg.qos == 2:
            self._send(encode_ack(PUBREC, msg.packet_id, version=self._version))
            self._qos2_in.add(msg.packet_id)
        self.dropped += 1
        log.warning(
            "dropped a message of %d bytes on %s from broker %s: larger than max_packet_size (%d)",
            msg.size,
            msg.topic,
            self._where,
            self.max_packet_size,
        )

    def _protocol_error(self, what: str, reason_code: int) -> None:
        why = f"protocol error from broker {self._where}: {what}"
        log.error("%s; closing the connection", why)
        if self._v5 and self._state == _CONNECTED:
            self._buf += encode_disconnect(version=self._version, reason_code=reason_code)
            self._flush()
        self._shutdown(why)

    def _connection_lost(self, exc: Exception | None) -> None:
        closed = self._closed
        if closed is not None and not closed.done():
            closed.set_result(None)
        if self._state == _CLOSED:
            return
        why = f"connection to broker {self._where} lost"
        if exc is not None:
            why += f": {exc}"
        if self._state == _CONNECTING:
            why = f"broker {self._where} closed the connection before CONNACK"
            if self._v5:  # RabbitMQ 3.x, for one, answers an MQTT 5 CONNECT so
                why += " (a broker without MQTT 5 may do that: try protocol 3.1.1)"
        elif self._inflight:
            why += self._unacknowledged()
        if not self._closing:
            log.warning("%s", why)
        self._shutdown(why)

    def _unacknowledged(self) -> str:
        """'; 5 message(s) unacknowledged, the oldest on 'a', 'b', 'c'': a broker that refuses a
        message without reason codes (MQTT 3.1.1) may close the connection instead, so name the
        topics of the first three in the order they were sent."""
        pending = self._pending
        count = 0
        oldest: list[str] = []
        after = self._next_id  # ids are handed out in order from 1 to 65535, then again from 1
        for packet_id in itertools.chain(range(after + 1, 0x10000), range(1, after + 1)):
            if pending[packet_id] is not None:
                count += 1
                topic = self._pending_topic[packet_id]
                if len(oldest) < 3 and topic not in oldest:
                    oldest.append(topic)
        if not count:
            return ""
        return f"; {count} message(s) unacknowledged, the oldest on {', '.join(map(repr, oldest))}"

    # -- keepalive ---------------------------------------------------------------------------------

    def _tick_interval(self) -> float:
        return max(0.05, self._keepalive / 4)

    def _keepalive_tick(self) -> None:
        self._timer = None
        if self._state != _CONNECTED:
            return
        now = self._loop.time()
        keepalive = self._keepalive
        if now - self._last_recv >= 1.5 * keepalive:
            why = (
                f"no answer from broker {self._where} for {now - self._last_recv:.1f} s "
                f"(keepalive {keepalive:g} s): connection presumed dead"
            )
            log.warning("%s", why)
            self._shutdown(why)
            return
        if now - self._last_send >= keepalive or (now - self._last_recv >= keepalive and not self._ping_sent):
            self._ping_sent = True
            self._pings += 1
            self._buf += PINGREQ
            self._flush()
        self._timer = self._loop.call_later(self._tick_interval(), self._keepalive_tick)

    # -- the end -----------------------------------------------------------------------------------

    def _shutdown(self, why: str) -> None:
        """The connection is over: fail everything pending, resolve `lost`, close the socket."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._up = False
        self._why = why or "connection closed"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_exception(MqttLost(self._why))
            # connect() awaits it only once the socket is open: when that failed, nobody will,
            # and asyncio would log "Future exception was never retrieved" for a handled error
            connack.exception()
        pending = self._pending
        for packet_id, fut in enumerate(pending):
            if fut is not None:
                pending[packet_id] = None
                self._pending_topic[packet_id] = ""
                done = fut.done if isinstance(fut, PublishBatch) else fut
                if not done.done():
                    done.set_exception(MqttLost(self._why))
        self._inflight = 0
        waiters = list(self._slot_waiters) + self._resume_waiters
        self._slot_waiters.clear()
        self._resume_waiters = []
        waiters.extend(fut for _, fut in self._ping_waiters)
        self._ping_waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(MqttLost(self._why))
        self._subscribing.clear()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()  # after writing what is buffered (a DISCONNECT, say)


async def await_acks(
    futures: Sequence[asyncio.Future[None]], refused: Callable[[int, MqttPublishRefused], None]
) -> None:
    """Wait for each publish's acknowledgement, in order (cheaper than gather: PUBACKs come in
    order); a message the broker refused goes to `refused` with its index in `futures`.  Raises
    MqttLost."""
    for i, fut in enumerate(futures):
        try:
            await fut
        except MqttPublishRefused as exc:
            refused(i, exc)


def drop_acks(futures: Sequence[asyncio.Future[None]]) -> None:
    """After a lost connection: cancel the waits still pending, and retrieve the errors of the
    others (no "exception never retrieved" noise)."""
    for fut in futures:
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled():
            fut.exception()


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
