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
    reference_to_address,
)
from picogate.modbus._once import DeviceReading, PointReading, poll_once
from picogate.modbus._planner import Request, plan
from picogate.modbus._points import engineering_type, point_info

__all__ = [
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
    "Table",
    "decode",
    "encode",
    "engineering_type",
    "plan",
    "point_info",
    "poll_once",
    "reference_to_address",
]
