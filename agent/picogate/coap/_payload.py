"""CoAP payloads, with no I/O: SenML (RFC 8428) in JSON and CBOR, plain JSON objects, and the
value formats a GET answers with.

`decode_report` turns a POSTed payload into `(point, value, ts_ns, unit)` records or raises
`PayloadError` carrying the CoAP response code (4.00 / 4.15) and a message that says what is wrong
and where (record index, field).  It never raises anything else, whatever the bytes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import cbor2
import orjson

from picogate._errors import PicogateError
from picogate._model import NAME_RE, Reading, Value

# CoAP content formats (IANA registry; aiocoap.numbers.ContentFormat knows them by the same numbers)
CF_TEXT = 0
CF_JSON = 50
CF_CBOR = 60
CF_SENML_JSON = 110
CF_SENML_CBOR = 112

CF_NAMES = {
    CF_TEXT: "text/plain",
    CF_JSON: "application/json",
    CF_CBOR: "application/cbor",
    CF_SENML_JSON: "application/senml+json",
    CF_SENML_CBOR: "application/senml+cbor",
}

# SenML labels in CBOR (RFC 8428 table 6) → their JSON names
_CBOR_LABELS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", 0: "n", 1: "u", 2: "v", 3: "vs"}
_CBOR_LABELS |= {4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}
_KNOWN = {"bver", "bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "s", "t", "ut", "vd"}
_RELATIVE_LIMIT = 2**28  # RFC 8428 §4.5.3: times below this are relative to "now"
_LATEST = 2**33  # seconds: year 2242; later is a mistake, and would not fit in 64-bit nanoseconds


class PayloadError(PicogateError, ValueError):
    """Bad input; `code` is the CoAP response code to answer with ("4.00", "4.15", ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Record:
    """One value of one point as the node sent it (before checking against the point's type)."""

    name: str
    value: Value
    ts: int  # ns since the epoch
    unit: str


def decode_report(payload: bytes, content_format: int | None, *, now_ns: int | None = None) -> list[Record]:
    """A POSTed report → records.  No content format: JSON (an object is plain JSON, an array SenML)."""
    now = time.time_ns() if now_ns is None else now_ns
    try:
        return _decode_report(payload, content_format, now)
    except PayloadError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a case not foreseen above
        raise PayloadError("4.00", f"unusable payload: {exc}") from None


def _decode_report(payload: bytes, content_format: int | None, now: int) -> list[Record]:
    if content_format in (None, CF_JSON, CF_SENML_JSON):
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise PayloadError("4.00", f"malformed JSON: {exc}") from None
        if content_format == CF_SENML_JSON or (content_format is None and isinstance(doc, list)):
            return _senml(doc, now, "SenML JSON")
        return _plain(doc, now)
    if content_format == CF_SENML_CBOR:
        try:
            doc = cbor2.loads(payload)
        except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, ...)
            raise PayloadError("4.00", f"malformed CBOR: {exc}") from None
        if isinstance(doc, list):
            doc = [
                {_CBOR_LABELS.get(k, str(k)): v for k, v in rec.items()} if isinstance(rec, dict) else rec
                for rec in doc
            ]
        return _senml(doc, now, "SenML CBOR")
    name = CF_NAMES.get(content_format, f"content format {content_format}")
    raise PayloadError(
        "4.15",
        f"{name} is not accepted: send application/senml+json (110), application/senml+cbor (112) "
        "or application/json (50)",
    )


def _plain(doc: Any, now: int) -> list[Record]:
    if not isinstance(doc, dict) or not doc:
        raise PayloadError("4.00", 'a JSON report must be a non-empty object such as {"temp": 21.5}')
    out: list[Record] = []
    for name, value in doc.items():
        out.append(Record(_point_name(name, f"key {name!r}"), _scalar(value, f"key {name!r}"), now, ""))
    return out


def _scalar(value: Any, where: str) -> Value:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError("4.00", f"{where}: {value} is not a finite number")
        return value
    raise PayloadError("4.00", f"{where}: value must be a number, true/false or a string, not {value!r}")


def _point_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PayloadError(
            "4.00", f"{where}: point name {name!r} must be lower-case letters, digits and '_' (e.g. temp_1)"
        )
    return name


def _number(rec: dict[str, Any], key: str, where: str) -> float:
    v = rec[key]
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63:
        raise PayloadError("4.00", f"{where}: {key} {v} is too large")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise PayloadError("4.00", f"{where}: {key} must be a finite number, not {v!r}")
    return float(v)


