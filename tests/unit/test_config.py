"""Loading gateway.yaml: the data-driven cases in tests/cases/config, and the schema's helpers.

A case is a directory with a `gateway.yaml` and either
- `expected.txt`: the exact issue lines (`gateway.yaml:line:column: path: message`),
- `expected.json`: key paths (`devices[0].points[1].scale`) and the values they must load as
  (and no warning), or
- `warnings.txt`: the file loads, with exactly these warnings (`gateway.yaml:line:column: warning: …`).
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picogate.config import ConfigError, ConfigIssue, Deadband, parse_duration
from picogate.gateway import GatewayConfig, load_config, parse_config
from picogate.modbus import PointConfig, reference_to_address
from picogate.modbus._codec import Table
from picogate.mqtt import MqttSection

CASES = Path(__file__).resolve().parents[1] / "cases" / "config"
BAD = sorted(p.name for p in CASES.iterdir() if (p / "expected.txt").exists())
GOOD = sorted(p.name for p in CASES.iterdir() if (p / "expected.json").exists())
WARNED = sorted(p.name for p in CASES.iterdir() if (p / "warnings.txt").exists())


def issues_of(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(issue) for issue in exc.value.issues]


def lookup(data: Any, path: str) -> Any:
    """`devices[0].points[1].scale` in a model_dump."""
    for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", path):
        data = data[name] if name else data[int(index)]
    return data


# --------------------------------------------------------------------------- the cases


def test_there_are_enough_cases() -> None:
    assert len(BAD) >= 15
    assert {"ok_empty", "ok_full"} <= set(GOOD)


@pytest.mark.parametrize("case", BAD)
def test_bad_config(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CASES / case)  # so that the file is reported as just gateway.yaml
    expected = (CASES / case / "expected.txt").read_text(encoding="utf-8").splitlines()
    with pytest.raises(ConfigError) as exc:
        load_config("gateway.yaml")
    assert issues_of(exc) == [line for line in expected if line.strip()]
    # Every issue with a line is followed by that source line (and a caret when the column is known).
    rendered = str(exc.value).splitlines()
    source = (CASES / case / "gateway.yaml").read_text(encoding="utf-8").splitlines()
    for issue in exc.value.issues:
        at = rendered.index(str(issue))
        if issue.line is not None:
            src = rendered[at + 1]
            assert src.startswith(f" {issue.line} | ") or src.lstrip().startswith(f"{issue.line} | ")
            if "password" not in source[issue.line - 1]:
                assert src.endswith(source[issue.line - 1])
            if issue.column is not None:
                caret = rendered[at + 2]
                assert caret.endswith("^")
                assert caret.index("^") == src.index(" | ") + 3 + issue.column - 1


@pytest.mark.parametrize("case", WARNED)
def test_warned_config(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CASES / case)
    expected = (CASES / case / "warnings.txt").read_text(encoding="utf-8").splitlines()
    warnings: list[ConfigIssue] = []
    load_config("gateway.yaml", warnings=warnings)
    assert [str(w) for w in warnings] == [line for line in expected if line.strip()]
    source = (CASES / case / "gateway.yaml").read_text(encoding="utf-8").splitlines()
    for w in warnings:  # the source line, and a caret under the column
        assert w.level == "warning"
        assert w.line is not None
        assert w.column is not None
        shown = w.format().splitlines()
        assert shown[1] == f" {w.line} | {source[w.line - 1]}"
        assert shown[2].index("^") == shown[1].index(" | ") + 3 + w.column - 1


def test_warnings_go_with_check_and_leave_the_exit_status_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from picogate.cli import main

    monkeypatch.chdir(CASES / "warn_modicon_address")
    assert main(["config", "check", "gateway.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "gateway.yaml:7:51: warning: devices[0].points[0].address: address 40001 looks like"
    )
    assert out[1:3] == [
        " 7 |       - {name: setpoint, table: holding, address: 40001}",
        "   |                                                   ^",
    ]
    assert out[-1] == "gateway.yaml: OK (1 Modbus device; 5 points), 3 warnings"


@pytest.mark.parametrize("case", GOOD)
def test_good_config(case: str) -> None:
    warnings: list[ConfigIssue] = []
    config = load_config(CASES / case / "gateway.yaml", warnings=warnings)
    assert warnings == []
    dumped = config.model_dump(mode="json")
    expected: dict[str, Any] = json.loads((CASES / case / "expected.json").read_text(encoding="utf-8"))
    for path, value in expected.items():
        assert lookup(dumped, path) == value, path


def test_several_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(CASES / "several_errors" / "gateway.yaml")
    assert len(exc.value.issues) >= 3
    lines = [issue.line for issue in exc.value.issues]
    assert lines == sorted(lines)  # in file order


def test_rendering_is_like_a_compiler() -> None:
    text = "mqtt:\n  host: broker\n  port: 70000\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, filename="gateway.yaml")
    assert str(exc.value) == (
        "gateway.yaml:3:9: mqtt.port: must be 1..65535\n 3 |   port: 70000\n   |         ^"
    )


def test_rendering_keeps_tabs_so_the_caret_lines_up() -> None:
    text = "mqtt:\n  host: 'a\tb'\n  qos: 2\n  description: x\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert "<string>:3:8: mqtt.qos: must be one of: 0, 1" in str(exc.value)
    assert "<string>:4:3: mqtt.description: unknown key 'description'" in str(exc.value)


def test_an_inline_password_is_never_echoed() -> None:
    text = "mqtt:\n  password: hunter2\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, filename="gateway.yaml")
    assert "hunter2" not in str(exc.value)
    assert "password_env" in exc.value.issues[0].message
    assert "password: ********" in str(exc.value)


def test_secrets_are_masked_in_flow_style_and_the_caret_still_lines_up() -> None:
    text = "mqtt: {password: 'correct horse', qos: 2}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, filename="gateway.yaml")
    rendered = str(exc.value)
    assert "correct horse" not in rendered
    lines = rendered.splitlines()
    assert lines[-3] == "gateway.yaml:1:40: mqtt.qos: must be one of: 0, 1"
    assert lines[-2] == " 1 | mqtt: {password: ********, qos: 2}"
    assert lines[-1].index("^") == lines[-2].index("2}")


def test_a_key_of_the_other_device_type() -> None:
    text = "devices:\n  - {name: a, type: modbus_tcp, host: h, baudrate: 9600}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert issues_of(exc) == [
        "<string>:2:42: devices[0].baudrate: unknown key 'baudrate' for a modbus_tcp device "
        "(it is a key of modbus_rtu)"
    ]


def test_issue_str() -> None:
    assert str(ConfigIssue("gateway.yaml", 14, 9, "devices[2].points[5].address", "must be 0..65535")) == (
        "gateway.yaml:14:9: devices[2].points[5].address: must be 0..65535"
    )
    assert str(ConfigIssue("gateway.yaml", 3, None, "", "oops")) == "gateway.yaml:3: oops"
    assert str(ConfigIssue("gateway.yaml", None, None, "", "no such file")) == "gateway.yaml: no such file"


# --------------------------------------------------------------------------- files and YAML


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert issues_of(exc) == [f"{path}: no such file"]


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    assert len(exc.value.issues) == 1
    assert exc.value.issues[0].file == str(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(b"mqtt:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert issues_of(exc) == [f"{path}:2:12: not UTF-8 text (byte 0xe9)"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "--- # empty\n...\n", "~\n"])
def test_empty_file_gives_every_default(text: str) -> None:
    assert parse_config(text) == GatewayConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "42\n",
            "<string>:1:1: the top level must be a mapping of sections (gateway:, mqtt:, devices:, ...), "
            "not the value 42",
        ),
        (
            "a: 1\n--- \nb: 2\n",
            "<string>:2:1: YAML syntax: a second YAML document ('---'): gateway.yaml holds exactly one",
        ),
        (
            "mqtt: {host: [1\n",
            "<string>:2:1: YAML syntax: the '[' on line 1 is never closed (a ']' is missing)",
        ),
        (
            "mqtt:\n  host: a: b\n",
            "<string>:2:10: YAML syntax: unexpected ':' here (check the indentation, "
            "or quote a value that contains ': ')",
        ),
        ("mqtt:\n  host: *nowhere\n", "<string>:2:9: YAML syntax: found undefined alias 'nowhere'"),
        ("mqtt:\n  host: \x00\n", "<string>:2:9: control character U+0000 is not allowed"),
        (
            "mqtt: {port: !!int abc}\n",
            "<string>:1:14: mqtt.port: cannot read 'abc' as int: invalid "
            "literal for int() with base 10: 'abc'",
        ),
        ("mqtt: {host: !vault x}\n", "<string>:1:14: mqtt.host: unsupported YAML tag '!vault'"),
        ("? [a]\n: 1\n", "<string>:1:3: a key must be plain text, not a list or mapping"),
        ("1: 2\n", "<string>:1:1: 1: a key must be text, not 1"),
    ],
)
def test_yaml_problems(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert issues_of(exc) == [expected]


def test_duplicate_keys_report_both_lines_and_validation_goes_on() -> None:
    text = "mqtt:\n  host: a\n  port: 0\n  host: b\ngateway:\n  id: x\ngateway:\n  id: y\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, filename="gateway.yaml")
    assert issues_of(exc) == [
        "gateway.yaml:3:9: mqtt.port: must be 1..65535",
        "gateway.yaml:4:3: mqtt.host: duplicate key 'host' (also on line 2; YAML would silently keep only "
        "the last one)",
        "gateway.yaml:7:1: gateway: duplicate key 'gateway' (also on line 5; YAML would silently keep only "
        "the last one)",
    ]


def test_alias_that_contains_itself() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("boards: &a [*a]\n")
    assert issues_of(exc) == ["<string>:1:9: boards[0]: an alias refers to a collection that contains it"]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(ConfigError) as exc:
        parse_config("\n".join(lines) + "\n")
    assert "expands to more than" in exc.value.issues[0].message


def test_deep_nesting() -> None:
    with pytest.raises(ConfigError):
        parse_config("boards: " + "[" * 5000 + "]" * 5000 + "\n")


def test_merge_keys_and_x_keys() -> None:
    text = (
        "x-tcp: &tcp {type: modbus_tcp, host: 10.0.0.1, poll: 5s}\n"
        "x-fast: &fast {poll: 100ms, timeout: 50ms}\n"
        "devices:\n"
        "  - {<<: *tcp, name: a}\n"
        "  - {<<: [*fast, *tcp], name: b}\n"
        "  - {<<: *tcp, name: c, poll: 1m}\n"
    )
    devices = parse_config(text).devices
    assert [(d.name, d.poll) for d in devices] == [("a", 5.0), ("b", 0.1), ("c", 60.0)]
    assert devices[1].timeout == 0.05


def test_errors_in_merged_values_point_at_the_anchor() -> None:
    text = "x-tcp: &tcp\n  type: modbus_tcp\n  host: h\n  timeout: 0\ndevices:\n  - {<<: *tcp, name: a}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert issues_of(exc) == ["<string>:4:12: devices[0].timeout: must be > 0s"]


def test_a_valid_file_records_no_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where every key sits is only needed to report a problem: a valid file (500 devices × 30
    points: ~80,000 key paths, 12 MB at the agent's start) is read without recording it, and an
    invalid one is still reported with its line and column."""
    from picogate.config import _load

    recorded: list[object] = []
    real = _load._Place
    monkeypatch.setattr(_load, "_Place", lambda *a: recorded.append(a) or real(*a))
    text = "x-tcp: &tcp {type: modbus_tcp, host: h}\ndevices:\n  - {<<: *tcp, name: a}\n"
    assert parse_config(text).devices[0].name == "a"
    assert recorded == []
    with pytest.raises(ConfigError) as exc:
        parse_config(text.replace("name: a", "name: a, poll: x"))
    assert issues_of(exc) == [
        "<string>:3:31: devices[0].poll: must be a duration such as 500ms, 10s, 5m or 1h, not 'x'"
    ]
    assert recorded


