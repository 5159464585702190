"""EdgeX 3.x DTOs built from picogate's model, with no I/O: events, readings, device profiles,
devices, the device service, and the MessageEnvelope of the message bus.

What EdgeX expects is described in docs/edgex.md; the shapes are checked in the tests against the
OpenAPI schemas of edgex-go v3.1.1 (tests/cases/edgex/specs/).
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from picogate._errors import PicogateError
from picogate._model import PointInfo, PointType, Quality, Reading, Value

API_VERSION = "v3"

VALUE_TYPES: dict[PointType, str] = {
    PointType.BOOL: "Bool",
    PointType.INT16: "Int16",
    PointType.UINT16: "Uint16",
    PointType.INT32: "Int32",
    PointType.UINT32: "Uint32",
    PointType.INT64: "Int64",
    PointType.UINT64: "Uint64",
    PointType.FLOAT32: "Float32",
    PointType.FLOAT64: "Float64",
    PointType.STRING: "String",
}

_PRIMARY_TABLES = {
    "coil": "COILS",
    "discrete_input": "DISCRETE_INPUTS",
    "holding": "HOLDING_REGISTERS",
    "input": "INPUT_REGISTERS",
}


def value_type(info: PointInfo | None, value: Value | None) -> str:
    """EdgeX valueType of a point (from its definition, else from the Python type of the value)."""
    if info is not None:
        return VALUE_TYPES[info.type]
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        return "Int64"
    if isinstance(value, float):
        return "Float64"
    return "String"


def format_value(value: Value) -> str:
    """A value as EdgeX writes it: always text (Go strconv syntax)."""
    t = type(value)
    if t is float:
        if value - value == 0:  # type: ignore[operator]  # finite (NaN and infinities give NaN)
            return repr(value)
        if math.isnan(value):  # type: ignore[arg-type]
            return "NaN"
        return "+Inf" if value > 0 else "-Inf"  # type: ignore[operator]
    if t is bool:
        return "true" if value else "false"
    return str(value)


def parse_value(info: PointInfo, text: object) -> Value:
    """A value from an EdgeX SET request (text such as "21.5" or "true"; bare JSON also works),
    converted to the point's type; ValueError with a clear message when it does not parse."""
    t = info.type
    if t is PointType.STRING:
        if isinstance(text, str):
            return text
        raise ValueError(f"{info.name} is a String resource: send text, not {text!r}")
    if isinstance(text, bool):
        if t is PointType.BOOL:
            return text
        raise ValueError(f"{info.name} is a {VALUE_TYPES[t]} resource: send a number, not {text!r}")
    if isinstance(text, int | float):
        return text
    if not isinstance(text, str):
        raise ValueError(f'{info.name}: value must be text such as "21.5", not {text!r}')
    s = text.strip()
    if t is PointType.BOOL:
        low = s.lower()
        if low in ("true", "t", "1"):
            return True
        if low in ("false", "f", "0"):
            return False
        raise ValueError(f'{info.name} is a Bool resource: send "true" or "false", not {text!r}')
    try:
        return int(s, 10) if t.is_integer else float(s)
    except ValueError:
        kind = "an integer" if t.is_integer else "a number"
        raise ValueError(f"{info.name} is a {VALUE_TYPES[t]} resource: {text!r} is not {kind}") from None


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_id() -> str:
    """A random (version 4) UUID as text; 3x cheaper than str(uuid.uuid4()), same randomness
    source (os.urandom), same layout (version nibble 4, RFC 4122 variant)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def id_series(n: int) -> list[str]:
    """`n` distinct UUIDs (version 4 layout) for the readings of one event, for the price of one:
    a random UUID whose last 16 bits count (106 random bits remain; at most 65,536 readings)."""
    base = new_id()[:-4]
    return [f"{base}{i:04x}" for i in range(n)]


def reading_template(
    device: str, point: str, info: PointInfo | None, profile: str, unit: str
) -> dict[str, Any]:
    """The parts of a reading that do not change from one value to the next."""
    d: dict[str, Any] = {
        "deviceName": device,
        "resourceName": point,
        "profileName": profile,
        "valueType": value_type(info, None),
    }
    units = unit or (info.unit if info is not None else "")
    if units:
        d["units"] = units
    return d


def reading_dto(r: Reading, info: PointInfo | None, profile: str) -> dict[str, Any]:
    """One EdgeX reading; `r` must carry a value (bad-quality readings are not sent)."""
    assert r.value is not None
    d: dict[str, Any] = {
        "id": new_id(),
        "origin": r.ts,
        "deviceName": r.device,
        "resourceName": r.point,
        "profileName": profile,
        "valueType": value_type(info, r.value),
        "value": format_value(r.value),
    }
    units = r.unit or (info.unit if info is not None else "")
    if units:
        d["units"] = units
    if r.quality is Quality.UNCERTAIN:
        d["tags"] = {"quality": "uncertain"}
    return d


def event_dto(
    device: str, profile: str, source: str, readings: list[dict[str, Any]], *, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "id": event_id or new_id(),
        "deviceName": device,
        "profileName": profile,
        "sourceName": source,
        "origin": max(r["origin"] for r in readings),
        "readings": readings,
    }


def add_event_request(event: dict[str, Any]) -> dict[str, Any]:
    """The AddEventRequest wrapper (REST body, bus payload)."""
    return {"apiVersion": API_VERSION, "requestId": new_id(), "event": event}


# ----------------------------------------------------------------------------- message envelope


def envelope(
    payload: bytes | None,
    *,
    version: int,
    request_id: str = "",
    correlation_id: str = "",
    error: bool = False,
    content_type: str = "application/json",
) -> bytes:
    """An EdgeX MessageEnvelope.  `payload` is the encoded DTO (or error text): base64 text in
    EdgeX 3 (Go `[]byte`); in EdgeX 4 (`any`) the JSON value itself, and an error's text as a
    plain JSON string (as go-mod-messaging 4's NewMessageEnvelopeWithError sends it)."""
    if payload is None:
        body = b"null"
    elif version >= 4 and error:
        body = orjson.dumps(payload.decode("utf-8", "replace"))  # 4.x: the error text itself
    elif version >= 4 and content_type == "application/json":
        body = payload
    else:
        body = b'"' + base64.b64encode(payload) + b'"'
    if not (request_id or error) and content_type == "application/json" and _SAFE_ID.match(correlation_id):
        # an event: the common case, without a dict and orjson (ids are [0-9a-f-])
        return b"".join((_EVENT_HEAD, correlation_id.encode(), _EVENT_TAIL, body, b"}"))
    head = orjson.dumps(
        {
            "apiVersion": API_VERSION,
            "receivedTopic": "",
            "correlationID": correlation_id,
            "requestID": request_id,
            "errorCode": 1 if error else 0,
            "contentType": "text/plain" if error else content_type,
        }
    )
    return head[:-1] + b',"payload":' + body + b"}"


_SAFE_ID = re.compile(r"^[0-9a-f-]*$")
_EVENT_HEAD = b'{"apiVersion":"v3","receivedTopic":"","correlationID":"'
_EVENT_TAIL = b'","requestID":"","errorCode":0,"contentType":"application/json","payload":'


class EnvelopeError(PicogateError, ValueError):
    """A bus message that is not a usable MessageEnvelope."""


def parse_envelope(raw: bytes) -> dict[str, Any]:
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"message is not JSON: {exc}") from None
    if not isinstance(env, dict):
        raise EnvelopeError("message is not a JSON object (a MessageEnvelope)")
    return env


