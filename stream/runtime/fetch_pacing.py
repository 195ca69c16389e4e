"""The consumer's fetch long-poll, chosen by the recent input rate.

Why: a fetch round costs the worker about as much CPU whether it brings one record
or a thousand (a fetch request over every assigned partition, its response, a batch,
a state commit). A short long-poll keeps latency low when traffic is heavy, where
the cost is shared by many events, but at a quiet contact centre's 100 events/s ten
rounds a second were most of the worker's CPU. A broker answers a fetch when the
wait is over or when ``fetch.min.bytes`` of data are there (one byte by default: the
first record), so with the idle wait the consumer also asks for 256 KiB
(``IDLE_FETCH_MIN_BYTES`` in stream/runtime/transport.py), and the wait bounds how often
a quiet consumer asks, on Kafka and on tansu alike.

:class:`FetchPacer` keeps the busy wait (``CXSTREAM_FETCH_MAX_WAIT``) while the input
rate is at or above ``CXSTREAM_FETCH_IDLE_RATE`` events/s and the idle wait
(``CXSTREAM_FETCH_MAX_WAIT_IDLE``) below it. The rate is the records of the rounds in
the last :data:`RATE_SPAN_S` seconds over that time, so one burst switches to the busy
wait within a round and a lull returns to the idle wait after a second or so.
Pure logic: the consumer calls :meth:`FetchPacer.observe` once per fetch round and
applies the wait it returns.
"""

from __future__ import annotations

from collections import deque

#: Seconds of fetch rounds the input rate is measured over.
RATE_SPAN_S = 1.0


class FetchPacer:
    """The long-poll (ms) for the next fetch, from the records the last rounds brought."""

    def __init__(self, busy_wait_ms: int, idle_wait_ms: int, idle_rate: float) -> None:
        self.busy_wait_ms = busy_wait_ms
        self.idle_wait_ms = max(idle_wait_ms, busy_wait_ms)
        self.idle_rate = idle_rate
        self.wait_ms = self.idle_wait_ms if idle_rate > 0 else busy_wait_ms
        self._rounds: deque[tuple[float, int]] = deque()
        self._records = 0

    def observe(self, now_s: float, records: int) -> int:
        """Note a fetch round of ``records`` records ending at ``now_s``; return the next wait."""
        if self.idle_rate <= 0 or self.idle_wait_ms == self.busy_wait_ms:
            return self.busy_wait_ms
        rounds = self._rounds
        rounds.append((now_s, records))
        self._records += records
        while len(rounds) > 1 and now_s - rounds[0][0] > RATE_SPAN_S:
            self._records -= rounds.popleft()[1]
        # The span covers the rounds still held plus the wait that preceded the oldest.
        span = max(now_s - rounds[0][0] + self.wait_ms / 1000.0, 1e-3)
        rate = self._records / span
        self.wait_ms = self.busy_wait_ms if rate >= self.idle_rate else self.idle_wait_ms
        return self.wait_ms