_IO = "devices:\n  - name: io\n    type: modbus_tcp\n    host: h\n    unit_id: 010\n    points:\n"


def test_leading_zeros_are_decimal() -> None:
    """YAML 1.1 reads 00010 as octal 8: a coil reference must not silently become another coil."""
    text = _IO + "      - {name: a, ref: 00001}\n      - {name: b, ref: 00010}\n      - {name: c, ref: 0_9}\n"
    device = parse_config(text).devices[0]
    assert device.unit_id == 10
    assert [(p.resolved_table(), p.resolved_address()) for p in device.points] == [
        (Table.COIL, 0),
        (Table.COIL, 9),
        (Table.COIL, 8),
    ]


def test_six_digit_coil_reference_is_refused() -> None:
    """010001 is coil 10000 in 6-digit notation, but the number 10001 would be discrete input 0."""
    with pytest.raises(ConfigError) as exc:
        parse_config(_IO + "      - name: a\n        ref: 010001\n")
    assert issues_of(exc) == [
        "<string>:8:14: devices[0].points[0].ref: reference 010001 is a 6-digit coil reference: "
        "write table: coil, address: 10000"
    ]


def test_mqtt_protocol_may_be_written_as_a_number() -> None:
    assert parse_config("mqtt: {protocol: 5}").mqtt.protocol == "5"
    assert parse_config("mqtt: {protocol: 3.1.1}").mqtt.protocol == "3.1.1"
    with pytest.raises(ConfigError) as exc:
        parse_config("mqtt: {protocol: 4}")
    assert issues_of(exc) == ["<string>:1:18: mqtt.protocol: must be one of: 3.1.1, 5"]


