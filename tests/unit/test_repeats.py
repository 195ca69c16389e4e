"""Repeat contacts and channel switches do not depend on the order starts arrive in.

The customer side corrects an earlier decision when an older start arrives late;
these properties check the totals against a naive computation over the sorted
history, for every arrival order hypothesis comes up with.
"""

from __future__ import annotations

import itertools

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.config.settings import load_settings
from stream.domain import kpi
from stream.domain.processor import InputMessage, Processor, customer_partition, customer_topic_name
from stream.domain.state import TRANSITION_MARK, PartitionState

HOUR = 3_600_000
NOW = 1_800_000_000_000
HORIZON = 48 * HOUR
CHANNELS = ["voice", "chat", "email"]


def make_processor() -> Processor:
    settings = load_settings(windows="15m,1h,24h,7d", repeat_horizon="2d")
    return Processor(settings)


def start_record(i: int, customer: str, hours_ago: float, channel: str, reason: str | None) -> bytes:
    return orjson.dumps(
        {
            "e": f"e{i}",
            "cu": customer,
            "c": f"c{i}",
            "t": NOW - int(hours_ago * HOUR),
            "q": "billing",
            "ch": channel,
            "r": reason,
        }
    )


def totals(state: PartitionState) -> tuple[dict[str, float], dict[str, float]]:
    sums = {"repeat": 0.0, "switch": 0.0, "same": 0.0, "contacts": 0.0}
    transitions: dict[str, float] = {}
    for dims in state.buckets.values():
        for dim, counts in dims.items():
            if dim.startswith(TRANSITION_MARK):
                transitions[dim] = transitions.get(dim, 0) + counts[kpi.CHANNEL_SWITCHES]
                continue
            sums["repeat"] += counts[kpi.REPEAT_CONTACTS]
            sums["switch"] += counts[kpi.CHANNEL_SWITCHES]
            sums["same"] += counts[kpi.SAME_REASON_REPEATS]
    return sums, {k: v for k, v in transitions.items() if v}


def naive(starts: list[tuple[float, str, str | None]]) -> tuple[dict[str, float], dict[str, float]]:
    ordered = sorted(starts, key=lambda s: -s[0])  # hours ago, oldest first
    sums = {"repeat": 0.0, "switch": 0.0, "same": 0.0, "contacts": 0.0}
    transitions: dict[str, float] = {}
    for previous, current in itertools.pairwise(ordered):
        if (previous[0] - current[0]) * HOUR <= HORIZON:
            sums["repeat"] += 1
            if previous[1] != current[1]:
                sums["switch"] += 1
                key = f"{TRANSITION_MARK}{previous[1]}\x1f{current[1]}"
                transitions[key] = transitions.get(key, 0) + 1
            if current[2] is not None and current[2] == previous[2]:
                sums["same"] += 1
    return sums, transitions


start_strategy = st.tuples(
    st.integers(min_value=0, max_value=150).map(lambda h: h + 0.5),  # distinct-ish hours ago, < 7 days
    st.sampled_from(CHANNELS),
    st.sampled_from([None, "refund", "password"]),
)


@settings(max_examples=200, deadline=None)
@given(
    starts=st.lists(start_strategy, min_size=1, max_size=8, unique_by=lambda s: s[0]),
    data=st.data(),
)
def test_totals_do_not_depend_on_arrival_order(starts, data) -> None:
    processor = make_processor()
    state = PartitionState(0)
    topic = customer_topic_name(processor.settings)
    order = data.draw(st.permutations(range(len(starts))))
    messages = [
        InputMessage(topic, offset, b"A", start_record(i, "A", *starts[i])) for offset, i in enumerate(order)
    ]
    # one message per batch: the worst case for ordering
    for message in messages:
        processor.process_batch(state, [message], NOW)
    assert totals(state) == naive(starts)


def test_a_start_outside_the_horizon_is_not_a_repeat() -> None:
    processor = make_processor()
    state = PartitionState(0)
    topic = customer_topic_name(processor.settings)
    processor.process_batch(
        state,
        [
            InputMessage(topic, 0, b"A", start_record(0, "A", 100, "voice", None)),
            InputMessage(topic, 1, b"A", start_record(1, "A", 10, "chat", None)),
        ],
        NOW,
    )
    assert totals(state)[0]["repeat"] == 0


def test_a_re_forwarded_start_is_counted_once() -> None:
    processor = make_processor()
    state = PartitionState(0)
    topic = customer_topic_name(processor.settings)
    first = start_record(0, "A", 10, "voice", None)
    second = start_record(1, "A", 5, "chat", None)
    processor.process_batch(
        state,
        [
            InputMessage(topic, 0, b"A", first),
            InputMessage(topic, 1, b"A", second),
            InputMessage(topic, 2, b"A", second),  # re-sent after a crash: same event id
        ],
        NOW,
    )
    sums, _transitions = totals(state)
    assert sums["repeat"] == 1 and sums["switch"] == 1
    assert processor.outcomes[(topic, "duplicate")] == 1


def test_customer_partition_is_fixed_and_in_range() -> None:
    """The re-keying hash is part of the state layout: changing it would split every
    customer's history across partitions until the repeat horizon passes. Pinned."""
    keys = (b"cust-1", b"c-42", b"\xff\x00")
    assert [customer_partition(k, 4) for k in keys] == [3, 1, 1]
    assert [customer_partition(k, 12) for k in keys] == [7, 1, 9]
    assert {customer_partition(f"u{i}".encode(), 12) for i in range(1000)} == set(range(12))
