"""CoAP: the server nodes report to, and the client that reads devices serving CoAP (docs/coap.md)."""

from picogate.coap._attach import PLUGIN
from picogate.coap._client import CoapClientSource
from picogate.coap._config import CoapSection
from picogate.coap._server import CoapServer

__all__ = ["PLUGIN", "CoapClientSource", "CoapSection", "CoapServer"]
