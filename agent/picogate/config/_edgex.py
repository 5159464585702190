"""`gateway.yaml`: EdgeX Foundry forwarding, registration and commands.

Owned by the EdgeX issue (6). Until that issue tightens it, the section accepts any keys.
"""

from __future__ import annotations

from pydantic import ConfigDict

from picogate.config._base import _Model


class EdgexSection(_Model):
    """EdgeX Foundry forwarding, registration and commands."""

    model_config = ConfigDict(extra="allow", frozen=True)