def test_missing_device_type() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("devices:\n  - name: a\n    host: h\n")
    assert issues_of(exc) == [
        "<string>:2:5: devices[0]: missing required key 'type' (one of: modbus_tcp, modbus_rtu)"
    ]


def test_unknown_key_suggestions() -> None:
    text = "devices:\n  - {name: a, type: modbus_rtu, port: p, baud: 9600, adress: 1, colour: red}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert [issue.message for issue in exc.value.issues] == [
        "unknown key 'baud' (did you mean 'baudrate'?)",
        "unknown key 'adress'",
        "unknown key 'colour'",
    ]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 10 s ", 10.0),
        ("7", 7.0),
        (2, 2.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10 parsecs", "", "s", "-1s", "1e3s", "1d", True, None, [1], -1])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(text)


def test_durations_in_the_file() -> None:
    config = parse_config("mqtt: {keepalive: 1m, reconnect: {min_delay: 250ms, max_delay: 2}}")
    assert (config.mqtt.keepalive, config.mqtt.reconnect.min_delay, config.mqtt.reconnect.max_delay) == (
        60.0,
        0.25,
        2.0,
    )


# --------------------------------------------------------------------------- Modicon references


@pytest.mark.parametrize(
    ("ref", "table", "address"),
    [
        (40001, Table.HOLDING, 0),
        (40010, Table.HOLDING, 9),
        (49999, Table.HOLDING, 9998),
        (30010, Table.INPUT, 9),
        (30001, Table.INPUT, 0),
        (400001, Table.HOLDING, 0),
        (465536, Table.HOLDING, 65535),
        (300100, Table.INPUT, 99),
        (10001, Table.DISCRETE_INPUT, 0),
        (100001, Table.DISCRETE_INPUT, 0),
        (1, Table.COIL, 0),
        (9999, Table.COIL, 9998),
    ],
)
def test_reference_to_address(ref: int, table: Table, address: int) -> None:
    assert reference_to_address(ref) == (table, address)


@pytest.mark.parametrize("ref", [50001, 0, -1, 40000, 20001, 99999, 465537, 500001, 170000])
def test_reference_to_address_refuses(ref: int) -> None:
    with pytest.raises(ValueError, match="reference"):
        reference_to_address(ref)


def test_point_with_ref() -> None:
    point = PointConfig(name="temp", ref=30010)
    assert (point.resolved_table(), point.resolved_address()) == (Table.INPUT, 9)


# --------------------------------------------------------------------------- deadband


def test_deadband_percent_and_absolute() -> None:
    text = (
        "devices:\n  - name: a\n    type: modbus_tcp\n    host: h\n    points:\n"
        "      - {name: p, ref: 40001, deadband: 2%}\n"
        "      - {name: q, ref: 40002, deadband: 0.5}\n"
        "      - {name: r, ref: 40003, deadband: '1.5 %'}\n"
        "      - {name: s, ref: 40004}\n"
    )
    points = parse_config(text).devices[0].points
    assert [p.deadband for p in points] == [
        Deadband(value=2.0, percent=True),
        Deadband(value=0.5, percent=False),
        Deadband(value=1.5, percent=True),
        Deadband(value=0.0, percent=False),
    ]


def test_deadband_refuses_a_word() -> None:
    text = "devices: [{name: a, type: modbus_tcp, host: h, points: [{name: p, ref: 40001, deadband: true}]}]"
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert [i.path for i in exc.value.issues] == ["devices[0].points[0].deadband"]
    assert "percentage" in exc.value.issues[0].message


# --------------------------------------------------------------------------- secrets


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICOGATE_TEST_MQTT_PASSWORD", "s3cret")
    section = parse_config("mqtt: {password_env: PICOGATE_TEST_MQTT_PASSWORD}").mqtt
    assert section.password() == "s3cret"
    assert "s3cret" not in repr(section)


def test_password_environment_variable_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PICOGATE_TEST_MQTT_PASSWORD", raising=False)
    section = MqttSection(password_env="PICOGATE_TEST_MQTT_PASSWORD")
    with pytest.raises(ValueError, match="password_env: the environment variable it names is not set") as exc:
        section.password()
    # Not even the name: following "did you mean 'password_env'?", people put the password there.
    assert "PICOGATE_TEST_MQTT_PASSWORD" not in str(exc.value)


def test_password_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt"
    secret.write_text("s3cret\nignored\n", encoding="utf-8")
    section = parse_config(f"mqtt: {{password_file: '{secret}'}}").mqtt
    assert section.password() == "s3cret"


@pytest.mark.parametrize("content", [None, ""])
def test_password_file_missing_or_empty(tmp_path: Path, content: str | None) -> None:
    secret = tmp_path / "mqtt"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="password_file: cannot read"):
        MqttSection(password_file=secret).password()


