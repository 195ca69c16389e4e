"""Durations and event timestamps, parsed the one way the contract allows.

Kept apart from validation so settings and events share a single parser for
"15m"-style durations and for the two timestamp forms (ISO-8601 or epoch ms).
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, tzinfo
from typing import Final

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """Parse ``"15m"``, ``"24h"``, ``"7d"``, ``"500ms"`` or a number of seconds.

    Raises ValueError with the accepted forms, so a bad setting names its fix.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ValueError(f"duration must be finite: {text!r}")
        if text < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return float(text)
    match = _DURATION.match(text)
    if not match:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h, 24h, 7d)") from None
        if not math.isfinite(value):  # float() also accepts "nan" and "inf"
            raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h, 24h, 7d)")
        if value < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return value
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Render seconds as the shortest exact label, e.g. 900 -> ``"15m"``."""
    whole = int(seconds)
    if whole != seconds or whole == 0:
        millis = round(seconds * 1000, 6)
        if 0 < millis < 1000 and millis == int(millis):
            return f"{int(millis)}ms"
        return f"{seconds:g}s"
    for unit in ("w", "d", "h", "m"):
        size = int(_UNIT_SECONDS[unit])
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def parse_event_time_ms(value: object) -> int:
    """Return epoch milliseconds for a contract timestamp.

    Accepts an integer epoch-milliseconds value or an ISO-8601 string; a string
    without an offset is taken as UTC. Raises ValueError otherwise.
    """
    if type(value) is int:
        return value
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("timestamp string too long")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    raise ValueError(f"timestamp must be ISO-8601 text or integer epoch ms, got {type(value).__name__}")


#: The calendar window: from local midnight (``CXSTREAM_TIMEZONE``) until now.
TODAY: Final = "today"
#: The longest a local day lasts (a day the clocks go back): how far ``today`` may reach back.
LONGEST_DAY_S: Final = 25 * 3600


def local_midnight_s(now_s: int, zone: tzinfo) -> int:
    """Epoch seconds of the start of the local day containing ``now_s`` in ``zone``.

    DST-safe: the day's start is computed from the local date, so a day lasts 23, 24 or 25
    hours. Where the clocks jump over midnight itself (e.g. America/Santiago in spring),
    the day starts at the jump, which is the first instant of that local date.
    """
    local = datetime.fromtimestamp(now_s, zone)
    start = int(datetime(local.year, local.month, local.day, tzinfo=zone).timestamp())
    if start > now_s:  # pragma: no cover - only if a zone's day began after "now" (impossible)
        start -= 86_400
    return start


class WindowClock:
    """Where windows end: the wall clock (live), or the newest event time seen (``event``,
    for replaying a recording as of its own time). One per worker, advanced by the
    pipeline, read by everything that sums windows (exporter, alerts, views, replay)."""

    __slots__ = ("event_time", "watermark_ms")

    def __init__(self, *, event_time: bool = False) -> None:
        self.event_time = event_time
        #: Newest event time applied by this worker (ms).
        self.watermark_ms = 0

    def observe(self, event_ms: int) -> None:
        """An event at ``event_ms`` was applied."""
        if event_ms > self.watermark_ms:
            self.watermark_ms = event_ms

    def now_ms(self, wall_ms: int) -> int:
        """The 'now' windows end at, given the wall clock."""
        return self.watermark_ms if self.event_time else wall_ms


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)
