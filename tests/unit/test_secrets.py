"""No secret in any output: keys that hold secrets (misspelled too), masking by value, log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from picogate._secrets import MASK, is_secret_key, redact, remember
from picogate.cli import main
from picogate.config import ConfigError
from picogate.gateway import GatewayConfig, parse_config

SECRET = "Tr0ub4dor-and-3"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "passwd",
        "passwrd",
        "pasword",
        "pssword",
        "passwort",
        "pw",
        "pwd",
        "pass",
        "mqtt_password",
        "mqttPassword",
        "MQTT-PASSWORD",
        "'password'",
        "secret",
        "api_token",
        "apikey",
        "password_env",
        "password_file",
    ],
)
def test_keys_that_hold_secrets(key: str) -> None:
    assert is_secret_key(key)


def _schema_keys() -> set[str]:
    """Every key gateway.yaml knows, in every section."""
    keys: set[str] = set()
    todo: list[type] = [GatewayConfig]
    seen: set[type] = set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            keys.add(name)
            todo.extend(_models_in(info.annotation))
    return keys


def _models_in(annotation: object) -> list[type]:
    from typing import get_args

    from pydantic import BaseModel

    out: list[type] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        out.append(annotation)
    for arg in get_args(annotation):
        out.extend(_models_in(arg))
    return out


def test_no_other_key_of_the_schema_is_taken_for_a_secret() -> None:
    keys = _schema_keys()
    assert len(keys) > 100
    assert {k for k in keys if is_secret_key(k)} == {"password_env", "password_file"}
    for word in (
        "insecure",
        "server",
        "observe",
        "parity",
        "passive",
        "bypass_validation",
        "pin",
        "key_file",
    ):
        assert not is_secret_key(word), word


@pytest.mark.parametrize("key", ["passwrd", "pasword", "pw", "mqtt_password"])
def test_a_misspelled_password_key_is_never_echoed(key: str) -> None:
    text = f"mqtt:\n  username: u\n  {key}: {SECRET}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    shown = str(exc.value)
    assert SECRET not in shown
    assert f"{key}: {MASK}" in shown
    issue = exc.value.issues[0]
    assert "did you mean" not in issue.message  # "did you mean 'password_env'?" sent the secret there
    assert "password_env" in issue.message
    assert "never in gateway.yaml" in issue.message


def test_a_secret_is_masked_wherever_it_appears_in_the_quoted_lines() -> None:
    """By value: the same text under another key, through an alias, in a block scalar."""
    text = (
        f"x-secret: &pw {SECRET}\n"
        "mqtt:\n"
        "  pw: *pw\n"
        f"  host: [{SECRET}]\n"
        "  passphrase: |\n"
        "    first line of it\n"
        "  port: first line of it\n"
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    shown = str(exc.value)
    assert SECRET not in shown
    assert "first line of it" not in shown
    assert f" 4 |   host: [{MASK}]" in shown  # quoted for its own error, the secret masked
    assert "mqtt.port: must be a whole number" in shown


def test_password_env_holding_the_password_itself() -> None:
    """`password_env: <the password>` (following the old "did you mean" hint): refused without
    repeating it, when it cannot be a variable's name."""
    with pytest.raises(ConfigError) as exc:
        parse_config(f"mqtt:\n  username: u\n  password_env: {SECRET}\n")
    shown = str(exc.value)
    assert SECRET not in shown
    assert "must be the name of an environment variable" in shown


def test_redact_masks_longest_first() -> None:
    remember(["abcd-1234", "abcd"])
    assert redact("x abcd-1234 y abcd z") == f"x {MASK} y {MASK} z"
    remember(["no"])  # too short (and a YAML word): not masked everywhere
    assert redact("no way") == "no way"


@pytest.mark.parametrize("key", ["passwrd", "pasword", "pw", "mqtt_password"])
def test_config_check_and_run_never_print_a_misspelled_password(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text(f"gateway: {{data_dir: {tmp_path / 'data'}}}\nmqtt:\n  username: u\n  {key}: {SECRET}\n")
    assert main(["config", "check", str(f)]) == 1
    assert main(["run", "-c", str(f)]) == 1
    rules = tmp_path / "a.rules"
    rules.write_text("")
    assert main(["rules", "check", "--config", str(f), str(rules)]) != 0
    assert main(["edgex", "profiles", "--config", str(f)]) != 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert f"mqtt.{key}: unknown key" in out.err


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("mqtt: {pw: 'it''s mine', qos: 7}", f"mqtt: {{pw: {MASK}, qos: 7}}"),
        ('mqtt: {pw: "a\\"b, c", qos: 7}', f"mqtt: {{pw: {MASK}, qos: 7}}"),
        ("mqtt: {pw: [ab, cd], qos: 7}", f"mqtt: {{pw: {MASK}, qos: 7}}"),
        ("mqtt: {pw: ab, qos: 7}  # a comment", f"mqtt: {{pw: {MASK}, qos: 7}}  # a comment"),
    ],
)
def test_quoted_lines_mask_the_whole_value(line: str, shown: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(line + "\n")
    assert f" 1 | {shown}" in str(exc.value).splitlines()
