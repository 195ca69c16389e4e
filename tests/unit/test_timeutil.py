"""Durations and contract timestamps (stream.config.timeutil)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.config.timeutil import format_duration, now_ms, parse_duration, parse_event_time_ms

# 2026-11-22T10:00:00Z, computed independently of the module under test.
T0_MS = 1_795_341_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- durations ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900),
        ("1h", 3600),
        ("24h", 86_400),
        ("7d", 604_800),
        ("1w", 604_800),
        ("30s", 30),
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("0s", 0),
        (" 15m ", 900),
        ("15 m", 900),
        ("90", 90),
        ("2.5", 2.5),
        (0, 0),
        (60, 60),
        (1.5, 1.5),
    ],
)
def test_parse_duration_accepts(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_ms_is_not_read_as_minutes() -> None:
    assert parse_duration("500ms") == pytest.approx(0.5)
    assert parse_duration("5m") == 300


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "m",
        "15x",
        "15 minutes",
        "1h30m",
        "-5m",
        "-1",
        "1.5m",
        "15M",
        "abc",
        "nan",
        "inf",
        "-inf",
        "1e400",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, False, -1, -0.5, float("nan"), float("inf")])
def test_parse_duration_rejects_bad_numbers(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)  # type: ignore[arg-type]


def test_bad_duration_message_shows_accepted_forms() -> None:
    with pytest.raises(ValueError, match="15m"):
        parse_duration("fifteen minutes")


@pytest.mark.parametrize(
    ("seconds", "label"),
    [
        (900, "15m"),
        (3600, "1h"),
        (86_400, "1d"),
        (604_800, "1w"),
        (90, "90s"),
        (5400, "90m"),
        (0.5, "500ms"),
        (0.1, "100ms"),
        (1.5, "1.5s"),
    ],
)
def test_format_duration(seconds: float, label: str) -> None:
    assert format_duration(seconds) == label


@given(st.integers(min_value=1, max_value=10**7))
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# -- event timestamps -----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-22T10:00:00Z", T0_MS),
        ("2026-11-22T10:00:00+00:00", T0_MS),
        ("2026-11-22T10:00:00+01:00", T0_MS - 3_600_000),
        ("2026-11-22T10:00:00-05:30", T0_MS + 5 * 3_600_000 + 30 * 60_000),
        ("2026-11-22T10:00:00", T0_MS),  # no offset: UTC
        ("2026-11-22T10:00:00.250Z", T0_MS + 250),
        ("2026-11-22T10:00:00.001Z", T0_MS + 1),
        ("2026-11-22T10:00:00.999999Z", T0_MS + 999),
        (T0_MS, T0_MS),
        (0, 0),
    ],
)
def test_parse_event_time(value: object, expected: int) -> None:
    assert parse_event_time_ms(value) == expected


def test_no_offset_is_utc_not_local() -> None:
    import os
    import time

    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    original = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        assert parse_event_time_ms("2026-11-22T10:00:00") == T0_MS
    finally:
        if original is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = original
        time.tzset()


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**6))
def test_iso_milliseconds_are_exact(micros: int) -> None:
    """No float rounding: an ISO string maps to exactly floor(micros / 1000)."""
    moment = EPOCH + timedelta(microseconds=micros)
    assert parse_event_time_ms(moment.isoformat()) == micros // 1000
    assert parse_event_time_ms(moment.isoformat().replace("+00:00", "Z")) == micros // 1000


@pytest.mark.parametrize(
    "value",
    [
        float(T0_MS),
        1.5,
        True,
        False,
        None,
        [T0_MS],
        {"ms": T0_MS},
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-11-22T25:00:00Z",
        "1795341600000",  # epoch ms must be an integer, not text
        "2026-11-22T10:00:00Z" + " " * 60,  # over the length limit
        b"2026-11-22T10:00:00Z",
    ],
)
def test_parse_event_time_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_event_time_ms(value)


def test_now_ms_is_wall_clock_ms() -> None:
    import time

    before = int(time.time() * 1000)
    value = now_ms()
    after = int(time.time() * 1000)
    assert type(value) is int
    assert before <= value <= after


def test_backoff_doubles_to_its_cap_with_bounded_jitter() -> None:
    from stream.config.retry import REDIS_BACKOFF, Backoff

    plain = Backoff(0.5, 10.0, jitter=0)
    assert [plain.delay(n) for n in (1, 2, 3, 5, 6, 100)] == [0.5, 1.0, 2.0, 8.0, 10.0, 10.0]
    assert plain.delay(0) == 0.5  # "no failure yet" is treated as the first
    for failures in range(1, 12):
        want = plain.delay(failures)
        assert 0.8 * want <= REDIS_BACKOFF.delay(failures) <= 1.2 * want
