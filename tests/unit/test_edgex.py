"""EdgeX DTOs as data: events, profiles, devices and envelopes checked against the EdgeX 3.1
OpenAPI schemas; value formatting and parsing; the `edgex:` config section's errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from _edgex import SPECS, check, check_envelope, decode_payload, errors, request_schema
from picogate._model import PointInfo, PointType, Quality, Reading
from picogate._registry import PointRegistry
from picogate.edgex._commands import EdgexNames
from picogate.edgex._config import EdgexSection
from picogate.edgex._forward import EdgexEncoder
from picogate.edgex._model import (
    EnvelopeError,
    device_dto,
    device_profile,
    device_service,
    envelope,
    envelope_payload,
    format_value,
    parse_envelope,
    parse_value,
)

NAMES = EdgexNames("picogate", "picogate-", "Readings")
EVENT_PATH = "/event/{serviceName}/{profileName}/{deviceName}/{sourceName}"


def registry() -> PointRegistry:
    reg = PointRegistry()
    attrs = {
        "table": "holding",
        "address": "0",
        "type": "int16",
        "order": "ABCD",
        "scale": "0.1",
        "offset": "0.0",
    }
    reg.add(PointInfo("boiler", "temp", PointType.FLOAT64, "°C", origin="modbus", attrs=attrs))
    reg.add(
        PointInfo(
            "boiler",
            "setpoint",
            PointType.UINT16,
            writable=True,
            min=0,
            max=900,
            origin="modbus",
            attrs={"table": "holding", "address": "1", "type": "uint16", "order": "ABCD"},
        )
    )
    reg.add(
        PointInfo(
            "boiler",
            "burner",
            PointType.BOOL,
            writable=True,
            origin="modbus",
            attrs={"table": "coil", "address": "0", "type": "bool", "order": "ABCD"},
        )
    )
    reg.add(
        PointInfo(
            "boiler",
            "label",
            PointType.STRING,
            origin="modbus",
            attrs={"table": "holding", "address": "10", "type": "string", "order": "ABCD", "count": "4"},
        )
    )
    reg.add(PointInfo("pump", "rpm", PointType.INT32, "rpm", origin="pico"))
    return reg


def readings(ts: int = 1_732_350_000_123_456_789) -> list[Reading]:
    return [
        Reading("boiler", "temp", 23.5, ts, unit="°C"),
        Reading("boiler", "setpoint", 450, ts),
        Reading("boiler", "burner", True, ts),
        Reading("boiler", "label", "ok", ts, Quality.UNCERTAIN),
        Reading("boiler", "temp2", None, ts, Quality.BAD),
        Reading("pump", "rpm", -3, ts + 5),
    ]


def bodies(envs: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for env in envs:
        if env.parts:
            fields = env.payload.split(b"\x00")
            out += [(fields[i].decode(), json.loads(fields[i + 1])) for i in range(0, len(fields), 2)]
        else:
            out.append((env.key, json.loads(env.payload)))
    return out


@pytest.mark.parametrize("batch", [True, False])
def test_events_match_the_core_data_schema(batch: bool) -> None:
    enc = EdgexEncoder("edgex", registry(), NAMES, batch=batch)
    events = bodies(enc.readings(readings()))
    assert events
    schema = request_schema("core-data", "post", EVENT_PATH)
    for key, req in events:
        check("core-data", schema, req)
        ev = req["event"]
        assert key == f"{ev['profileName']}/{ev['deviceName']}/{ev['sourceName']}"
        assert ev["apiVersion"] == "v3"
        assert req["apiVersion"] == "v3"
    by_res = {r["resourceName"]: r for _, req in events for r in req["event"]["readings"]}
    assert set(by_res) == {"temp", "setpoint", "burner", "label", "rpm"}, "the bad reading is left out"
    assert by_res["temp"] | {"id": ""} == {
        "id": "",
        "origin": 1_732_350_000_123_456_789,
        "deviceName": "boiler",
        "resourceName": "temp",
        "profileName": "picogate-boiler",
        "valueType": "Float64",
        "value": "23.5",
        "units": "°C",
    }
    assert (by_res["setpoint"]["valueType"], by_res["setpoint"]["value"]) == ("Uint16", "450")
    assert (by_res["burner"]["valueType"], by_res["burner"]["value"]) == ("Bool", "true")
    assert by_res["label"]["tags"] == {"quality": "uncertain"}
    assert (by_res["rpm"]["valueType"], by_res["rpm"]["value"], by_res["rpm"]["units"]) == (
        "Int32",
        "-3",
        "rpm",
    )
    sources = sorted(req["event"]["sourceName"] for _, req in events)
    if batch:
        assert sources == ["Readings", "rpm"]  # one reading alone: the resource is the source
    else:
        assert sources == ["burner", "label", "rpm", "setpoint", "temp"]


def test_an_event_of_only_bad_readings_is_not_sent() -> None:
    enc = EdgexEncoder("edgex", registry(), NAMES, batch=True)
    assert enc.readings([Reading("boiler", "temp", None, 1, Quality.BAD)]) == []


def test_a_broken_event_fails_the_schema_check() -> None:
    """The check can fail: the test helper is not a rubber stamp."""
    enc = EdgexEncoder("edgex", registry(), NAMES, batch=True)
    (_, req), *_ = bodies(enc.readings(readings()))
    schema = request_schema("core-data", "post", EVENT_PATH)
    del req["event"]["apiVersion"]
    req["event"]["readings"][0]["valueType"] = "float64"
    req["event"]["id"] = "not-a-uuid"
    problems = " ".join(errors("core-data", schema, req))
    assert "apiVersion" in problems
    assert "float64" in problems
    assert "uuid" in problems


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-40, "-40"),
        (23.5, "23.5"),
        (1e20, "1e+20"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Inf"),
        ("a b", "a b"),
    ],
)
def test_values_are_written_as_go_parses_them(value: Any, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("ptype", "text", "value"),
    [
        (PointType.BOOL, "true", True),
        (PointType.BOOL, "F", False),
        (PointType.BOOL, True, True),
        (PointType.UINT16, "450", 450),
        (PointType.UINT16, 7, 7),
        (PointType.FLOAT32, "21.5", 21.5),
        (PointType.FLOAT32, "2.150000e+01", 21.5),
        (PointType.STRING, "x", "x"),
    ],
)
def test_set_values_parse(ptype: PointType, text: Any, value: Any) -> None:
    assert parse_value(PointInfo("d", "p", ptype), text) == value


@pytest.mark.parametrize(
    ("ptype", "text", "message"),
    [
        (PointType.BOOL, "on", 'send "true" or "false"'),
        (PointType.UINT16, "4.5", "is not an integer"),
        (PointType.FLOAT32, "abc", "is not a number"),
        (PointType.STRING, 5, "send text"),
        (PointType.INT16, [1], "must be text"),
        (PointType.INT16, True, "send a number"),
    ],
)
def test_bad_set_values_are_named(ptype: PointType, text: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_value(PointInfo("d", "p", ptype), text)


def test_profiles_devices_and_service_match_the_core_metadata_schema() -> None:
    reg = registry()
    points = sorted(reg.points_of("boiler"), key=lambda p: p.name)
    profile = device_profile("picogate-boiler", "boiler", points, batch_command="Readings", labels=["x"])
    check(
        "core-metadata",
        request_schema("core-metadata", "post", "/deviceprofile"),
        [{"apiVersion": "v3", "profile": profile}],
    )
    res = {r["name"]: r for r in profile["deviceResources"]}
    assert res["temp"]["properties"] == {"valueType": "Float64", "readWrite": "R", "units": "°C"}
    assert "scale" not in res["temp"]["properties"], "values arrive scaled: EdgeX must not scale again"
    assert res["temp"]["attributes"]["primaryTable"] == "HOLDING_REGISTERS"
    assert res["temp"]["attributes"]["rawType"] == "Int16"
    assert res["setpoint"]["properties"] == {
        "valueType": "Uint16",
        "readWrite": "RW",
        "minimum": 0,
        "maximum": 900,
    }
    assert res["burner"]["attributes"] == {"primaryTable": "COILS", "startingAddress": 0, "rawType": "Bool"}
    assert res["label"]["attributes"]["stringRegisterSize"] == 4
    (cmd,) = profile["deviceCommands"]
    assert cmd["name"] == "Readings"
    assert {o["deviceResource"] for o in cmd["resourceOperations"]} == set(res)
    check(
        "core-metadata",
        request_schema("core-metadata", "post", "/deviceservice"),
        [{"apiVersion": "v3", "service": device_service("picogate", "http://127.0.0.1:59999")}],
    )
    dev = device_dto(
        "boiler",
        "picogate",
        "picogate-boiler",
        {"modbus-tcp": {"Address": "127.0.0.1", "Port": "502", "UnitID": "1"}},
    )
    check(
        "core-metadata",
        request_schema("core-metadata", "post", "/device"),
        [{"apiVersion": "v3", "device": dev}],
    )
    check(
        "core-metadata",
        request_schema("core-metadata", "patch", "/device"),
        [{"apiVersion": "v3", "device": dev}],
    )


@pytest.mark.parametrize("name", ["modbus.test.device.profile.yml", "modbus.test.device.string.profile.yml"])
def test_real_device_modbus_profiles_pass_the_patched_schema(name: str) -> None:
    """The patches of the spec's known mistakes make real EdgeX profiles valid, and no more."""
    profile = yaml.safe_load((SPECS / name).read_text())
    schema = request_schema("core-metadata", "post", "/deviceprofile")
    check("core-metadata", schema, [{"apiVersion": "v3", "profile": profile}])
    profile["deviceResources"][0]["properties"]["valueType"] = "float"
    assert errors("core-metadata", schema, [{"apiVersion": "v3", "profile": profile}])


