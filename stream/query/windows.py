"""Rolling windows as sums of event-time buckets, computed at read time.

A window ``W`` ending at time ``now`` is the bucket containing ``now`` plus the
``W / bucket - 1`` buckets before it. Example with 1-minute buckets: at
10:14:30 the ``15m`` window sums the buckets that start at 10:00 ... 10:14; an
event stamped 10:00:07 is in it until 10:15:00, when the window moves on.

Summing 1,440 one-minute buckets per scrape for a 24h window is too slow in
Python, so whole hours are summed once and cached until one of their buckets
changes (:attr:`PartitionState.hour_versions`), and so are whole quarter hours
(:data:`BLOCK`, :attr:`PartitionState.block_versions`) of the hours a window only
partly covers: live traffic changes the current minute, so a read re-sums only the
minutes of the current quarter hour, once for all windows, and caches the rest.
And one partition's window totals
are computed once per bucket of "now" and state version, whoever asks: /metrics,
the interval metrics, the partition views and the alert evaluator all read the same
cached totals instead of summing the buckets four times a tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, tzinfo

from stream.config.settings import Settings
from stream.config.timeutil import TODAY, local_midnight_s
from stream.domain.kpi import Counts, add_into, zero_counts
from stream.domain.state import PartitionState

HOUR = 3600
#: Quarter hours, the cache unit inside an hour: the settings make every bucket size divide it.
BLOCK = 900
WindowTotals = dict[str, dict[str, Counts]]  # window label -> dimension key -> counts


class WindowReader:
    """Computes per-window, per-dimension totals over the states this worker owns."""

    def __init__(self, windows: list[tuple[str, int]], bucket_seconds: int, zone: tzinfo = UTC) -> None:
        """``windows``: (label, seconds) as :attr:`Settings.window_list`; ``zone``: where the
        ``today`` window's midnight is (``CXSTREAM_TIMEZONE``)."""
        self.windows = windows
        self.bucket_s = bucket_seconds
        self.zone = zone
        self.longest_s = max(seconds for _, seconds in windows)
        self._hours: dict[tuple[int, int, int], tuple[int, dict[str, Counts]]] = {}
        self._blocks: dict[tuple[int, int, int], tuple[int, dict[str, Counts]]] = {}
        #: (generation, partition) -> ((state version, bucket of now), that partition's totals)
        self._partitions: dict[tuple[int, int], tuple[tuple[int, int], WindowTotals]] = {}

    def window_bounds(self, now_ms: int, seconds: int, label: str = "") -> tuple[int, int]:
        """First and last bucket start (epoch s, inclusive) of a window ending at ``now_ms``.

        ``today`` starts at the local midnight of ``now`` (a bucket edge: the settings
        require a bucket size dividing 15 minutes, and every zone's offset is a multiple
        of 15 minutes), whatever ``seconds`` says.
        """
        now_s = now_ms // 1000
        last = now_s - now_s % self.bucket_s
        if label == TODAY:
            return local_midnight_s(now_s, self.zone), last
        return last - seconds + self.bucket_s, last

    def read(self, states: Iterable[PartitionState], now_ms: int) -> WindowTotals:
        """Totals per window label and dimension key, summed over ``states`` (a new object)."""
        result: WindowTotals = {label: {} for label, _ in self.windows}
        for state in states:
            for label, per_dim in self.read_partition(state, now_ms).items():
                totals = result[label]
                for dim, counts in per_dim.items():
                    _accumulate(totals, dim, counts)
        self._forget_old_hours(now_ms)
        return result

    def read_partition(self, state: PartitionState, now_ms: int) -> WindowTotals:
        """One partition's totals per window; cached until its buckets or the bucket of now change.

        Shared by every reader: do not modify the result (:meth:`read` returns a copy).
        A state in the middle of a batch (dirty buckets) is never cached: the batch may
        still change a bucket without bumping a version.
        """
        now_s = now_ms // 1000
        key = (state.generation, state.partition)
        stamp = (state.buckets_version, now_s - now_s % self.bucket_s)
        cached = self._partitions.get(key)
        if cached is not None and cached[0] == stamp and not state.dirty_buckets:
            return cached[1]
        result: WindowTotals = {}
        partial: dict[tuple[int, int], dict[str, Counts]] = {}  # shared by the windows of this read
        for label, seconds in self.windows:
            first, last = self.window_bounds(now_ms, seconds, label)
            totals: dict[str, Counts] = {}
            self._add_range(state, first, last, totals, partial)
            result[label] = totals
        if not state.dirty_buckets:
            self._partitions[key] = (stamp, result)
        return result

    def dimensions(self, totals: WindowTotals) -> set[str]:
        """Dimension keys seen in any window: every window exports the same series."""
        keys: set[str] = set()
        for per_dim in totals.values():
            keys.update(per_dim)
        return keys

    # -- internals ----------------------------------------------------------------
    def _add_range(
        self,
        state: PartitionState,
        first: int,
        last: int,
        totals: dict[str, Counts],
        partial: dict[tuple[int, int], dict[str, Counts]],
    ) -> None:
        """Buckets ``first`` .. ``last``: cached whole hours, then cached whole quarter hours.

        The rest, minutes of a quarter hour, is summed once per read into ``partial``:
        every window ends at the same bucket, so they share the current quarter hour's.
        """
        if not state.buckets:
            return
        hour = first - first % HOUR
        while hour <= last:
            if hour >= first and hour + HOUR - 1 <= last:
                self._add_cached(state, hour, HOUR, state.hour_versions, self._hours, totals)
            else:
                end = min(hour + HOUR - 1, last)
                block = max(hour, first) - max(hour, first) % BLOCK
                while block <= end:
                    if block >= first and block + BLOCK - 1 <= end:
                        self._add_cached(state, block, BLOCK, state.block_versions, self._blocks, totals)
                    else:
                        span = (max(block, first), min(block + BLOCK - 1, end) + 1)
                        sums = partial.get(span)
                        if sums is None:
                            sums = partial[span] = self._sum_buckets(state, *span, {})
                        for dim, counts in sums.items():
                            _accumulate(totals, dim, counts)
                    block += BLOCK
            hour += HOUR

    def _add_cached(
        self,
        state: PartitionState,
        start: int,
        length: int,
        versions: dict[int, int],
        cache: dict[tuple[int, int, int], tuple[int, dict[str, Counts]]],
        totals: dict[str, Counts],
    ) -> None:
        """Add the sums of the buckets in [start, start + length), cached until their version moves."""
        version = versions.get(start, 0)
        cache_key = (state.generation, state.partition, start)
        cached = cache.get(cache_key)
        if cached is not None and cached[0] == version:
            sums = cached[1]
        else:
            sums = self._sum_buckets(state, start, start + length, {})
            # bucket_counts bumps the versions only when a bucket first turns dirty, so a
            # bucket still dirty (batch not yet committed) may change again without a
            # bump: never cache a range holding one.
            dirty = state.dirty_buckets
            if not dirty or not any(start <= b < start + length for b in dirty):
                cache[cache_key] = (version, sums)
        for dim, counts in sums.items():
            _accumulate(totals, dim, counts)

    def _sum_buckets(
        self, state: PartitionState, start: int, end: int, sums: dict[str, Counts]
    ) -> dict[str, Counts]:
        """Add the buckets starting in [start, end) into ``sums``."""
        buckets = state.buckets
        for bucket_start in range(start + (-start) % self.bucket_s, end, self.bucket_s):
            dims = buckets.get(bucket_start)
            if dims:
                for dim, counts in dims.items():
                    _accumulate(sums, dim, counts)
        return sums

    def _forget_old_hours(self, now_ms: int) -> None:
        oldest = now_ms // 1000 - self.longest_s - 2 * HOUR
        for cache in (self._hours, self._blocks):
            if len(cache) > 64:
                for key in [k for k in cache if k[2] < oldest]:
                    del cache[key]
        if len(self._partitions) > 4096:  # partitions that moved away, or old generations
            self._partitions.clear()


def reader_for(settings: Settings) -> WindowReader:
    """The window reader of a worker or replay with these settings (windows, buckets, zone)."""
    return WindowReader(settings.window_list, settings.bucket_seconds, settings.zone)


def _accumulate(totals: dict[str, Counts], dim: str, counts: Counts) -> None:
    total = totals.get(dim)
    if total is None:
        total = totals[dim] = zero_counts()
    add_into(total, counts)
