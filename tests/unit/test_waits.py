"""Pairing waits in queue (stream.domain.waits): the pure rules the processor counts with.

The contract's edge cases one by one, and with hypothesis: whatever order a contact's
wait events arrive in, inserting them one at a time and counting the difference after
each gives the same counts as pairing the whole set at once.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from stream.domain.waits import (
    ABANDONED,
    ANSWERED,
    ENDED,
    QUEUED,
    Wait,
    WaitEvent,
    changed_waits,
    counts_of,
    insert,
    pair,
)

S = 1000


def q(ts: int, queue: str = "billing") -> WaitEvent:
    return WaitEvent(ts * S, QUEUED, queue, "voice", f"q{ts}")


def a(ts: int) -> WaitEvent:
    return WaitEvent(ts * S, ANSWERED, event_id=f"a{ts}")


def b(ts: int) -> WaitEvent:
    return WaitEvent(ts * S, ABANDONED, event_id=f"b{ts}")


def e(ts: int) -> WaitEvent:
    return WaitEvent(ts * S, ENDED, event_id=f"e{ts}")


def test_a_queued_contact_answered() -> None:
    pairing = pair([q(10), a(25)])
    assert pairing.waits == (Wait(10 * S, "billing", "voice", 25 * S, "answered"),)
    assert pairing.waits[0].seconds == 15 and pairing.open is None and pairing.unmatched == 0
    counts = counts_of(pairing.waits[0], threshold_s=20, short_abandon_s=5)
    assert counts is not None and (counts.answered, counts.answered_within_threshold) == (1, 1)
    assert counts_of(pairing.waits[0], threshold_s=10, short_abandon_s=5).answered_within_threshold == 0  # type: ignore[union-attr]


def test_a_requeue_ends_the_open_wait_as_transferred_and_starts_a_new_one() -> None:
    pairing = pair([q(0), q(30, "retention"), b(32)])
    assert [w.outcome for w in pairing.waits] == ["transferred", "abandoned"]
    assert pairing.waits[1].queue == "retention" and pairing.waits[1].seconds == 2
    assert counts_of(pairing.waits[0], 20, 5) is None  # not in waits_ended
    short = counts_of(pairing.waits[1], 20, 5)
    assert short is not None and (short.abandoned, short.short_abandoned, short.waits_ended) == (1, 1, 1)


def test_an_end_while_waiting_is_an_abandon_and_answers_without_a_wait_are_unmatched() -> None:
    pairing = pair([a(1), q(5), e(60), b(70)])
    assert [w.outcome for w in pairing.waits] == ["abandoned"]
    assert pairing.waits[0].ended_ms == 60 * S
    assert pairing.unmatched == 2  # the answer before any queueing, the abandon after the end


def test_a_wait_without_its_end_is_open() -> None:
    pairing = pair([q(5), a(9), q(20)])
    assert pairing.open == Wait(20 * S, "billing", "voice")
    assert counts_of(pairing.open, 20, 5) is None  # type: ignore[arg-type]


def test_events_at_one_millisecond_pair_the_same_in_any_order() -> None:
    assert pair([a(5), q(5)]) == pair([q(5), a(5)])
    assert pair([a(5), q(5)]).waits[0].seconds == 0


def test_insert_keeps_order_and_refuses_a_redelivered_event() -> None:
    events: list[WaitEvent] = []
    for event in (a(9), q(3), e(12), q(3)):
        insert(events, event)
    assert [x.kind for x in events] == [QUEUED, ANSWERED, ENDED]


def _counts(waits: list[Wait], sign: int, into: Counter[str]) -> None:
    for wait in waits:
        counts = counts_of(wait, 20, 5)
        if counts is not None:
            for name in ("waits_ended", "answered", "answered_within_threshold", "abandoned"):
                into[name] += sign * getattr(counts, name)
            into["short_abandoned"] += sign * counts.short_abandoned
            into["wait_ms"] += sign * round(counts.answer_wait_seconds * 1000)


events_strategy = st.lists(
    st.tuples(st.sampled_from([QUEUED, ANSWERED, ABANDONED, ENDED]), st.integers(0, 120)),
    max_size=10,
    unique=True,
)


@given(events_strategy, st.randoms(use_true_random=False))
def test_any_arrival_order_counts_like_the_whole_set(raw: list[tuple[str, int]], rng: object) -> None:
    events = [
        WaitEvent(ts * S, kind, "billing" if kind == QUEUED else None, "voice", f"{kind}{ts}")
        for kind, ts in raw
    ]
    whole: Counter[str] = Counter()
    final = pair(events)
    _counts(list(final.waits), +1, whole)

    arrived: list[WaitEvent] = []
    incremental: Counter[str] = Counter()
    before = pair(arrived)
    shuffled = list(events)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    for event in shuffled:
        insert(arrived, event)
        after = pair(arrived)
        removed, added = changed_waits(before, after)
        _counts(removed, -1, incremental)
        _counts(added, +1, incremental)
        before = after
    assert +incremental == +whole and all(v >= 0 for v in incremental.values())
    assert before == final
