"""Regenerate the key tables of docs/configuration.md from the schema (the core's sections in
picogate.config, each plug-in's in its `_config.py`, composed as picogate.gateway.GatewayConfig).

    python tools/gen_config_doc.py           # rewrite the tables in place
    python tools/gen_config_doc.py --check   # exit 1 if a table is out of date (tests do this)

Each table sits between `<!-- keys: NAME -->` and `<!-- /keys -->`; everything else in the document
is written by hand.  Meanings come from the schema's attribute docstrings, or from MEANINGS below
where the docstring is missing or speaks to developers.
"""

from __future__ import annotations

import argparse
import ast
import enum
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
sys.path.insert(0, str(ROOT / "agent"))

from pydantic import BaseModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from picogate._model import NAME_PATTERN  # noqa: E402
from picogate.coap import _config as coap  # noqa: E402
from picogate.config import _base  # noqa: E402
from picogate.config import _commands as commands  # noqa: E402
from picogate.config import _schema as schema  # noqa: E402
from picogate.console import _config as console  # noqa: E402
from picogate.edgex._config import BusReconnectSection as EdgexBusReconnectSection  # noqa: E402
from picogate.edgex._config import BusSection as EdgexBusSection  # noqa: E402
from picogate.edgex._config import DeviceServiceSection as EdgexDeviceServiceSection  # noqa: E402
from picogate.edgex._config import EdgexSection  # noqa: E402
from picogate.gateway import GatewayConfig  # noqa: E402
from picogate.local import _config as local  # noqa: E402
from picogate.modbus import _config as modbus  # noqa: E402
from picogate.mqtt import _config as mqtt  # noqa: E402
from picogate.pico import _config as boards  # noqa: E402
from picogate.rules import _config as rules  # noqa: E402
from picogate.sparkplug import _config as sparkplug  # noqa: E402

_DEVICE_BASE: type[BaseModel] = modbus._DeviceBase

SECTIONS: dict[str, tuple[type[BaseModel], type[BaseModel] | None]] = {
    # name: (model, a base whose fields are left out because another table lists them)
    "top": (GatewayConfig, None),
    "gateway": (schema.GatewaySection, None),
    "mqtt": (mqtt.MqttSection, None),
    "mqtt.tls": (mqtt.TlsSection, None),
    "mqtt.reconnect": (mqtt.ReconnectSection, None),
    "outbox": (schema.OutboxSection, None),
    "metrics": (schema.MetricsSection, None),
    "clock": (schema.ClockSection, None),
    "devices": (_DEVICE_BASE, None),
    "modbus_tcp": (modbus.ModbusTcpDevice, _DEVICE_BASE),
    "modbus_rtu": (modbus.ModbusRtuDevice, _DEVICE_BASE),
    "points": (modbus.PointConfig, None),
    "boards": (boards.BoardConfig, None),
    "boards.io": (boards.IoPoint, None),
    "boards.modbus": (boards.BoardBus, None),
    "boards.modbus.devices": (boards.BoardDevice, None),
    "edgex": (EdgexSection, None),
    "edgex.bus": (EdgexBusSection, None),
    "edgex.bus.reconnect": (EdgexBusReconnectSection, None),
    "edgex.device_service": (EdgexDeviceServiceSection, None),
    "coap": (coap.CoapSection, None),
    "coap.nodes": (coap.CoapNode, None),
    "coap.nodes.points": (coap.CoapPoint, None),
    "coap.clients": (coap.CoapClientDevice, None),
    "coap.clients.resources": (coap.CoapResource, None),
    "coap.oscore": (coap.CoapOscore, None),
    "local": (local.LocalSection, None),
    "local.io": (local.LocalIo, None),
    "rules": (rules.RulesSection, None),
    "commands": (commands.CommandsSection, None),
    "commands.deadline": (commands.DeadlineSection, None),
    "commands.rate_limit": (commands.RateLimitSection, None),
    "sparkplug": (sparkplug.SparkplugSection, None),
    "sparkplug.servers": (sparkplug.ServerSection, None),
    "console": (console.ConsoleSection, None),
    "console.session": (console.SessionSection, None),
    "console.login": (console.LoginSection, None),
    "console.tls": (console.TlsSection, None),
    "console.alarms": (console.AlarmsSection, None),
    "console.trend": (console.TrendSection, None),
}

