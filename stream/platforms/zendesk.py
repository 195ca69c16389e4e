"""Zendesk: ticket event webhooks and satisfaction ratings posted by a trigger.

Signed with the webhook's signing secret (``X-Zendesk-Webhook-Signature``,
:func:`stream.platforms.signatures.zendesk_valid`); a webhook set to bearer-token
authentication instead uses the shared token.
"""

from __future__ import annotations

from typing import Final, Literal

FORMATS: Final[dict[str, Literal["zendesk"]]] = {"zendesk": "zendesk"}
