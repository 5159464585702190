"""MQTT 3.1.1 and 5.0 packets: encoders and an incremental decoder, with no I/O.

Written from the OASIS standards (MQTT Version 3.1.1, 2014, and MQTT Version 5.0, 2019); section
numbers below refer to them ("§3.3" is PUBLISH in both).  Only what a client needs is here: the
encoders build the packets a client sends (CONNECT, PUBLISH, PUBACK/PUBREC/PUBCOMP, SUBSCRIBE,
PINGREQ, DISCONNECT) and the decoder parses the packets a server sends (CONNACK, PUBLISH, the
four publish acknowledgements, SUBACK, UNSUBACK, PINGRESP, and in MQTT 5 DISCONNECT).

Errors:

- a caller's mistake while encoding (a topic with a wildcard, a QoS of 3, a string over 65,535
  bytes) raises `ValueError`;
- bytes from the network that are not a valid packet stream raise `MqttProtocolError`, and
  nothing else: the decoder checks every length against the bytes it has before reading them
  (fuzzed with hypothesis in tests/unit/test_mqtt_codec.py).  After an error the decoder stays
  failed: an MQTT stream cannot be re-synchronised, the connection must be closed.

The hot path of a publisher is `publish_topic()` (validate and length-prefix a topic once, cache
it) plus `pack_publish()` (a few concatenations), and on the way back `MqttDecoder.feed()`, which
recognises the common 4-byte PUBACK without the general parser.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping
from typing import Any, Final

from picogate._errors import PicogateError

__all__ = [
    "MQTT_5",
    "MQTT_311",
    "PINGREQ",
    "Ack",
    "Connack",
    "Disconnect",
    "MqttDecoder",
    "MqttProtocolError",
    "OversizedPublish",
    "Packet",
    "Pingresp",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "Suback",
    "Unsuback",
    "decode_varint",
    "encode_ack",
    "encode_connect",
    "encode_disconnect",
    "encode_properties",
    "encode_publish",
    "encode_subscribe",
    "encode_varint",
    "pack_publish",
    "publish_topic",
    "reason_name",
]


class MqttProtocolError(PicogateError):
    """The peer sent bytes that are not a valid MQTT packet stream (malformed packet or protocol
    error); the message says what was wrong and where.  `reason_code` is the MQTT 5 reason code a
    client sends in its DISCONNECT before closing: 0x81 (malformed packet) unless said otherwise,
    0x95 (packet too large) for a packet over the client's Maximum Packet Size."""

    def __init__(self, message: str, reason_code: int = 0x81) -> None:
        super().__init__(message)
        self.reason_code = reason_code


MQTT_311: Final = 4  # protocol level in CONNECT (§3.1.2.2)
MQTT_5: Final = 5

MAX_REMAINING_LENGTH: Final = 268_435_455  # four bytes of 7 bits (§1.5.5 / §2.2.3)
MAX_PACKET_SIZE: Final = 1 + 4 + MAX_REMAINING_LENGTH

# control packet types (§2.1.2)
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ_TYPE: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14
AUTH: Final = 15

