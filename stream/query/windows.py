"""Rolling windows as sums of event-time buckets, computed at read time.

A window ``W`` ending at time ``now`` is the bucket containing ``now`` plus the
``W / bucket - 1`` buckets before it. Example with 1-minute buckets: at
10:14:30 the ``15m`` window sums the buckets that start at 10:00 ... 10:14; an
event stamped 10:00:07 is in it until 10:15:00, when the window moves on.

Summing 1,440 one-minute buckets per scrape for a 24h window is too slow in
Python, so whole hours are summed once and cached until one of their buckets
changes (:attr:`PartitionState.hour_versions`). And one partition's window totals
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
        for label, seconds in self.windows:
            first, last = self.window_bounds(now_ms, seconds, label)
            totals: dict[str, Counts] = {}
            self._add_range(state, first, last, totals)
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
    def _add_range(self, state: PartitionState, first: int, last: int, totals: dict[str, Counts]) -> None:
        buckets = state.buckets
        if not buckets:
            return
        hour = first - first % HOUR
        while hour <= last:
            if hour >= first and hour + HOUR - 1 <= last:
                for dim, counts in self._hour_sum(state, hour).items():
                    _accumulate(totals, dim, counts)
            else:
                start = max(hour, first)
                start += (-start) % self.bucket_s
                for bucket_start in range(start, min(hour + HOUR - 1, last) + 1, self.bucket_s):
                    dims = buckets.get(bucket_start)
                    if dims:
                        for dim, counts in dims.items():
                            _accumulate(totals, dim, counts)
            hour += HOUR

    def _hour_sum(self, state: PartitionState, hour: int) -> dict[str, Counts]:
        version = state.hour_versions.get(hour, 0)
        cache_key = (state.generation, state.partition, hour)
        cached = self._hours.get(cache_key)
        if cached is not None and cached[0] == version:
            return cached[1]
        sums: dict[str, Counts] = {}
        buckets = state.buckets
        for bucket_start in range(hour + (-hour) % self.bucket_s, hour + HOUR, self.bucket_s):
            dims = buckets.get(bucket_start)
            if dims:
                for dim, counts in dims.items():
                    _accumulate(sums, dim, counts)
        # bucket_counts bumps the hour's version only when a bucket first turns dirty, so a
        # bucket still dirty (batch not yet committed) may change again without a bump:
        # never cache an hour holding one.
        dirty = state.dirty_buckets
        if not dirty or not any(hour <= b < hour + HOUR for b in dirty):
            self._hours[cache_key] = (version, sums)
        return sums

    def _forget_old_hours(self, now_ms: int) -> None:
        oldest = now_ms // 1000 - self.longest_s - 2 * HOUR
        if len(self._hours) > 64:
            for key in [k for k in self._hours if k[2] < oldest]:
                del self._hours[key]
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