def test_no_password() -> None:
    assert MqttSection().password() is None


# --------------------------------------------------------------------------- property tests

_FULL = (CASES / "ok_full" / "gateway.yaml").read_text(encoding="utf-8")
_KEYS = sorted(
    {
        "gateway",
        "mqtt",
        "devices",
        "points",
        "name",
        "type",
        "host",
        "port",
        "ref",
        "table",
        "address",
        "bit",
        "count",
        "poll",
        "deadband",
        "modbus_tcp",
        "modbus_rtu",
        "unit_id",
        "parity",
        "tls",
        "x-a",
        "<<",
        "min",
        "max",
        "writable",
        "order",
        "byte_order",
        "max_silence",
        "protocol",
        "qos",
        "outbox",
        "boards",
    }
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["", "holding", "coil", "modbus_tcp", "10s", "2%", "ABCD", "N", "a", "Boiler-1", "40001"]
    ),
    st.text(max_size=8),
)
_documents = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=5)), children, max_size=5),
    ),
    max_leaves=30,
)


def _only_config_error(text: str) -> None:
    """Loading gives a config or a ConfigError with issues that render; nothing else escapes."""
    error: ConfigError | None = None
    try:
        result = parse_config(text, filename="gateway.yaml")
    except ConfigError as exc:
        error = exc
    if error is None:
        assert isinstance(result, GatewayConfig)
        return
    assert error.issues
    assert all(isinstance(i, ConfigIssue) for i in error.issues)
    assert str(error)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable + "\x00\ufeff\u00e9\u2028&*!|>%@`", max_size=200))
def test_random_text_gives_config_error_or_config(text: str) -> None:
    _only_config_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_random_yaml_gives_config_error_or_config(document: Any) -> None:
    _only_config_error(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_FULL)), st.integers(0, 3), st.text(max_size=3)), max_size=4))
def test_damaged_example_gives_config_error_or_config(edits: list[tuple[int, int, str]]) -> None:
    text = _FULL
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    _only_config_error(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _documents, max_size=4), st.integers(0, 2))
def test_random_device_gives_config_error_or_config(device: dict[str, Any], which: int) -> None:
    device.setdefault("type", ["modbus_tcp", "modbus_rtu", "other"][which])
    _only_config_error(yaml.safe_dump({"devices": [device]}, allow_unicode=True))