@pytest.mark.parametrize("version", [3, 4])
def test_envelope_payload_encodings(version: int) -> None:
    body = b'{"apiVersion":"v3","event":{}}'
    env = json.loads(envelope(body, version=version, request_id="r1", correlation_id="c1"))
    check_envelope(env, version=version)
    assert (env["requestID"], env["correlationID"], env["errorCode"]) == ("r1", "c1", 0)
    assert decode_payload(env) == json.loads(body)
    assert envelope_payload(parse_envelope(envelope(body, version=version))) == json.loads(body)
    err = json.loads(envelope(b"boom", version=version, request_id="r1", error=True))
    assert (err["errorCode"], err["contentType"], decode_payload(err, version)) == (1, "text/plain", "boom")
    assert err["payload"] == ("boom" if version == 4 else base64.b64encode(b"boom").decode())
    assert json.loads(envelope(None, version=version))["payload"] is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"payload": "%%%"}', "neither base64"),
        (b'{"payload": "' + base64.b64encode(b"{x") + b'"}', "payload is not JSON"),
    ],
)
def test_bad_envelopes_are_named(raw: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        envelope_payload(parse_envelope(raw))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"transports": ["rest"]}, "needs the message bus"),
        ({"transports": []}, "at least 1"),
        ({"transports": ["bus", "bus"]}, "each transport once"),
        ({"transports": ["amqp"]}, "'bus' or 'rest'"),
        ({"version": 2}, "3 or 4"),
        ({"service": "a/b"}, "should match pattern"),
        ({"core_data": "127.0.0.1:59880"}, "must be an http"),
        ({"device_service": {"base_address": "ftp://x"}}, "must be an http"),
        ({"profile_prefix": "a.b"}, "may only hold"),
        ({"colour": 1}, "Extra inputs"),
    ],
)
def test_config_errors_are_named(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EdgexSection.model_validate(section)


def test_rest_only_without_registration_or_with_edgex_4_is_accepted() -> None:
    assert EdgexSection.model_validate({"transports": ["rest"], "register_on_start": False}).uses_rest
    assert not EdgexSection.model_validate({"transports": ["rest"], "version": 4}).uses_bus


def test_cli_writes_valid_profiles(tmp_path: Path) -> None:
    from picogate.cli import main

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "profiles"
    assert (
        main(["edgex", "profiles", "--config", str(root / "examples" / "gateway.yaml"), "-o", str(out)]) == 0
    )
    files = sorted(out.glob("*.yaml"))
    assert files
    schema = request_schema("core-metadata", "post", "/deviceprofile")
    for f in files:
        profile = yaml.safe_load(f.read_text())
        assert f.name == f"{profile['name']}.yaml"
        check("core-metadata", schema, [{"apiVersion": "v3", "profile": profile}])
        for res in profile["deviceResources"]:
            assert not {"scale", "offset", "base", "mask", "shift"} & set(res["properties"])
    # Every device the example declares has its profile: Modbus, the Pico board, the CoAP node.
    devices = {yaml.safe_load(f.read_text())["name"].removeprefix("picogate-") for f in files}
    assert {"boiler", "pump", "tank", "line1_io", "yard"} <= devices, devices


def test_cli_names_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from picogate.cli import main

    bad = tmp_path / "gateway.yaml"
    bad.write_text("gateway: {id: gw1}\nedgex: {transports: [rest]}\n")
    assert main(["edgex", "profiles", "--config", str(bad)]) == 1
    assert "needs the message bus" in capsys.readouterr().err
    assert main(["edgex", "profiles", "--config", str(tmp_path / "missing.yaml")]) == 1


@pytest.mark.parametrize(
    "values",
    [
        [1e20, float("nan"), float("-inf"), 0.1, 3],
        [True, False, 7, -(2**63)],
        ["a,b", 1.5, True, 'q"uote'],
        [2**70, 1],
    ],
)
def test_encoder_values_parse_back(values: list[Any]) -> None:
    """Group formatting (one orjson call, fallbacks for NaN, infinities, strings, big ints)."""
    reg = PointRegistry()
    enc = EdgexEncoder("edgex", reg, NAMES, batch=True)
    group = [Reading("d", f"p{i}", v, 1) for i, v in enumerate(values)]
    (env,) = enc.readings(group)
    req = json.loads(env.payload)
    check("core-data", request_schema("core-data", "post", EVENT_PATH), req)
    for v, r in zip(values, req["event"]["readings"], strict=True):
        text = r["value"]
        if isinstance(v, bool):
            assert text == ("true" if v else "false")
        elif isinstance(v, str):
            assert text == v
        elif isinstance(v, float) and v != v:
            assert text == "NaN"
        else:
            assert float(text) == v


def _doc_blocks(lang: str) -> list[str]:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "edgex.md").read_text(encoding="utf-8")
    return [m.group(2) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S) if m.group(1) == lang]


