"""The `boards:` section: board definitions, pin checks with their position in gateway.yaml, and
what the agent derives from a board's section (the JSON pushed, points, Modbus requests)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from picogate._model import PointType, Quality
from picogate.config import ConfigError
from picogate.gateway import parse_config
from picogate.modbus._codec import Table
from picogate.pico._boards import BOARD_NAMES, board, pin_number
from picogate.pico._derive import decode_result, derive

HEAD = "gateway: {id: gw1}\nboards:\n"


def cfg(body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(body), "  ")


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, filename="gateway.yaml")
    return [str(i).split("\n")[0] for i in exc.value.issues]


def test_every_board_definition_loads() -> None:
    for name in BOARD_NAMES:
        b = board(name)
        assert b.name == name
        assert {26, 27, 28} <= {g for g, p in b.pins.items() if p.adc is not None}
        assert b.mpy_arch == ("armv6m" if b.chip == "rp2040" else "armv7emsp")
    assert board("pico").led == 25
    assert 25 not in board("pico_w").pins  # the LED is on the wireless chip
    assert board("pico").pin(16).uart.fn == "tx"
    assert board("pico").pin(9).i2c.fn == "scl"
    assert board("pico").pin(17).pwm_slice == 0


def test_pin_names() -> None:
    assert pin_number("GP26") == 26
    assert pin_number("gpio5") == 5
    assert pin_number(3) == 3
    for bad in ("A0", True, "GP99", -1):
        with pytest.raises(ValueError):
            pin_number(bad)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            """\
            - name: b1
              serial: E6614103E7000001
              io:
                - {name: level, kind: adc, pin: GP5}
            """,
            "gateway.yaml:6:39: boards[0].io[0].pin: GP5 has no ADC on pico: ADC pins are GP26, GP27, GP28",
        ),
        (
            """\
            - name: b1
              board: pico_w
              port: /dev/ttyACM0
              io:
                - {name: led, kind: do, pin: GP25}
            """,
            "gateway.yaml:7:36: boards[0].io[0].pin: GP25 is not available on pico_w: wireless chip",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              io:
                - {name: a, kind: di, pin: 2}
                - {name: b, kind: do, pin: GP2}
            """,
            "gateway.yaml:7:34: boards[0].io[1].pin: GP2 is already used by io[0].pin",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              io:
                - {name: a, kind: di, pin: 2, freq: 100}
            """,
            "gateway.yaml:6:9: boards[0].io[0]: freq: does not apply to a point of kind di",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              io:
                - {name: a, kind: adc}
            """,
            "gateway.yaml:6:9: boards[0].io[0]: a point of kind adc needs pin (e.g. GP2)",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              io:
                - {name: a, kind: pwm, pin: 3, safe: 2}
            """,
            "gateway.yaml:6:9: boards[0].io[0]: safe: a pwm duty is 0.0 to 1.0",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              io:
                - {name: air, kind: sht3x, sda: 8, scl: 10}
            """,
            "gateway.yaml:6:47: boards[0].io[0].scl: GP10 cannot be I2C0 SCL on pico (it is I2C1 SDA): "
            "I2C0 SCL pins are GP1, GP5, GP9, GP13, GP17, GP21, GP25",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              io:
                - {name: room, kind: dht22, pin: 4}
                - {name: room_t, kind: temp}
            """,
            "gateway.yaml:7:16: boards[0].io[1].name: 'room_t' is also a point of io[0]",
        ),
        (
            """\
            - name: b1
            """,
            "gateway.yaml:3:5: boards[0]: give serial (the board's USB serial number) or port, one of them",
        ),
        (
            """\
            - name: b1
              serial: E66141
            """,
            "gateway.yaml:4:13: boards[0].serial: must be 16 hex digits (0-9, A-F); this has 6",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              board: pico3
            """,
            "gateway.yaml:5:12: boards[0].board: must be one of",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              modbus:
                - {tx: GP4, rx: GP5}
            """,
            "gateway.yaml:6:14: boards[0].modbus[0].tx: GP4 cannot be UART0 TX on pico (it is UART1 TX): "
            "UART0 TX pins are GP0, GP12, GP16, GP28",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              io:
                - {name: a, kind: di, pin: 1}
              modbus:
                - {tx: GP0, rx: GP1}
            """,
            "gateway.yaml:8:23: boards[0].modbus[0].rx: GP1 is already used by io[0].pin",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              modbus:
                - tx: 0
                  rx: 1
                  devices:
                    - {name: m1, unit_id: 2}
                    - {name: m2, unit_id: 2}
            """,
            "gateway.yaml:10:33: boards[0].modbus[0].devices[1].unit_id: m2 and m1 both use unit id 2",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              modbus:
                - tx: 0
                  rx: 1
                  devices:
                    - name: m1
                      points: [{name: p, ref: 40001, bit: 3, writable: true}]
            """,
            "boards[0].modbus[0].devices[0].points[0].writable: a bit of a register cannot be written",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              heartbeat: 5s
            """,
            "boards[0]: safe_timeout: 5s is less than two heartbeats (5s)",
        ),
        (
            """\
            - name: b1
              port: /dev/ttyACM0
              modbus:
                - tx: 0
                  rx: 1
                  devices:
                    - name: m1
                      max_registers: 10
                      points: [{name: label, ref: 40001, type: string, count: 20}]
            """,
            "boards[0]: modbus device m1: point 'label' spans 20 registers; one holding read carries at most 10",
        ),
    ],
)
def test_bad_board_sections(body: str, expected: str) -> None:
    got = issues(cfg(body))
    assert any(expected in line for line in got), got


def test_board_and_device_names_share_one_namespace() -> None:
    text = HEAD + textwrap.indent(
        textwrap.dedent(
            """\
            - {name: b1, port: /dev/ttyACM0}
            - {name: b1, port: /dev/ttyACM1}
            """
        ),
        "  ",
    )
    assert any("device name 'b1' is also used by boards[0].name" in i for i in issues(text))


FULL = cfg(
    """\
    - name: line1
      serial: e6614103e7000001
      heartbeat: 500ms
      safe_timeout: 2s
      io:
        - {name: door, kind: di, pin: GP2, pull: up, debounce: 30ms, invert: true}
        - {name: parts, kind: cnt, pin: GP3, edge: both, every: 2s}
        - {name: valve, kind: do, pin: GP15, safe: false}
        - {name: fan, kind: pwm, pin: GP16, freq: 2000, init: 0.5}
        - {name: level, kind: adc, pin: GP26, oversample: 4, scale: 100, unit: "%"}
        - {name: cpu, kind: temp, every: 5s}
        - {name: tank, kind: ds18b20, pin: 4, rom: 28ff4a6b12160301}
        - {name: room, kind: dht22, pin: 5}
        - {name: air, kind: sht3x, i2c: 0, sda: GP8, scl: GP9}
      modbus:
        - uart: 0
          tx: GP0
          rx: GP1
          de: GP6
          baudrate: 9600
          devices:
            - name: meter
              unit_id: 3
              points:
                - {name: volts, ref: 40001, scale: 0.1, unit: V}
                - {name: amps, ref: 40002, type: float32}
                - {name: setp, ref: 40010, writable: true}
            - name: relays
              unit_id: 4
              poll: 500ms
              points:
                - {name: r1, table: coil, address: 0, writable: true}
                - {name: r2, table: coil, address: 1}
    """
)


def test_derive_the_pushed_document() -> None:
    plan = derive(parse_config(FULL).boards[0])
    doc = json.loads(plan.text)
    assert doc["v"] == 1
    assert doc["name"] == "line1"
    assert (doc["hb_ms"], doc["safe_ms"]) == (500, 2000)
    io = {e["id"]: e for e in doc["io"]}
    assert io["door"] == {"id": "door", "k": "di", "pin": 2, "pull": "up", "deb_ms": 30, "inv": True}
    assert io["parts"] == {
        "id": "parts",
        "k": "cnt",
        "pin": 3,
        "pull": None,
        "edge": "both",
        "every_ms": 2000,
    }
    assert io["valve"] == {"id": "valve", "k": "do", "pin": 15, "init": False, "safe": False}
    assert io["fan"] == {"id": "fan", "k": "pwm", "pin": 16, "freq": 2000, "init": 0.5, "safe": None}
    assert io["level"] == {"id": "level", "k": "adc", "pin": 26, "os": 4, "every_ms": 1000}
    assert io["cpu"] == {"id": "cpu", "k": "temp", "every_ms": 5000}
    assert io["tank"]["rom"] == "28FF4A6B12160301"
    assert io["air"] == {
        "id": "air",
        "k": "sht3x",
        "i2c": 0,
        "sda": 8,
        "scl": 9,
        "addr": 0x44,
        "every_ms": 1000,
    }
    (bus,) = doc["mb"]
    assert (bus["tx"], bus["rx"], bus["de"], bus["baud"], bus["timeout_ms"]) == (0, 1, 6, 9600, 200)
    # the planner merged volts+amps (3 registers) and kept setp apart; coils in one read
    assert bus["reqs"] == [
        {"u": 3, "fc": 3, "a": 0, "n": 3, "every_ms": 1000},
        {"u": 3, "fc": 3, "a": 9, "n": 1, "every_ms": 1000},
        {"u": 4, "fc": 1, "a": 0, "n": 2, "every_ms": 500},
    ]


def test_derive_points() -> None:
    plan = derive(parse_config(FULL).boards[0])
    infos = {(i.device, i.name): i for i in plan.infos}
    assert infos[("line1", "door")].type is PointType.BOOL
    assert infos[("line1", "parts")].type is PointType.UINT32
    assert infos[("line1", "valve")].writable
    fan = infos[("line1", "fan")]
    assert (fan.writable, fan.min, fan.max) == (True, 0.0, 1.0)
    assert infos[("line1", "level")].unit == "%"
    assert infos[("line1", "room_t")].unit == "°C"
    assert infos[("line1", "air_h")].unit == "%RH"
    assert ("line1", "room") not in infos
    assert infos[("meter", "volts")].type is PointType.FLOAT64
    assert infos[("relays", "r1")].writable
    assert plan.ids["level"].scale == 100


def test_decode_modbus_results() -> None:
    plan = derive(parse_config(FULL).boards[0])
    req = plan.requests[(0, 0)]
    assert req.request.table is Table.HOLDING
    data = bytes.fromhex("00fa") + bytes.fromhex("3fc00000")  # 25.0 V, 1.5 A
    rs, answered = decode_result(req, "ok", data, 7)
    assert answered
    assert [(r.device, r.point, r.value, r.ts) for r in rs] == [
        ("meter", "volts", 25.0, 7),
        ("meter", "amps", 1.5, 7),
    ]
    coils = plan.requests[(0, 2)]
    rs, _ = decode_result(coils, "ok", b"\x02", 7)
    assert [(r.point, r.value) for r in rs] == [("r1", False), ("r2", True)]
    rs, answered = decode_result(req, "exc", 2, 7)
    assert answered
    assert all(r.quality is Quality.BAD for r in rs)
    rs, answered = decode_result(req, "timeout", None, 7)
    assert not answered
    assert all(r.quality is Quality.BAD and r.value is None for r in rs)
    rs, answered = decode_result(req, "ok", b"\x00", 7)  # short reply
    assert all(r.quality is Quality.BAD for r in rs)


def test_the_errors_shown_in_pico_md_are_the_real_ones() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "pico.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert example is not None
    shown = re.findall(r"^  (gateway\.yaml:\d+:\d+: .*)$", doc, re.M)
    mutations = [
        ("pin: GP26", "pin: GP5"),
        ("rx: GP1", "rx: GP2"),
        ("{name: parts, kind: cnt, pin: GP3", "{name: parts, kind: cnt, pin: GP2"),
    ]
    got = [issues(example.group(1).replace(a, b))[0] for a, b in mutations]
    assert got == shown


def test_a_configuration_too_big_for_the_board_is_refused_by_name() -> None:
    points = [{"name": f"p{i}", "ref": 40001 + 2 * i} for i in range(400)]
    text = cfg(
        f"""\
        - name: big
          port: /dev/ttyACM0
          modbus:
            - tx: 0
              rx: 1
              devices:
                - {{name: m1, no_merge: true, points: {json.dumps(points)}}}
        """
    )
    (issue,) = issues(text)
    assert re.match(
        r"gateway.yaml:3:5: boards\[0\]: the board's configuration would be \d+ bytes of JSON; "
        r"a board takes at most 16384",
        issue,
    ), issue