MEANINGS: dict[tuple[str, str], str] = {
    ("GatewayConfig", "gateway"): "This gateway: its id and where it keeps state.",
    ("GatewayConfig", "console"): "The operator console in a browser; see [console.md](console.md).",
    ("GatewayConfig", "mqtt"): "The MQTT broker the readings go to and commands come from.",
    ("GatewayConfig", "outbox"): "The store-and-forward queue between the sources and MQTT.",
    ("GatewayConfig", "metrics"): "The gateway's local HTTP server: metrics, health, the local API.",
    ("GatewayConfig", "clock"): "How the system clock is trusted.",
    ("GatewayConfig", "devices"): "The field devices polled over Modbus TCP or RTU.",
    (
        "GatewayConfig",
        "sparkplug",
    ): "A Sparkplug B Edge Node; see `sparkplug` and [sparkplug.md](sparkplug.md).",
    ("GatewayConfig", "boards"): "Raspberry Pi Pico I/O boards; see `boards` and docs/pico.md.",
    (
        "GatewayConfig",
        "local",
    ): "The gateway's own GPIO, PWM and I²C/1-Wire sensors; see `local` and docs/local-io.md.",
    ("LocalSection", "io"): "The points; see `local.io`.",
    (
        "LocalIo",
        "name",
    ): "Point name (a sensor's points are `<name>_t`, `_h`, `_p`); the device is `local.name`.",
    ("LocalIo", "offset"): "adc/ads1115: added after `scale`.",
    ("LocalIo", "unit"): "Engineering unit; default: V (ads1115), °C (ds18b20); the sensors' are fixed.",
    ("LocalIo", "description"): "Free text, for people.",
    ("LocalIo", "deadband"): "Publish only when the value moves more than this (as for Modbus points).",
    ("LocalIo", "max_silence"): "Re-publish an unchanged value after this long; default: the section's.",
    ("BoardConfig", "io"): "The board's own I/O points; see `boards.io`.",
    ("BoardConfig", "modbus"): "Modbus RTU buses on the board's UARTs; see `boards.modbus`.",
    ("BoardConfig", "board"): "Board definition (boards/*.json): `pico`, `pico_w`, `pico2`, `pico2_w`.",
    ("IoPoint", "name"): "Point name (the board's points are points of a device named after the board).",
    ("IoPoint", "pull"): "di/cnt: internal pull-up or pull-down; null: none.",
    ("IoPoint", "debounce"): "di: a level must hold this long to count.",
    ("IoPoint", "invert"): "di: report the inverted level.",
    ("IoPoint", "edge"): "cnt: which edges count.",
    ("IoPoint", "i2c"): "sht3x: I2C bus 0 or 1.",
    ("IoPoint", "sda"): "sht3x: SDA pin of that bus.",
    ("IoPoint", "scl"): "sht3x: SCL pin of that bus.",
    ("IoPoint", "addr"): "sht3x: I2C address (0x44 = 68, or 0x45).",
    ("IoPoint", "unit"): "Engineering unit; default: V (adc), °C (temp, ds18b20).",
    ("IoPoint", "description"): "Free text, for people.",
    ("IoPoint", "deadband"): "Publish only when the value moves more than this (as for Modbus points).",
    ("IoPoint", "max_silence"): "Re-publish an unchanged value after this long; default: the board's.",
    ("BoardBus", "uart"): "UART 0 or 1.",
    ("BoardBus", "baudrate"): "Bits per second of the bus.",
    ("BoardBus", "parity"): "`N`, `E` or `O`.",
    ("BoardBus", "stopbits"): "1 or 2.",
    ("BoardBus", "bytesize"): "Data bits, 7 or 8.",
    ("IoPoint", "offset"): "adc: see `scale`.",
    ("IoPoint", "pin"): "GPIO pin, `GP2` or 2; not for temp and sht3x.",
    ("IoPoint", "init"): "do/pwm: the value set when the configuration is applied (default off / 0.0).",
    (
        "BoardConfig",
        "serial",
    ): "USB serial number (16 hex digits) = `machine.unique_id()`; the board is found among the USB devices 2E8A:0005 by it.",
    ("BoardBus", "tx"): "TX pin of that UART.",
    ("BoardBus", "rx"): "RX pin of that UART.",
    ("BoardBus", "de"): "RS-485 driver-enable pin (high while sending); null: none.",
    ("BoardBus", "timeout"): "Time allowed for one reply.",
    ("BoardBus", "retries"): "Further tries of a failed request.",
    ("BoardBus", "devices"): "The Modbus devices on this bus; see `boards.modbus.devices`.",
    ("BoardDevice", "name"): "Device name: the `<device>` level of topics.",
    ("BoardDevice", "description"): "Free text, for people.",
    ("BoardDevice", "unit_id"): "Modbus slave id on the bus.",
    ("BoardDevice", "max_registers"): "Registers one read may span.",
    ("BoardDevice", "max_bits"): "Coils/inputs one read may span.",
    ("BoardDevice", "max_gap"): "Unused registers a read may span to merge two requests.",
    ("BoardDevice", "no_merge"): "One request per point, for devices that refuse multi-register reads.",
    ("BoardDevice", "byte_order"): "Default byte/word order of the device's points.",
    ("BoardDevice", "poll"): "Poll interval (done by the board); a point's `poll` overrides it.",
    ("BoardDevice", "max_silence"): "Re-publish unchanged values after this long (0: never).",
    ("BoardDevice", "points"): "Points, exactly as for any Modbus device; see `points`.",
    ("GatewayConfig", "edgex"): "EdgeX Foundry: events, registration, commands; see [edgex.md](edgex.md).",
    ("EdgexSection", "enabled"): "Forward to EdgeX at all (the section's presence alone turns it on).",
    ("EdgexSection", "bus"): "The message-bus broker; see `edgex.bus`.",
    ("EdgexSection", "core_data"): "core-data's URL (REST transport).",
    ("EdgexSection", "core_metadata"): "core-metadata's URL (registration).",
    ("EdgexSection", "device_service"): "This gateway's device-service REST API; see `edgex.device_service`.",
    ("EdgexSection", "labels"): "Labels of the registered device service and profiles.",
    ("BusSection", "host"): "Broker host of the EdgeX message bus.",
    ("BusSection", "port"): "Broker port.",
    ("BusSection", "username"): "User name to log in with.",
    ("BusSection", "qos"): "QoS of the events (EdgeX's own default is 0).",
    ("BusSection", "protocol"): "MQTT version.",
    ("BusSection", "reconnect"): "Delays between reconnection attempts; see `edgex.bus.reconnect`.",
    ("DeviceServiceSection", "enabled"): "Serve the API (core-command's REST path needs it).",
    (
        "GatewayConfig",
        "coap",
    ): "The CoAP server nodes report to, and devices read over CoAP ([coap.md](coap.md)).",
    ("CoapNode", "name"): "Device name: the `<device>` of `/r/<device>`, of topics and rule names.",
    ("CoapNode", "points"): "Point name → type and unit; see `coap.nodes.points`.",
    ("CoapSection", "port"): "UDP port the server listens on (5683 is CoAP's own).",
    ("CoapPoint", "description"): "Free text, for people.",
    ("CoapClientDevice", "name"): "Device name: the `<device>` level of topics and rule names.",
    ("CoapClientDevice", "host"): "Host name or address of the device.",
    ("CoapClientDevice", "port"): "UDP port of the device.",
    ("CoapClientDevice", "resources"): "Its resources, one point each; see `coap.clients.resources`.",
    ("CoapResource", "point"): "Point name.",
    ("CoapResource", "type"): "Value type.",
    ("CoapResource", "unit"): "Engineering unit.",
    ("GatewayConfig", "rules"): "The rule files (docs/rules.md) and how they are reloaded; none without it.",
    (
        "GatewayConfig",
        "commands",
    ): "How writes are bounded: deadlines, queues, sizes, rate limits; see `commands`.",
    ("MqttSection", "command_ttl"): "Deprecated: the old name of `commands.deadline.mqtt`, read as such.",
    ("TlsSection", "ca_file"): "CA certificate(s) to check the broker with; default: the system's.",
    ("TlsSection", "cert_file"): "Client certificate (with `key_file`).",
    ("TlsSection", "key_file"): "Private key of the client certificate.",
    ("MqttSection", "enabled"): "Connect to a broker at all.",
    ("MqttSection", "host"): "Broker host name or address.",
    ("MqttSection", "port"): "Broker port (8883 is the usual one for TLS).",
    ("MqttSection", "username"): "User name to log in with.",
    ("MqttSection", "tls"): "Connect with TLS; see `mqtt.tls`.",
    ("MqttSection", "protocol"): "MQTT version.",
    ("MqttSection", "qos"): "QoS of the data messages.",
    ("MqttSection", "base_topic"): "First level(s) of every topic: `<base_topic>/<gateway id>/...`.",
    ("MqttSection", "publish"): "`point`: one message per point; `device`: one per device and poll; `both`.",
    ("MqttSection", "keepalive"): "MQTT keep-alive interval.",
    ("MqttSection", "reconnect"): "Delays between reconnection attempts; see `mqtt.reconnect`.",
    ("ReconnectSection", "min_delay"): "First wait after a lost connection.",
    (
        "ReconnectSection",
        "max_delay",
    ): "Longest wait: the wait grows (with jitter) from `min_delay` up to this.",
    (
        "MetricsSection",
        "enabled",
    ): "Serve `/metrics`, `/healthz` and the local API `/api/v1` (the local HTTP server).",
    ("MetricsSection", "host"): (
        "Address to listen on: the gateway itself only by default; `0.0.0.0` for every interface "
        "(without a `console:` section there is no authentication: firewall it; with one, the API "
        "needs a user and the gateway refuses to start without an engineer)."
    ),
    ("MetricsSection", "port"): "Port to listen on.",
    ("_DeviceBase", "name"): "Device name: the `<device>` level of topics and rule names.",
    ("_DeviceBase", "description"): "Free text, for people.",
    ("_DeviceBase", "unit_id"): "Modbus unit (slave) id.",
    ("_DeviceBase", "max_registers"): "Most registers one read request may ask for.",
    ("_DeviceBase", "max_bits"): "Most coils / discrete inputs one read request may ask for.",
    ("_DeviceBase", "byte_order"): "Byte and word order of multi-register values; see below.",
    ("_DeviceBase", "poll"): "Poll interval of the device's points.",
    ("_DeviceBase", "points"): "The device's points; see `points`.",
    ("ModbusTcpDevice", "type"): "Modbus TCP.",
    ("ModbusTcpDevice", "host"): "Host name or address of the device (or of its gateway).",
    ("ModbusTcpDevice", "port"): "TCP port.",
    ("ModbusRtuDevice", "type"): "Modbus RTU on a serial line.",
    ("ModbusRtuDevice", "baudrate"): "Line speed.",
    ("ModbusRtuDevice", "parity"): "`N` none, `E` even, `O` odd.",
    ("ModbusRtuDevice", "stopbits"): "Stop bits.",
    ("ModbusRtuDevice", "bytesize"): "Data bits.",
    ("ModbusRtuDevice", "unit_id"): "Modbus unit (slave) id: 1..247 on a serial line (0 is broadcast).",
    ("PointConfig", "name"): "Point name: the `<point>` level of topics.",
    ("PointConfig", "table"): "`holding`, `input` (registers), `coil` or `discrete_input`.",
    ("PointConfig", "address"): "0-based protocol address in `table`.",
    ("PointConfig", "type"): "Value type; coils and discrete inputs are always `bool`.",
    ("PointConfig", "scale"): "Engineering value = raw × scale + offset.",
    ("PointConfig", "offset"): "See `scale`.",
    ("PointConfig", "unit"): "Engineering unit, e.g. `°C`, `kWh`.",
    ("PointConfig", "description"): "Free text, for people.",
    ("PointConfig", "deadband"): "Publish only when the value moves more than this; see below.",
    ("PointConfig", "writable"): "Accept writes (from MQTT, rules, EdgeX); holding registers and coils only.",
    ("PointConfig", "min"): "Lowest value a write may set (engineering units).",
    ("PointConfig", "max"): "Highest value a write may set (engineering units).",
}