_TYPE_NAMES: Final = {
    0: "reserved type 0",
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ_TYPE: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

PINGREQ: Final = b"\xc0\x00"

# --------------------------------------------------------------------------------------------------
# reason codes
# --------------------------------------------------------------------------------------------------

# MQTT 3.1.1 CONNACK return codes (§3.2.2.3)
CONNACK_RETURN_CODES_311: Final = {
    0: "connection accepted",
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

# MQTT 5 reason codes (§2.4); 0x00 reads "success" here whatever the packet
REASON_NAMES_5: Final = {
    0x00: "success",
    0x01: "granted QoS 1",
    0x02: "granted QoS 2",
    0x04: "disconnect with will message",
    0x10: "no matching subscribers",
    0x11: "no subscription existed",
    0x18: "continue authentication",
    0x19: "re-authenticate",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x92: "packet identifier not found",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason_name(code: int, version: int = MQTT_5, *, connack: bool = False) -> str:
    """'not authorized (0x87)'; with `connack` and MQTT 3.1.1, the CONNACK return code's name."""
    if connack and version == MQTT_311:
        return f"{CONNACK_RETURN_CODES_311.get(code, 'unknown return code')} (return code {code})"
    return f"{REASON_NAMES_5.get(code, 'unknown reason code')} (0x{code:02X})"


# --------------------------------------------------------------------------------------------------
# properties (MQTT 5, §2.2.2)
# --------------------------------------------------------------------------------------------------

PAYLOAD_FORMAT_INDICATOR: Final = 0x01
MESSAGE_EXPIRY_INTERVAL: Final = 0x02
CONTENT_TYPE: Final = 0x03
RESPONSE_TOPIC: Final = 0x08
CORRELATION_DATA: Final = 0x09
SUBSCRIPTION_IDENTIFIER: Final = 0x0B
SESSION_EXPIRY_INTERVAL: Final = 0x11
ASSIGNED_CLIENT_IDENTIFIER: Final = 0x12
SERVER_KEEP_ALIVE: Final = 0x13
AUTHENTICATION_METHOD: Final = 0x15
AUTHENTICATION_DATA: Final = 0x16
REQUEST_PROBLEM_INFORMATION: Final = 0x17
WILL_DELAY_INTERVAL: Final = 0x18
REQUEST_RESPONSE_INFORMATION: Final = 0x19
RESPONSE_INFORMATION: Final = 0x1A
SERVER_REFERENCE: Final = 0x1C
REASON_STRING: Final = 0x1F
RECEIVE_MAXIMUM: Final = 0x21
TOPIC_ALIAS_MAXIMUM: Final = 0x22
TOPIC_ALIAS: Final = 0x23
MAXIMUM_QOS: Final = 0x24
RETAIN_AVAILABLE: Final = 0x25
USER_PROPERTY: Final = 0x26
MAXIMUM_PACKET_SIZE: Final = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE: Final = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE: Final = 0x29
SHARED_SUBSCRIPTION_AVAILABLE: Final = 0x2A

_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_WILL = 0  # pseudo packet type for the will properties in CONNECT's payload

# identifier → (name, data type, packet types it may appear in)
_PROPERTIES: Final[dict[int, tuple[str, int, frozenset[int]]]] = {
    PAYLOAD_FORMAT_INDICATOR: ("Payload Format Indicator", _BYTE, frozenset({PUBLISH, _WILL})),
    MESSAGE_EXPIRY_INTERVAL: ("Message Expiry Interval", _FOUR, frozenset({PUBLISH, _WILL})),
    CONTENT_TYPE: ("Content Type", _UTF8, frozenset({PUBLISH, _WILL})),
    RESPONSE_TOPIC: ("Response Topic", _UTF8, frozenset({PUBLISH, _WILL})),
    CORRELATION_DATA: ("Correlation Data", _BINARY, frozenset({PUBLISH, _WILL})),
    SUBSCRIPTION_IDENTIFIER: ("Subscription Identifier", _VARINT, frozenset({PUBLISH, SUBSCRIBE})),
    SESSION_EXPIRY_INTERVAL: ("Session Expiry Interval", _FOUR, frozenset({CONNECT, CONNACK, DISCONNECT})),
    ASSIGNED_CLIENT_IDENTIFIER: ("Assigned Client Identifier", _UTF8, frozenset({CONNACK})),
    SERVER_KEEP_ALIVE: ("Server Keep Alive", _TWO, frozenset({CONNACK})),
    AUTHENTICATION_METHOD: ("Authentication Method", _UTF8, frozenset({CONNECT, CONNACK, AUTH})),
    AUTHENTICATION_DATA: ("Authentication Data", _BINARY, frozenset({CONNECT, CONNACK, AUTH})),
    REQUEST_PROBLEM_INFORMATION: ("Request Problem Information", _BYTE, frozenset({CONNECT})),
    WILL_DELAY_INTERVAL: ("Will Delay Interval", _FOUR, frozenset({_WILL})),
    REQUEST_RESPONSE_INFORMATION: ("Request Response Information", _BYTE, frozenset({CONNECT})),
    RESPONSE_INFORMATION: ("Response Information", _UTF8, frozenset({CONNACK})),
    SERVER_REFERENCE: ("Server Reference", _UTF8, frozenset({CONNACK, DISCONNECT})),
    REASON_STRING: (
        "Reason String",
        _UTF8,
        frozenset({CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH}),
    ),
    RECEIVE_MAXIMUM: ("Receive Maximum", _TWO, frozenset({CONNECT, CONNACK})),
    TOPIC_ALIAS_MAXIMUM: ("Topic Alias Maximum", _TWO, frozenset({CONNECT, CONNACK})),
    TOPIC_ALIAS: ("Topic Alias", _TWO, frozenset({PUBLISH})),
    MAXIMUM_QOS: ("Maximum QoS", _BYTE, frozenset({CONNACK})),
    RETAIN_AVAILABLE: ("Retain Available", _BYTE, frozenset({CONNACK})),
    USER_PROPERTY: ("User Property", _PAIR, frozenset(_TYPE_NAMES) | {_WILL}),
    MAXIMUM_PACKET_SIZE: ("Maximum Packet Size", _FOUR, frozenset({CONNECT, CONNACK})),
    WILDCARD_SUBSCRIPTION_AVAILABLE: ("Wildcard Subscription Available", _BYTE, frozenset({CONNACK})),
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: ("Subscription Identifier Available", _BYTE, frozenset({CONNACK})),
    SHARED_SUBSCRIPTION_AVAILABLE: ("Shared Subscription Available", _BYTE, frozenset({CONNACK})),
}
# these may appear more than once; every other property at most once (§2.2.2.2)
_REPEATABLE: Final = frozenset({USER_PROPERTY, SUBSCRIPTION_IDENTIFIER})
# byte-valued properties whose only legal values are 0 and 1
_BOOLEAN: Final = frozenset(
    {
        PAYLOAD_FORMAT_INDICATOR,
        REQUEST_PROBLEM_INFORMATION,
        REQUEST_RESPONSE_INFORMATION,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
    }
)
# properties that must not be zero
_NONZERO: Final = frozenset({RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, TOPIC_ALIAS, SUBSCRIPTION_IDENTIFIER})

Properties = dict[int, Any]
"""Decoded properties by identifier: int, str, bytes; a list for User Property ((name, value)
pairs) and Subscription Identifier (ints)."""

_NO_PROPERTIES: Final[Mapping[int, Any]] = {}

# --------------------------------------------------------------------------------------------------
# primitives (§1.5)
# --------------------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Variable Byte Integer (§1.5.5 / §2.2.3): 0..268,435,455 in one to four bytes."""
    if value < 128:
        if value < 0:
            raise ValueError(f"variable byte integer {value} is negative")
        return bytes((value,))
    if value > MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer {value} exceeds {MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes | bytearray, pos: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """Decode a Variable Byte Integer at `pos`: (value, position after it), or None when `data`
    ends (at `end`) before the integer does.  More than four bytes, or a non-minimal encoding (a
    last byte of zero after others), raises MqttProtocolError."""
    if end is None:
        end = len(data)
    value = 0
    shift = 0
    i = pos
    while True:
        if i >= end:
            return None
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            if byte == 0 and i - pos > 1:
                raise MqttProtocolError(f"variable byte integer at offset {pos} is not minimally encoded")
            return value, i
        shift += 7
        if shift == 28:
            raise MqttProtocolError(f"variable byte integer at offset {pos} is longer than 4 bytes")


def _utf8(text: str, what: str) -> bytes:
    """UTF-8 Encoded String (§1.5.3 / §1.5.4): two-byte length, then the bytes; no U+0000."""
    raw = text.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
    if len(raw) > 0xFFFF:
        raise ValueError(f"{what} is {len(raw)} bytes of UTF-8; MQTT allows at most 65535")
    if "\x00" in text:
        raise ValueError(f"{what} contains the null character U+0000, which MQTT forbids")
    return len(raw).to_bytes(2, "big") + raw


def _binary(data: bytes, what: str) -> bytes:
    """Binary Data (§1.5.6 in MQTT 5; the will payload and password in 3.1.1)."""
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is {len(data)} bytes; MQTT allows at most 65535")
    return len(data).to_bytes(2, "big") + bytes(data)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos!r}")


def _check_version(version: int) -> None:
    if version not in (MQTT_311, MQTT_5):
        raise ValueError(
            f"protocol level must be {MQTT_311} (MQTT 3.1.1) or {MQTT_5} (MQTT 5), not {version!r}"
        )


def _check_packet_id(packet_id: int) -> None:
    if not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier must be 1..65535, not {packet_id!r}")


# --------------------------------------------------------------------------------------------------
# encoders (client → server)
# --------------------------------------------------------------------------------------------------


def encode_properties(properties: Mapping[int, Any], packet_type: int = PUBLISH) -> bytes:
    """Property Length followed by the properties (§2.2.2).  Values as `Properties` documents;
    User Property takes a list of (name, value) pairs, Subscription Identifier an int or a list."""
    out = bytearray()
    for ident, value in properties.items():
        spec = _PROPERTIES.get(ident)
        if spec is None:
            raise ValueError(f"unknown property identifier 0x{ident:02X}")
        name, kind, allowed = spec
        if packet_type not in allowed:
            raise ValueError(f"property {name} is not allowed in {_TYPE_NAMES.get(packet_type, 'a will')}")
        values = value if ident in _REPEATABLE and isinstance(value, list) else [value]
        for item in values:
            out += encode_varint(ident)
            if kind == _BYTE:
                out.append(int(item))
            elif kind == _TWO:
                out += int(item).to_bytes(2, "big")
            elif kind == _FOUR:
                out += int(item).to_bytes(4, "big")
            elif kind == _VARINT:
                out += encode_varint(int(item))
            elif kind == _UTF8:
                out += _utf8(item, name)
            elif kind == _BINARY:
                out += _binary(item, name)
            else:
                key, val = item
                out += _utf8(key, name) + _utf8(val, name)
    return encode_varint(len(out)) + bytes(out)


def encode_connect(
    *,
    client_id: str,
    version: int = MQTT_5,
    keepalive: int = 60,
    clean_start: bool = True,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
    username: str | None = None,
    password: bytes | str | None = None,
    session_expiry: int | None = 0,
    receive_maximum: int | None = None,
    maximum_packet_size: int | None = None,
) -> bytes:
    """CONNECT (§3.1).  `session_expiry`, `receive_maximum` and `maximum_packet_size` are MQTT 5
    properties (None leaves a property out; the spec's defaults are 0, 65535 and no limit); MQTT
    3.1.1 ignores them.  In 3.1.1 a password needs a user name (§3.1.2.9)."""
    _check_version(version)
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keep alive must be 0..65535 seconds, not {keepalive!r}")
    flags = 0x02 if clean_start else 0
    payload = bytearray(_utf8(client_id, "client identifier"))
    if will_topic is not None:
        _check_qos(will_qos)
        flags |= 0x04 | will_qos << 3 | (0x20 if will_retain else 0)
        if version == MQTT_5:
            payload += b"\x00"  # will properties: none
        payload += publish_topic(will_topic) + _binary(will_payload, "will payload")
    elif will_qos or will_retain:
        raise ValueError("will QoS and retain need a will topic")
    if username is not None:
        flags |= 0x80
        payload += _utf8(username, "user name")
    if password is not None:
        if username is None and version == MQTT_311:
            raise ValueError("MQTT 3.1.1 does not allow a password without a user name")
        flags |= 0x40
        payload += _binary(password.encode("utf-8") if isinstance(password, str) else password, "password")
    head = b"\x00\x04MQTT" + bytes((version, flags)) + keepalive.to_bytes(2, "big")
    if version == MQTT_5:
        props: dict[int, int] = {}
        if session_expiry is not None:
            props[SESSION_EXPIRY_INTERVAL] = session_expiry
        if receive_maximum is not None:
            if not 1 <= receive_maximum <= 0xFFFF:
                raise ValueError(f"receive maximum must be 1..65535, not {receive_maximum!r}")
            props[RECEIVE_MAXIMUM] = receive_maximum
        if maximum_packet_size is not None:
            if not 1 <= maximum_packet_size <= MAX_PACKET_SIZE:
                raise ValueError(
                    f"maximum packet size must be 1..{MAX_PACKET_SIZE}, not {maximum_packet_size!r}"
                )
            props[MAXIMUM_PACKET_SIZE] = maximum_packet_size
        head += encode_properties(props, CONNECT)
    return _packet(CONNECT << 4, head + bytes(payload))


def publish_topic(topic: str) -> bytes:
    """Check a topic name for PUBLISH (§4.7: not empty, no wildcards, no U+0000, at most 65,535
    bytes) and return it length-prefixed, ready for `pack_publish` (cache it per topic)."""
    if not topic:
        raise ValueError("topic name is empty")
    if "+" in topic or "#" in topic:
        raise ValueError(
            f"topic name {topic!r} contains a wildcard (+ or #), which only subscriptions may use"
        )
    return _utf8(topic, f"topic name {topic[:40]!r}")


def pack_publish(topic_field: bytes, payload: bytes, first_byte: int, packet_id: int, v5: bool) -> bytes:
    """PUBLISH (§3.3) from a `publish_topic()` field: the hot path, no checks.  `first_byte` is
    0x30 | dup << 3 | qos << 1 | retain; `packet_id` is 0 for QoS 0 (then not written).  In MQTT 5
    the properties are empty.  One formatting operation for the usual sizes."""
    length = len(topic_field) + len(payload) + (2 if packet_id else 0) + (1 if v5 else 0)
    props = b"\x00" if v5 else b""
    if packet_id:
        if length < 128:
            return b"%c%c%b%c%c%b%b" % (
                first_byte, length, topic_field, packet_id >> 8, packet_id & 0xFF, props, payload
            )  # fmt: skip
        if length < 16384:
            return b"%c%c%c%b%c%c%b%b" % (
                first_byte, length & 0x7F | 0x80, length >> 7, topic_field, packet_id >> 8, packet_id & 0xFF,
                props, payload,
            )  # fmt: skip
        pid = bytes((packet_id >> 8, packet_id & 0xFF))
        return b"".join((bytes((first_byte,)), encode_varint(length), topic_field, pid, props, payload))
    if length < 128:
        return b"%c%c%b%b%b" % (first_byte, length, topic_field, props, payload)
    return b"".join((bytes((first_byte,)), encode_varint(length), topic_field, props, payload))


def encode_publish(
    topic: str,
    payload: bytes,
    *,
    version: int = MQTT_5,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int = 0,
) -> bytes:
    """PUBLISH (§3.3), checked: QoS 0 takes no packet identifier and no DUP flag, QoS 1 and 2
    need an identifier 1..65535."""
    _check_version(version)
    _check_qos(qos)
    if qos:
        _check_packet_id(packet_id)
    elif packet_id or dup:
        raise ValueError("a QoS 0 PUBLISH has no packet identifier and no DUP flag")
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    return pack_publish(publish_topic(topic), bytes(payload), first, packet_id, version == MQTT_5)


def encode_ack(
    packet_type: int,
    packet_id: int,
    *,
    version: int = MQTT_5,
    reason_code: int = 0,
    reason_string: str | None = None,
) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (§3.4-§3.7).  In MQTT 5 a success without properties
    is sent in the short form (remaining length 2, §3.4.2.1)."""
    if packet_type not in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        raise ValueError(f"not a publish acknowledgement type: {packet_type!r}")
    _check_version(version)
    _check_packet_id(packet_id)
    first = packet_type << 4 | (0x02 if packet_type == PUBREL else 0)
    body = packet_id.to_bytes(2, "big")
    if version == MQTT_5 and (reason_code or reason_string is not None):
        if not 0 <= reason_code <= 0xFF:
            raise ValueError(f"reason code must be 0..255, not {reason_code!r}")
        body += bytes((reason_code,))
        if reason_string is not None:
            body += encode_properties({REASON_STRING: reason_string}, packet_type)
    elif reason_code or reason_string is not None:
        raise ValueError("MQTT 3.1.1 acknowledgements carry no reason code")
    return _packet(first, body)


def encode_subscribe(
    packet_id: int,
    topic_filter: str,
    qos: int = 1,
    *,
    version: int = MQTT_5,
    no_local: bool = False,
    retain_as_published: bool = False,
    retain_handling: int = 0,
) -> bytes:
    """SUBSCRIBE (§3.8) for one topic filter.  MQTT 5 adds the subscription options (§3.8.3.1):
    No Local, Retain As Published and Retain Handling (0 send retained messages on subscribe,
    1 only for a new subscription, 2 never); the properties are empty."""
    _check_version(version)
    _check_packet_id(packet_id)
    _check_qos(qos)
    if not topic_filter:
        raise ValueError("topic filter is empty")
    options = qos
    if version == MQTT_5:
        if retain_handling not in (0, 1, 2):
            raise ValueError(f"retain handling must be 0, 1 or 2, not {retain_handling!r}")
        options |= (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | retain_handling << 4
    elif no_local or retain_as_published or retain_handling:
        raise ValueError("subscription options other than QoS need MQTT 5")
    body = packet_id.to_bytes(2, "big")
    if version == MQTT_5:
        body += b"\x00"
    body += _utf8(topic_filter, "topic filter") + bytes((options,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_disconnect(*, version: int = MQTT_5, reason_code: int = 0) -> bytes:
    """DISCONNECT (§3.14).  Reason 0 (normal disconnection) suppresses the will; in MQTT 5,
    0x04 asks the server to publish it anyway."""
    _check_version(version)
    if version == MQTT_5 and reason_code:
        if not 0 <= reason_code <= 0xFF:
            raise ValueError(f"reason code must be 0..255, not {reason_code!r}")
        return bytes((DISCONNECT << 4, 1, reason_code))
    if reason_code:
        raise ValueError("an MQTT 3.1.1 DISCONNECT carries no reason code")
    return b"\xe0\x00"


# --------------------------------------------------------------------------------------------------
# decoded packets (server → client)
# --------------------------------------------------------------------------------------------------


class Connack:
    """CONNACK (§3.2).  `reason_code` is the 3.1.1 return code or the MQTT 5 reason code; the
    accessors give the MQTT 5 properties with the spec's defaults when they are absent."""

    __slots__ = ("properties", "reason_code", "session_present")

    def __init__(self, session_present: bool, reason_code: int, properties: Properties | None = None) -> None:
        self.session_present = session_present
        self.reason_code = reason_code
        self.properties: Properties = properties if properties is not None else {}

    @property
    def receive_maximum(self) -> int:
        return int(self.properties.get(RECEIVE_MAXIMUM, 0xFFFF))

    @property
    def maximum_packet_size(self) -> int | None:
        value = self.properties.get(MAXIMUM_PACKET_SIZE)
        return None if value is None else int(value)

    @property
    def topic_alias_maximum(self) -> int:
        return int(self.properties.get(TOPIC_ALIAS_MAXIMUM, 0))

    @property
    def assigned_client_identifier(self) -> str | None:
        value = self.properties.get(ASSIGNED_CLIENT_IDENTIFIER)
        return None if value is None else str(value)

    @property
    def server_keep_alive(self) -> int | None:
        value = self.properties.get(SERVER_KEEP_ALIVE)
        return None if value is None else int(value)

    @property
    def reason_string(self) -> str | None:
        value = self.properties.get(REASON_STRING)
        return None if value is None else str(value)

    @property
    def maximum_qos(self) -> int:
        return int(self.properties.get(MAXIMUM_QOS, 2))

    @property
    def retain_available(self) -> bool:
        return bool(self.properties.get(RETAIN_AVAILABLE, 1))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Connack) and (self.session_present, self.reason_code, self.properties) == (
            other.session_present,
            other.reason_code,
            other.properties,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Connack(session_present={self.session_present}, reason_code=0x{self.reason_code:02X}, "
            f"properties={self.properties})"
        )


class Publish:
    """PUBLISH from the server (§3.3); `packet_id` is 0 for QoS 0."""

    __slots__ = ("dup", "packet_id", "payload", "properties", "qos", "retain", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int = 0,
        properties: Properties | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties: Properties = properties if properties is not None else {}

    def _key(self) -> tuple[Any, ...]:
        return (self.topic, self.payload, self.qos, self.retain, self.dup, self.packet_id, self.properties)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Publish) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Publish(topic={self.topic!r}, payload={self.payload[:40]!r}, qos={self.qos}, "
            f"retain={self.retain}, dup={self.dup}, packet_id={self.packet_id}, properties={self.properties})"
        )


class Ack:
    """A publish acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP: §3.4-§3.7).  A reason code
    of 0x80 or more (MQTT 5) means the server refused the message."""

    __slots__ = ("packet_id", "properties", "reason_code")

    def __init__(
        self, packet_id: int, reason_code: int = 0, properties: Mapping[int, Any] = _NO_PROPERTIES
    ) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties

    @property
    def reason_string(self) -> str | None:
        value = self.properties.get(REASON_STRING)
        return None if value is None else str(value)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Ack)
            and (self.packet_id, self.reason_code, dict(self.properties))
            == (other.packet_id, other.reason_code, dict(other.properties))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        props = f", properties={dict(self.properties)}" if self.properties else ""
        return (
            f"{type(self).__name__}(packet_id={self.packet_id}, reason_code=0x{self.reason_code:02X}{props})"
        )


class Puback(Ack):
    __slots__ = ()


class Pubrec(Ack):
    __slots__ = ()


class Pubrel(Ack):
    __slots__ = ()


class Pubcomp(Ack):
    __slots__ = ()


class Suback:
    """SUBACK (§3.9) or UNSUBACK (§3.11): one reason code per topic filter (none for a 3.1.1
    UNSUBACK)."""

    __slots__ = ("packet_id", "properties", "reason_codes")

    def __init__(
        self, packet_id: int, reason_codes: tuple[int, ...], properties: Properties | None = None
    ) -> None:
        self.packet_id = packet_id
        self.reason_codes = reason_codes
        self.properties: Properties = properties if properties is not None else {}

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Suback)
            and (self.packet_id, self.reason_codes, self.properties)
            == (other.packet_id, other.reason_codes, other.properties)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(packet_id={self.packet_id}, reason_codes={self.reason_codes}, "
            f"properties={self.properties})"
        )


class Unsuback(Suback):
    __slots__ = ()


class Pingresp:
    """PINGRESP (§3.13)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pingresp)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Pingresp()"


class Disconnect:
    """DISCONNECT from the server (MQTT 5, §3.14): why it is closing the connection."""

    __slots__ = ("properties", "reason_code")

    def __init__(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.reason_code = reason_code
        self.properties: Properties = properties if properties is not None else {}

    @property
    def reason_string(self) -> str | None:
        value = self.properties.get(REASON_STRING)
        return None if value is None else str(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Disconnect) and (self.reason_code, self.properties) == (
            other.reason_code,
            other.properties,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Disconnect(reason_code=0x{self.reason_code:02X}, properties={self.properties})"


class OversizedPublish:
    """A PUBLISH larger than the decoder's `max_packet_size` from an MQTT 3.1.1 server, which
    cannot know the client's limit: its topic and packet id, for the acknowledgement; its
    payload was skipped as it arrived, never buffered."""

    __slots__ = ("packet_id", "qos", "retain", "size", "topic")

    def __init__(self, topic: str, size: int, qos: int = 0, retain: bool = False, packet_id: int = 0) -> None:
        self.topic = topic
        self.size = size
        self.qos = qos
        self.retain = retain
        self.packet_id = packet_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OversizedPublish) and (
            self.topic,
            self.size,
            self.qos,
            self.retain,
            self.packet_id,
        ) == (other.topic, other.size, other.qos, other.retain, other.packet_id)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"OversizedPublish(topic={self.topic!r}, size={self.size}, qos={self.qos}, "
            f"retain={self.retain}, packet_id={self.packet_id})"
        )


Packet = Connack | Publish | Ack | Suback | Pingresp | Disconnect | OversizedPublish

_PINGRESP: Final = Pingresp()
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
# CONNACK return codes of MQTT 3.1.1 → the MQTT 5 reason codes that mean the same
_REFUSALS_311_AS_5: Final = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_ACK_CLASSES: Final[dict[int, type[Ack]]] = {PUBACK: Puback, PUBREC: Pubrec, PUBREL: Pubrel, PUBCOMP: Pubcomp}
# the fixed-header flags each packet type must carry (§2.1.3); PUBLISH's are checked apart
_FLAGS: Final = {
    CONNACK: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBACK: 0,
    UNSUBACK: 0,
    PINGRESP: 0,
    DISCONNECT: 0,
}

# --------------------------------------------------------------------------------------------------
# decoder
# --------------------------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked reads inside one packet's variable header and payload."""

    __slots__ = ("data", "end", "name", "pos")

    def __init__(self, data: bytes | bytearray, pos: int, end: int, name: str) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.name = name

    def fail(self, what: str) -> MqttProtocolError:
        return MqttProtocolError(f"malformed {self.name}: {what}")

    def left(self) -> int:
        return self.end - self.pos

    def need(self, count: int, what: str) -> None:
        if self.pos + count > self.end:
            raise self.fail(f"{what} runs past the end of the packet")

    def byte(self, what: str) -> int:
        self.need(1, what)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self, size: int, what: str) -> int:
        self.need(size, what)
        value = int.from_bytes(self.data[self.pos : self.pos + size], "big")
        self.pos += size
        return value

    def varint(self, what: str) -> int:
        try:
            got = decode_varint(self.data, self.pos, self.end)
        except MqttProtocolError as exc:
            raise self.fail(f"{what}: {exc}") from None
        if got is None:
            raise self.fail(f"{what} runs past the end of the packet")
        value, self.pos = got
        return value

    def binary(self, what: str) -> bytes:
        size = self.uint(2, f"length of {what}")
        self.need(size, what)
        value = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return value

    def text(self, what: str) -> str:
        raw = self.binary(what)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if "\x00" in value:
            raise self.fail(f"{what} contains the null character U+0000")
        return value

    def properties(self, packet_type: int) -> Properties:
        length = self.varint("property length")
        self.need(length, "properties")
        stop = self.pos + length
        outer_end, self.end = self.end, stop
        props: Properties = {}
        try:
            while self.pos < stop:
                ident = self.varint("property identifier")
                spec = _PROPERTIES.get(ident)
                if spec is None:
                    raise self.fail(f"unknown property identifier 0x{ident:02X}")
                name, kind, allowed = spec
                if packet_type not in allowed:
                    raise self.fail(f"property {name} (0x{ident:02X}) is not allowed here")
                value: Any
                if kind == _BYTE:
                    value = self.byte(name)
                elif kind == _TWO:
                    value = self.uint(2, name)
                elif kind == _FOUR:
                    value = self.uint(4, name)
                elif kind == _VARINT:
                    value = self.varint(name)
                elif kind == _UTF8:
                    value = self.text(name)
                elif kind == _BINARY:
                    value = self.binary(name)
                else:
                    value = (self.text(f"{name} name"), self.text(f"{name} value"))
                if ident in _BOOLEAN and value > 1:
                    raise self.fail(f"{name} must be 0 or 1, not {value}")
                if ident in _NONZERO and value == 0:
                    raise self.fail(f"{name} must not be 0")
                if ident in _REPEATABLE:
                    props.setdefault(ident, []).append(value)
                elif ident in props:
                    raise self.fail(f"property {name} appears more than once")
                else:
                    props[ident] = value
        finally:
            self.end = outer_end
        return props

    def done(self) -> None:
        if self.pos != self.end:
            raise self.fail(f"{self.end - self.pos} unexpected byte(s) at the end")


