"""The calendar window ``today``: from local midnight in CXSTREAM_TIMEZONE until now, DST-safe.

The worked timeline of docs/architecture.md ("Windows") is tested here: Berlin's spring
day (23 h), its autumn day (25 h), a zone whose offset is not whole hours (Kathmandu,
+05:45) with 15-minute buckets, and a zone whose clocks jump over midnight (Santiago).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import generate_latest

from stream.alerting.rules import RuleError, parse_rules
from stream.config.settings import SettingsError, load_settings
from stream.config.timeutil import TODAY, local_midnight_s
from stream.domain import kpi
from stream.domain.processor import Processor
from stream.domain.state import PartitionState, dim_key
from stream.outputs.exporter import KpiCollector, build_registry
from stream.query.windows import WindowReader, reader_for
from tests.unit.test_processor import I_TOPIC, S_TOPIC, Feed

DIM = dim_key("billing", "voice")
BERLIN = ZoneInfo("Europe/Berlin")


def local_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def add(state: PartitionState, ts_ms: int, bucket: int = 60) -> None:
    start = ts_ms // 1000 // bucket * bucket
    state.bucket_counts(start, DIM)[kpi.CONTACTS] += 1
    state.dirty_buckets = set()


def today_contacts(reader: WindowReader, state: PartitionState, now_ms: int) -> float:
    return reader.read([state], now_ms)[TODAY].get(DIM, kpi.zero_counts())[kpi.CONTACTS]


@pytest.mark.parametrize(
    ("zone", "now", "midnight", "hours"),
    [
        # the spring day: 00:00 is +01:00, noon is +02:00, so 11 hours have passed
        ("Europe/Berlin", "2026-03-29T12:00:00+02:00", "2026-03-29T00:00:00+01:00", 11.0),
        # the autumn day: 23:30 local is 24.5 hours after midnight
        ("Europe/Berlin", "2026-10-25T23:30:00+01:00", "2026-10-25T00:00:00+02:00", 24.5),
        ("Asia/Kathmandu", "2026-06-01T00:10:00+05:45", "2026-06-01T00:00:00+05:45", 1 / 6),
        # the clocks go from 00:00 to 01:00: the local date begins at the jump
        ("America/Santiago", "2026-09-06T12:00:00-03:00", "2026-09-06T01:00:00-03:00", 11.0),
        ("UTC", "2026-12-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00", 0.0),
    ],
)
def test_local_midnight(zone: str, now: str, midnight: str, hours: float) -> None:
    now_s = local_ms(now) // 1000
    start = local_midnight_s(now_s, ZoneInfo(zone))
    assert start == local_ms(midnight) // 1000
    assert (now_s - start) / 3600 == pytest.approx(hours)


def test_today_counts_from_local_midnight_on_a_25_hour_day() -> None:
    reader = WindowReader([("15m", 900), ("24h", 86_400), (TODAY, 90_000)], 60, BERLIN)
    state = PartitionState(0)
    add(state, local_ms("2026-10-24T23:59:30+02:00"))  # yesterday, local time
    add(state, local_ms("2026-10-25T00:00:00+02:00"))  # the first second of today
    add(state, local_ms("2026-10-25T02:30:00+02:00"))  # the first 02:30 ...
    add(state, local_ms("2026-10-25T02:30:00+01:00"))  # ... and the second, an hour later
    now = local_ms("2026-10-25T23:30:00+01:00")
    add(state, now)
    totals = reader.read([state], now)
    assert totals[TODAY][DIM][kpi.CONTACTS] == 4
    # the rolling 24h window has already lost the day's first half hour
    assert totals["24h"][DIM][kpi.CONTACTS] == 3
    # and at local midnight today starts again, empty but for the new day's events
    assert today_contacts(reader, state, local_ms("2026-10-26T00:00:00+01:00")) == 0


def test_today_on_the_23_hour_day_and_at_a_quarter_hour_offset() -> None:
    reader = WindowReader([(TODAY, 90_000)], 60, BERLIN)
    state = PartitionState(0)
    add(state, local_ms("2026-03-28T23:59:00+01:00"))
    add(state, local_ms("2026-03-29T03:00:00+02:00"))  # just after the jump from 02:00
    assert today_contacts(reader, state, local_ms("2026-03-29T03:00:30+02:00")) == 1

    kathmandu = WindowReader([(TODAY, 90_000)], 900, ZoneInfo("Asia/Kathmandu"))
    state = PartitionState(0)
    add(state, local_ms("2026-05-31T23:59:59+05:45"), bucket=900)
    add(state, local_ms("2026-06-01T00:00:00+05:45"), bucket=900)
    # local midnight is 18:15 UTC: a 15-minute bucket edge, so nothing of yesterday leaks in
    assert today_contacts(kathmandu, state, local_ms("2026-06-01T00:10:00+05:45")) == 1


def test_settings_accept_today_with_a_zone_and_check_the_bucket_size() -> None:
    settings = load_settings(windows="today,15m,1h", timezone="Asia/Kathmandu")
    assert settings.window_list == [("15m", 900), ("1h", 3600), (TODAY, 90_000)]
    assert reader_for(settings).zone == ZoneInfo("Asia/Kathmandu")
    with pytest.raises(SettingsError, match="today needs a CXSTREAM_BUCKET_SIZE that divides 15m"):
        load_settings(windows="today", bucket_size="7m")
    assert load_settings(windows="today", bucket_size="5m").bucket_seconds == 300
    with pytest.raises(SettingsError, match="CXSTREAM_TIMEZONE: not an IANA time zone"):
        load_settings(timezone="Mars/Olympus")


def test_state_is_kept_for_the_longest_local_day() -> None:
    processor = Processor(load_settings(windows="15m,today"))
    assert processor.retention_ms >= 25 * 3600 * 1000


def test_today_is_exported_and_evaluated_like_any_window() -> None:
    settings = load_settings(windows="15m,today", timezone="Europe/Berlin", clock="event")
    processor = Processor(settings)
    state = PartitionState(0)
    feed = Feed()
    now = local_ms("2026-10-25T09:00:00+01:00")
    processor.process_batch(
        state,
        [
            feed.start("c-yesterday", local_ms("2026-10-24T23:50:00+02:00")),
            feed.start("c-1", local_ms("2026-10-25T00:10:00+02:00")),
            feed.start("c-2", now),
        ],
        now,
    )
    collector = KpiCollector(
        lambda: [state], processor, reader_for(settings), topics=[I_TOPIC, S_TOPIC], clock=lambda: now
    )
    text = generate_latest(build_registry(collector)).decode()
    assert 'cx_contacts{channel="voice",queue="billing",window="today"} 2.0' in text
    assert 'cx_contacts{channel="voice",queue="billing",window="15m"} 1.0' in text

    (rule,) = parse_rules(
        "rules:\n  - {name: busy_day, metric: cx_transfer_ratio, window: today, op: '>', threshold: 0.5}\n",
        settings.window_list,
    )
    assert (rule.window, rule.window_seconds) == (TODAY, 90_000)


def test_rules_on_today_need_it_configured_and_never_use_it_as_baseline() -> None:
    with pytest.raises(RuleError, match="'today' is not one of CXSTREAM_WINDOWS"):
        parse_rules(
            "rules:\n  - {name: r, metric: cx_csat_ratio, window: today, op: '<', threshold: 0.5}\n",
            [("15m", 900)],
        )
    with pytest.raises(RuleError, match="today cannot be a baseline"):
        parse_rules(
            "rules:\n  - {name: r, metric: cx_csat_ratio, window: 15m, op: '<', threshold: 0.5,"
            " spike: {baseline: today, delta: -0.1}}\n",
            [("15m", 900), (TODAY, 90_000)],
        )