# --------------------------------------------------------------------------- docstrings


def attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """`field: T = x` followed by a string literal: that string, for every class in the MRO."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            tree = ast.parse(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def meaning(model: type[BaseModel], name: str, docs: dict[str, str]) -> str:
    """MEANINGS first (written for operators), else the schema's docstring."""
    for cls in model.__mro__:
        text = MEANINGS.get((cls.__name__, name))
        if text is not None:
            return text
    return docs.get(name, "")


# --------------------------------------------------------------------------- types and defaults


def _unwrap(annotation: Any, constraints: list[Any]) -> tuple[Any, bool]:
    optional = False
    while True:
        if get_origin(annotation) is Annotated:
            base, *extras = get_args(annotation)
            for extra in extras:
                constraints.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
            annotation = base
        elif get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
            members = [a for a in get_args(annotation) if a is not type(None)]
            optional = True
            if len(members) != 1:
                return annotation, optional
            annotation = members[0]
        else:
            return annotation, optional


def _is_duration(constraints: list[Any]) -> bool:
    return any(getattr(c, "func", None) is _base.parse_duration for c in constraints)


def _range(constraints: list[Any], unit: str = "") -> str:
    low = high = ""
    for c in constraints:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(c, attr, None)
            if value is not None:
                text = f"{sign} {_number(value)}{unit}"
                if attr in ("ge", "gt"):
                    low = text
                else:
                    high = text
    if low.startswith("≥") and high.startswith("≤"):
        return f"{low[2:]}..{high[2:]}"
    return ", ".join(t for t in (low, high) if t)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _code_list(values: list[Any]) -> str:
    return ", ".join(f"`{v}`" for v in values)