class MqttDecoder:
    """Turns the byte stream from a server into packets, however it is split.

    `feed(data)` returns the packets completed by `data` (possibly none) and keeps any partial
    packet for the next call.  `version` is MQTT_311 or MQTT_5: the two differ in CONNACK,
    PUBLISH and the acknowledgements.  Incoming PUBLISH packets may not use topic aliases: a
    client that sends no Topic Alias Maximum allows none (§3.1.2.11.5).

    A packet longer than `max_packet_size` bytes is never buffered.  In MQTT 5 the client
    announced that limit in CONNECT, so a server that exceeds it commits a protocol error
    (§3.1.2.11.4): MqttProtocolError with reason code 0x95 as soon as the fixed header arrives.
    An MQTT 3.1.1 server cannot know the limit: a PUBLISH over it comes back as an
    `OversizedPublish` (topic, size, packet id: enough to acknowledge it) once its variable
    header is in, and the rest of it is skipped as it arrives; any other packet over it is an
    error.
    """

    __slots__ = ("_buf", "_error", "_skip", "max_packet_size", "v5", "version")

    def __init__(self, version: int = MQTT_5, *, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        _check_version(version)
        self.version = version
        self.v5 = version == MQTT_5
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._error: str | None = None
        self._skip = 0  # bytes of an oversized PUBLISH still to be skipped

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet held for the next `feed`."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """The packets completed by `data`, in order."""
        return self._scan(data, None)

    def feed_acks(self, data: bytes | bytearray | memoryview) -> tuple[array[int], list[Packet]]:
        """Like `feed`, for a publisher's hot path: the packet ids of PUBACKs that report
        success without properties (4 bytes, or in MQTT 5 five with a reason code below 0x80)
        come back apart, as an array in arrival order, without a `Puback` object each; every
        other packet (refusals and PUBACKs with properties included) comes back in the list."""
        acks: array[int] = array("H")
        return acks, self._scan(data, acks)

    def _scan(self, data: bytes | bytearray | memoryview, acks: array[int] | None) -> list[Packet]:
        if self._error is not None:
            raise MqttProtocolError(f"decoder already failed: {self._error}")
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
            if not data:
                return []
        buf = self._buf
        view: bytes | bytearray
        if buf:
            buf += data
            view = buf
        else:
            view = data if isinstance(data, bytes) else bytes(data)
        out: list[Packet] = []
        append = out.append
        pos = 0
        size = len(view)
        v5 = self.v5
        try:
            while pos < size:
                first = view[pos]
                if first == 0x40 and pos + 4 <= size:
                    # The common case: a run of PUBACKs that report success without properties,
                    # 40 02 id id, or in MQTT 5 also 40 03 id id rc with rc < 0x80 (mosquitto
                    # sends 0x10, no matching subscribers, when nobody subscribes).  Find the
                    # run from every 4th (5th) byte, then take the ids out in one go.
                    kind = view[pos + 1]
                    stride = 4 if kind == 2 else 5 if kind == 3 and v5 and pos + 5 <= size else 0
                    if stride and (stride == 4 or view[pos + 4] < 0x80):
                        stop = pos + (size - pos) // stride * stride
                        heads = view[pos:stop:stride]
                        kinds = view[pos + 1 : stop : stride]
                        run = min(
                            len(heads) - len(heads.lstrip(b"\x40")), len(kinds) - len(kinds.lstrip(kinds[:1]))
                        )
                        stop = pos + run * stride
                        codes = view[pos + 4 : stop : 5] if stride == 5 else b""
                        if codes and max(codes) >= 0x80:  # a refusal ends the run
                            run = next(i for i, code in enumerate(codes) if code >= 0x80)
                            stop = pos + run * stride
                            codes = codes[:run]
                        raw = bytearray(2 * run)
                        raw[0::2] = view[pos + 2 : stop : stride]
                        raw[1::2] = view[pos + 3 : stop : stride]
                        ids = array("H", raw)
                        if _LITTLE_ENDIAN:
                            ids.byteswap()
                        if 0 in ids:
                            raise MqttProtocolError("malformed PUBACK: packet identifier 0")
                        if acks is not None:
                            acks.extend(ids)
                        elif codes:
                            out.extend(map(Puback, ids, codes))
                        else:
                            out.extend(map(Puback, ids))
                        pos = stop
                        continue
                got = decode_varint(view, pos + 1, size)
                if got is None:
                    break  # the fixed header is incomplete (decode_varint raises past 4 bytes)
                length, start = got
                end = start + length
                if end - pos > self.max_packet_size:
                    if first >> 4 != PUBLISH or v5:
                        raise MqttProtocolError(
                            f"{_TYPE_NAMES[first >> 4]} of {end - pos} bytes exceeds the maximum packet "
                            f"size of {self.max_packet_size}",
                            0x95,
                        )
                    oversized = self._oversized(first, view, start, min(end, size), end - pos)
                    if oversized is None:
                        break  # its variable header is not complete yet (at most 65,539 bytes)
                    append(oversized)
                    if end > size:
                        self._skip = end - size
                        end = size
                    pos = end
                    continue
                if end > size:
                    break
                append(self._parse(first, view, start, end, v5))
                pos = end
        except MqttProtocolError as exc:
            self._error = str(exc)
            buf.clear()
            raise
        if buf:
            del buf[:pos]
        elif pos < size:
            buf += view[pos:]
        return out

    def _parse(self, first: int, data: bytes | bytearray, start: int, end: int, v5: bool) -> Packet:
        ptype = first >> 4
        name = _TYPE_NAMES[ptype]
        flags = first & 0x0F
        if ptype == PUBLISH:
            return self._publish(flags, _Reader(data, start, end, name), v5)
        expected = _FLAGS.get(ptype)
        if expected is None:
            if ptype == AUTH and v5:
                raise MqttProtocolError("AUTH received, but this client asked for no authentication method")
            raise MqttProtocolError(f"a server must not send {name} (first byte 0x{first:02X})")
        if flags != expected:
            raise MqttProtocolError(
                f"malformed {name}: fixed header flags 0x{flags:X}, must be 0x{expected:X}"
            )
        r = _Reader(data, start, end, name)
        if ptype in _ACK_CLASSES:
            packet_id = r.uint(2, "packet identifier")
            if not packet_id:
                raise r.fail("packet identifier 0")
            reason = 0
            props: Properties | None = None
            if v5 and r.left():
                reason = r.byte("reason code")
                if r.left():
                    props = r.properties(ptype)
            r.done()
            return _ACK_CLASSES[ptype](packet_id, reason, props or _NO_PROPERTIES)
        if ptype == CONNACK:
            ack_flags = r.byte("acknowledge flags")
            if ack_flags & 0xFE:
                raise r.fail(f"reserved acknowledge flag bits set (0x{ack_flags:02X})")
            reason = r.byte("return code")
            props = None
            if v5 and not r.left() and 1 <= reason <= 5:
                # an MQTT 3.1.1 server refusing our MQTT 5 CONNECT answers in 3.1.1 form (§3.1.2.2)
                reason = _REFUSALS_311_AS_5[reason]
            elif v5:
                props = r.properties(CONNACK)
            r.done()
            if not v5 and reason > 5:
                raise r.fail(f"unknown return code {reason}")
            if reason and ack_flags:
                raise r.fail("session present set on a refused connection")
            return Connack(bool(ack_flags), reason, props)
        if ptype in (SUBACK, UNSUBACK):
            packet_id = r.uint(2, "packet identifier")
            if not packet_id:
                raise r.fail("packet identifier 0")
            props = r.properties(ptype) if v5 else None
            codes = tuple(data[r.pos : end])
            if ptype == SUBACK:
                if not codes:
                    raise r.fail("no return codes")
                if not v5 and any(c not in (0, 1, 2, 0x80) for c in codes):
                    raise r.fail(f"invalid return code in {codes}")
                return Suback(packet_id, codes, props)
            if not v5 and codes:
                raise r.fail("an MQTT 3.1.1 UNSUBACK has no payload")
            if v5 and not codes:
                raise r.fail("no reason codes")
            return Unsuback(packet_id, codes, props)
        if ptype == PINGRESP:
            r.done()
            return _PINGRESP
        # DISCONNECT: in MQTT 5 a reason code (absent: normal disconnection) and properties
        reason = 0
        props = None
        if r.left():
            if not v5:
                raise r.fail("an MQTT 3.1.1 DISCONNECT has no variable header")
            reason = r.byte("reason code")
            if r.left():
                props = r.properties(DISCONNECT)
        r.done()
        return Disconnect(reason, props)

    @staticmethod
    def _oversized(
        first: int, data: bytes | bytearray, start: int, stop: int, size: int
    ) -> OversizedPublish | None:
        """The head of an MQTT 3.1.1 PUBLISH over the size limit, once it is in `data[:stop]`."""
        qos = first >> 1 & 3
        if qos == 3:
            raise MqttProtocolError("malformed PUBLISH: QoS 3")
        if start + 2 > stop:
            return None
        head_end = start + 2 + int.from_bytes(data[start : start + 2], "big") + (2 if qos else 0)
        if head_end > stop:
            return None
        r = _Reader(data, start, head_end, "PUBLISH")
        topic = r.text("topic name")
        packet_id = r.uint(2, "packet identifier") if qos else 0
        if qos and not packet_id:
            raise r.fail("packet identifier 0")
        return OversizedPublish(topic, size, qos, bool(first & 1), packet_id)

    def _publish(self, flags: int, r: _Reader, v5: bool) -> Publish:
        qos = flags >> 1 & 3
        if qos == 3:
            raise r.fail("QoS 3")
        dup = bool(flags & 0x08)
        if dup and not qos:
            raise r.fail("DUP flag set on a QoS 0 message")
        topic = r.text("topic name")
        if not topic:
            raise r.fail("empty topic name")
        if "+" in topic or "#" in topic:
            raise r.fail(f"topic name {topic[:60]!r} contains a wildcard")
        packet_id = 0
        if qos:
            packet_id = r.uint(2, "packet identifier")
            if not packet_id:
                raise r.fail("packet identifier 0")
        props: Properties | None = None
        if v5:
            props = r.properties(PUBLISH)
            if TOPIC_ALIAS in props:
                raise r.fail("topic alias used, but this client allows none (Topic Alias Maximum 0)")
        payload = bytes(r.data[r.pos : r.end])
        return Publish(topic, payload, qos, bool(flags & 1), dup, packet_id, props)
