"""A Sparkplug 3.0 primary host for the tests, on code that is not ours: pysparkplug's protobuf
module and payload classes, paho-mqtt 1.6.  It runs in `.venv-spb` (tools/bootstrap.sh):

    .venv-spb/bin/python tests/integration/spb_host.py HOST PORT GROUP HOST_ID

It prints one JSON line per message it receives on `spBv1.0/<group>/#` (topic, verb, device,
QoS, retain, seq, timestamp, and each metric with its name resolved through the births' aliases,
datatype, value, flags and properties) and takes commands as JSON lines on stdin:

    {"cmd": "online"}                        connect (will: STATE offline), subscribe, STATE online
    {"cmd": "offline"}                       STATE offline (retained), then disconnect
    {"cmd": "rebirth", "node": N}            NCMD Node Control/Rebirth = true
    {"cmd": "ncmd", "node": N, "name": ..., "value": ...}  any boolean NCMD metric
    {"cmd": "dcmd", "node": N, "device": D, "name": M, "value": V}   DCMD by the DBIRTH's alias
    {"cmd": "raw", "topic": T, "payload_hex": H}   any bytes on any topic (bad input tests)
    {"cmd": "quit"}

Every command is answered with {"ack": <cmd>} once done.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from pysparkplug import DataType, DBirth, DCmd, Metric, NBirth, NCmd
from pysparkplug import _protobuf as pb  # pysparkplug's own compiled schema

host, port, group, host_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
STATE = f"spBv1.0/STATE/{host_id}"
out_lock = threading.Lock()
births: dict[tuple[str, str], object] = {}  # (node, device or "") → NBirth/DBirth (pysparkplug)
client: mqtt.Client | None = None


def emit(obj: dict) -> None:
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def prop_value(pv: object) -> object:
    field = pv.WhichOneof("value")  # type: ignore[attr-defined]
    return None if field is None else getattr(pv, field)


def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
    try:
        record(msg)
    except Exception:
        import traceback

        emit({"topic": msg.topic, "error": traceback.format_exc()})


def record(msg: mqtt.MQTTMessage) -> None:
    parts = msg.topic.split("/")
    if parts[1] == "STATE":
        emit({"topic": msg.topic, "state": json.loads(msg.payload), "retain": bool(msg.retain)})
        return
    verb, node = parts[2], parts[3]
    device = parts[4] if len(parts) > 4 else ""
    raw = pb.Payload.FromString(msg.payload)  # their schema, their runtime
    # pysparkplug 0.6.1 refuses an Int8/Int16 sign-extended to 32 bits (its issue #26), which is
    # how Eclipse Tahu encodes them: keep the type's own bits before its decoder sees them.
    for m in raw.metrics:
        if m.datatype in (1, 2) and m.WhichOneof("value") == "int_value":
            m.int_value &= (1 << (8 if m.datatype == 1 else 16)) - 1
    birth = births.get((node, device))
    if verb == "NBIRTH":
        births[(node, "")] = NBirth.decode(raw.SerializeToString())
    elif verb == "DBIRTH":
        births[(node, device)] = DBirth.decode(raw.SerializeToString())
    if verb in ("DDATA", "DCMD") and birth is not None:
        for m in raw.metrics:
            dtype = int(birth.get_dtype(birth.get_name(m.alias))) if m.HasField("alias") else 0
            if dtype in (1, 2) and m.WhichOneof("value") == "int_value":
                m.int_value &= (1 << (8 if dtype == 1 else 16)) - 1
    metrics = []
    for m in raw.metrics:
        name = m.name if m.HasField("name") else None
        if name is None and birth is not None and m.HasField("alias"):
            try:
                name = birth.get_name(m.alias)  # type: ignore[attr-defined]
            except Exception:
                name = None
        field = m.WhichOneof("value")
        props = {}
        if m.HasField("properties"):
            props = {k: prop_value(v) for k, v in zip(m.properties.keys, m.properties.values, strict=False)}
            types = {k: v.type for k, v in zip(m.properties.keys, m.properties.values, strict=False)}
            props["__types__"] = types
        value = None
        if field is not None:
            dtype = m.datatype
            if not dtype and birth is not None and name is not None:
                try:
                    dtype = int(birth.get_dtype(name))  # type: ignore[attr-defined]
                except Exception:
                    dtype = 0
            value = DataType(dtype).decode(getattr(m, field)) if dtype else getattr(m, field)
        metrics.append(
            {
                "name": name,
                "alias": m.alias if m.HasField("alias") else None,
                "has_name": m.HasField("name"),
                "datatype": m.datatype if m.HasField("datatype") else None,
                "timestamp": m.timestamp if m.HasField("timestamp") else None,
                "value": value,
                "field": field,
                "is_null": m.is_null,
                "is_historical": m.is_historical,
                "props": props,
            }
        )
    emit(
        {
            "topic": msg.topic,
            "verb": verb,
            "node": node,
            "device": device,
            "qos": msg.qos,
            "retain": bool(msg.retain),
            "seq": raw.seq if raw.HasField("seq") else None,
            "timestamp": raw.timestamp if raw.HasField("timestamp") else None,
            "metrics": metrics,
            "recv": time.time(),
        }
    )


def go_online() -> None:
    global client
    if client is not None:  # a connection the broker lost (restart): replace it
        client.loop_stop()
        client.disconnect()
        client = None
    ts = int(time.time() * 1000)
    c = mqtt.Client(client_id=f"spb-host-{host_id}", clean_session=True, protocol=mqtt.MQTTv311)
    c.will_set(STATE, json.dumps({"online": False, "timestamp": ts}), qos=1, retain=True)
    c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect(host, port, keepalive=10)
    c.loop_start()
    if not connected.wait(10):
        raise SystemExit("host: no CONNACK")
    c.subscribe([(f"spBv1.0/{group}/#", 1), (STATE, 1)])
    time.sleep(0.2)
    c.publish(STATE, json.dumps({"online": True, "timestamp": ts}), qos=1, retain=True).wait_for_publish()
    client = c


def go_offline() -> None:
    global client
    c = client
    if c is None:
        return
    ts = int(time.time() * 1000)
    c.publish(STATE, json.dumps({"online": False, "timestamp": ts}), qos=1, retain=True).wait_for_publish()
    c.disconnect()
    c.loop_stop()
    client = None


def metric_for(node: str, device: str, name: str, value: object) -> Metric:
    birth = births[(node, device)]
    dtype = birth.get_dtype(name)  # type: ignore[attr-defined]
    alias = next(m.alias for m in birth.metrics if m.name == name)  # type: ignore[attr-defined]
    return Metric(timestamp=int(time.time() * 1000), name=None, alias=alias, datatype=dtype, value=value)


def main() -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        kind = cmd["cmd"]
        if kind == "online":
            go_online()
        elif kind == "offline":
            go_offline()
        elif kind in ("rebirth", "ncmd"):
            name = cmd.get("name", "Node Control/Rebirth")
            m = Metric(
                timestamp=int(time.time() * 1000),
                name=name,
                datatype=DataType.BOOLEAN,
                value=cmd.get("value", True),
            )
            payload = NCmd(timestamp=int(time.time() * 1000), metrics=(m,)).encode(include_dtypes=True)
            assert client is not None
            client.publish(f"spBv1.0/{group}/NCMD/{cmd['node']}", payload, qos=0).wait_for_publish()
        elif kind == "dcmd":
            m = metric_for(cmd["node"], cmd["device"], cmd["name"], cmd["value"])
            payload = DCmd(timestamp=int(time.time() * 1000), metrics=(m,)).encode(include_dtypes=True)
            assert client is not None
            topic = f"spBv1.0/{group}/DCMD/{cmd['node']}/{cmd['device']}"
            client.publish(topic, payload, qos=0).wait_for_publish()
        elif kind == "raw":
            assert client is not None
            client.publish(cmd["topic"], bytes.fromhex(cmd["payload_hex"]), qos=0).wait_for_publish()
        elif kind == "quit":
            emit({"ack": kind})
            return
        emit({"ack": kind})


if __name__ == "__main__":
    main()
