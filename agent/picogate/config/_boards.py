"""`gateway.yaml`: One Raspberry Pi Pico I/O board.

Owned by the Pico issue (4). Until that issue tightens it, the section accepts any keys.
"""

from __future__ import annotations

from pydantic import ConfigDict

from picogate.config._base import _Model


class BoardConfig(_Model):
    """One Raspberry Pi Pico I/O board."""

    model_config = ConfigDict(extra="allow", frozen=True)
