"""Genesys Cloud: conversation detail events, through its Amazon EventBridge integration.

EventBridge forwards them with an API destination, which adds the bearer token.
"""

from __future__ import annotations

from typing import Final, Literal

FORMATS: Final[dict[str, Literal["bearer"]]] = {"genesys-cloud": "bearer"}
