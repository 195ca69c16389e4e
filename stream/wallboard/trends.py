"""Sparkline history: a ring buffer of the last N values of every tile, in memory.

The partition views in Redis hold only the current window totals, so the wallboard keeps
its own short history: every ``interval`` seconds it appends each tile's value (per
window, queue and KPI) to a bounded deque. A tile that has no value in a sample gets
``None`` (a gap in the line); a series with nothing but gaps is dropped, so queues that
disappear do not accumulate memory. The history starts empty when the server starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

SeriesKey = tuple[str, str, str]  # (window, queue, kpi)


class TrendBuffer(Mapping[SeriesKey, list[float | None]]):
    """Last ``size`` samples per (window, queue, kpi); a read-only mapping to lists."""

    def __init__(self, size: int = 60, interval_s: float = 10.0) -> None:
        if size < 2:
            raise ValueError("a trend needs at least 2 samples")
        self.size = size
        self.interval_ms = int(interval_s * 1000)
        self._series: dict[SeriesKey, deque[float | None]] = {}
        self.last_sample_ms: int | None = None

    def due(self, now_ms: int) -> bool:
        """True when ``interval`` has passed since the last sample (or none was taken)."""
        return self.last_sample_ms is None or now_ms - self.last_sample_ms >= self.interval_ms

    def sample(self, values: Iterable[tuple[SeriesKey, float | None]], now_ms: int) -> None:
        """Append one value per series; known series missing from ``values`` get a gap."""
        self.last_sample_ms = now_ms
        seen: set[SeriesKey] = set()
        for key, value in values:
            seen.add(key)
            series = self._series.get(key)
            if series is None:
                if value is None:
                    continue
                series = self._series[key] = deque(maxlen=self.size)
            series.append(value)
        for key in [k for k in self._series if k not in seen]:
            series = self._series[key]
            series.append(None)
            if all(v is None for v in series):
                del self._series[key]

    def sample_state(self, data: Mapping[str, Any], now_ms: int) -> None:
        """Sample every tile value of a state document's ``data`` (window -> queues -> tiles)."""
        self.sample(
            (
                ((window, view["queue"], key), tile["value"])
                for window, body in data.items()
                for view in body["queues"]
                for key, tile in view["tiles"].items()
            ),
            now_ms,
        )

    def __getitem__(self, key: SeriesKey) -> list[float | None]:
        return list(self._series[key])

    def __iter__(self) -> Iterator[SeriesKey]:
        return iter(self._series)

    def __len__(self) -> int:
        return len(self._series)
