"""The `local:` section: the schema's errors, the pins checked against a board (as data, and against
Blinka's OS-agnostic board through `config check`), and what a file using it says when Blinka or a
driver is not installed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from _local import raspberry_pi  # (and BLINKA_OS_AGNOSTIC=1 before Blinka is imported)
from picogate.cli import main
from picogate.config import ConfigError
from picogate.gateway import GatewayConfig, parse_config
from picogate.local import BoardPins, LocalSection, check_pins

PI = raspberry_pi()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def section(*io: dict[str, Any], **over: Any) -> LocalSection:
    return LocalSection.model_validate({"name": "gw_io", "io": list(io), **over})


@pytest.mark.parametrize(
    ("io", "message"),
    [
        ({"name": "a", "kind": "di"}, "a point of kind di needs pin"),
        ({"name": "a", "kind": "di", "pin": "D4", "freq": 5}, "freq: does not apply to a point of kind di"),
        ({"name": "a", "kind": "bme280", "pin": "D4"}, "pin: does not apply to a point of kind bme280"),
        ({"name": "a", "kind": "do", "pin": "D4", "safe": 0.5}, "safe: a do point's value is true or false"),
        ({"name": "a", "kind": "pwm", "pin": "D4", "init": 1.5}, "init: a pwm duty is 0.0 to 1.0"),
        ({"name": "a", "kind": "sht3x", "addr": 0x77}, "addr: a sht3x answers on 0x44, 0x45, not 0x77"),
        ({"name": "a", "kind": "ads1115", "addr": 0x44}, "addr: an ads1115 answers on 0x48-0x4B"),
        ({"name": "a", "kind": "ds18b20", "rom": "28FF4A6B12160301"}, "is not a DS18B20's id"),
        ({"name": "a", "kind": "adc", "pin": "A0", "scale": 0}, "scale: must not be 0"),
        ({"name": "a", "kind": "sensor"}, "kind"),
    ],
)
def test_schema_errors(io: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        section(io)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("io", "message"),
    [
        (
            [{"name": "room_t", "kind": "di", "pin": "D4"}, {"name": "room", "kind": "bme280"}],
            "io[1].name: 'room_t' is also a point of io[0]",
        ),
        (
            [{"name": "a", "kind": "sht3x"}, {"name": "b", "kind": "sht4x"}],
            "io[1].addr: 0x44 on SDA/SCL is already io[0] (sht3x)",
        ),
        (
            [{"name": "a", "kind": "ds18b20"}, {"name": "b", "kind": "ds18b20", "rom": "28-0316a2794eff"}],
            "io[0].rom: with several DS18B20s, give each its rom",
        ),
    ],
)
def test_section_errors(io: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        section(*io)
    assert message in str(exc.value)


def test_channels_of_one_ads1115_share_its_address() -> None:
    s = section(
        {"name": "level", "kind": "ads1115", "channel": 0},
        {"name": "flow", "kind": "ads1115", "channel": 1, "gain": "2/3"},
    )
    assert [p.address for p in s.io] == [0x48, 0x48]


def test_pins_checked_against_a_board() -> None:
    s = section(
        {"name": "door", "kind": "di", "pin": "D17"},
        {"name": "horn", "kind": "do", "pin": "GPIO27"},
        {"name": "lamp", "kind": "do", "pin": "D17"},
        {"name": "fan", "kind": "pwm", "pin": "d12"},
        {"name": "tap", "kind": "di", "pin": "D2"},
        {"name": "room", "kind": "bme280"},
        {"name": "air", "kind": "sht3x"},
    )
    problems = dict(check_pins(s, PI))
    assert problems[("io", 1, "pin")].startswith(
        "GPIO27 is not a pin of RASPBERRY_PI_4B (did you mean D27?): its pins are CE0, CE1, D0, D1, D2,"
    )
    assert (
        "D26, D27, MISO, MISO_1, MOSI, MOSI_1, RX, RXD, SCK, SCK_1, SCL, SCLK, SCLK_1, SDA, TX, TXD"
        in problems[("io", 1, "pin")]
    )
    assert problems[("io", 2, "pin")] == "D17 is already used by io[0].pin"
    assert "(did you mean D12?)" in problems[("io", 3, "pin")]
    assert problems[("io", 5, "sda")] == "SDA is already used by io[4].pin (as D2)"
    assert problems[("io", 6, "sda")] == "SDA is already used by io[4].pin (as D2)"
    assert set(problems) == {
        ("io", 1, "pin"),
        ("io", 2, "pin"),
        ("io", 3, "pin"),
        ("io", 5, "sda"),
        ("io", 6, "sda"),
    }
    # Without the digital input on D2, the two sensors share the bus's pins.
    assert check_pins(section(*[p.model_dump(exclude_unset=True) for p in s.io[5:]]), PI) == []


def test_config_check_names_the_pins_of_the_detected_board(tmp_path: Path, capsys: Any) -> None:
    f = tmp_path / "gateway.yaml"
    f.write_text(
        "local:\n"
        "  name: gw_io\n"
        "  io:\n"
        "    - {name: door, kind: di, pin: Dx_INPUT_TRUE}\n"
        "    - {name: lamp, kind: do, pin: D17}\n"
    )
    assert main(["config", "check", str(f)]) == 1
    err = capsys.readouterr().err
    assert "gateway.yaml:5:35: local.io[1].pin: D17 is not a pin of OS_AGNOSTIC_BOARD: its pins are" in err
    assert "Dx_INPUT_TOGGLE, Dx_INPUT_TRUE" in err
    assert "Traceback" not in err


def test_a_valid_file_on_the_detected_board() -> None:
    config = parse_config(
        "local:\n  name: gw_io\n  io:\n    - {name: door, kind: di, pin: Dx_INPUT_TRUE}\n"
        "    - {name: room, kind: bme280}\n"
    )
    assert isinstance(config, GatewayConfig)


def test_without_blinka_the_file_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from picogate.local import _hw

    monkeypatch.setattr(_hw, "_installed", lambda module: module == "board")
    with pytest.raises(ConfigError) as exc:
        parse_config("local:\n  name: gw_io\n  io:\n    - {name: room, kind: sht4x}\n", filename="g.yaml")
    assert "local: needs adafruit-circuitpython-sht4x, not installed here: install with pip install" in str(
        exc.value
    )
    monkeypatch.setattr(_hw, "_installed", lambda module: False)
    with pytest.raises(ConfigError) as exc:
        parse_config(
            "local:\n  name: gw_io\n  io:\n    - {name: door, kind: di, pin: D4}\n", filename="g.yaml"
        )
    assert "needs Adafruit-Blinka, not installed here: install with pip install 'picogate[local]'" in str(
        exc.value
    )
    # DS18B20s are read through the kernel: they need neither.
    parse_config("local:\n  name: gw_io\n  io:\n    - {name: tank, kind: ds18b20}\n")


_HIDE_BLINKA = """
import sys
from picogate.cli import main

class Hide:  # as if Blinka and the drivers were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("board", "digitalio", "busio", "adafruit_blinka", "adafruit_bme280"):
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, Hide())
sys.exit(main(["config", "check", sys.argv[1]]))
"""


def test_config_check_without_blinka_installed(tmp_path: Path) -> None:
    import subprocess
    import sys

    f = tmp_path / "gateway.yaml"
    f.write_text("local:\n  name: gw_io\n  io:\n    - {name: room, kind: bme280}\n")
    done = subprocess.run(
        [sys.executable, "-c", _HIDE_BLINKA, str(f)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert (
        "gateway.yaml:1:1: local: needs Adafruit-Blinka, adafruit-circuitpython-bme280, not installed here: "
        "install with pip install 'picogate[local]'"
    ) in done.stderr
    assert "Traceback" not in done.stderr


def test_a_board_without_pins() -> None:
    problems = check_pins(
        section({"name": "door", "kind": "di", "pin": "D17"}), BoardPins("GENERIC_LINUX_PC", {})
    )
    assert problems == [
        (
            ("io", 0, "pin"),
            "D17 is not a pin of GENERIC_LINUX_PC: Blinka knows no GPIO pins on this board "
            "(is it the board you meant to run this on?)",
        )
    ]
