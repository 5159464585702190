"""docs/local-io.md is tested: its example loads on a Raspberry Pi's pins, and the errors it shows
are what `config check` says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from _local import raspberry_pi
from picogate.config import ConfigError
from picogate.gateway import GatewayConfig, parse_config
from picogate.local import _attach

DOC = Path(__file__).resolve().parents[2] / "docs" / "local-io.md"
TEXT = DOC.read_text(encoding="utf-8")
EXAMPLE = re.search(r"^```yaml\n(.*?)^```", TEXT, re.DOTALL | re.MULTILINE).group(1)  # type: ignore[union-attr]
ERRORS = re.search(r"^```text\n(gateway\.yaml:.*?)^```", TEXT, re.DOTALL | re.MULTILINE).group(1)  # type: ignore[union-attr]


@pytest.fixture
def on_a_pi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_attach, "detect", raspberry_pi)


@pytest.mark.usefixtures("on_a_pi")
def test_the_example_loads_on_a_raspberry_pi() -> None:
    config = parse_config(EXAMPLE, filename="gateway.yaml")
    assert isinstance(config, GatewayConfig)
    names = [p.name for p in config.section("local").io]
    assert names[:3] == ["door_closed", "parts", "lamp_red"]
    assert {p.kind for p in config.section("local").io} == {
        "di", "cnt", "do", "pwm", "bme280", "sht4x", "ads1115", "ds18b20"
    }  # fmt: skip


@pytest.mark.usefixtures("on_a_pi")
def test_the_errors_shown_are_what_config_check_says() -> None:
    wrong = EXAMPLE.replace("pin: D17", "pin: GPIO17").replace("pin: D27", "pin: D22")
    with pytest.raises(ConfigError) as exc:
        parse_config(wrong, filename="gateway.yaml")
    said = str(exc.value)
    for line in ERRORS.strip().splitlines():
        assert line.rstrip("…").rstrip(", ") in said, line


def test_every_wired_point_is_in_the_example() -> None:
    wired = set(
        re.findall(r"^\| `(\w+)` \| ", TEXT.split("## A door contact")[1].split("##")[0], re.MULTILINE)
    )
    io = yaml.safe_load(EXAMPLE)["local"]["io"]
    assert wired == {p["name"] for p in io}
