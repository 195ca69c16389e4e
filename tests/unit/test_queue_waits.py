"""Waits in queue through the processor (contract v2): counts, the waiting index, joins, expiry.

Pure: plain PartitionState objects, no broker. The integration test
(tests/integration/test_queues.py) checks the same over a real broker and /metrics.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.domain import kpi, records
from stream.domain.processor import EXPIRED, UNMATCHED, Processor
from stream.domain.state import UNKNOWN, PartitionState, dim_key
from stream.query.windows import reader_for
from tests.unit.test_processor import GRACE, MIN, WALL, Feed, _clean_env, make, total, totals

__all__ = ["_clean_env"]
S = 1000
T0 = WALL - 30 * MIN


def queued(feed: Feed, contact: str, ts: int, queue: str = "billing", **fields: object):  # type: ignore[no-untyped-def]
    return feed.interaction("contact_queued", contact, ts, queue=queue, **fields)


def answered(feed: Feed, contact: str, ts: int, **fields: object):  # type: ignore[no-untyped-def]
    return feed.interaction("contact_answered", contact, ts, **fields)


def abandoned(feed: Feed, contact: str, ts: int, **fields: object):  # type: ignore[no-untyped-def]
    return feed.interaction("contact_abandoned", contact, ts, **fields)


def waits_of(state: PartitionState) -> dict[str, list[float]]:
    """The six wait counters per queue x channel."""
    names = ("waits_ended", "answered", "within", "abandoned", "short", "seconds")
    first = kpi.WAITS_ENDED
    return {
        f"{q}/{c}": counts[first : first + len(names)]
        for (q, c), counts in totals(state).items()
        if any(counts[first : first + len(names)])
    }


def test_answered_within_threshold_counts_at_the_answer_under_the_queued_queue() -> None:
    processor, state, feed = make()
    processor.process_batch(state, [feed.start("c1", T0, queue="front", channel="chat")], WALL)
    processor.process_batch(state, [queued(feed, "c1", T0 + 1 * S, queue="billing")], WALL)
    assert state.waiting == {"c1": (T0 + 1 * S, dim_key("billing", "chat"))}
    processor.process_batch(state, [answered(feed, "c1", T0 + 21 * S, queue="elsewhere")], WALL)
    assert state.waiting == {}
    assert waits_of(state) == {"billing/chat": [1, 1, 1, 0, 0, 20.0]}
    bucket = (T0 + 21 * S) // MIN * 60
    assert state.buckets[bucket][dim_key("billing", "chat")][kpi.ANSWERED_CONTACTS] == 1


def test_threshold_is_inclusive_and_short_abandon_exclusive() -> None:
    processor, state, feed = make()
    batch = [feed.start(f"c{i}", T0, channel="voice") for i in range(4)]
    batch += [queued(feed, f"c{i}", T0) for i in range(4)]
    batch += [
        answered(feed, "c0", T0 + 20 * S),  # = threshold: within
        answered(feed, "c1", T0 + 20 * S + 1),  # just over
        abandoned(feed, "c2", T0 + 5 * S),  # = short-abandon time: not short
        abandoned(feed, "c3", T0 + 5 * S - 1),  # just under: short
    ]
    processor.process_batch(state, batch, WALL)
    counts = totals(state)[("billing", "voice")]
    assert counts[kpi.WAITS_ENDED] == 4
    assert (counts[kpi.ANSWERED_CONTACTS], counts[kpi.ANSWERED_WITHIN_THRESHOLD]) == (2, 1)
    assert (counts[kpi.ABANDONED_CONTACTS], counts[kpi.SHORT_ABANDONED_CONTACTS]) == (2, 1)
    derived = kpi.derived_kpis(counts)
    assert derived["service_level_ratio"] == 1 / 3  # 1 / (2 + 2 - 1)
    assert derived["abandon_ratio"] == 1 / 3
    assert kpi.derived_kpis(counts, "answered_only")["service_level_ratio"] == 1 / 2
    assert kpi.derived_kpis(counts, "all_waits")["service_level_ratio"] == 1 / 4
    assert derived["answer_wait_seconds_average"] == (20 + 20.001) / 2


def test_per_queue_thresholds_from_the_queues_file(tmp_path: Path) -> None:
    path = tmp_path / "queues.yml"
    path.write_text("queues:\n  billing: {service_level_threshold: 30s, short_abandon: 10s}\n")
    processor, state, feed = make(queues_file=path)
    batch = []
    for i, queue in enumerate(("billing", "sales")):
        batch += [feed.start(f"a{i}", T0), queued(feed, f"a{i}", T0, queue=queue)]
        batch += [answered(feed, f"a{i}", T0 + 25 * S)]
        batch += [feed.start(f"b{i}", T0), queued(feed, f"b{i}", T0, queue=queue)]
        batch += [abandoned(feed, f"b{i}", T0 + 7 * S)]
    processor.process_batch(state, batch, WALL)
    assert waits_of(state) == {
        "billing/voice": [2, 1, 1, 1, 1, 25.0],  # 25 s <= 30 s; 7 s < 10 s
        "sales/voice": [2, 1, 0, 1, 0, 25.0],  # the defaults: 20 s, 5 s
    }


def test_a_requeue_starts_a_new_wait_on_the_new_queue() -> None:
    processor, state, feed = make()
    batch = [feed.start("c1", T0), queued(feed, "c1", T0), answered(feed, "c1", T0 + 10 * S)]
    batch += [feed.transfer("c1", T0 + 60 * S, to_queue="retention")]
    batch += [queued(feed, "c1", T0 + 61 * S, queue="retention")]
    processor.process_batch(state, batch, WALL)
    assert state.waiting == {"c1": (T0 + 61 * S, dim_key("retention", "voice"))}
    # queued again while waiting: the open wait ends as transferred (counted nowhere)
    processor.process_batch(state, [queued(feed, "c1", T0 + 70 * S, queue="loyalty")], WALL)
    processor.process_batch(state, [abandoned(feed, "c1", T0 + 100 * S)], WALL)
    assert waits_of(state) == {
        "billing/voice": [1, 1, 1, 0, 0, 10.0],
        "loyalty/voice": [1, 0, 0, 1, 0, 0.0],
    }


def test_contact_ended_while_waiting_is_an_abandon() -> None:
    processor, state, feed = make()
    processor.process_batch(state, [feed.start("c1", T0), queued(feed, "c1", T0)], WALL)
    processor.process_batch(state, [feed.end("c1", T0 + 40 * S)], WALL)
    assert state.waiting == {}
    assert waits_of(state) == {"billing/voice": [1, 0, 0, 1, 0, 0.0]}
    assert total(state, kpi.CONTACTS_ENDED) == 1


def test_an_answer_with_no_open_wait_is_unmatched_until_its_queue_event_arrives() -> None:
    processor, state, feed = make()
    processor.process_batch(state, [feed.start("c1", T0), answered(feed, "c1", T0 + 9 * S)], WALL)
    assert waits_of(state) == {} and processor.wait_anomalies[UNMATCHED] == 1
    processor.process_batch(state, [queued(feed, "c1", T0 + 2 * S)], WALL)  # late: pairs now
    assert waits_of(state) == {"billing/voice": [1, 1, 1, 0, 0, 7.0]}
    assert state.waiting == {}
    processor.process_batch(state, [abandoned(feed, "c2", T0)], WALL)  # never queued
    assert processor.wait_anomalies[UNMATCHED] == 2


def test_an_out_of_order_queue_event_corrects_what_was_counted() -> None:
    """q(0) a(30) counted; then a requeue at 10 arrives: the first wait was transferred, the
    second (10 -> 30) answered on the other queue."""
    processor, state, feed = make()
    processor.process_batch(
        state, [feed.start("c1", T0), queued(feed, "c1", T0), answered(feed, "c1", T0 + 30 * S)], WALL
    )
    assert waits_of(state) == {"billing/voice": [1, 1, 0, 0, 0, 30.0]}
    processor.process_batch(state, [queued(feed, "c1", T0 + 10 * S, queue="sales")], WALL)
    assert waits_of(state) == {"sales/voice": [1, 1, 1, 0, 0, 20.0]}


def test_duplicates_count_once() -> None:
    processor, state, feed = make()
    q = queued(feed, "c1", T0, event_id="q1")
    a = answered(feed, "c1", T0 + 3 * S, event_id="a1")
    processor.process_batch(state, [feed.start("c1", T0), q, a], WALL)
    again = [queued(feed, "c1", T0, event_id="q1"), answered(feed, "c1", T0 + 3 * S, event_id="a1")]
    processor.process_batch(state, again, WALL)
    assert waits_of(state) == {"billing/voice": [1, 1, 1, 0, 0, 3.0]}


def test_wait_events_before_the_start_wait_for_its_channel() -> None:
    processor, state, feed = make()
    processor.process_batch(state, [queued(feed, "c1", T0), answered(feed, "c1", T0 + 4 * S)], WALL)
    assert waits_of(state) == {}  # the channel comes with the start
    processor.process_batch(state, [feed.start("c1", T0 - S, channel="sms")], WALL + MIN)
    assert waits_of(state) == {"billing/sms": [1, 1, 1, 0, 0, 4.0]}


def test_a_channel_on_the_wait_event_wins_and_needs_no_start() -> None:
    processor, state, feed = make()
    batch = [queued(feed, "c1", T0, channel="chat"), abandoned(feed, "c1", T0 + 30 * S)]
    processor.process_batch(state, batch, WALL)
    assert waits_of(state) == {"billing/chat": [1, 0, 0, 1, 0, 0.0]}
    processor.process_batch(state, [feed.start("c1", T0 - S, channel="sms")], WALL)
    assert waits_of(state) == {"billing/chat": [1, 0, 0, 1, 0, 0.0]}


def test_without_a_start_waits_count_as_unknown_channel_after_the_grace() -> None:
    processor, state, feed = make()
    processor.process_batch(state, [queued(feed, "c1", T0), answered(feed, "c1", T0 + 4 * S)], WALL)
    assert state.waiting == {}
    processor.tick(state, WALL + GRACE - 1)
    assert waits_of(state) == {}
    processor.tick(state, WALL + GRACE)
    assert waits_of(state) == {f"billing/{UNKNOWN}": [1, 1, 1, 0, 0, 4.0]}


def test_a_wait_never_ended_is_dropped_with_its_contact_and_counted() -> None:
    processor, state, feed = make(contact_ttl="1h")
    processor.process_batch(
        state, [feed.start("c1", WALL - 10 * MIN), queued(feed, "c1", WALL - 9 * MIN)], WALL
    )
    processor.tick(state, WALL + 30 * MIN)
    assert "c1" in state.waiting
    processor.tick(state, WALL + 52 * MIN)
    assert state.waiting == {} and processor.wait_anomalies[EXPIRED] == 1
    assert "c1" not in state.contacts


def test_the_waiting_index_is_rebuilt_from_the_records_after_recovery() -> None:
    processor, state, feed = make()
    batch = [feed.start(f"c{i}", T0, channel="chat") for i in range(3)]
    batch += [queued(feed, f"c{i}", T0 + i * S) for i in range(3)]
    batch += [answered(feed, "c0", T0 + 9 * S), feed.end("c1", T0 + 9 * S)]
    processor.process_batch(state, batch, WALL)
    assert state.waiting == {"c2": (T0 + 2 * S, dim_key("billing", "chat"))}
    recovered = PartitionState(state.partition)
    for contact_id, record in state.contacts.items():  # what the changelog holds, decoded again
        payload = orjson.loads(records.encoder.encode(record))
        recovered.contacts[contact_id] = records.contact_from_changelog(payload)
    recovered.label_values = {k: list(v) for k, v in state.label_values.items()}
    fresh = Processor(processor.settings)
    fresh.recovered(recovered, WALL)
    assert recovered.waiting == state.waiting
    fresh.process_batch(recovered, [answered(feed, "c2", T0 + 30 * S)], WALL)
    assert recovered.waiting == {}
    assert recovered.contacts["c2"].counted_waits is not None


def test_old_contact_records_decode_without_wait_fields() -> None:
    old = {"t": T0, "st": T0, "q": "billing", "ch": "voice", "cu": "u1", "en": 1}
    record = records.contact_from_changelog(old)
    assert record.wait_events is None and record.counted_waits is None and record.wait_unmatched == 0
    assert msgspec.json.decode(records.encoder.encode(record))["q"] == "billing"


# -- any arrival order counts like the events in order -----------------------------------------
def _contact_events(rng: random.Random, contact: str) -> list[tuple[str, int, dict[str, object]]]:
    """A believable life of one contact: start, one to three waits, maybe an end."""
    events: list[tuple[str, int, dict[str, object]]] = [("contact_started", T0, {})]
    t = T0 + rng.randrange(0, 5) * S
    for _ in range(rng.randrange(1, 4)):
        events.append(("contact_queued", t, {"queue": rng.choice(("billing", "sales"))}))
        t += rng.randrange(0, 60) * S
        roll = rng.random()
        if roll < 0.5:
            events.append(("contact_answered", t, {}))
        elif roll < 0.8:
            events.append(("contact_abandoned", t, {}))
        t += rng.randrange(1, 30) * S
    if rng.random() < 0.5:
        events.append(("contact_ended", t, {}))
    return [
        (kind, ts, dict(fields, event_id=f"{contact}-{n}")) for n, (kind, ts, fields) in enumerate(events)
    ]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3))
def test_any_arrival_order_and_batching_counts_the_same(seed: int, batches: int) -> None:
    rng = random.Random(seed)
    life = [(f"c{i}", event) for i in range(6) for event in _contact_events(rng, f"c{i}")]

    def run(order: list[tuple[str, tuple[str, int, dict[str, object]]]], parts: int) -> tuple[object, ...]:
        processor, state, feed = make()
        messages = [feed.interaction(kind, contact, ts, **fields) for contact, (kind, ts, fields) in order]
        size = max(1, len(messages) // parts)
        for start in range(0, len(messages), size):
            processor.process_batch(state, messages[start : start + size], WALL)
        return waits_of(state), state.waiting

    in_order = sorted(life, key=lambda item: (item[1][1], item[1][0] != "contact_started"))
    shuffled = list(life)
    rng.shuffle(shuffled)
    shuffled += rng.sample(life, 3)  # redelivered duplicates
    # The start first in the shuffled run too (the join grace is tested above), the rest any order.
    shuffled.sort(key=lambda item: item[1][0] != "contact_started")
    assert run(shuffled, batches) == run(in_order, 1)


def test_the_worked_example_in_docs_queues_md(tmp_path: Path) -> None:
    """docs/queues.md, "Worked example": the numbers it shows."""
    path = tmp_path / "queues.yml"
    path.write_text(
        "queues:\n  billing: {service_level_threshold: 30s, short_abandon: 10s}\n"
        "  sales: {service_level_threshold: 15s}\n"
    )
    processor, state, feed = make(queues_file=path, windows="15m")
    ten = 1_795_341_600_000  # 10:00:00
    at = lambda m, s: ten + m * MIN + s * S  # noqa: E731
    batch = [feed.start(c, at(0, 0)) for c in ("c1", "c2", "c3", "c4", "c5", "c6", "c7")]
    batch += [queued(feed, "c1", at(0, 5)), answered(feed, "c1", at(0, 25))]
    batch += [queued(feed, "c2", at(1, 0)), answered(feed, "c2", at(1, 45))]
    batch += [queued(feed, "c3", at(2, 0)), abandoned(feed, "c3", at(2, 6))]
    batch += [queued(feed, "c4", at(3, 0)), abandoned(feed, "c4", at(4, 0))]
    batch += [
        queued(feed, "c5", at(5, 0)),
        queued(feed, "c5", at(5, 40), queue="sales"),
        answered(feed, "c5", at(5, 50)),
    ]
    batch += [queued(feed, "c6", at(13, 0)), answered(feed, "c7", at(7, 0))]
    processor.process_batch(state, batch, at(14, 30))
    window = reader_for(processor.settings).read([state], at(14, 30))["15m"]
    billing = window[dim_key("billing", "voice")]
    assert [billing[i] for i in range(kpi.WAITS_ENDED, kpi.WAITS_ENDED + 6)] == [4, 2, 1, 2, 1, 65.0]
    derived = kpi.derived_kpis(billing)
    assert (derived["service_level_ratio"], derived["abandon_ratio"]) == (1 / 3, 1 / 3)
    assert kpi.derived_kpis(billing, "answered_only")["service_level_ratio"] == 0.5
    assert kpi.derived_kpis(billing, "all_waits")["service_level_ratio"] == 0.25
    assert derived["answer_wait_seconds_average"] == 32.5
    assert kpi.derived_kpis(window[dim_key("sales", "voice")])["service_level_ratio"] == 1.0
    assert state.waiting == {"c6": (at(13, 0), dim_key("billing", "voice"))}
    assert processor.wait_anomalies[UNMATCHED] == 1
    later = reader_for(processor.settings).read([state], at(15, 0))["15m"][dim_key("billing", "voice")]
    assert later[kpi.ANSWERED_CONTACTS] == 1  # c1 left the window


def test_partition_views_carry_the_waiting_and_agents_and_round_trip() -> None:
    from stream.query.partition_views import decode_view, encode_view, view_of

    processor, state, feed = make()
    batch = [feed.start(f"c{i}", T0, channel="chat") for i in range(3)]
    batch += [queued(feed, f"c{i}", T0 + i * S) for i in range(3)]
    agent = {"type": "agent_state", "event_id": "g1", "agent_id": "ann", "timestamp": T0, "state": "busy"}
    agent |= {"team": "t1", "queues": ["billing", "sales"]}
    from stream.domain.processor import InputMessage

    batch.append(InputMessage("cx.agents", 0, b"ann", orjson.dumps(agent)))
    processor.process_batch(state, batch, WALL)
    totals = reader_for(processor.settings).read_partition(state, WALL)
    view = view_of(state, totals, partitions=4, worker="w", at=WALL, ref=WALL - 5)
    assert view.waiting == {dim_key("billing", "chat"): [3, T0]}
    assert view.agents == {dim_key("busy", "t1"): 1}
    assert view.agent_queues == {dim_key("busy", "billing"): 1, dim_key("busy", "sales"): 1}
    again = decode_view(encode_view(view, ("queue", "channel")))
    assert (again.waiting, again.agents, again.agent_queues, again.ref) == (
        view.waiting,
        view.agents,
        view.agent_queues,
        WALL - 5,
    )
