"""Modbus TCP/RTU: value codec, request planner, wire codec and links (builtin, or pymodbus), pollers."""

from picogate.modbus._codec import ByteOrder, CodecError, Encoding, Table, decode, encode
from picogate.modbus._planner import Request, plan

__all__ = ["ByteOrder", "CodecError", "Encoding", "Request", "Table", "decode", "encode", "plan"]
