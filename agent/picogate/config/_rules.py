"""`gateway.yaml`: Rule files and how they are reloaded.

Owned by the rule language issue (3). Until that issue tightens it, the section accepts any keys.
"""

from __future__ import annotations

from pydantic import ConfigDict

from picogate.config._base import _Model


class RulesSection(_Model):
    """Rule files and how they are reloaded."""

    model_config = ConfigDict(extra="allow", frozen=True)
