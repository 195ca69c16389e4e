"""Contact-center platforms in: vendor payloads translated to contract events (edges).

One module per vendor (:mod:`~stream.platforms.amazon_connect`, ``twilio``, ``genesys``,
``zendesk``, ``intercom``) pairs its declarative mappings (``mappings/<format>.yml``, see
:mod:`stream.platforms.mapping`) with how that vendor authenticates a webhook
(:mod:`stream.platforms.signatures`). Pure: no I/O beyond reading the shipped mapping
files, so ``cxstream translate``, the ingest server and the Kafka bridge share it.
"""

from __future__ import annotations

from stream.platforms.registry import FORMATS, Platform, load_format, load_platforms

__all__ = ["FORMATS", "Platform", "load_format", "load_platforms"]
