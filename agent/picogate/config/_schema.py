"""The typed schema of `gateway.yaml`: validation, defaults and documentation in one place.

Every model forbids unknown keys, so a typo is an error that names the key, not a silent default.
Durations are written `500ms`, `10s`, `5m`, `1h` (or a bare number of seconds).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from picogate._model import PointType
from picogate._secrets import remember
from picogate.coap._config import CoapSection
from picogate.config._base import (
    Duration,
    EnvName,
    Name,
    Port,
    PositiveDuration,
    UnitId,
    _Model,
    parse_duration,
)
from picogate.config._commands import CommandsSection
from picogate.edgex._config import EdgexSection
from picogate.modbus._codec import ByteOrder, Encoding, Table
from picogate.rules._config import RulesSection

# --------------------------------------------------------------------------- gateway, mqtt


class GatewaySection(_Model):
    id: Name = "gateway"
    """Gateway id: the `<gw>` level of every MQTT topic."""
    data_dir: Path = Path("/var/lib/picogate")
    """Where the outbox and other state live."""


class TlsSection(_Model):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    """Skip hostname and certificate checks (testing only)."""

    @model_validator(mode="after")
    def _key_with_cert(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        return self


class PublishMode(enum.StrEnum):
    POINT = "point"  # one message per point: <base>/<gw>/data/<device>/<point>
    DEVICE = "device"  # one message per device per poll: <base>/<gw>/data/<device>
    BOTH = "both"


def _number_as_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


class ReconnectSection(_Model):
    min_delay: PositiveDuration = 0.5
    max_delay: PositiveDuration = 30.0


class MqttSection(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: str | None = None
    """Default: `picogate-<gateway id>`."""
    username: str | None = None
    password_env: EnvName | None = None
    """Name of an environment variable holding the password."""
    password_file: Path | None = None
    """A file whose first line is the password (e.g. a systemd credential)."""
    tls: TlsSection | None = None
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(_number_as_text)] = "5"  # YAML reads 5 as int
    qos: Literal[0, 1] = 1
    base_topic: Annotated[str, Field(pattern=r"^[^#+\s]+(/[^#+\s]+)*$")] = "picogate"
    retain: bool = True
    """Retain the last value of each point (and of each device message)."""
    publish: PublishMode = PublishMode.POINT
    keepalive: PositiveDuration = 30.0
    command_ttl: PositiveDuration | None = None
    """Deprecated: the old name of `commands.deadline.mqtt` (used as such when that is not given)."""
    reconnect: ReconnectSection = ReconnectSection()
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 1000
    """QoS 1 messages sent but not yet acknowledged, at most (65,519 at most in effect: a few
    packet ids are kept for subscriptions)."""
    max_packet_size: Annotated[int, Field(ge=128, le=268_435_460)] = 1_048_576
    """Largest MQTT packet, in bytes, the gateway sends or accepts. Set it to the broker's limit
    under MQTT 3.1.1 (MQTT 5 brokers announce theirs): a larger message is then parked, not sent
    to a broker that would close the connection."""

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSection:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self

    def password(self) -> str | None:
        """Read the secret now; it is never stored in the config object nor logged.

        Neither the variable's name nor the file's path is repeated in an error: either may be the
        password itself, written where its name belongs."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(
                    "mqtt.password_env: the environment variable it names is not set: set it in the "
                    "agent's environment (systemd: Environment= or EnvironmentFile=); password_env holds "
                    "the variable's name, the variable holds the password"
                )
            remember([value])
            return value
        if self.password_file:
            try:
                value = self.password_file.read_text(encoding="utf-8").splitlines()[0]
            except OSError as exc:
                raise ValueError(
                    f"mqtt.password_file: cannot read the file it names: {exc.strerror or type(exc).__name__}"
                ) from None
            except (IndexError, UnicodeDecodeError):
                raise ValueError(
                    "mqtt.password_file: cannot read a password from the file it names: it is empty or "
                    "not UTF-8 text (its first line must be the password)"
                ) from None
            remember([value])
            return value
        return None


