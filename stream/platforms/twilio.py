"""Twilio TaskRouter: Workspace event callbacks (form-encoded) and Event Streams (CloudEvents).

Both are signed with the account's auth token (``X-Twilio-Signature``,
:func:`stream.platforms.signatures.twilio_valid`).
"""

from __future__ import annotations

from typing import Final, Literal

FORMATS: Final[dict[str, Literal["twilio"]]] = {"twilio-taskrouter": "twilio"}
