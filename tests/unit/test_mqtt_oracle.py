"""Our MQTT 5 codec against a second implementation, the `mqtt5` package (Rust, sans-I/O): random
packets encoded by one and decoded by the other, both ways (hypothesis).

- what the client sends (CONNECT, PUBLISH, SUBSCRIBE, the four acknowledgements, DISCONNECT,
  PINGREQ): encoded by `picogate.mqtt._codec`, read by `mqtt5.read`;
- what a server sends (CONNACK, PUBLISH, the acknowledgements, SUBACK, UNSUBACK, PINGRESP,
  DISCONNECT): written by `mqtt5`, decoded by `MqttDecoder`, in one piece and split at a random
  point.

mqtt5 knows MQTT 5 only; 3.1.1 is covered by tests/unit/test_mqtt_codec.py and the broker matrix.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picogate.mqtt import _codec as c

mqtt5 = pytest.importorskip("mqtt5")

SETTINGS = settings(max_examples=150, deadline=None)

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
topic_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=60
)
payloads = st.binary(max_size=300)
packet_ids = st.integers(1, 0xFFFF)
four = st.integers(0, 0xFFFF_FFFF)
user_properties = st.lists(st.tuples(text, text), max_size=3)


def codes(enum: Any) -> list[int]:
    """The values of one of mqtt5's reason-code enums (Rust classes: not iterable)."""
    return sorted(int(getattr(enum, name)) for name in dir(enum) if name.isupper())


def read(data: bytes) -> Any:
    packet, size = mqtt5.read(memoryview(data))
    assert size == len(data)
    return packet


def decode(data: bytes, split: int) -> c.Packet:
    """Our decoder, fed `data` in two pieces."""
    decoder = c.MqttDecoder(c.MQTT_5)
    cut = split % (len(data) + 1)
    packets = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
    assert len(packets) == 1, packets
    assert decoder.buffered == 0
    return packets[0]


# --------------------------------------------------------------------------------------------------
# ours → mqtt5 (client → server)
# --------------------------------------------------------------------------------------------------


@SETTINGS
@given(
    client_id=text,
    keepalive=st.integers(0, 0xFFFF),
    clean_start=st.booleans(),
    will=st.none() | st.tuples(topic_names, payloads, st.integers(0, 2), st.booleans()),
    username=st.none() | text,
    password=st.none() | st.binary(max_size=40),
    session_expiry=st.none() | four,
    receive_maximum=st.none() | st.integers(1, 0xFFFF),
    maximum_packet_size=st.none() | st.integers(1, c.MAX_PACKET_SIZE),
)
def test_connect(
    client_id: str,
    keepalive: int,
    clean_start: bool,
    will: tuple[str, bytes, int, bool] | None,
    username: str | None,
    password: bytes | None,
    session_expiry: int | None,
    receive_maximum: int | None,
    maximum_packet_size: int | None,
) -> None:
    wire = c.encode_connect(
        client_id=client_id,
        keepalive=keepalive,
        clean_start=clean_start,
        will_topic=will[0] if will else None,
        will_payload=will[1] if will else b"",
        will_qos=will[2] if will else 0,
        will_retain=will[3] if will else False,
        username=username,
        password=password,
        session_expiry=session_expiry,
        receive_maximum=receive_maximum,
        maximum_packet_size=maximum_packet_size,
    )
    p = read(wire)
    assert isinstance(p, mqtt5.ConnectPacket)
    assert (p.client_id, p.keep_alive, p.clean_start) == (client_id, keepalive, clean_start)
    assert (p.username, p.password) == (username, password)
    assert p.session_expiry_interval == (session_expiry or 0)
    assert p.receive_max == (receive_maximum or 0xFFFF)
    assert p.max_packet_size == maximum_packet_size
    if will is None:
        assert p.will is None
    else:
        assert (p.will.topic, p.will.payload or b"", int(p.will.qos), p.will.retain) == will


@SETTINGS
@given(
    topic=topic_names,
    payload=payloads,
    qos=st.integers(0, 2),
    retain=st.booleans(),
    dup=st.booleans(),
    packet_id=packet_ids,
)
def test_publish(topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int) -> None:
    if not qos:
        dup, packet_id = False, 0
    p = read(c.encode_publish(topic, payload, qos=qos, retain=retain, dup=dup, packet_id=packet_id))
    assert isinstance(p, mqtt5.PublishPacket)
    assert (p.topic, p.payload, int(p.qos), p.retain, p.duplicate) == (topic, payload, qos, retain, dup)
    assert p.packet_id == (packet_id or None)
    assert p.topic_alias is None
    assert p.user_properties == []


