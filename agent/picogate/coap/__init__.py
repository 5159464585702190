"""CoAP: the server nodes report to, and the client that reads devices serving CoAP."""

from picogate.coap._client import CoapClientSource
from picogate.coap._server import CoapServer

__all__ = ["CoapClientSource", "CoapServer"]