def envelope_payload(env: dict[str, Any]) -> Any:
    """The decoded JSON payload of an envelope: None, or the DTO (base64 in 3.x, object in 4.x)."""
    payload = env.get("payload")
    if payload is None or payload == "":
        return None
    if isinstance(payload, str):
        try:
            raw = base64.b64decode(payload, validate=True)
        except ValueError:
            raise EnvelopeError("payload is neither base64 nor a JSON object") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"payload is not JSON: {exc}") from None
    return payload


# ----------------------------------------------------------------------------- registration


def profile_name(prefix: str, device: str) -> str:
    return prefix + device


def device_profile(
    name: str, device: str, points: Sequence[PointInfo], *, batch_command: str, labels: Iterable[str] = ()
) -> dict[str, Any]:
    """A device profile describing `points`: values arrive scaled, so there is no scale/offset."""
    resources: list[dict[str, Any]] = []
    for p in points:
        props: dict[str, Any] = {"valueType": VALUE_TYPES[p.type], "readWrite": "RW" if p.writable else "R"}
        if p.unit:
            props["units"] = p.unit
        if p.min is not None:
            props["minimum"] = p.min
        if p.max is not None:
            props["maximum"] = p.max
        res: dict[str, Any] = {"name": p.name, "isHidden": False, "properties": props}
        if p.description:
            res["description"] = p.description
        attrs = _attributes(p)
        if attrs:
            res["attributes"] = attrs
        resources.append(res)
    profile: dict[str, Any] = {
        "name": name,
        "manufacturer": "picogate",
        "model": (points[0].origin if points else "") or "picogate",
        "labels": list(labels),
        "description": f"Points of {device}, generated by picogate (values arrive already scaled)",
        "deviceResources": resources,
        "deviceCommands": [],
    }
    if resources:
        profile["deviceCommands"] = [
            {
                "name": batch_command,
                "isHidden": False,
                "readWrite": "R",
                "resourceOperations": [{"deviceResource": p.name} for p in points],
            }
        ]
    return profile


def _attributes(p: PointInfo) -> dict[str, Any]:
    """Modbus attributes, for information (picogate reads the device, not EdgeX)."""
    if p.origin != "modbus" or "table" not in p.attrs:
        return {"source": p.origin} if p.origin else {}
    a = p.attrs
    attrs: dict[str, Any] = {
        "primaryTable": _PRIMARY_TABLES.get(a["table"], a["table"].upper()),
        "startingAddress": int(a.get("address", "0")),
    }
    if "type" in a:
        raw = PointType(a["type"]) if a["type"] in PointType._value2member_map_ else None
        if raw is not None:
            attrs["rawType"] = VALUE_TYPES[raw]
    order = a.get("order", "")
    if order in ("BADC", "DCBA"):
        attrs["isByteSwap"] = True
    if order in ("CDAB", "DCBA", "GHEFCDAB"):
        attrs["isWordSwap"] = True
    if "count" in a:
        attrs["stringRegisterSize"] = int(a["count"])
    for key, neutral in (("scale", "1.0"), ("offset", "0.0"), ("bit", "")):
        if key in a and a[key] != neutral:
            attrs[f"picogate{key.capitalize()}"] = a[key]  # applied by picogate already
    return attrs


def device_service(name: str, base_address: str, labels: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "name": name,
        "description": "picogate edge gateway (a device service written in Python)",
        "adminState": "UNLOCKED",
        "labels": list(labels),
        "baseAddress": base_address,
    }


def device_dto(
    name: str, service: str, profile: str, protocols: dict[str, dict[str, Any]], description: str = ""
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": name,
        "adminState": "UNLOCKED",
        "operatingState": "UP",
        "serviceName": service,
        "profileName": profile,
        "protocols": protocols,
        "labels": ["picogate"],
    }
    if description:
        d["description"] = description
    return d