class OutboxSection(_Model):
    path: Path | None = None
    """Default: `<data_dir>/outbox.sqlite`."""
    max_records: Annotated[int, Field(ge=1000)] = 2_000_000
    """When full, the oldest records are dropped (counted, reported on the status topic and metrics)."""
    synchronous: Literal["full", "normal"] = "full"
    """`full`: a committed reading survives power loss; `normal`: survives a crash of the agent."""
    commit_interval: Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=5)] = 0.01
    """The shortest time between two commits: an idle outbox commits a reading at once, a busy one
    commits what arrived meanwhile in one transaction (group commit). Shorter: less latency, more
    fsyncs (CPU, disk wear)."""
    max_pending_mb: Annotated[int, Field(ge=1, le=4096)] = 64
    """Readings waiting for a commit, in MB. While commits work, polling waits when this much is
    waiting; while they fail (disk full), readings are kept in memory up to this much, then the
    oldest are dropped and counted (`lost`)."""
    max_parked: Annotated[int, Field(ge=100)] = 100_000
    """Messages the broker (or core-data) refused are parked, up to this many (the oldest dropped
    and counted beyond), and sent again at the next start and every `parked_retry`."""
    parked_retry: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 600.0
    """How often parked messages are tried again while the gateway runs (0: only at start)."""