_HEX = re.compile(r"^\^\[0-9A-Fa-f\]\{(\d+)\}\$$")

_ITEMS: dict[Any, str] = {
    modbus.PointConfig: "points",
    boards.BoardConfig: "boards",
    boards.IoPoint: "I/O points",
    boards.BoardBus: "buses",
    boards.BoardDevice: "devices",
    coap.CoapNode: "nodes",
    coap.CoapClientDevice: "devices",
    coap.CoapResource: "resources",
    coap.CoapOscore: "OSCORE contexts",
}
"""What a list of these models is a list of, in the tables."""


def type_text(info: FieldInfo) -> str:
    return _kind(info.annotation, list(info.metadata))


def _kind(annotation: Any, constraints: list[Any]) -> str:
    """What an operator writes for a key of this type: `duration (> 0s)`, `16 hex digits`,
    `bool or number`, `list of points`."""
    annotation, _ = _unwrap(annotation, constraints)
    patterns = [getattr(c, "pattern", None) for c in constraints if getattr(c, "pattern", None)]
    if _is_duration(constraints):
        bounds = _range(constraints, "s")
        return f"duration ({bounds})" if bounds else "duration"
    if NAME_PATTERN in patterns:
        return "name"
    if get_origin(annotation) is Literal:
        return "one of " + _code_list(list(get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + _code_list([m.value for m in annotation])
    if annotation is _base.Deadband:
        return "number or percentage"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if annotation is bool:
        return "bool"
    if annotation is int:
        bounds = _range(constraints)
        return f"integer ({bounds})" if bounds else "integer"
    if annotation is float:
        return "number"
    if annotation is str:
        for pattern in patterns:
            hex_digits = _HEX.match(pattern)
            if hex_digits is not None:
                return f"{hex_digits.group(1)} hex digits"
            if "#+" in pattern:
                return "MQTT topic levels (`a` or `a/b`: no spaces, `+`, `#` or empty level)"
            return (
                "text (letters, digits and `_~:;=-`)" if "~:;=-" in pattern else f"text matching `{pattern}`"
            )
        return "text"
    if annotation is Path:
        return "path"
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [m for m in get_args(annotation) if m is not type(None)]
        return " or ".join(_kind(m, []) for m in members)
    if origin is list:
        (item,) = get_args(annotation)
        if item in _ITEMS:
            return f"list of {_ITEMS[item]}"
        if get_origin(item) is Annotated and get_origin(get_args(item)[0]) in (Union, types.UnionType):
            return "list of devices"
        kind = _kind(item, [])
        return f"list of {kind.removeprefix('one of ')}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"mapping of {_kind(key, [])} to {_kind(value, [])}"
    return str(annotation)


def _duration_text(seconds: float) -> str:
    if seconds == 0:
        return "0"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001)):
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds}s"


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        if info.default_factory is dict:
            return "`{}`"
        return "`[]`" if info.default_factory is list else "(computed)"
    value = info.default
    if value is PydanticUndefined or value is None:
        return "—"
    constraints = list(info.metadata)
    _unwrap(info.annotation, constraints)
    if isinstance(value, float) and _is_duration(constraints):
        return f"`{_duration_text(value)}`"
    if isinstance(value, _base.Deadband):
        return f"`{_number(value.value)}{'%' if value.percent else ''}`"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{_number(value)}`"


# --------------------------------------------------------------------------- tables


def table(name: str) -> str:
    model, skip = SECTIONS[name]
    docs = attribute_docs(model)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, info in model.model_fields.items():
        if skip is not None and key in skip.model_fields and key not in model.__annotations__:
            continue
        cells = [f"`{key}`", type_text(info), default_text(info), meaning(model, key, docs)]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


_BLOCK = re.compile(
    r"^(<!-- keys: (?P<name>[\w.]+) -->\n)(?:(?!<!-- keys:).)*?^(<!-- /keys -->)$", re.DOTALL | re.M
)


def render(text: str) -> str:
    """`text` with every generated table brought up to date."""

    def replace(m: re.Match[str]) -> str:
        return f"{m.group(1)}{table(m.group('name'))}\n{m.group(3)}"

    return _BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check that the tables are up to date")
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"{DOC.relative_to(ROOT)}: key tables are out of date; run tools/gen_config_doc.py")
            return 1
        return 0
    if new != text:
        DOC.write_text(new, encoding="utf-8")
        print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