def _senml(doc: Any, now: int, what: str) -> list[Record]:
    if not isinstance(doc, list) or not doc:
        raise PayloadError("4.00", f"{what}: the payload must be a non-empty array of records")
    bn, bt, bu, bv = "", 0.0, "", 0.0
    out: list[Record] = []
    for i, rec in enumerate(doc):
        where = f"{what} record {i}"
        if not isinstance(rec, dict):
            raise PayloadError("4.00", f"{where}: must be a map/object, not {type(rec).__name__}")
        unknown = [k for k in rec if k not in _KNOWN]
        must = [k for k in unknown if isinstance(k, str) and k.endswith("_")]
        if must:  # RFC 8428 §4.4: labels ending in "_" must be understood
            raise PayloadError("4.00", f"{where}: unsupported mandatory field {must[0]!r}")
        if "bver" in rec and (not isinstance(rec["bver"], int) or rec["bver"] > 10):
            raise PayloadError("4.00", f"{where}: unsupported SenML version {rec['bver']!r}")
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise PayloadError("4.00", f"{where}: bn must be a string")
            bn = rec["bn"]
        if "bt" in rec:
            bt = _number(rec, "bt", where)
        if "bu" in rec:
            if not isinstance(rec["bu"], str):
                raise PayloadError("4.00", f"{where}: bu must be a string")
            bu = rec["bu"]
        if "bv" in rec:
            bv = _number(rec, "bv", where)
        kinds = [k for k in ("v", "vs", "vb", "vd", "s") if k in rec]
        if not kinds:
            if "n" in rec or "t" in rec or "u" in rec:
                raise PayloadError("4.00", f"{where}: no value (v, vs or vb)")
            continue  # a record of base fields only
        if len(kinds) > 1:
            raise PayloadError("4.00", f"{where}: more than one value field ({', '.join(kinds)})")
        kind = kinds[0]
        value: Value
        if kind == "v":
            value = _number(rec, "v", where) + bv
            raw = rec["v"]
            if isinstance(raw, int) and not isinstance(raw, bool) and bv == 0:
                value = raw
        elif kind == "vs":
            if not isinstance(rec["vs"], str):
                raise PayloadError("4.00", f"{where}: vs must be a string")
            value = rec["vs"]
        elif kind == "vb":
            if not isinstance(rec["vb"], bool):
                raise PayloadError("4.00", f"{where}: vb must be true or false")
            value = rec["vb"]
        else:
            raise PayloadError(
                "4.00", f"{where}: {kind} (data value / sum) is not supported; use v, vs or vb"
            )
        n = rec.get("n", "")
        if not isinstance(n, str):
            raise PayloadError("4.00", f"{where}: n must be a string")
        name = bn + n
        t = bt + (_number(rec, "t", where) if "t" in rec else 0.0)
        if not -_RELATIVE_LIMIT < t < _LATEST:
            raise PayloadError("4.00", f"{where}: time {t:g} is out of range")
        us = round(t * 1e6) * 1000  # float seconds hold microseconds exactly, not nanoseconds
        ts = now + us if abs(t) < _RELATIVE_LIMIT else us
        u = rec.get("u", bu)
        if not isinstance(u, str):
            raise PayloadError("4.00", f"{where}: u must be a string")
        out.append(Record(name, value, ts, u))
    if not out:
        raise PayloadError("4.00", f"{what}: no record carries a value")
    return out


def split_name(name: str, device: str, where: str) -> str:
    """A SenML name as posted to /r/<device> → the point name.

    `temp`, `<device>/temp`, `<device>.temp` and `<device>:temp` all name point `temp`, so that a
    node may use its own name as base name (`"bn": "boiler/"`)."""
    for sep in ("/", ".", ":"):
        prefix = device + sep
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return _point_name(name, where)


# --------------------------------------------------------------------------- answers to GET


def encode_reading(r: Reading, content_format: int) -> bytes:
    """The last reading of a point as JSON (`{"v","ts","unit","q"}`, as on MQTT) or SenML."""
    if content_format == CF_JSON:
        return orjson.dumps({"v": r.value, "ts": r.ts // 1_000_000, "unit": r.unit, "q": r.quality.value})
    rec: dict[str, Any] = {"n": f"{r.device}/{r.point}", "t": r.ts / 1e9}
    if r.unit:
        rec["u"] = r.unit
    if isinstance(r.value, bool):
        rec["vb"] = r.value
    elif isinstance(r.value, str):
        rec["vs"] = r.value
    elif r.value is not None:
        rec["v"] = r.value
    if content_format == CF_SENML_JSON:
        return orjson.dumps([rec])
    labels = {v: k for k, v in _CBOR_LABELS.items()}
    return cbor2.dumps([{labels[k]: v for k, v in rec.items()}])


def decode_value(payload: bytes, content_format: int | None) -> object:
    """The value of a PUT (or of a polled resource): a JSON or CBOR scalar, `{"v": x}`, a SenML
    record, or text.  Raises PayloadError."""
    try:
        if content_format in (None, CF_JSON, CF_TEXT):
            try:
                doc: Any = orjson.loads(payload)
            except orjson.JSONDecodeError:
                if content_format == CF_TEXT:
                    return payload.decode()
                raise
        elif content_format == CF_CBOR:
            doc = cbor2.loads(payload)
        elif content_format in (CF_SENML_JSON, CF_SENML_CBOR):
            recs = decode_report(payload, content_format)
            if len(recs) != 1:
                raise PayloadError("4.00", "send exactly one SenML record with a value")
            return recs[0].value
        else:
            name = CF_NAMES.get(content_format, f"content format {content_format}")
            raise PayloadError("4.15", f"{name} is not accepted for a value: send JSON, CBOR, SenML or text")
    except PayloadError:
        raise
    except Exception as exc:
        raise PayloadError("4.00", f"malformed value: {exc}") from None
    if isinstance(doc, dict) and "v" in doc:
        doc = doc["v"]
    if isinstance(doc, bool | int | float | str):
        return doc
    raise PayloadError(
        "4.00", f'the value must be a number, true/false or a string (or {{"v": ...}}), not {doc!r}'
    )
