"""`gateway.yaml`: The CoAP server and client.

Owned by the CoAP issue (7). Until that issue tightens it, the section accepts any keys.
"""

from __future__ import annotations

from pydantic import ConfigDict

from picogate.config._base import _Model


class CoapSection(_Model):
    """The CoAP server and client."""

    model_config = ConfigDict(extra="allow", frozen=True)
