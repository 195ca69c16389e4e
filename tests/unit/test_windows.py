"""Rolling windows as bucket sums (stream.query.windows), including the hour-rollup cache."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.domain import kpi
from stream.domain.state import PartitionState, dim_key
from stream.query.windows import WindowReader

DIM = dim_key("billing", "voice")
OTHER = dim_key("sales", "chat")
DEFAULT_WINDOWS = [("15m", 900), ("1h", 3600), ("24h", 86_400)]


def at(hh: int, mm: int, ss: int = 0, ms: int = 0) -> int:
    """Epoch ms of 2026-11-22 hh:mm:ss.ms UTC."""
    return int(datetime(2026, 11, 22, hh, mm, ss, tzinfo=UTC).timestamp()) * 1000 + ms


def add(
    state: PartitionState, ts_ms: int, dim: str = DIM, index: int = kpi.CONTACTS, n: int = 1, bucket: int = 60
):
    start = ts_ms // 1000 // bucket * bucket
    state.bucket_counts(start, dim)[index] += n


def settle(state: PartitionState) -> None:
    """What a committed batch leaves behind: nothing dirty."""
    state.dirty_buckets = set()


def contacts(totals: dict[str, dict[str, list[float]]], window: str, dim: str = DIM) -> float:
    return totals[window].get(dim, kpi.zero_counts())[kpi.CONTACTS]


# -- bounds -------------------------------------------------------------------------------
def test_window_bounds_docstring_example() -> None:
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    first, last = reader.window_bounds(at(10, 14, 30), 900)
    assert first * 1000 == at(10, 0)
    assert last * 1000 == at(10, 14)
    assert (last - first) // 60 + 1 == 15  # exactly 15 one-minute buckets


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (at(10, 0, 7), True),
        (at(10, 5), True),
        (at(10, 14, 59, 999), True),
        (at(10, 15), False),
        (at(10, 15, 0, 1), False),
        (at(9, 59, 59, 999), False),  # before the event's bucket exists... and before the event
    ],
)
def test_event_in_15m_window_until_window_moves_on(now: int, inside: bool) -> None:
    state = PartitionState(0)
    add(state, at(10, 0, 7))
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    totals = reader.read([state], now)
    assert contacts(totals, "15m") == (1 if inside else 0)


def test_event_leaves_each_window_at_its_length() -> None:
    state = PartitionState(0)
    add(state, at(10, 0, 7))
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    assert contacts(reader.read([state], at(10, 59, 59)), "1h") == 1
    assert contacts(reader.read([state], at(11, 0)), "1h") == 0
    late = at(10, 0) + 86_400_000
    assert contacts(reader.read([state], late - 1), "24h") == 1
    assert contacts(reader.read([state], late), "24h") == 0


def test_five_minute_buckets() -> None:
    reader = WindowReader([("15m", 900)], 300)
    assert reader.window_bounds(at(10, 14, 59), 900) == (at(10, 0) // 1000, at(10, 10) // 1000)
    state = PartitionState(0)
    add(state, at(10, 4, 59), bucket=300)
    settle(state)
    assert contacts(reader.read([state], at(10, 14, 59)), "15m") == 1
    assert contacts(reader.read([state], at(10, 15)), "15m") == 0


def test_sums_over_states_and_dimensions() -> None:
    a, b = PartitionState(0), PartitionState(1)
    add(a, at(10, 1), n=2)
    add(b, at(10, 2), n=3)
    add(b, at(10, 2), dim=OTHER, index=kpi.CSAT_RESPONSES, n=5)
    add(b, at(9, 30))  # outside 15m, inside 1h
    settle(a)
    settle(b)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    totals = reader.read([a, b], at(10, 10))
    assert contacts(totals, "15m") == 5
    assert contacts(totals, "1h") == 6
    assert totals["15m"][OTHER][kpi.CSAT_RESPONSES] == 5
    assert reader.dimensions(totals) == {DIM, OTHER}
    assert set(totals) == {"15m", "1h", "24h"}


def test_empty_states_give_empty_windows() -> None:
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    totals = reader.read([PartitionState(0)], at(10, 0))
    assert totals == {"15m": {}, "1h": {}, "24h": {}}
    assert reader.dimensions(totals) == set()
    assert reader.read([], at(10, 0)) == {"15m": {}, "1h": {}, "24h": {}}


def test_read_does_not_mutate_state_vectors() -> None:
    state = PartitionState(0)
    add(state, at(10, 1), n=2)
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    totals = reader.read([state, state], at(10, 10))
    assert contacts(totals, "15m") == 4
    assert state.buckets[at(10, 1) // 1000][DIM][kpi.CONTACTS] == 2
    totals["24h"][DIM][kpi.CONTACTS] = 999  # a caller mutating a result must not poison the cache
    assert contacts(reader.read([state], at(10, 10)), "24h") == 2


# -- cache vs brute force ----------------------------------------------------------------------
def brute_force(states: list[PartitionState], first: int, last: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for state in states:
        for start, dims in state.buckets.items():
            if first <= start <= last:
                for dim, counts in dims.items():
                    kpi.add_into(out.setdefault(dim, kpi.zero_counts()), counts)
    return out


def random_states(rng: random.Random, bucket: int, now_s: int, n_states: int = 2) -> list[PartitionState]:
    states = []
    for p in range(n_states):
        state = PartitionState(p)
        for _ in range(rng.randint(0, 150)):
            start = (now_s - rng.randint(0, 26 * 3600)) // bucket * bucket
            dim = rng.choice([DIM, OTHER, dim_key("q3", "sms")])
            state.bucket_counts(start, dim)[rng.randrange(kpi.N_COUNTERS)] += rng.randint(1, 5)
        settle(state)
        states.append(state)
    return states


@pytest.mark.parametrize("bucket", [60, 300, 420, 900, 3600])
@pytest.mark.parametrize("seed", range(6))
def test_cached_totals_equal_brute_force(bucket: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + bucket)
    windows = [
        (f"{m}s", m)
        for m in sorted({bucket, bucket * 3, (3600 // bucket or 1) * bucket, 86_400 // bucket * bucket})
    ]
    reader = WindowReader(windows, bucket)
    now_ms = at(12, 0) + rng.randint(0, 3 * 3600 * 1000)
    states = random_states(rng, bucket, now_ms // 1000)
    for step in range(4):  # repeated reads, moving clock, changing buckets: cache must stay right
        totals = reader.read(states, now_ms)
        for label, seconds in windows:
            first, last = reader.window_bounds(now_ms, seconds)
            expected = brute_force(states, first, last)
            got = {dim: counts for dim, counts in totals[label].items()}
            assert got == expected, (label, step)
        now_ms += rng.randint(0, 2 * 3600 * 1000)
        for state in states:
            for _ in range(rng.randint(0, 10)):
                start = (now_ms // 1000 - rng.randint(0, 25 * 3600)) // bucket * bucket
                state.bucket_counts(start, DIM)[kpi.CONTACTS] += 1
            if rng.random() < 0.5 and state.buckets:
                state.drop_bucket(rng.choice(sorted(state.buckets)))
            settle(state)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 26 * 60), st.integers(1, 9)), max_size=60),
    st.integers(0, 3599),
    st.lists(st.integers(0, 25 * 60), max_size=5),
)
def test_hypothesis_cached_equals_brute_force(
    events: list[tuple[int, int]], now_offset_s: int, changes: list[int]
) -> None:
    now_ms = at(12, 0) + now_offset_s * 1000
    now_s = now_ms // 1000
    state = PartitionState(0)
    for minutes_ago, n in events:
        start = (now_s - minutes_ago * 60) // 60 * 60
        state.bucket_counts(start, DIM)[kpi.CONTACTS] += n
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    reader.read([state], now_ms)  # warm the cache
    for minutes_ago in changes:
        start = (now_s - minutes_ago * 60) // 60 * 60
        state.bucket_counts(start, DIM)[kpi.CONTACTS] += 1
    totals = reader.read([state], now_ms)
    for label, seconds in DEFAULT_WINDOWS:
        first, last = reader.window_bounds(now_ms, seconds)
        assert totals[label] == brute_force([state], first, last), label


# -- cache invalidation ----------------------------------------------------------------------------
def test_cache_invalidated_when_cached_hour_changes() -> None:
    state = PartitionState(0)
    add(state, at(3, 10))  # an hour fully inside the 24h window: served from the cache
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    now = at(12, 0)
    assert contacts(reader.read([state], now), "24h") == 1
    assert reader._hours  # the 03:00 hour is cached
    add(state, at(3, 10))  # same bucket, first change since the last commit
    assert contacts(reader.read([state], now), "24h") == 2
    add(state, at(3, 59))  # another bucket of the same hour
    assert contacts(reader.read([state], now), "24h") == 3


def test_cache_not_stale_when_dirty_bucket_changes_again() -> None:
    """Within one batch the hour version is bumped once; a read in between must not pin it."""
    state = PartitionState(0)
    add(state, at(3, 10))
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    now = at(12, 0)
    assert contacts(reader.read([state], now), "24h") == 1
    add(state, at(3, 10))  # same, still dirty, bucket: no new hour version
    assert contacts(reader.read([state], now), "24h") == 2
    settle(state)
    assert contacts(reader.read([state], now), "24h") == 2
    add(state, at(3, 10))
    assert contacts(reader.read([state], now), "24h") == 3


def test_cache_invalidated_by_drop_bucket() -> None:
    state = PartitionState(0)
    add(state, at(3, 10))
    add(state, at(3, 20))
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    now = at(12, 0)
    assert contacts(reader.read([state], now), "24h") == 2
    state.drop_bucket(at(3, 10) // 1000)
    assert contacts(reader.read([state], now), "24h") == 1


def test_cache_is_per_state() -> None:
    """Two partitions (or a recovered state, with a new generation) never share cache entries."""
    a, b = PartitionState(0), PartitionState(0)
    add(a, at(3, 10))
    add(b, at(3, 10), n=5)
    settle(a)
    settle(b)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    now = at(12, 0)
    assert contacts(reader.read([a], now), "24h") == 1
    assert contacts(reader.read([b], now), "24h") == 5
    assert contacts(reader.read([a, b], now), "24h") == 6


def test_old_cache_entries_are_forgotten() -> None:
    states = [PartitionState(p) for p in range(4)]
    for state in states:
        for h in range(30):
            add(state, at(0, 0) + h * 3_600_000 + 60_000)
        settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    reader.read(states, at(0, 0) + 29 * 3_600_000)
    early = {key[2] for key in reader._hours}
    later = at(0, 0) + 29 * 3_600_000 + 30 * 86_400_000  # a month later
    reader.read(states, later)
    oldest = later // 1000 - 86_400 - 2 * 3600
    assert early and max(early) < oldest
    assert reader._hours
    assert all(hour >= oldest for _, _, hour in reader._hours)


def test_a_partitions_totals_are_computed_once_per_bucket_and_state_version() -> None:
    """/metrics, intervals, partition views and the evaluator share one computation per tick."""
    state = PartitionState(0)
    add(state, at(10, 1), n=2)
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    first = reader.read_partition(state, at(10, 10))
    assert reader.read_partition(state, at(10, 10) + 30_000) is first  # same bucket of now
    assert contacts(reader.read([state, state], at(10, 10)), "15m") == 4  # sums are copies
    assert reader.read_partition(state, at(10, 10)) is first
    add(state, at(10, 2))  # a batch in progress: never served from (or into) the cache
    assert reader.read_partition(state, at(10, 10))["15m"][DIM][kpi.CONTACTS] == 3
    settle(state)
    again = reader.read_partition(state, at(10, 10))
    assert again is not first and again["15m"][DIM][kpi.CONTACTS] == 3
    assert reader.read_partition(state, at(10, 11)) is not again  # the window moved on


def test_quarter_hours_of_the_current_hour_are_cached_and_invalidated() -> None:
    """Live traffic changes the current minute: earlier quarter hours are not re-summed."""
    state = PartitionState(0)
    add(state, at(10, 5))  # 10:00-10:14 quarter
    add(state, at(10, 20))  # 10:15-10:29 quarter
    settle(state)
    reader = WindowReader(DEFAULT_WINDOWS, 60)
    now = at(10, 40)
    assert contacts(reader.read([state], now), "1h") == 2
    cached = {key[2] for key in reader._blocks}
    assert {at(10, 0) // 1000, at(10, 15) // 1000} <= cached
    add(state, at(10, 40))  # the current minute: its quarter is summed bucket by bucket
    settle(state)
    assert contacts(reader.read([state], at(10, 40) + 1000), "1h") == 3
    add(state, at(10, 6))  # a change inside a cached quarter invalidates it
    settle(state)
    assert contacts(reader.read([state], at(10, 40) + 2000), "1h") == 4
