"""Every Redis key cxstream reads or writes, in one place (the layout of docs/redis.md).

The worker (alert sink), the wallboard and ``cxstream alerts`` all name keys through
:class:`RedisKeys`, so the layout cannot drift between a writer and its readers.
"""

from __future__ import annotations

import re

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class RedisKeys:
    """Key names under a prefix (``CXSTREAM_REDIS_PREFIX``, default ``cx``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # -- the public contract -------------------------------------------------------
        #: hash: alert id -> JSON of the firing alert
        self.active = f"{prefix}:alerts:active"
        #: stream: every fire and resolve transition
        self.log = f"{prefix}:alerts:log"
        #: pub/sub channel: the same transitions, live
        self.channel = f"{prefix}:alerts"
        # -- operator controls (``cxstream alerts``) -----------------------------------
        self.acks = f"{prefix}:alerts:acks"
        self.snoozes = f"{prefix}:alerts:snoozes"
        # -- the one alert evaluator (stream.alerting.lease) ---------------------------
        #: string with a TTL: the holder of the evaluator lease
        self.lease = f"{prefix}:alerts:lease"
        #: integer: the fencing token, incremented whenever a new holder takes the lease
        self.epoch = f"{prefix}:alerts:epoch"
        #: string: the evaluator's pending alerts, `for` and cooldown timers, for a successor
        self.evaluator = f"{prefix}:alerts:evaluator"
        # -- KPI views (stream.query.partition_views) -----------------------------------------
        #: hash: partition number -> JSON view of that partition's window totals
        self.views = f"{prefix}:kpi:partitions"
        #: hash: partition number -> "<position>:<written at ms>" of the stored view
        self.view_positions = f"{prefix}:kpi:positions"

    def glob(self, suffix: str) -> str:
        """A SCAN pattern for keys under the prefix (glob characters in the prefix escaped)."""
        return _GLOB_SPECIAL.sub(r"\\\1", f"{self.prefix}:") + suffix
