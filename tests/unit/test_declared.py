"""What the configuration declares, as the tools that check against it see it: every source's
points (Modbus, Pico boards and the Modbus devices behind them, CoAP nodes and client devices)."""

from __future__ import annotations

from pathlib import Path

import pytest

from picogate._declared import declared_points
from picogate._model import PointType
from picogate.cli import main
from picogate.gateway import load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.yaml"

CONFIG = """
gateway: {id: gw1}
devices:
  - {name: boiler, type: modbus_tcp, host: 127.0.0.1, points: [{name: temp, ref: 40001, type: float32}]}
boards:
  - name: io1
    port: /dev/ttyACM0
    io:
      - {name: door, kind: di, pin: GP2}
      - {name: lamp, kind: do, pin: GP15, safe: false}
    modbus:
      - tx: GP0
        rx: GP1
        devices:
          - {name: meter, unit_id: 2, points: [{name: kw, ref: 30001, type: float32}]}
coap:
  nodes:
    - {name: yard, points: {temperature: {type: float32, unit: Cel}}}
  clients:
    - name: lamp2
      host: 127.0.0.1
      resources: [{point: power, path: /light, type: bool, writable: true}]
"""


def test_every_source_declares_its_points() -> None:
    reg = declared_points(parse_config(CONFIG))
    assert sorted(p.key for p in reg) == [
        "boiler.temp",
        "io1.door",
        "io1.lamp",
        "lamp2.power",
        "meter.kw",
        "yard.temperature",
    ]
    assert reg.get("io1", "lamp").writable
    assert not reg.get("io1", "door").writable
    assert reg.get("yard", "temperature").type is PointType.FLOAT32
    assert reg.get("yard", "temperature").unit == "Cel"
    assert reg.get("lamp2", "power").writable
    assert reg.get("lamp2", "power").attrs["url"] == "coap://127.0.0.1:5683/light"
    assert {p.origin for p in reg if p.device in ("yard", "lamp2")} == {"coap"}
    assert sorted(d.name for d in reg.devices()) == ["boiler", "io1", "lamp2", "meter", "yard"]


def test_config_check_counts_every_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK (3 Modbus devices, 1 Pico board, 1 CoAP device; 21 points)" in out
    assert len(declared_points(load_config(EXAMPLE))) == 21


def test_rules_check_knows_board_and_coap_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's rule on the example's Pico board and CoAP node checks clean against the
    configuration, as the running gateway would take it; a typo in such a point is named."""
    good = tmp_path / "line.rules"
    good.write_text(
        "ON changed(line1_io.door) AND NOT line1_io.door THEN set(line1_io.beacon, 1)\n"
        'ON yard.temperature < 0 FOR 10m THEN alert("frost in the yard", severity="warning")\n'
    )
    assert main(["rules", "check", "--config", str(EXAMPLE), str(good)]) == 0, capsys.readouterr()
    bad = tmp_path / "typo.rules"
    bad.write_text("ON line1_io.dor THEN set(line1_io.beacon, true)\n")
    assert main(["rules", "check", "--config", str(EXAMPLE), str(bad)]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "typo.rules:1:4" in text
    assert "line1_io.door" in text  # the suggestion


def test_points_laid_out_alike_share_their_attributes() -> None:
    """Many devices of one model: the same register's attributes are one dict, not one each; a
    bit and a string's register count never share one."""
    devices = "\n".join(
        f"  - {{name: m{i}, type: modbus_tcp, host: 127.0.0.1, points: ["
        "{name: a, table: holding, address: 3, type: uint16}, "
        "{name: s, table: holding, address: 20, type: string, count: 3}, "
        "{name: b, table: holding, address: 10, bit: 3}]}"
        for i in range(3)
    )
    reg = declared_points(parse_config(f"gateway: {{id: gw1}}\ndevices:\n{devices}\n"))
    first, other = reg.get("m0", "a"), reg.get("m2", "a")
    assert first.attrs is other.attrs
    assert first.attrs == {
        "table": "holding",
        "address": "3",
        "type": "uint16",
        "order": "ABCD",
        "scale": "1.0",
        "offset": "0.0",
    }
    assert reg.get("m1", "s").attrs["count"] == "3"
    assert "bit" not in reg.get("m1", "s").attrs
    assert reg.get("m1", "b").attrs["bit"] == "3"
    assert "count" not in reg.get("m1", "b").attrs