class MetricsSection(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9108


class ClockSection(_Model):
    check_sync: bool = True
    """Flag readings `uncertain` while the system clock is not NTP-synchronised."""


# --------------------------------------------------------------------------- points

_REF_TABLES = {0: Table.COIL, 1: Table.DISCRETE_INPUT, 3: Table.INPUT, 4: Table.HOLDING}


def reference_to_address(ref: int) -> tuple[Table, int]:
    """Map a Modicon reference number to (table, 0-based protocol address).

    5 digits: 00001-09999 coils, 10001-19999 discrete inputs, 30001-39999 input registers,
    40001-49999 holding registers.  6 digits extend the range: 400001-465536 etc.
    """
    if not 1 <= ref <= 465536:
        raise ValueError(f"reference {ref} is not a Modicon reference number (e.g. 40001)")
    digits = 6 if ref > 99999 else 5
    base = 10 ** (digits - 1)
    kind, number = divmod(ref, base)
    if kind not in _REF_TABLES or number < 1:
        raise ValueError(
            f"reference {ref}: first digit must be 0 (coil), 1 (discrete input), "
            "3 (input register) or 4 (holding register), and the number starts at 1"
        )
    address = number - 1
    if address > 65535:
        raise ValueError(f"reference {ref} is past address 65535")
    return _REF_TABLES[kind], address


def _reference_text(value: Any) -> Any:
    """The loader passes numbers written with leading zeros on as text.  `010001` is a 6-digit coil
    reference (coil 10000), but as a number it is 10001, a discrete input: refuse it."""
    digits = value.strip() if isinstance(value, str) else ""
    if digits.isdigit() and digits.startswith("0") and int(digits) > 9999:
        raise ValueError(
            f"reference {digits} is a 6-digit coil reference: write table: coil, address: {int(digits) - 1}"
        )
    return value


class Deadband(_Model):
    value: float = 0.0
    percent: bool = False


def _parse_deadband(value: Any) -> Any:
    if isinstance(value, Deadband | dict):
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        return {"value": float(value.strip()[:-1]), "percent": True}
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number (absolute) or a percentage such as '2%'")
    return {"value": float(value), "percent": False}


class PointConfig(_Model):
    name: Name
    table: Table | None = None
    address: Annotated[int, Field(ge=0, le=65535)] | None = None
    ref: Annotated[int, BeforeValidator(_reference_text)] | None = None
    """Alternative to table + address: a Modicon reference number such as 40001."""
    type: PointType | None = None
    """Default: bool for coils, discrete inputs and `bit` points; uint16 otherwise."""
    order: ByteOrder | None = None
    """Byte/word order; default: the device's."""
    count: Annotated[int, Field(ge=1, le=123)] | None = None
    """Registers of a string point (2 ASCII characters each)."""
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    """Bit N of a holding/input register (the point is a bool)."""
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    poll: PositiveDuration | None = None
    """Poll interval; default: the device's."""
    deadband: Annotated[Deadband, BeforeValidator(_parse_deadband)] = Deadband()
    max_silence: Duration | None = None
    """Re-publish an unchanged value after this long; default: the device's."""
    writable: bool = False
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> PointConfig:
        if self.ref is not None:
            if self.table is not None or self.address is not None:
                raise ValueError("give either ref or table + address, not both")
        elif self.table is None or self.address is None:
            raise ValueError("needs table and address (or ref, e.g. 40001)")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.writable and self.resolved_table() in (Table.DISCRETE_INPUT, Table.INPUT):
            raise ValueError(f"a {self.resolved_table().value} point cannot be writable")
        self.encoding(ByteOrder.ABCD)  # raises ValueError naming the problem
        return self

    def resolved_table(self) -> Table:
        if self.ref is not None:
            return reference_to_address(self.ref)[0]
        assert self.table is not None
        return self.table

    def resolved_address(self) -> int:
        if self.ref is not None:
            return reference_to_address(self.ref)[1]
        assert self.address is not None
        return self.address

    def encoding(self, device_order: ByteOrder) -> Encoding:
        table = self.resolved_table()
        ptype = self.type
        if ptype is None:
            ptype = PointType.BOOL if table.is_bit or self.bit is not None else PointType.UINT16
        return Encoding(
            table=table,
            address=self.resolved_address(),
            type=ptype,
            order=self.order or device_order,
            count=self.count or 0,
            bit=self.bit,
            scale=self.scale,
            offset=self.offset,
        )


# --------------------------------------------------------------------------- devices


class _DeviceBase(_Model):
    name: Name
    description: str = ""
    unit_id: UnitId = 1
    timeout: PositiveDuration = 1.0
    """Time allowed for one reply (on a serial line, counted from the end of the request on the
    wire, plus the reply's own time on the wire)."""
    late_reply: PositiveDuration | None = None
    """RTU framing (serial, or `framing: rtu`): after a timeout, how much longer the device's
    reply may still come.  Until then the unit is asked nothing else, so that its late reply is
    never taken for another request's (docs/modbus.md).  Default: 3 × `timeout`."""
    driver: Literal["builtin", "pymodbus"] = "builtin"
    """Who speaks Modbus on this device's connection: the agent's own frames, or pymodbus
    (docs/modbus.md); devices sharing a connection must use the same."""
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    """Further tries of a failed request, within one poll."""
    offline_after: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failed polls after which the device is offline (its points go bad)."""
    backoff_max: PositiveDuration = 30.0
    """Longest wait between polls of an offline device."""
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap: Annotated[int, Field(ge=0, le=124)] = 0
    """Unused registers a read may span to merge two requests."""
    no_merge: bool = False
    """One request per point, for devices that refuse multi-register reads."""
    fc22: bool = False
    """The device supports Mask Write Register (FC 22) for bit writes."""
    byte_order: ByteOrder = ByteOrder.ABCD
    poll: PositiveDuration = 1.0
    max_silence: Duration = 0.0
    """Re-publish unchanged values after this long (0: never; deadband 0 publishes every change)."""
    points: list[PointConfig] = Field(default_factory=list)

    @field_validator("points")
    @classmethod
    def _unique_points(cls, points: list[PointConfig]) -> list[PointConfig]:
        seen: set[str] = set()
        for i, p in enumerate(points):
            if p.name in seen:
                raise ValueError(f"points[{i}].name: {p.name!r} is used twice")
            seen.add(p.name)
        return points


class ModbusTcpDevice(_DeviceBase):
    type: Literal["modbus_tcp"]
    host: str
    port: Port = 502
    framing: Literal["socket", "rtu"] = "socket"
    """`rtu`: Modbus RTU framing on a TCP socket (serial-to-Ethernet converters)."""


class ModbusRtuDevice(_DeviceBase):
    type: Literal["modbus_rtu"]
    port: str
    """Serial device, e.g. /dev/ttyUSB0 or /dev/picogate-rs485."""
    baudrate: Annotated[int, Field(ge=300, le=4_000_000)] = 19200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: Annotated[int, Field(ge=1, le=247)] = 1


Device = Annotated[ModbusTcpDevice | ModbusRtuDevice, Field(discriminator="type")]


# --------------------------------------------------------------------------- the whole file

# Here, not at the top: the boards section reuses PointConfig (defined above).
from picogate.pico._config import BoardConfig  # noqa: E402


class GatewayConfig(_Model):
    gateway: GatewaySection = GatewaySection()
    mqtt: MqttSection = MqttSection()
    outbox: OutboxSection = OutboxSection()
    metrics: MetricsSection = MetricsSection()
    clock: ClockSection = ClockSection()
    devices: list[Device] = Field(default_factory=list)
    # The sections of the parts that plug into the core; each has its own module.
    boards: list[BoardConfig] = Field(default_factory=list)
    """Pico boards (pico/_config.py)."""
    coap: CoapSection | None = None
    """CoAP server and client (coap/_config.py)."""
    edgex: EdgexSection | None = None
    """EdgeX Foundry forwarding (edgex/_config.py)."""
    rules: RulesSection | None = None
    """Rule files (rules/_config.py)."""
    commands: CommandsSection = CommandsSection()
    """Deadlines, queues, sizes and rate limits of writes (config/_commands.py)."""

    @model_validator(mode="after")
    def _one_mqtt_deadline(self) -> GatewayConfig:
        if self.mqtt.command_ttl is not None and "mqtt" in self.commands.deadline.model_fields_set:
            raise ValueError(
                "mqtt.command_ttl is the old name of commands.deadline.mqtt: give only commands.deadline.mqtt"
            )
        return self

    @model_validator(mode="after")
    def _unique_device_names(self) -> GatewayConfig:
        # Board points and the Modbus devices behind boards share the device namespace.
        names = {d.name: f"devices[{i}]" for i, d in enumerate(self.devices)}
        for i, b in enumerate(self.boards):
            owned = [(f"boards[{i}].name", b.name)] + [
                (f"boards[{i}].modbus[{j}].devices[{k}].name", d.name)
                for j, bus in enumerate(b.modbus)
                for k, d in enumerate(bus.devices)
            ]
            for where, name in owned:
                other = names.setdefault(name, where)
                if other != where:
                    raise ValueError(f"{where}: device name {name!r} is also used by {other}")
        return self

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, devices: list[ModbusTcpDevice | ModbusRtuDevice]) -> list[Any]:
        seen: set[str] = set()
        lines: dict[str, ModbusRtuDevice] = {}
        units: dict[tuple[str, int], str] = {}  # (serial port, unit id) → device name
        drivers: dict[tuple[str, ...], ModbusTcpDevice | ModbusRtuDevice] = {}  # connection → first device
        for i, d in enumerate(devices):
            if d.name in seen:
                raise ValueError(f"devices[{i}].name: {d.name!r} is used twice")
            seen.add(d.name)
            if isinstance(d, ModbusTcpDevice) and d.framing == "rtu" and d.unit_id == 0:
                raise ValueError(
                    f"devices[{i}].unit_id: 0 is broadcast on an RTU line and gets no reply; "
                    "use the device's address, 1..247"
                )
            link = (
                ("rtu", d.port) if isinstance(d, ModbusRtuDevice) else ("tcp", d.host, str(d.port), d.framing)
            )
            first = drivers.setdefault(link, d)
            if first.driver != d.driver:
                raise ValueError(
                    f"devices[{i}].driver: {d.name} shares its connection with {first.name} "
                    f"but not its driver ({d.driver} vs {first.driver})"
                )
            if isinstance(d, ModbusRtuDevice):
                other = lines.setdefault(d.port, d)
                if (other.baudrate, other.parity, other.stopbits, other.bytesize) != (
                    d.baudrate,
                    d.parity,
                    d.stopbits,
                    d.bytesize,
                ):
                    raise ValueError(
                        f"devices[{i}].port: {d.name} shares serial port {d.port} with {other.name} "
                        "but not its baudrate/parity/stopbits/bytesize"
                    )
                # Every device on the line, not only the first one, must have its own unit id.
                user = units.setdefault((d.port, d.unit_id), d.name)
                if user != d.name:
                    raise ValueError(
                        f"devices[{i}].unit_id: {d.name} and {user} both use unit id {d.unit_id} on {d.port}"
                    )
        return devices

    def outbox_path(self) -> Path:
        return self.outbox.path or self.gateway.data_dir / "outbox.sqlite"

    def client_id(self) -> str:
        return self.mqtt.client_id or f"picogate-{self.gateway.id}"
