"""Retry timing, in one place: exponential backoff with jitter.

Every loop that retries something external (Redis writes and reads, the wallboard's
reconnects, the traffic generator's producer) asks a :class:`Backoff` for its next
delay, so the policies are declared once and read the same everywhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base_s`` doubling up to ``cap_s`` per consecutive failure, times 1 ± ``jitter``.

    Jitter keeps many clients that lost the same server from retrying in lockstep.
    """

    base_s: float
    cap_s: float
    jitter: float = 0.2

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1 = the first)."""
        delay = min(self.cap_s, self.base_s * 2 ** min(max(failures, 1) - 1, 16))
        if self.jitter:
            delay *= random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return delay


#: Redis, from the worker and the wallboard: 0.5 s doubling to 10 s, ±20 %.
REDIS_BACKOFF = Backoff(0.5, 10.0)
