"""Modbus TCP/RTU: the value codec and the request planner (a protocol library: Pico boards use it
too), the wire codec and the links (builtin, or pymodbus), and the Modbus plug-in: the
`devices:` section, the pollers, their metrics (docs/modbus.md)."""

from picogate.modbus._attach import PLUGIN
from picogate.modbus._codec import ByteOrder, CodecError, Encoding, Table, decode, encode
from picogate.modbus._config import (
    Device,
    ModbusRtuDevice,
    ModbusTcpDevice,
    PointConfig,
    point_warnings,
    reference_to_address,
)
from picogate.modbus._once import DeviceReading, PointReading, poll_once
from picogate.modbus._planner import Request, plan
from picogate.modbus._points import engineering_type, point_info
from picogate.modbus._scan import (
    BAUD_RATES,
    PARITIES,
    ScanError,
    ScanLine,
    Setting,
    UnitAnswer,
    parse_units,
    scan_serial,
    scan_tcp,
    search,
    serial_settings,
)

__all__ = [
    "BAUD_RATES",
    "PARITIES",
    "PLUGIN",
    "ByteOrder",
    "CodecError",
    "Device",
    "DeviceReading",
    "Encoding",
    "ModbusRtuDevice",
    "ModbusTcpDevice",
    "PointConfig",
    "PointReading",
    "Request",
    "ScanError",
    "ScanLine",
    "Setting",
    "Table",
    "UnitAnswer",
    "decode",
    "encode",
    "engineering_type",
    "parse_units",
    "plan",
    "point_info",
    "point_warnings",
    "poll_once",
    "reference_to_address",
    "scan_serial",
    "scan_tcp",
    "search",
    "serial_settings",
]