def test_doc_profile_is_what_the_cli_writes_for_the_doc_config() -> None:
    from picogate.edgex._cli import profiles_of
    from picogate.gateway import declared_points, parse_config

    (config,) = _doc_blocks("yaml")
    (profile_text,) = _doc_blocks("yml")
    cfg = parse_config(config)
    assert profiles_of(cfg, declared_points(cfg)) == [yaml.safe_load(profile_text)]
    check(
        "core-metadata",
        request_schema("core-metadata", "post", "/deviceprofile"),
        [{"apiVersion": "v3", "profile": yaml.safe_load(profile_text)}],
    )


def test_doc_events_and_envelopes_are_valid() -> None:
    schema = request_schema("core-data", "post", EVENT_PATH)
    kinds = []
    for text in _doc_blocks("json"):
        doc = json.loads(text)
        if "receivedTopic" in doc:
            check_envelope(doc, version=3 if isinstance(doc["payload"], str) else 4)
            doc = decode_payload(doc)
            kinds.append("envelope")
        check("core-data", schema, doc)
        kinds.append("event")
    assert kinds.count("envelope") >= 1
    assert kinds.count("event") >= 2


def test_ids_are_version_4_uuids_and_distinct() -> None:
    import uuid

    from picogate.edgex._model import id_series, new_id

    ids = [new_id() for _ in range(2000)] + id_series(300) + id_series(300)
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text
        assert u.version == 4
        assert u.variant == uuid.RFC_4122


async def test_a_missing_bus_password_variable_is_a_clear_start_up_error(tmp_path: Path) -> None:
    from _agent import base_config
    from picogate._gateway import Gateway
    from picogate.gateway import GatewayConfig

    cfg = base_config(
        tmp_path, 1, [], edgex={"bus": {"username": "u", "password_env": "PICOGATE_TEST_NO_SUCH_VAR"}}
    )
    cfg["mqtt"]["enabled"] = False
    with pytest.raises(
        ValueError, match=r"edgex\.bus\.password_env: the environment variable it names is not set"
    ):
        async with Gateway(GatewayConfig.model_validate(cfg)):
            pass
