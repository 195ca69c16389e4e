"""The fetch long-poll by input rate (stream/runtime/fetch_pacing.py)."""

from __future__ import annotations

from stream.runtime.fetch_pacing import FetchPacer


def rounds(pacer: FetchPacer, start: float, per_second: float, seconds: float) -> list[int]:
    """Feed fetch rounds of the pacer's own wait at ``per_second`` events/s; the waits chosen."""
    now, waits = start, []
    while now < start + seconds:
        wait_s = pacer.wait_ms / 1000
        now += wait_s
        waits.append(pacer.observe(now, round(per_second * wait_s)))
    return waits


def test_quiet_traffic_gets_the_idle_wait_busy_traffic_the_short_one() -> None:
    pacer = FetchPacer(busy_wait_ms=100, idle_wait_ms=500, idle_rate=1000)
    assert set(rounds(pacer, 0.0, 100, 5)) == {500}
    # A burst: the first round that brings it switches to the short wait, and it stays.
    waits = rounds(pacer, 5.0, 20_000, 3)
    assert waits[0] == 100 and set(waits) == {100}
    # Back to quiet: idle again after about a second, not at once (no flapping).
    waits = rounds(pacer, 8.0, 50, 3)
    assert waits[0] == 100 and waits[-1] == 500
    assert sum(1 for w in waits if w == 100) * 0.1 <= 1.2


def test_just_below_and_above_the_rate() -> None:
    below = FetchPacer(100, 500, 1000)
    assert rounds(below, 0.0, 900, 4)[-1] == 500
    above = FetchPacer(100, 500, 1000)
    assert rounds(above, 0.0, 1200, 4)[-1] == 100


def test_no_pacing_when_disabled_or_the_waits_are_equal() -> None:
    assert set(rounds(FetchPacer(100, 500, 0), 0.0, 10, 2)) == {100}
    assert set(rounds(FetchPacer(100, 100, 1000), 0.0, 10, 2)) == {100}
    # An idle wait below the busy one is no pacing either (never shorter under load).
    assert set(rounds(FetchPacer(200, 50, 1000), 0.0, 10, 2)) == {200}


def test_empty_rounds_count_as_quiet() -> None:
    pacer = FetchPacer(100, 500, 1000)
    rounds(pacer, 0.0, 20_000, 1)
    assert pacer.wait_ms == 100
    now = 1.0
    for _ in range(5):
        now += 1.0  # Faust's wait for records times out after 1 s with nothing
        pacer.observe(now, 0)
    assert pacer.wait_ms == 500
