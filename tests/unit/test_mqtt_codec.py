"""The MQTT 3.1.1 / 5.0 codec (picogate.mqtt._codec): byte vectors built by hand from the OASIS
specifications, round trips, malformed input, and property tests: whatever bytes arrive, the
decoder returns packets or raises MqttProtocolError, nothing else, however the stream is split."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picogate.mqtt._codec import (
    MAX_PACKET_SIZE,
    MQTT_5,
    MQTT_311,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    Connack,
    Disconnect,
    MqttDecoder,
    MqttProtocolError,
    OversizedPublish,
    Packet,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Unsuback,
    decode_varint,
    encode_ack,
    encode_connect,
    encode_disconnect,
    encode_properties,
    encode_publish,
    encode_subscribe,
    encode_varint,
    reason_name,
)


def s(text: str) -> bytes:
    """A UTF-8 Encoded String (§1.5.3): two-byte big-endian length, then the bytes."""
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def decode_all(data: bytes, version: int = MQTT_5) -> list[Packet]:
    return MqttDecoder(version).feed(data)


def decode_one(data: bytes, version: int = MQTT_5) -> Packet:
    packets = decode_all(data, version)
    assert len(packets) == 1, packets
    return packets[0]


# --------------------------------------------------------------------------------------------------
# Variable Byte Integer (§1.5.5 / §2.2.3)
# --------------------------------------------------------------------------------------------------

VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]


@pytest.mark.parametrize(("value", "hexa"), VARINTS)
def test_varint_edges(value: int, hexa: str) -> None:
    raw = bytes.fromhex(hexa)
    assert encode_varint(value) == raw
    assert decode_varint(raw) == (value, len(raw))
    assert decode_varint(b"\xaa" + raw + b"\xbb", 1) == (value, 1 + len(raw))
    assert decode_varint(raw[:-1]) is None  # incomplete: wait for more bytes


def test_varint_limits() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_varint(268_435_456)
    with pytest.raises(ValueError, match="negative"):
        encode_varint(-1)
    with pytest.raises(MqttProtocolError, match="longer than 4 bytes"):
        decode_varint(bytes.fromhex("ffffffff01"))
    with pytest.raises(MqttProtocolError, match="longer than 4 bytes"):
        decode_varint(bytes.fromhex("80808080"))  # a fourth byte that still continues
    with pytest.raises(MqttProtocolError, match="minimally"):
        decode_varint(bytes.fromhex("8000"))  # 0 in two bytes


@given(st.integers(0, 268_435_455))
def test_varint_round_trip(value: int) -> None:
    raw = encode_varint(value)
    assert 1 <= len(raw) <= 4
    assert decode_varint(raw) == (value, len(raw))


def test_remaining_length_over_four_bytes_is_refused() -> None:
    with pytest.raises(MqttProtocolError, match="longer than 4 bytes"):
        MqttDecoder(MQTT_311).feed(b"\x30\xff\xff\xff\xff\x01")


# --------------------------------------------------------------------------------------------------
# encoders: vectors built by hand
# --------------------------------------------------------------------------------------------------


def test_connect_311_minimal() -> None:
    # §3.1: fixed header 0x10, "MQTT", level 4, flags: clean session, keep alive 60, client id
    expected = bytes.fromhex("100f00044d5154540402003c") + s("abc")
    assert encode_connect(client_id="abc", version=MQTT_311, keepalive=60) == expected


def test_connect_311_everything() -> None:
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, will retain, will QoS 1, will, clean
    body = (
        b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x1e" + s("gw") + s("st") + s("off") + s("u") + s("pw")
    )
    expected = b"\x10" + bytes([len(body)]) + body
    got = encode_connect(
        client_id="gw",
        version=MQTT_311,
        keepalive=30,
        will_topic="st",
        will_payload=b"off",
        will_qos=1,
        will_retain=True,
        username="u",
        password="pw",
    )
    assert got == expected


def test_connect_5_with_properties_and_will() -> None:
    # §3.1.2.11: properties Session Expiry Interval 0 (0x11, four bytes) and Receive Maximum 100
    # (0x21, two bytes); §3.1.3.2: will properties (empty) come before the will topic.
    props = bytes.fromhex("081100000000210064")
    variable = b"\x00\x04MQTT\x05\xee\x00\x1e" + props
    payload = s("pg") + b"\x00" + s("s/t") + s("off") + s("u") + s("p")
    expected = b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload
    assert len(variable) + len(payload) == 0x28
    got = encode_connect(
        client_id="pg",
        version=MQTT_5,
        keepalive=30,
        will_topic="s/t",
        will_payload=b"off",
        will_qos=1,
        will_retain=True,
        username="u",
        password=b"p",
        session_expiry=0,
        receive_maximum=100,
    )
    assert got == expected


def test_connect_5_without_properties() -> None:
    got = encode_connect(client_id="", version=MQTT_5, keepalive=0, session_expiry=None)
    assert got == bytes.fromhex("100d00044d51545405020000000000")


def test_connect_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="password without a user name"):
        encode_connect(client_id="x", version=MQTT_311, password="p")
    encode_connect(client_id="x", version=MQTT_5, password="p")  # allowed in MQTT 5 (§3.1.2.9)
    with pytest.raises(ValueError, match="keep alive"):
        encode_connect(client_id="x", keepalive=70_000)
    with pytest.raises(ValueError, match="receive maximum"):
        encode_connect(client_id="x", receive_maximum=0)
    with pytest.raises(ValueError, match="wildcard"):
        encode_connect(client_id="x", will_topic="a/#")
    with pytest.raises(ValueError, match="protocol level"):
        encode_connect(client_id="x", version=3)
    with pytest.raises(ValueError, match="null character"):
        encode_connect(client_id="a\x00b")
    with pytest.raises(ValueError, match="65535"):
        encode_connect(client_id="x" * 70_000)


PUBLISH_VECTORS = [
    # (version, qos, retain, dup, packet id, expected hex for topic "a/b" and payload "hi")
    (MQTT_311, 0, False, False, 0, "30070003612f626869"),
    (MQTT_311, 0, True, False, 0, "31070003612f626869"),
    (MQTT_311, 1, False, False, 10, "32090003612f62000a6869"),
    (MQTT_311, 1, True, True, 0xBEEF, "3b090003612f62beef6869"),
    (MQTT_311, 2, False, False, 1, "34090003612f6200016869"),
    (MQTT_5, 0, False, False, 0, "30080003612f62006869"),
    (MQTT_5, 1, False, False, 10, "320a0003612f62000a006869"),
    (MQTT_5, 1, True, True, 65535, "3b0a0003612f62ffff006869"),
]


@pytest.mark.parametrize(("version", "qos", "retain", "dup", "packet_id", "hexa"), PUBLISH_VECTORS)
def test_publish_vectors(version: int, qos: int, retain: bool, dup: bool, packet_id: int, hexa: str) -> None:
    raw = encode_publish("a/b", b"hi", version=version, qos=qos, retain=retain, dup=dup, packet_id=packet_id)
    assert raw == bytes.fromhex(hexa)
    assert decode_one(raw, version) == Publish("a/b", b"hi", qos, retain, dup, packet_id)


def test_publish_long_payload_uses_a_longer_remaining_length() -> None:
    raw = encode_publish("t", b"x" * 200, version=MQTT_311)
    assert raw[:6] == bytes.fromhex("30cb01000174")  # 203 = 75 + 1 * 128: 0x4b | 0x80, 0x01
    assert decode_one(raw, MQTT_311) == Publish("t", b"x" * 200)


def test_publish_refuses_bad_arguments() -> None:
    for topic in ("", "a/+/b", "a/#", "a\x00"):
        with pytest.raises(ValueError):
            encode_publish(topic, b"")
    with pytest.raises(ValueError, match="packet identifier"):
        encode_publish("a", b"", qos=1)
    with pytest.raises(ValueError, match="QoS 0"):
        encode_publish("a", b"", qos=0, packet_id=3)
    with pytest.raises(ValueError, match="QoS 0"):
        encode_publish("a", b"", qos=0, dup=True)
    with pytest.raises(ValueError, match="QoS"):
        encode_publish("a", b"", qos=3, packet_id=1)


def test_acks_subscribe_ping_disconnect() -> None:
    assert encode_ack(PUBACK, 7, version=MQTT_311) == bytes.fromhex("40020007")
    assert encode_ack(PUBACK, 7, version=MQTT_5) == bytes.fromhex("40020007")  # short form (§3.4.2.1)
    assert encode_ack(PUBACK, 7, version=MQTT_5, reason_code=0x10) == bytes.fromhex("4003000710")
    assert encode_ack(PUBREC, 0x1234, version=MQTT_311) == bytes.fromhex("50021234")
    assert encode_ack(PUBREL, 1, version=MQTT_311) == bytes.fromhex("62020001")  # flags 0010 (§3.6.1)
    assert encode_ack(PUBCOMP, 1, version=MQTT_5) == bytes.fromhex("70020001")
    assert encode_ack(PUBACK, 1, version=MQTT_5, reason_code=0x80, reason_string="no") == bytes.fromhex(
        "4009000180051f00026e6f"
    )
    with pytest.raises(ValueError, match="reason code"):
        encode_ack(PUBACK, 1, version=MQTT_311, reason_code=0x80)
    with pytest.raises(ValueError, match="packet identifier"):
        encode_ack(PUBACK, 0)
    # §3.8: flags 0010, packet id, (MQTT 5: properties), topic filter, options byte
    assert encode_subscribe(1, "a/#", 1, version=MQTT_311) == bytes.fromhex("820800010003612f2301")
    assert encode_subscribe(2, "a/#", 1, version=MQTT_5) == bytes.fromhex("82090002000003612f2301")
    options = encode_subscribe(
        3, "x", 1, version=MQTT_5, no_local=True, retain_as_published=True, retain_handling=2
    )[-1]
    assert options == 0x01 | 0x04 | 0x08 | 0x20
    with pytest.raises(ValueError, match="MQTT 5"):
        encode_subscribe(1, "x", 1, version=MQTT_311, no_local=True)
    assert PINGREQ == b"\xc0\x00"
    assert encode_disconnect(version=MQTT_311) == b"\xe0\x00"
    assert encode_disconnect(version=MQTT_5) == b"\xe0\x00"
    assert encode_disconnect(version=MQTT_5, reason_code=0x04) == b"\xe0\x01\x04"


def test_properties_encoding() -> None:
    raw = encode_properties({0x26: [("k", "v"), ("k", "w")], 0x0B: [1, 300], 0x01: 1}, 3)
    assert raw == bytes.fromhex("152600016b0001762600016b0001770b010bac020101")
    with pytest.raises(ValueError, match="not allowed"):
        encode_properties({0x21: 10}, 3)  # Receive Maximum in PUBLISH
    with pytest.raises(ValueError, match="unknown"):
        encode_properties({0x05: 1}, 3)


def test_reason_names() -> None:
    assert reason_name(0x87) == "not authorized (0x87)"
    assert reason_name(5, MQTT_311, connack=True) == "not authorized (return code 5)"
    assert reason_name(4, MQTT_311, connack=True) == "bad user name or password (return code 4)"
    assert reason_name(0x86) == "bad user name or password (0x86)"
    assert "unknown" in reason_name(0x7E)


# --------------------------------------------------------------------------------------------------
# decoder: packets a server sends
# --------------------------------------------------------------------------------------------------

DECODE_CASES: list[tuple[str, int, str, Packet]] = [
    ("connack 3.1.1 accepted", MQTT_311, "20020000", Connack(False, 0)),
    ("connack 3.1.1 session present", MQTT_311, "20020100", Connack(True, 0)),
    ("connack 3.1.1 not authorized", MQTT_311, "20020005", Connack(False, 5)),
    ("connack 5 no properties", MQTT_5, "2003000000", Connack(False, 0)),
    ("connack 5 refused", MQTT_5, "2003008700", Connack(False, 0x87)),
    # a 3.1.1-only server answering an MQTT 5 CONNECT in its own form (§3.1.2.2)
    ("connack 3.1.1 form to MQTT 5", MQTT_5, "20020001", Connack(False, 0x84)),
    ("connack 3.1.1 form to MQTT 5, auth", MQTT_5, "20020005", Connack(False, 0x87)),
    ("puback 3.1.1", MQTT_311, "40020102", Puback(0x0102)),
    ("puback 5 short", MQTT_5, "40020102", Puback(0x0102)),
    ("puback 5 reason", MQTT_5, "4003010287", Puback(0x0102, 0x87)),
    ("puback 5 no matching subscribers", MQTT_5, "4003010210", Puback(0x0102, 0x10)),
    ("puback 5 empty properties", MQTT_5, "400401028700", Puback(0x0102, 0x87)),
    (
        "puback 5 reason string",
        MQTT_5,
        "4009010287051f00026e6f",
        Puback(0x0102, 0x87, {0x1F: "no"}),
    ),
    ("pubrec", MQTT_311, "50020009", Pubrec(9)),
    ("pubrel", MQTT_311, "62020009", Pubrel(9)),
    ("pubcomp 5", MQTT_5, "7003000992", Pubcomp(9, 0x92)),
    ("suback 3.1.1", MQTT_311, "9004000a0180", Suback(10, (1, 0x80))),
    ("suback 5", MQTT_5, "9004000a0001", Suback(10, (1,))),
    ("suback 5 properties", MQTT_5, "9008000a041f00017887", Suback(10, (0x87,), {0x1F: "x"})),
    ("unsuback 3.1.1", MQTT_311, "b002000a", Unsuback(10, ())),
    ("unsuback 5", MQTT_5, "b004000a0011", Unsuback(10, (0x11,))),
    ("pingresp", MQTT_311, "d000", Pingresp()),
    ("disconnect 5 bare", MQTT_5, "e000", Disconnect(0)),
    ("disconnect 5 reason", MQTT_5, "e0018e", Disconnect(0x8E)),
    ("disconnect 5 props", MQTT_5, "e0068b041f000162", Disconnect(0x8B, {0x1F: "b"})),
    ("publish qos0 3.1.1", MQTT_311, "30050001747879", Publish("t", b"xy")),
    ("publish qos1 retain", MQTT_311, "330700017400057879", Publish("t", b"xy", 1, True, False, 5)),
    ("publish qos2 dup", MQTT_311, "3c0700017400067879", Publish("t", b"xy", 2, False, True, 6)),
    ("publish empty payload", MQTT_311, "3003000174", Publish("t", b"")),
    ("publish utf-8 topic", MQTT_311, "30040002c3a9", Publish("é", b"")),
    (
        "publish 5 properties",
        MQTT_5,
        "321000017400010901010b0226000000007a",
        Publish("t", b"z", 1, False, False, 1, {0x01: 1, 0x0B: [2], 0x26: [("", "")]}),
    ),
]


@pytest.mark.parametrize(
    ("version", "hexa", "expected"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES]
)
def test_decode(version: int, hexa: str, expected: Packet) -> None:
    raw = bytes.fromhex(hexa)
    assert decode_one(raw, version) == expected
    # byte by byte, the same packet, and nothing before its last byte
    decoder = MqttDecoder(version)
    for i in range(len(raw) - 1):
        assert decoder.feed(raw[i : i + 1]) == []
    assert decoder.feed(raw[-1:]) == [expected]
    assert decoder.buffered == 0


def test_connack_properties() -> None:
    props = (
        bytes.fromhex("210014")  # Receive Maximum 20
        + bytes.fromhex("2700001000")  # Maximum Packet Size 4096
        + bytes.fromhex("22000a")  # Topic Alias Maximum 10
        + b"\x12"
        + s("auto-1")  # Assigned Client Identifier
        + bytes.fromhex("13003c")  # Server Keep Alive 60
        + b"\x1f"
        + s("welcome")  # Reason String
        + bytes.fromhex("2400")  # Maximum QoS 0
        + bytes.fromhex("2500")  # Retain Available 0
    )
    body = b"\x00\x00" + encode_varint(len(props)) + props
    ack = decode_one(b"\x20" + encode_varint(len(body)) + body, MQTT_5)
    assert isinstance(ack, Connack)
    assert ack.reason_code == 0
    assert not ack.session_present
    assert ack.receive_maximum == 20
    assert ack.maximum_packet_size == 4096
    assert ack.topic_alias_maximum == 10
    assert ack.assigned_client_identifier == "auto-1"
    assert ack.server_keep_alive == 60
    assert ack.reason_string == "welcome"
    assert ack.maximum_qos == 0
    assert ack.retain_available is False
    # absent properties take the spec's defaults
    bare = Connack(False, 0)
    assert (bare.receive_maximum, bare.maximum_packet_size, bare.topic_alias_maximum) == (65535, None, 0)
    assert (bare.server_keep_alive, bare.maximum_qos, bare.retain_available) == (None, 2, True)


def test_mosquitto_connack() -> None:
    # what mosquitto 2.0 sends an MQTT 5 client: Topic Alias Maximum 10, Receive Maximum 1000
    ack = decode_one(bytes.fromhex("200900000622000a2103e8"), MQTT_5)
    assert isinstance(ack, Connack)
    assert (ack.topic_alias_maximum, ack.receive_maximum) == (10, 1000)


MALFORMED: list[tuple[str, int, str, str]] = [
    ("reserved type 0", MQTT_5, "0000", "must not send"),
    ("CONNECT from a server", MQTT_5, "1000", "must not send"),
    ("SUBSCRIBE from a server", MQTT_5, "8200", "must not send"),
    ("PINGREQ from a server", MQTT_5, "c000", "must not send"),
    ("AUTH without an authentication method", MQTT_5, "f000", "AUTH"),
    ("type 15 in 3.1.1", MQTT_311, "f000", "must not send"),
    ("PUBACK flags", MQTT_311, "41020001", "flags"),
    ("PUBREL flags", MQTT_311, "60020001", "flags"),
    ("PINGRESP with a body", MQTT_311, "d00100", "unexpected byte"),
    ("PUBACK too short", MQTT_311, "400100", "past the end"),
    ("PUBACK 3.1.1 too long", MQTT_311, "4003000100", "unexpected byte"),
    ("PUBACK packet id 0", MQTT_311, "40020000", "identifier 0"),
    ("PUBACK 5 packet id 0", MQTT_5, "4003000010", "identifier 0"),
    ("SUBACK packet id 0", MQTT_311, "9003000000", "identifier 0"),
    ("CONNACK too short", MQTT_311, "200100", "past the end"),
    ("CONNACK reserved flags", MQTT_311, "20020200", "reserved"),
    ("CONNACK unknown 3.1.1 code", MQTT_311, "20020006", "return code"),
    ("CONNACK session present on refusal", MQTT_311, "20020105", "session present"),
    ("CONNACK 5 missing properties", MQTT_5, "20020000", "past the end"),
    ("CONNACK 5 property runs past the end", MQTT_5, "200400000321", "past the end"),
    ("CONNACK 5 unknown property", MQTT_5, "20050000020500", "unknown property"),
    ("CONNACK 5 property not allowed", MQTT_5, "200600000323000a", "not allowed"),
    ("CONNACK 5 duplicate property", MQTT_5, "2009000006210001210002", "more than once"),
    ("CONNACK 5 receive maximum 0", MQTT_5, "2006000003210000", "must not be 0"),
    ("CONNACK 5 maximum QoS 2", MQTT_5, "20050000022402", "must be 0 or 1"),
    ("CONNACK 5 retain available 7", MQTT_5, "20050000022507", "must be 0 or 1"),
    ("CONNACK 5 bad UTF-8", MQTT_5, "2008000005120002c328", "UTF-8"),
    ("CONNACK 5 null in string", MQTT_5, "20070000041f000100", "null"),
    ("PUBLISH QoS 3", MQTT_311, "36050001740001", "QoS 3"),
    ("PUBLISH DUP at QoS 0", MQTT_311, "3803000174", "DUP"),
    ("PUBLISH wildcard topic", MQTT_311, "3003000123", "wildcard"),
    ("PUBLISH empty topic", MQTT_311, "30020000", "empty topic"),
    ("PUBLISH topic past the end", MQTT_311, "30030005 74".replace(" ", "") + "00", "past the end"),
    ("PUBLISH bad UTF-8 topic", MQTT_311, "300400 02 c328".replace(" ", ""), "UTF-8"),
    ("PUBLISH null in topic", MQTT_311, "3004000261 00".replace(" ", ""), "null"),
    ("PUBLISH QoS 1 packet id 0", MQTT_311, "32050001740000", "identifier 0"),
    ("PUBLISH QoS 1 no packet id", MQTT_311, "3203000174", "past the end"),
    ("PUBLISH 5 topic alias", MQTT_5, "300700017403230001", "topic alias"),
    ("PUBLISH 5 subscription identifier 0", MQTT_5, "3006000174020b00", "must not be 0"),
    ("PUBLISH 5 properties past the end", MQTT_5, "30050001740501", "past the end"),
    ("SUBACK without codes", MQTT_311, "9002000a", "no return codes"),
    ("SUBACK 3.1.1 bad code", MQTT_311, "9003000a03", "invalid return code"),
    ("UNSUBACK 3.1.1 with payload", MQTT_311, "b003000a00", "no payload"),
    ("UNSUBACK 5 without codes", MQTT_5, "b003000a00", "no reason codes"),
    ("DISCONNECT 3.1.1 with a body", MQTT_311, "e00100", "no variable header"),
    ("non-minimal remaining length", MQTT_311, "d08000", "minimally"),
]


@pytest.mark.parametrize(
    ("version", "hexa", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed(version: int, hexa: str, message: str) -> None:
    decoder = MqttDecoder(version)
    with pytest.raises(MqttProtocolError, match=message):
        decoder.feed(bytes.fromhex(hexa))
    # a failed stream cannot be re-synchronised: the decoder stays failed
    with pytest.raises(MqttProtocolError, match="already failed"):
        decoder.feed(b"\xd0\x00")


def test_packet_size_limit_is_checked_before_buffering() -> None:
    """MQTT 5: the client announced its limit, so a larger packet is the server's protocol error
    (reason code 0x95), found from the fixed header alone."""
    decoder = MqttDecoder(MQTT_5, max_packet_size=100)
    assert decoder.feed(b"\x30\x62" + b"\x00\x01t\x00" + b"x" * 94) == [Publish("t", b"x" * 94)]  # 100 bytes
    with pytest.raises(MqttProtocolError, match="exceeds the maximum packet size of 100") as err:
        decoder.feed(b"\x30\xff\xff\x7f")  # the fixed header of a 2 MB PUBLISH: refused at once
    assert err.value.reason_code == 0x95


def test_mqtt311_oversized_publish_is_skipped() -> None:
    """MQTT 3.1.1: the server cannot know the limit; a larger PUBLISH comes back as its head
    (enough to acknowledge it) and the rest is skipped as it arrives, however it is split."""
    body = b"\x00\x03big\x00\x09" + b"y" * 500
    big = b"\x33" + encode_varint(len(body)) + body  # QoS 1, retained, packet id 9
    small = encode_publish("s", b"ok", version=MQTT_311, qos=1, packet_id=10)
    stream = b"\x40\x02\x00\x01" + big + small
    expected = [
        Puback(1),
        OversizedPublish("big", len(big), 1, True, 9),
        Publish("s", b"ok", 1, packet_id=10),
    ]
    for step in (1, 2, 3, 7, 64, 100, len(stream)):
        decoder = MqttDecoder(MQTT_311, max_packet_size=100)
        got: list[Packet] = []
        for i in range(0, len(stream), step):
            got += decoder.feed(stream[i : i + step])
            assert decoder.buffered <= 100
        assert got == expected, step
    # any other packet over the limit is an error
    decoder = MqttDecoder(MQTT_311, max_packet_size=100)
    with pytest.raises(MqttProtocolError, match="SUBACK of 204 bytes exceeds"):
        decoder.feed(b"\x90\xc9\x01\x00\x01")
    decoder = MqttDecoder(MQTT_311, max_packet_size=100)
    with pytest.raises(MqttProtocolError, match="QoS 3"):
        decoder.feed(b"\x36\xc9\x01\x00\x01t")


def test_puback_runs() -> None:
    """The fast path for runs of plain PUBACKs, against the general parser (byte by byte)."""
    stream = b"".join(
        encode_ack(PUBACK, i, version=MQTT_311) for i in (1, 2, 0x0100, 0xFFFF)
    ) + bytes.fromhex("40030005104003000600400300078740020008d0004003000910")
    expected: list[Packet] = [
        Puback(1),
        Puback(2),
        Puback(0x100),
        Puback(0xFFFF),
        Puback(5, 0x10),
        Puback(6),
        Puback(7, 0x87),
        Puback(8),
        Pingresp(),
        Puback(9, 0x10),
    ]
    assert MqttDecoder(MQTT_5).feed(stream) == expected
    one_by_one = MqttDecoder(MQTT_5)
    assert [p for b in stream for p in one_by_one.feed(bytes([b]))] == expected
    acks, packets = MqttDecoder(MQTT_5).feed_acks(stream)
    assert list(acks) == [1, 2, 0x100, 0xFFFF, 5, 6, 8, 9]  # successes (0x10 included), in order
    assert packets == [Puback(7, 0x87), Pingresp()]
    # in MQTT 3.1.1 a PUBACK has no reason code: the 5-byte form is malformed
    with pytest.raises(MqttProtocolError):
        MqttDecoder(MQTT_311).feed(bytes.fromhex("4003000510"))


def test_partial_packets_are_kept() -> None:
    decoder = MqttDecoder(MQTT_311)
    raw = encode_publish("topic", b"payload" * 50, version=MQTT_311, qos=1, packet_id=3)
    assert decoder.feed(raw[:1]) == []
    assert decoder.feed(raw[1:2]) == []  # half the remaining length
    assert decoder.feed(raw[2:100]) == []
    assert decoder.buffered == 100
    assert decoder.feed(raw[100:] + raw[:5]) == [Publish("topic", b"payload" * 50, 1, False, False, 3)]
    assert decoder.buffered == 5
    assert decoder.feed(memoryview(raw[5:])) == [Publish("topic", b"payload" * 50, 1, False, False, 3)]


# --------------------------------------------------------------------------------------------------
# properties (hypothesis)
# --------------------------------------------------------------------------------------------------

topics = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=40
)


@st.composite
def publishes(draw: Any, version: int) -> Publish:
    qos = draw(st.sampled_from([0, 1, 2]))
    return Publish(
        draw(topics),
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(st.integers(1, 0xFFFF)) if qos else 0,
    )


def _encode(packet: Publish, version: int) -> bytes:
    return encode_publish(
        packet.topic,
        packet.payload,
        version=version,
        qos=packet.qos,
        retain=packet.retain,
        dup=packet.dup,
        packet_id=packet.packet_id,
    )


@given(st.data(), st.sampled_from([MQTT_311, MQTT_5]))
def test_publish_round_trip(data: Any, version: int) -> None:
    packet = data.draw(publishes(version))
    assert decode_one(_encode(packet, version), version) == packet


@settings(max_examples=200)
@given(st.data(), st.sampled_from([MQTT_311, MQTT_5]))
def test_any_split_gives_the_same_packets(data: Any, version: int) -> None:
    """A stream of packets, cut anywhere into pieces, decodes to the same packets."""
    pieces = [
        st.builds(lambda p: _encode(p, version), publishes(version)),
        st.integers(1, 0xFFFF).map(lambda i: encode_ack(PUBACK, i, version=version)),
        st.just(b"\xd0\x00"),
        st.integers(1, 0xFFFF).map(
            lambda i: (
                bytes([0x90, 4, i >> 8, i & 0xFF, 0, 1])
                if version == MQTT_5
                else bytes([0x90, 3, i >> 8, i & 0xFF, 1])
            )
        ),
    ]
    if version == MQTT_5:
        pieces.append(
            st.tuples(st.integers(1, 0xFFFF), st.integers(0, 255)).map(
                lambda t: encode_ack(PUBACK, t[0], version=MQTT_5, reason_code=t[1])
            )
        )
    packets = data.draw(st.lists(st.one_of(pieces), max_size=30))
    stream = b"".join(packets)
    whole = MqttDecoder(version).feed(stream)
    assert len(whole) == len(packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = MqttDecoder(version)
    split: list[Packet] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        split += decoder.feed(stream[a:b])
    assert split == whole
    acks, others = MqttDecoder(version).feed_acks(stream)
    assert [
        p for p in whole if not (isinstance(p, Puback) and p.reason_code < 0x80 and not p.properties)
    ] == others
    assert list(acks) == [
        p.packet_id for p in whole if isinstance(p, Puback) and p.reason_code < 0x80 and not p.properties
    ]


@settings(max_examples=500)
@given(
    st.binary(max_size=200),
    st.sampled_from([MQTT_311, MQTT_5]),
    st.integers(1, 20),
    st.sampled_from([MAX_PACKET_SIZE, 16]),  # 16: oversized PUBLISHes skipped (3.1.1)
)
def test_random_bytes_raise_only_protocol_errors(data: bytes, version: int, chunk: int, limit: int) -> None:
    decoder = MqttDecoder(version, max_packet_size=limit)
    error = ""
    try:
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])
    except MqttProtocolError as exc:  # anything else fails the test
        error = str(exc) or "(no message)"
    assert error != "(no message)"


@settings(max_examples=1000)
@given(st.integers(0, 255), st.binary(max_size=80), st.sampled_from([MQTT_311, MQTT_5]))
def test_random_packets_raise_only_protocol_errors(first: int, body: bytes, version: int) -> None:
    """A well-framed packet of any type, flags and body: parsed, or MqttProtocolError."""
    raw = bytes([first]) + encode_varint(len(body)) + body
    try:
        packets = MqttDecoder(version).feed(raw)
    except MqttProtocolError as exc:  # anything else fails the test
        packets = [] if str(exc) else [Pingresp(), Pingresp()]
    assert len(packets) <= 1


@settings(max_examples=500)
@given(st.binary(max_size=60), st.sampled_from([MQTT_311, MQTT_5]))
def test_random_properties_raise_only_protocol_errors(props: bytes, version: int) -> None:
    """Random property bytes inside otherwise valid CONNACK, PUBLISH, PUBACK and DISCONNECT."""
    blob = encode_varint(len(props)) + props
    for raw in (
        b"\x00\x00" + blob,
        s("t") + b"\x00\x01" + blob + b"payload",
        b"\x00\x01\x80" + blob,
        b"\x80" + blob,
    ):
        for first in (0x20, 0x32, 0x40, 0xE0):
            error = ""
            try:
                MqttDecoder(version).feed(bytes([first]) + encode_varint(len(raw)) + raw)
            except MqttProtocolError as exc:  # anything else fails the test
                error = str(exc) or "(no message)"
            assert error != "(no message)"