@SETTINGS
@given(
    packet_id=packet_ids,
    topic_filter=text.filter(bool),
    qos=st.integers(0, 2),
    no_local=st.booleans(),
    retain_as_published=st.booleans(),
    retain_handling=st.integers(0, 2),
)
def test_subscribe(
    packet_id: int,
    topic_filter: str,
    qos: int,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: int,
) -> None:
    wire = c.encode_subscribe(
        packet_id,
        topic_filter,
        qos,
        no_local=no_local,
        retain_as_published=retain_as_published,
        retain_handling=retain_handling,
    )
    p = read(wire)
    assert isinstance(p, mqtt5.SubscribePacket)
    assert p.packet_id == packet_id
    (f,) = p.topic_filters
    got = (f.pattern, int(f.max_qos), f.no_local, f.retain_as_published, int(f.retain_handling))
    assert got == (topic_filter, qos, no_local, retain_as_published, retain_handling)


ACKS: dict[int, tuple[Any, Any]] = {
    c.PUBACK: (mqtt5.PubAckPacket, mqtt5.PubAckReasonCode),
    c.PUBREC: (mqtt5.PubRecPacket, mqtt5.PubRecReasonCode),
    c.PUBREL: (mqtt5.PubRelPacket, mqtt5.PubRelReasonCode),
    c.PUBCOMP: (mqtt5.PubCompPacket, mqtt5.PubCompReasonCode),
}


@st.composite
def acks(draw: st.DrawFn) -> tuple[int, int, int, str | None]:
    kind = draw(st.sampled_from(sorted(ACKS)))
    reason = draw(st.sampled_from(codes(ACKS[kind][1])))
    return kind, draw(packet_ids), reason, draw(st.none() | text)


@SETTINGS
@given(ack=acks())
def test_acknowledgements(ack: tuple[int, int, int, str | None]) -> None:
    kind, packet_id, reason, reason_string = ack
    p = read(c.encode_ack(kind, packet_id, reason_code=reason, reason_string=reason_string))
    assert isinstance(p, ACKS[kind][0])
    assert (p.packet_id, int(p.reason_code), p.reason_str) == (packet_id, reason, reason_string)


@SETTINGS
@given(reason=st.sampled_from(codes(mqtt5.DisconnectReasonCode)))
def test_disconnect_and_pingreq(reason: int) -> None:
    p = read(c.encode_disconnect(reason_code=reason))
    assert isinstance(p, mqtt5.DisconnectPacket)
    assert int(p.reason_code) == reason
    assert isinstance(read(c.PINGREQ), mqtt5.PingReqPacket)


# --------------------------------------------------------------------------------------------------
# mqtt5 → ours (server → client)
# --------------------------------------------------------------------------------------------------


@SETTINGS
@given(
    reason=st.sampled_from(codes(mqtt5.ConnAckReasonCode)),
    session_present=st.booleans(),
    session_expiry=st.none() | four,
    assigned=st.none() | text,
    server_keep_alive=st.none() | st.integers(0, 0xFFFF),
    reason_string=st.none() | text,
    receive_max=st.integers(1, 0xFFFF),
    topic_alias_max=st.integers(0, 0xFFFF),
    max_qos=st.integers(0, 1),
    retain_available=st.booleans(),
    max_packet_size=st.none() | st.integers(1, c.MAX_PACKET_SIZE),
    props=user_properties,
    split=st.integers(0, 1000),
)
def test_connack(
    reason: int,
    session_present: bool,
    session_expiry: int | None,
    assigned: str | None,
    server_keep_alive: int | None,
    reason_string: str | None,
    receive_max: int,
    topic_alias_max: int,
    max_qos: int,
    retain_available: bool,
    max_packet_size: int | None,
    props: list[tuple[str, str]],
    split: int,
) -> None:
    wire = mqtt5.ConnAckPacket(
        session_present=session_present and not reason,  # only an accepted connection has a session
        reason_code=mqtt5.ConnAckReasonCode(reason),
        session_expiry_interval=session_expiry,
        assigned_client_id=assigned,
        server_keep_alive=server_keep_alive,
        reason_str=reason_string,
        receive_max=receive_max,
        topic_alias_max=topic_alias_max,
        max_qos=mqtt5.QoS(max_qos),
        retain_available=retain_available,
        max_packet_size=max_packet_size,
        user_properties=props,
    ).write()
    ack = decode(wire, split)
    assert isinstance(ack, c.Connack)
    assert (ack.session_present, ack.reason_code) == (session_present and not reason, reason)
    assert ack.properties.get(c.SESSION_EXPIRY_INTERVAL) == session_expiry
    assert ack.assigned_client_identifier == assigned
    assert ack.server_keep_alive == server_keep_alive
    assert ack.reason_string == reason_string
    assert (ack.receive_maximum, ack.topic_alias_maximum) == (receive_max, topic_alias_max)
    assert (ack.maximum_qos, ack.retain_available) == (max_qos, retain_available)
    assert ack.maximum_packet_size == max_packet_size
    assert ack.properties.get(c.USER_PROPERTY, []) == props


