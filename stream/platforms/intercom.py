"""Intercom: webhook notifications for conversation topics.

Signed with the app's client secret (``X-Hub-Signature``,
:func:`stream.platforms.signatures.intercom_valid`).
"""

from __future__ import annotations

from typing import Final, Literal

FORMATS: Final[dict[str, Literal["intercom"]]] = {"intercom": "intercom"}