@SETTINGS
@given(
    topic=topic_names,
    payload=payloads,
    qos=st.integers(0, 2),
    retain=st.booleans(),
    dup=st.booleans(),
    packet_id=packet_ids,
    payload_format=st.integers(0, 1),
    expiry=st.none() | four,
    content_type=st.none() | text,
    response_topic=st.none() | topic_names,
    correlation=st.none() | st.binary(max_size=20),
    subscription_ids=st.lists(st.integers(1, c.MAX_REMAINING_LENGTH), max_size=2),
    props=user_properties,
    split=st.integers(0, 1000),
)
def test_incoming_publish(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    payload_format: int,
    expiry: int | None,
    content_type: str | None,
    response_topic: str | None,
    correlation: bytes | None,
    subscription_ids: list[int],
    props: list[tuple[str, str]],
    split: int,
) -> None:
    wire = mqtt5.PublishPacket(
        topic,
        payload,
        qos=mqtt5.QoS(qos),
        retain=retain,
        packet_id=packet_id if qos else None,
        duplicate=dup and qos > 0,
        payload_format_indicator=payload_format,
        message_expiry_interval=expiry,
        content_type=content_type,
        response_topic=response_topic,
        correlation_data=correlation,
        subscription_ids=subscription_ids,
        user_properties=props,
    ).write()
    msg = decode(wire, split)
    assert isinstance(msg, c.Publish)
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (topic, payload, qos, retain)
    assert (msg.dup, msg.packet_id) == (dup and qos > 0, packet_id if qos else 0)
    p = msg.properties
    assert p.get(c.PAYLOAD_FORMAT_INDICATOR, 0) == payload_format
    assert p.get(c.MESSAGE_EXPIRY_INTERVAL) == expiry
    assert p.get(c.CONTENT_TYPE) == content_type
    assert p.get(c.RESPONSE_TOPIC) == response_topic
    assert p.get(c.CORRELATION_DATA) == correlation
    assert p.get(c.SUBSCRIPTION_IDENTIFIER, []) == subscription_ids
    assert p.get(c.USER_PROPERTY, []) == props


@SETTINGS
@given(ack=acks(), props=user_properties, split=st.integers(0, 1000))
def test_incoming_acknowledgements(
    ack: tuple[int, int, int, str | None], props: list[tuple[str, str]], split: int
) -> None:
    kind, packet_id, reason, reason_string = ack
    packet_class, reason_class = ACKS[kind]
    wire = packet_class(
        packet_id, reason_code=reason_class(reason), reason_str=reason_string, user_properties=props
    ).write()
    got = decode(wire, split)
    assert isinstance(got, c.Ack)
    assert type(got).__name__.upper() == c._TYPE_NAMES[kind]
    assert (got.packet_id, got.reason_code, got.reason_string) == (packet_id, reason, reason_string)
    assert got.properties.get(c.USER_PROPERTY, []) == props
    # and the publisher's fast path (feed_acks) agrees with the general parser
    ids, packets = c.MqttDecoder(c.MQTT_5).feed_acks(wire)
    if kind == c.PUBACK and reason < 0x80 and reason_string is None and not props:
        assert (list(ids), packets) == ([packet_id], [])
    else:
        assert (list(ids), packets) == ([], [got])


@SETTINGS
@given(
    packet_id=packet_ids,
    sub_codes=st.lists(st.sampled_from(codes(mqtt5.SubAckReasonCode)), min_size=1, max_size=4),
    unsub_codes=st.lists(st.sampled_from(codes(mqtt5.UnsubAckReasonCode)), min_size=1, max_size=4),
    reason_string=st.none() | text,
    split=st.integers(0, 1000),
)
def test_incoming_suback_and_unsuback(
    packet_id: int, sub_codes: list[int], unsub_codes: list[int], reason_string: str | None, split: int
) -> None:
    suback = decode(
        mqtt5.SubAckPacket(
            packet_id, [mqtt5.SubAckReasonCode(x) for x in sub_codes], reason_str=reason_string
        ).write(),
        split,
    )
    assert isinstance(suback, c.Suback)
    assert not isinstance(suback, c.Unsuback)
    assert (suback.packet_id, list(suback.reason_codes)) == (packet_id, sub_codes)
    assert suback.properties.get(c.REASON_STRING) == reason_string
    unsuback = decode(
        mqtt5.UnsubAckPacket(packet_id, [mqtt5.UnsubAckReasonCode(x) for x in unsub_codes]).write(), split
    )
    assert isinstance(unsuback, c.Unsuback)
    assert (unsuback.packet_id, list(unsuback.reason_codes)) == (packet_id, unsub_codes)


@SETTINGS
@given(
    reason=st.sampled_from(codes(mqtt5.DisconnectReasonCode)),
    reason_string=st.none() | text,
    server_reference=st.none() | text,
    split=st.integers(0, 1000),
)
def test_incoming_disconnect_and_pingresp(
    reason: int, reason_string: str | None, server_reference: str | None, split: int
) -> None:
    got = decode(
        mqtt5.DisconnectPacket(
            reason_code=mqtt5.DisconnectReasonCode(reason),
            reason_str=reason_string,
            server_reference=server_reference,
        ).write(),
        split,
    )
    assert isinstance(got, c.Disconnect)
    assert (got.reason_code, got.reason_string) == (reason, reason_string)
    assert got.properties.get(c.SERVER_REFERENCE) == server_reference
    assert decode(mqtt5.PingRespPacket().write(), split) == c.Pingresp()
