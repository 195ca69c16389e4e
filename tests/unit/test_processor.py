"""The batch pipeline (stream.domain.processor): validate, dedup, join, bucket, expire.

Everything runs on plain PartitionState objects: no broker, no Faust worker. Where
a test needs the effect of a committed batch (dedup batches, cleared dirty sets),
it calls the real ``StateLogTable.commit_batch`` with a fake changelog sender.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from stream.config.settings import ENV_PREFIX, load_settings
from stream.domain import kpi
from stream.domain.processor import DeadLetter, InputMessage, Processor, rebuild_expiry_queues
from stream.domain.state import UNKNOWN, PartitionState, dim_key
from stream.runtime.commitlog import StateLogTable

I_TOPIC = "cx.interactions"
S_TOPIC = "cx.surveys"
WALL = 1_795_341_600_000  # 2026-11-22T10:00:00Z
MIN = 60_000
HOUR = 3_600_000
GRACE = 2 * MIN  # default join_grace
RETENTION = 24 * HOUR + MIN  # longest default window + one bucket


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# -- helpers ---------------------------------------------------------------------------------
class FakeChangelog:
    """Stands in for the Faust table: collects what commit_batch would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, Any]] = []

    def write_changelog(self, partition: int, records: list[tuple[bytes, bytes]], after: Any = ()) -> None:
        self.sent.extend((partition, key, orjson.loads(value)) for key, value in records)


def commit(state: PartitionState, log: FakeChangelog | None = None) -> FakeChangelog:
    log = log or FakeChangelog()
    StateLogTable.commit_batch(log, state)  # type: ignore[arg-type]
    return log


class Feed:
    """Builds InputMessages with increasing offsets per topic."""

    def __init__(self) -> None:
        self.next_offset = {I_TOPIC: 0, S_TOPIC: 0}
        self.n = 0

    def _msg(self, topic: str, value: bytes | None, key: bytes | None = None) -> InputMessage:
        offset = self.next_offset[topic]
        self.next_offset[topic] += 1
        return InputMessage(topic, offset, key, value)

    def raw(self, topic: str, value: bytes | None) -> InputMessage:
        return self._msg(topic, value, b"k")

    def interaction(self, kind: str, contact: str, ts: int | str, **fields: Any) -> InputMessage:
        self.n += 1
        body: dict[str, Any] = {
            "event_id": fields.pop("event_id", f"i{self.n}"),
            "type": kind,
            "contact_id": contact,
            "timestamp": ts,
        }
        if kind == "contact_started":
            body.update(customer_id=f"u-{contact}", channel="voice", queue="billing")
        body.update(fields)
        return self._msg(I_TOPIC, orjson.dumps(body), contact.encode())

    def start(self, contact: str, ts: int | str, **fields: Any) -> InputMessage:
        return self.interaction("contact_started", contact, ts, **fields)

    def transfer(self, contact: str, ts: int, **fields: Any) -> InputMessage:
        return self.interaction("contact_transferred", contact, ts, **fields)

    def end(self, contact: str, ts: int, **fields: Any) -> InputMessage:
        return self.interaction("contact_ended", contact, ts, **fields)

    def survey(
        self, contact: str, ts: int | str, metric: str = "csat", score: int = 5, **fields: Any
    ) -> InputMessage:
        self.n += 1
        body: dict[str, Any] = {
            "event_id": fields.pop("event_id", f"s{self.n}"),
            "contact_id": contact,
            "metric": metric,
            "score": score,
            "timestamp": ts,
        }
        body.update(fields)
        return self._msg(S_TOPIC, orjson.dumps(body), contact.encode())


def make(**overrides: Any) -> tuple[Processor, PartitionState, Feed]:
    return Processor(load_settings(**overrides)), PartitionState(3), Feed()


def totals(state: PartitionState) -> dict[tuple[str, str], list[float]]:
    """Counts per (queue, channel), summed over every bucket."""
    out: dict[tuple[str, str], list[float]] = {}
    for dims in state.buckets.values():
        for dim, counts in dims.items():
            queue, channel = dim.split("\x1f")
            kpi.add_into(out.setdefault((queue, channel), kpi.zero_counts()), counts)
    return out


def total(state: PartitionState, index: int, dim: tuple[str, str] | None = None) -> float:
    per_dim = totals(state)
    if dim is not None:
        return per_dim.get(dim, kpi.zero_counts())[index]
    return sum(counts[index] for counts in per_dim.values())


def bucket_of(ts_ms: int) -> int:
    return ts_ms // MIN * 60


# -- contacts ---------------------------------------------------------------------------------
def test_contacts_counted_per_queue_channel_and_bucket() -> None:
    proc, state, feed = make()
    msgs = [
        feed.start("c1", WALL - 10 * MIN + 7_000, queue="billing", channel="voice"),
        feed.start("c2", WALL - 10 * MIN + 59_999, queue="billing", channel="voice"),
        feed.start("c3", WALL - 9 * MIN, queue="billing", channel="chat"),
        feed.start("c4", "2026-11-22T10:00:00+01:00", queue="sales", channel="email"),  # 09:00Z
    ]
    assert proc.process_batch(state, msgs, WALL) == []
    b1 = bucket_of(WALL - 10 * MIN)
    assert state.buckets[b1][dim_key("billing", "voice")][kpi.CONTACTS] == 2
    assert state.buckets[bucket_of(WALL - 9 * MIN)][dim_key("billing", "chat")][kpi.CONTACTS] == 1
    assert state.buckets[bucket_of(WALL - HOUR)][dim_key("sales", "email")][kpi.CONTACTS] == 1
    assert total(state, kpi.CONTACTS) == 4
    assert proc.outcomes == Counter({(I_TOPIC, "accepted"): 4})
    record = state.contacts["c1"]
    assert (record.queue, record.channel, record.customer) == ("billing", "voice", "u-c1")
    assert record.started_ms == WALL - 10 * MIN + 7_000
    assert state.watermark_ms == proc.watermark_ms == WALL - 9 * MIN


def test_second_start_for_same_contact_is_not_counted() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state, [feed.start("c1", WALL - MIN), feed.start("c1", WALL - MIN, queue="other")], WALL
    )
    assert total(state, kpi.CONTACTS) == 1
    assert state.contacts["c1"].queue == "billing"
    assert proc.outcomes[(I_TOPIC, "accepted")] == 2  # a valid, distinct event, just not a new contact


def test_ended_counted_at_end_time_under_start_queue() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state,
        [
            feed.start("c1", WALL - 30 * MIN, queue="billing", channel="chat"),
            feed.end("c1", WALL - 5 * MIN, resolved=True, handle_seconds=120.5),
            feed.start("c2", WALL - 30 * MIN, queue="billing", channel="chat"),
            feed.end("c2", WALL - 5 * MIN, resolved=False),
            feed.start("c3", WALL - 30 * MIN, queue="billing", channel="chat"),
            feed.end("c3", WALL - 4 * MIN),
        ],
        WALL,
    )
    end_bucket = state.buckets[bucket_of(WALL - 5 * MIN)][dim_key("billing", "chat")]
    assert end_bucket[kpi.CONTACTS_ENDED] == 2
    assert end_bucket[kpi.CONTACTS] == 0
    assert end_bucket[kpi.RESOLUTION_REPORTED] == 2
    assert end_bucket[kpi.RESOLVED] == 1
    assert end_bucket[kpi.HANDLE_COUNT] == 1
    assert end_bucket[kpi.HANDLE_SECONDS_SUM] == 120.5
    assert total(state, kpi.CONTACTS_ENDED) == 3


def test_second_end_is_not_counted() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state,
        [feed.start("c1", WALL - 3 * MIN), feed.end("c1", WALL - 2 * MIN), feed.end("c1", WALL - MIN)],
        WALL,
    )
    assert total(state, kpi.CONTACTS_ENDED) == 1


@pytest.mark.parametrize(
    ("transfers", "expected"),
    [(0, 0), (1, 1), (3, 1)],
)
def test_transferred_contact_counted_once_at_end(transfers: int, expected: int) -> None:
    proc, state, feed = make()
    msgs = [feed.start("c1", WALL - 20 * MIN)]
    msgs += [feed.transfer("c1", WALL - 15 * MIN + i, to_queue="retention") for i in range(transfers)]
    proc.process_batch(state, msgs, WALL)
    assert total(state, kpi.TRANSFERRED_CONTACTS) == 0  # nothing until the contact ends
    proc.process_batch(state, [feed.end("c1", WALL - MIN)], WALL)
    assert total(state, kpi.TRANSFERRED_CONTACTS) == expected
    assert total(state, kpi.CONTACTS_ENDED) == 1
    if transfers:
        assert state.contacts["c1"].transfers == transfers
        assert state.contacts["c1"].to_queue == "retention"


def test_transfer_ratio_denominator_is_ended_contacts() -> None:
    proc, state, feed = make()
    msgs = []
    for i in range(4):
        msgs.append(feed.start(f"c{i}", WALL - 10 * MIN))
    msgs.append(feed.transfer("c0", WALL - 9 * MIN))
    msgs.append(feed.transfer("c3", WALL - 9 * MIN))  # c3 never ends: not in the ratio
    msgs += [feed.end("c0", WALL - 8 * MIN), feed.end("c1", WALL - 8 * MIN)]
    proc.process_batch(state, msgs, WALL)
    all_counts = kpi.sum_counts(totals(state).values())
    assert kpi.derived_kpis(all_counts)["transfer_ratio"] == pytest.approx(0.5)


# -- survey joins --------------------------------------------------------------------------------
def test_survey_joined_to_contact_queue_and_channel() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.start("c1", WALL - 30 * MIN, queue="claims", channel="sms")], WALL)
    proc.process_batch(state, [feed.survey("c1", WALL - 2 * MIN, "nps", 9)], WALL)
    counts = state.buckets[bucket_of(WALL - 2 * MIN)][dim_key("claims", "sms")]
    assert counts[kpi.NPS_RESPONSES] == 1
    assert counts[kpi.NPS_PROMOTERS] == 1
    assert not state.contacts["c1"].pending


def test_survey_own_labels_win_over_contact() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.start("c1", WALL - 30 * MIN, queue="claims", channel="sms")], WALL)
    proc.process_batch(
        state,
        [
            feed.survey("c1", WALL - MIN, "csat", 2, queue="vip"),  # channel from the contact
            feed.survey("c1", WALL - MIN, "csat", 4, channel="web"),  # queue from the contact
        ],
        WALL,
    )
    assert total(state, kpi.CSAT_RESPONSES, ("vip", "sms")) == 1
    assert total(state, kpi.CSAT_RESPONSES, ("claims", "web")) == 1
    assert total(state, kpi.CSAT_SATISFIED, ("claims", "web")) == 1


def test_survey_before_start_waits_then_joins() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.survey("c1", WALL - MIN, "ces", 6)], WALL)
    assert total(state, kpi.CES_RESPONSES) == 0
    assert len(state.contacts["c1"].pending or []) == 1
    assert list(state.pending_expiry) == [(WALL + GRACE, "c1")]
    proc.tick(state, WALL + GRACE - 1)  # grace not over yet
    assert total(state, kpi.CES_RESPONSES) == 0
    proc.process_batch(
        state, [feed.start("c1", WALL - 3 * MIN, queue="claims", channel="chat")], WALL + GRACE - 1
    )
    counts = state.buckets[bucket_of(WALL - MIN)][dim_key("claims", "chat")]  # the survey's own time
    assert counts[kpi.CES_RESPONSES] == 1
    assert counts[kpi.CES_EASY] == 1
    assert not state.contacts["c1"].pending
    proc.tick(state, WALL + 10 * GRACE)  # the expired pending entry must not count it again
    assert total(state, kpi.CES_RESPONSES) == 1
    assert UNKNOWN not in {q for q, _ in totals(state)}


def test_survey_without_start_released_as_unknown_after_grace() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.survey("c1", WALL - MIN, "csat", 5)], WALL)
    proc.tick(state, WALL + GRACE - 1)
    assert total(state, kpi.CSAT_RESPONSES) == 0
    proc.tick(state, WALL + GRACE)
    assert total(state, kpi.CSAT_RESPONSES, (UNKNOWN, UNKNOWN)) == 1
    assert not state.contacts["c1"].pending
    assert "c1" in state.dirty_contacts
    proc.tick(state, WALL + 5 * GRACE)
    assert total(state, kpi.CSAT_RESPONSES) == 1
    # A start arriving after the release counts the contact, but not the survey again.
    proc.process_batch(state, [feed.start("c1", WALL - 2 * MIN)], WALL + 5 * GRACE)
    assert total(state, kpi.CSAT_RESPONSES) == 1
    assert total(state, kpi.CONTACTS) == 1


def test_partial_survey_labels_fill_the_rest_with_unknown() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.survey("c1", WALL - MIN, "nps", 3, queue="vip")], WALL)
    assert total(state, kpi.NPS_RESPONSES) == 0  # waits: the channel is missing
    proc.tick(state, WALL + GRACE)
    assert total(state, kpi.NPS_DETRACTORS, ("vip", UNKNOWN)) == 1


def test_survey_with_both_labels_needs_no_contact() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.survey("c9", WALL - MIN, "nps", 10, queue="vip", channel="web")], WALL)
    assert total(state, kpi.NPS_PROMOTERS, ("vip", "web")) == 1
    assert not state.pending_expiry


def test_grace_counts_from_arrival_of_each_waiting_event() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.survey("c1", WALL - MIN, "csat", 5, survey_id="a")], WALL)
    proc.process_batch(state, [feed.survey("c1", WALL - MIN, "csat", 1, survey_id="b")], WALL + MIN)
    proc.tick(state, WALL + GRACE)
    assert total(state, kpi.CSAT_RESPONSES) == 1
    assert total(state, kpi.CSAT_SATISFIED) == 1
    assert len(state.contacts["c1"].pending or []) == 1
    proc.tick(state, WALL + MIN + GRACE)
    assert total(state, kpi.CSAT_RESPONSES) == 2
    assert not state.contacts["c1"].pending


def test_configured_join_grace() -> None:
    proc, state, feed = make(join_grace="10s")
    proc.process_batch(state, [feed.survey("c1", WALL - MIN)], WALL)
    proc.tick(state, WALL + 9_999)
    assert total(state, kpi.CSAT_RESPONSES) == 0
    proc.tick(state, WALL + 10_000)
    assert total(state, kpi.CSAT_RESPONSES) == 1


def test_end_before_start_waits_then_joins() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state,
        [feed.end("c1", WALL - MIN, resolved=True), feed.transfer("c1", WALL - 2 * MIN)],
        WALL,
    )
    assert total(state, kpi.CONTACTS_ENDED) == 0
    proc.process_batch(state, [feed.start("c1", WALL - 5 * MIN, queue="claims", channel="voice")], WALL + MIN)
    counts = state.buckets[bucket_of(WALL - MIN)][dim_key("claims", "voice")]
    assert counts[kpi.CONTACTS_ENDED] == 1
    assert counts[kpi.TRANSFERRED_CONTACTS] == 1
    assert counts[kpi.RESOLVED] == 1
    assert total(state, kpi.CONTACTS) == 1
    proc.tick(state, WALL + 10 * GRACE)
    assert total(state, kpi.CONTACTS_ENDED) == 1


def test_end_without_start_released_as_unknown() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.end("c1", WALL - MIN, handle_seconds=60)], WALL)
    proc.tick(state, WALL + GRACE - 1)
    assert total(state, kpi.CONTACTS_ENDED) == 0
    proc.tick(state, WALL + GRACE)
    assert total(state, kpi.CONTACTS_ENDED, (UNKNOWN, UNKNOWN)) == 1
    assert total(state, kpi.HANDLE_SECONDS_SUM, (UNKNOWN, UNKNOWN)) == 60
    # The contact is marked ended: a late start must not make the end count twice.
    proc.process_batch(state, [feed.start("c1", WALL - 5 * MIN)], WALL + GRACE)
    assert total(state, kpi.CONTACTS_ENDED) == 1


# -- one response per (survey_id, metric) --------------------------------------------------------
def test_one_response_per_survey_id_and_metric() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [feed.start("c1", WALL - 10 * MIN)], WALL)
    proc.process_batch(
        state,
        [
            feed.survey("c1", WALL - MIN, "csat", 5, survey_id="sv1"),
            feed.survey("c1", WALL - MIN, "csat", 1, survey_id="sv1"),  # same survey, same metric
            feed.survey("c1", WALL - MIN, "nps", 10, survey_id="sv1"),  # other metric: counts
            feed.survey("c1", WALL - MIN, "csat", 3, survey_id="sv2"),  # other survey: counts
            feed.survey("c1", WALL - MIN, "csat", 2),  # no survey_id: each counts
            feed.survey("c1", WALL - MIN, "csat", 2),
        ],
        WALL,
    )
    assert total(state, kpi.CSAT_RESPONSES) == 4
    assert total(state, kpi.CSAT_SATISFIED) == 1  # the first sv1 answer (5) is the one kept
    assert total(state, kpi.CSAT_SCORE_SUM) == 5 + 3 + 2 + 2
    assert total(state, kpi.NPS_RESPONSES) == 1
    assert proc.outcomes[(S_TOPIC, "accepted")] == 6  # distinct events, not duplicates


def test_one_response_per_survey_also_while_waiting() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state,
        [
            feed.survey("c1", WALL - MIN, "csat", 5, survey_id="sv1"),
            feed.survey("c1", WALL - MIN, "csat", 5, survey_id="sv1"),
        ],
        WALL,
    )
    assert len(state.contacts["c1"].pending or []) == 1
    proc.process_batch(state, [feed.start("c1", WALL - 5 * MIN)], WALL)
    assert total(state, kpi.CSAT_RESPONSES) == 1


# -- duplicates and redelivery --------------------------------------------------------------------
def test_duplicate_event_id_counted_once() -> None:
    proc, state, feed = make()
    start = feed.start("c1", WALL - MIN, event_id="dup")
    again = InputMessage(I_TOPIC, feed.next_offset[I_TOPIC], start.key, start.value)
    feed.next_offset[I_TOPIC] += 1
    other_contact = feed.start("c2", WALL - MIN, event_id="dup")  # same id, other payload: still a duplicate
    proc.process_batch(state, [start, again, other_contact], WALL)
    assert total(state, kpi.CONTACTS) == 1
    assert "c2" not in state.contacts
    assert proc.outcomes[(I_TOPIC, "accepted")] == 1
    assert proc.outcomes[(I_TOPIC, "duplicate")] == 2
    # ... and in a later batch
    proc.process_batch(state, [feed.start("c3", WALL - MIN, event_id="dup")], WALL + 1000)
    assert proc.outcomes[(I_TOPIC, "duplicate")] == 3
    assert total(state, kpi.CONTACTS) == 1


def test_duplicate_survey_counted_once() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state,
        [
            feed.survey("c1", WALL - MIN, "csat", 5, event_id="s", queue="q", channel="chat"),
            feed.survey("c1", WALL - MIN, "csat", 5, event_id="s", queue="q", channel="chat"),
        ],
        WALL,
    )
    assert total(state, kpi.CSAT_RESPONSES) == 1
    assert proc.outcomes == Counter({(S_TOPIC, "accepted"): 1, (S_TOPIC, "duplicate"): 1})


def test_same_event_id_on_both_topics_is_not_a_duplicate() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state,
        [feed.start("c1", WALL - MIN, event_id="x"), feed.survey("c1", WALL - MIN, event_id="x")],
        WALL,
    )
    assert proc.outcomes == Counter({(I_TOPIC, "accepted"): 1, (S_TOPIC, "accepted"): 1})
    assert total(state, kpi.CSAT_RESPONSES) == 1


def test_redelivered_offsets_are_skipped() -> None:
    proc, state, feed = make()
    batch = [feed.start("c1", WALL - MIN), feed.raw(I_TOPIC, b"not json"), feed.survey("c1", WALL - MIN)]
    dead = proc.process_batch(state, batch, WALL)
    assert len(dead) == 1
    assert state.offsets == {I_TOPIC: 1, S_TOPIC: 0}
    before = dict(proc.outcomes)
    commit(state)
    assert proc.process_batch(state, batch, WALL + 1000) == []  # redelivery after a restart
    assert dict(proc.outcomes) == before
    assert total(state, kpi.CONTACTS) == 1
    assert total(state, kpi.CSAT_RESPONSES) == 1
    assert not state.has_changes()
    # A redelivery that overlaps new input: old offsets skipped, new ones applied.
    newer = feed.start("c2", WALL - MIN)
    proc.process_batch(state, [*batch, newer], WALL + 2000)
    assert total(state, kpi.CONTACTS) == 2
    assert state.offsets[I_TOPIC] == newer.offset


def test_offsets_are_per_topic() -> None:
    proc, state, feed = make()
    proc.process_batch(state, [InputMessage(I_TOPIC, 10, None, feed.start("c1", WALL - MIN).value)], WALL)
    survey = feed.survey("c1", WALL - MIN)
    assert survey.offset == 0
    proc.process_batch(state, [survey], WALL)
    assert total(state, kpi.CSAT_RESPONSES) == 1
    assert state.offsets == {I_TOPIC: 10, S_TOPIC: 0}


# -- rejects -------------------------------------------------------------------------------------
def test_rejects_become_dead_letters_and_processing_continues() -> None:
    proc, state, feed = make()
    bad_survey = feed.raw(
        S_TOPIC, orjson.dumps({"event_id": "s", "contact_id": "c", "metric": "csat", "score": 9})
    )
    msgs = [
        feed.raw(I_TOPIC, b"{broken"),
        feed.start("c1", WALL - MIN),
        feed.raw(I_TOPIC, None),
        feed.start("c2", WALL - MIN, channel="fax"),
        bad_survey,
        feed.start("c3", WALL + HOUR),  # beyond the 5 minute skew
        feed.survey("c1", WALL - MIN),
    ]
    dead = proc.process_batch(state, msgs, WALL)
    assert [d.reason for d in dead] == [
        "invalid_json",
        "empty_value",
        "unknown_channel",
        "out_of_range:score",
        "future_timestamp",
    ]
    first = dead[0]
    assert isinstance(first, DeadLetter)
    assert (first.topic, first.partition, first.offset, first.key, first.value) == (
        I_TOPIC,
        3,
        0,
        b"k",
        b"{broken",
    )
    assert first.detail
    assert (
        dead[3].topic == S_TOPIC and dead[3].value == bad_survey.value and dead[3].offset == bad_survey.offset
    )
    assert dead[2].key == b"c2"
    assert proc.outcomes == Counter(
        {
            (I_TOPIC, "rejected"): 4,
            (S_TOPIC, "rejected"): 1,
            (I_TOPIC, "accepted"): 1,
            (S_TOPIC, "accepted"): 1,
        }
    )
    assert total(state, kpi.CONTACTS) == 1
    assert set(state.contacts) == {"c1"}
    assert len(state.dedup) == 2  # rejects are not remembered


def test_future_skew_from_settings() -> None:
    proc, state, feed = make(max_future_skew="1m")
    dead = proc.process_batch(state, [feed.start("c1", WALL + MIN), feed.start("c2", WALL + MIN + 1)], WALL)
    assert [d.reason for d in dead] == ["future_timestamp"]
    assert total(state, kpi.CONTACTS) == 1


def test_label_length_from_settings() -> None:
    proc, state, feed = make(max_label_length=8)
    dead = proc.process_batch(state, [feed.start("c1", WALL - MIN, queue="q" * 9)], WALL)
    assert [d.reason for d in dead] == ["invalid_length:queue"]


def test_configured_topic_names() -> None:
    proc, state, _ = make(topic_interactions="a.in", topic_surveys="b.in")
    body = {"event_id": "e", "contact_id": "c", "metric": "nps", "score": 9, "timestamp": WALL, "queue": "q"}
    proc.process_batch(state, [InputMessage("b.in", 0, None, orjson.dumps({**body, "channel": "web"}))], WALL)
    assert proc.outcomes == Counter({("b.in", "accepted"): 1})
    assert total(state, kpi.NPS_PROMOTERS, ("q", "web")) == 1


# -- late events ------------------------------------------------------------------------------------
def test_late_events_counted_as_late() -> None:
    proc, state, feed = make()
    edge = WALL - RETENTION
    msgs = [
        feed.start("c1", edge),  # exactly at the limit: still accepted
        feed.start("c2", edge - 1),
        feed.survey("c3", edge - 1, queue="q", channel="web"),
        feed.start("c4", WALL - 23 * HOUR),
    ]
    assert proc.process_batch(state, msgs, WALL) == []
    assert proc.outcomes == Counter({(I_TOPIC, "accepted"): 2, (I_TOPIC, "late"): 1, (S_TOPIC, "late"): 1})
    assert total(state, kpi.CONTACTS) == 2
    assert "c2" not in state.contacts
    assert len(state.dedup) == 2


def test_late_limit_follows_longest_window_and_bucket() -> None:
    proc, state, feed = make(windows="5m,1h", bucket_size="5m")
    msgs = [feed.start("c1", WALL - HOUR - 5 * MIN), feed.start("c2", WALL - HOUR - 5 * MIN - 1)]
    proc.process_batch(state, msgs, WALL)
    assert proc.outcomes == Counter({(I_TOPIC, "accepted"): 1, (I_TOPIC, "late"): 1})
    assert list(state.buckets) == [(WALL - HOUR - 5 * MIN) // 300_000 * 300]


def test_event_clock_late_relative_to_newest_event() -> None:
    proc, state, feed = make(clock="event", windows="1h")
    replay = WALL - 30 * 24 * HOUR  # a month-old replay: wall clock is irrelevant
    proc.process_batch(state, [feed.start("c1", replay)], WALL)
    proc.process_batch(
        state, [feed.start("c2", replay - HOUR - MIN), feed.start("c3", replay - HOUR - MIN - 1)], WALL
    )
    assert proc.outcomes == Counter({(I_TOPIC, "accepted"): 2, (I_TOPIC, "late"): 1})
    assert proc.reference_now_ms(WALL) == replay


# -- tick: expiry -------------------------------------------------------------------------------------
def test_bucket_expiry() -> None:
    proc, state, feed = make(windows="15m,1h")
    retention = HOUR + MIN
    msgs = [feed.start("c1", WALL - 50 * MIN), feed.start("c2", WALL - 10 * MIN)]
    proc.process_batch(state, msgs, WALL)
    commit(state)
    old, new = bucket_of(WALL - 50 * MIN), bucket_of(WALL - 10 * MIN)
    # The old bucket survives while any part of it can still be in the longest window.
    proc.tick(state, old * 1000 + retention)
    assert old in state.buckets
    proc.tick(state, old * 1000 + retention + 1000)
    assert old not in state.buckets
    assert new in state.buckets
    assert f"b:{old}" in state.deleted_keys
    assert state.has_changes()
    hour = old - old % 3600
    assert state.hour_versions[hour] >= 2
    log = commit(state)
    assert (3, f"b:{old}".encode(), [state.generation, state.sequence, None]) in log.sent


def test_contact_expiry() -> None:
    proc, state, feed = make(contact_ttl="1h")
    proc.process_batch(
        state,
        [
            feed.start("old", WALL - 2 * HOUR),
            feed.start("busy", WALL - 2 * HOUR),
            feed.start("new", WALL - MIN),
        ],
        WALL,
    )
    proc.process_batch(state, [feed.end("busy", WALL - 10 * MIN)], WALL)  # refreshes its newest time
    commit(state)
    proc.tick(state, WALL)
    assert set(state.contacts) == {"busy", "new"}
    assert [k for k in state.deleted_keys if k.startswith("c:")] == ["c:old"]
    proc.tick(state, WALL + HOUR - 5 * MIN)  # new: newest event WALL - 1m, still within the TTL
    assert "new" in state.contacts
    proc.tick(state, WALL + HOUR)  # both now older than the 1h TTL
    assert state.contacts == {}
    assert sorted(k for k in state.deleted_keys if k.startswith("c:")) == ["c:busy", "c:new", "c:old"]


def test_contact_waiting_for_start_is_not_expired_before_release() -> None:
    proc, state, feed = make(contact_ttl="1m", join_grace="10m", windows="15m")
    proc.process_batch(state, [feed.survey("c1", WALL - 5 * MIN)], WALL)
    proc.tick(state, WALL + 5 * MIN)  # past the TTL, within the grace
    assert state.contacts["c1"].pending
    proc.tick(state, WALL + 10 * MIN)
    assert total(state, kpi.CSAT_RESPONSES, (UNKNOWN, UNKNOWN)) == 1
    proc.tick(state, WALL + 11 * MIN)
    assert "c1" not in state.contacts


def test_dedup_expiry_by_horizon() -> None:
    proc, state, feed = make(dedup_horizon="1h")
    first = feed.survey("c1", WALL - MIN, event_id="x", queue="q", channel="web")
    proc.process_batch(state, [first], WALL)
    commit(state)
    assert len(state.dedup_batches) == 1
    proc.tick(state, WALL + HOUR - 1)
    assert state.dedup  # still remembered: a copy is a duplicate
    proc.process_batch(
        state, [feed.survey("c1", WALL - MIN, event_id="x", queue="q", channel="web")], WALL + HOUR - 1
    )
    assert proc.outcomes[(S_TOPIC, "duplicate")] == 1
    proc.tick(state, WALL + HOUR + 1)
    assert state.dedup == {}
    assert not state.dedup_batches
    assert state.deleted_keys and state.deleted_keys[-1].startswith("d:")


def test_dedup_horizon_counts_from_when_the_id_was_seen() -> None:
    """A retried event stamped hours ago (still inside the 24h window) stays a duplicate."""
    proc, state, feed = make(dedup_horizon="1h")
    stamp = WALL - 5 * HOUR
    proc.process_batch(state, [feed.survey("c1", stamp, event_id="x", queue="q", channel="web")], WALL)
    commit(state)
    proc.tick(state, WALL + 5_000)
    proc.process_batch(
        state, [feed.survey("c1", stamp, event_id="x", queue="q", channel="web")], WALL + 6_000
    )
    assert proc.outcomes[(S_TOPIC, "duplicate")] == 1
    assert total(state, kpi.CSAT_RESPONSES) == 1


def test_dedup_expiry_by_size_drops_whole_oldest_batches() -> None:
    proc, state, feed = make(dedup_max_ids=1000)
    batches = []
    for b in range(3):
        msgs = [
            feed.survey(f"c{b}", WALL - MIN, event_id=f"{b}-{i}", queue="q", channel="web")
            for i in range(600)
        ]
        proc.process_batch(state, msgs, WALL)
        commit(state)
        batches.append({"s" + f"{b}-{i}" for i in range(600)})
    assert len(state.dedup) == 1800
    proc.tick(state, WALL)
    assert set(state.dedup) == batches[2]
    assert len(state.dedup_batches) == 1
    assert total(state, kpi.CSAT_RESPONSES) == 1800


# -- dirty tracking ---------------------------------------------------------------------------------------
def test_has_changes_and_dirty_sets() -> None:
    proc, state, feed = make()
    assert not state.has_changes()
    msg = feed.start("c1", WALL - MIN)
    proc.process_batch(state, [msg], WALL)
    assert state.has_changes()
    assert state.dirty_buckets == {bucket_of(WALL - MIN)}
    assert state.dirty_contacts == {"c1"}
    assert state.new_dedup == ["i" + "i1"]
    log = commit(state)
    assert not state.has_changes()
    keys = [key for _, key, _ in log.sent]
    assert keys[-1] == b"m"  # the commit marker comes last
    assert set(keys) == {
        f"b:{bucket_of(WALL - MIN)}".encode(),
        b"c:c1",
        b"l:queue",  # "billing" admitted under its own name (the label cap)
        b"m",
        f"d:{state.generation}:1".encode(),
    }
    marker = log.sent[-1][2]
    assert marker[2] == {"o": {I_TOPIC: 0}, "w": WALL - MIN}
    # Only rejects, duplicates or redeliveries: nothing to persist in the state.
    dup = InputMessage(I_TOPIC, 5, None, msg.value)
    dead = proc.process_batch(state, [feed.raw(I_TOPIC, b"[]"), dup, msg], WALL)
    assert len(dead) == 1
    assert not state.has_changes()
    proc.tick(state, WALL)
    assert not state.has_changes()


def test_hour_versions_bumped_once_per_batch_per_bucket() -> None:
    proc, state, feed = make()
    hour = bucket_of(WALL - MIN) - bucket_of(WALL - MIN) % 3600
    proc.process_batch(state, [feed.start("a", WALL - MIN), feed.start("b", WALL - MIN)], WALL)
    assert state.hour_versions[hour] == 1
    commit(state)
    proc.process_batch(state, [feed.start("c", WALL - MIN)], WALL)
    assert state.hour_versions[hour] == 2


def test_rebuild_expiry_queues_after_recovery() -> None:
    proc, state, feed = make()
    proc.process_batch(
        state, [feed.start("b", WALL - MIN), feed.start("a", WALL - HOUR), feed.survey("x", WALL)], WALL
    )
    recovered = PartitionState(3, contacts=state.contacts)
    rebuild_expiry_queues(recovered, WALL + 10, GRACE)
    assert [cid for _, cid in recovered.contact_expiry] == ["a", "b", "x"]
    assert list(recovered.pending_expiry) == [(WALL + 10 + GRACE, "x")]
    proc.tick(recovered, WALL + 10 + GRACE)
    assert total(recovered, kpi.CSAT_RESPONSES, (UNKNOWN, UNKNOWN)) == 1


# -- randomized: counts equal an independent computation --------------------------------------------------
QUEUES = ["billing", "claims", "sales"]
CHANNELS = ["voice", "chat", "email"]


def _scenario(
    rng: random.Random,
) -> tuple[list[tuple[str, dict[str, Any]]], dict[tuple[int, str, str], Counter[str]]]:
    """Random contacts as an ordered list of (topic, event), and the counts the contract implies."""
    events: list[tuple[str, dict[str, Any]]] = []
    n = 0

    def eid() -> str:
        nonlocal n
        n += 1
        return f"e{n}"

    plans = []
    for c in range(rng.randint(5, 25)):
        cid = f"c{c}"
        has_start = rng.random() < 0.8
        queue, channel = rng.choice(QUEUES), rng.choice(CHANNELS)
        t0 = WALL - rng.randint(10, 23 * 60) * MIN + rng.randint(0, 59_999)
        contact: list[tuple[str, dict[str, Any]]] = []
        if has_start:
            contact.append(
                (
                    I_TOPIC,
                    {
                        "event_id": eid(),
                        "type": "contact_started",
                        "contact_id": cid,
                        "customer_id": "u",
                        "queue": queue,
                        "channel": channel,
                        "timestamp": t0,
                    },
                )
            )
        transfers = rng.choice([0, 0, 1, 2])
        ended = rng.random() < 0.7
        tail: list[tuple[str, dict[str, Any]]] = []
        for _ in range(transfers):
            tail.append(
                (
                    I_TOPIC,
                    {
                        "event_id": eid(),
                        "type": "contact_transferred",
                        "contact_id": cid,
                        "timestamp": t0 + 1000,
                    },
                )
            )
        end_ts = t0 + rng.randint(1, 20) * MIN
        if ended:
            end = {"event_id": eid(), "type": "contact_ended", "contact_id": cid, "timestamp": end_ts}
            if rng.random() < 0.5:
                end["resolved"] = rng.random() < 0.5
            tail.append((I_TOPIC, end))
        surveys = []
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            metric = rng.choice(["csat", "nps", "ces"])
            body: dict[str, Any] = {
                "event_id": eid(),
                "contact_id": cid,
                "metric": metric,
                "timestamp": end_ts + rng.randint(0, 5) * MIN,
                "score": {"csat": rng.randint(1, 5), "nps": rng.randint(0, 10), "ces": rng.randint(1, 5)}[
                    metric
                ],
            }
            if metric == "ces" and rng.random() < 0.5:
                body["scale"] = "effort_1_5"
            if rng.random() < 0.4:
                body["survey_id"] = f"sv-{cid}-{rng.randint(0, 1)}"
            if rng.random() < 0.2:
                body["queue"] = "vip"
            surveys.append((S_TOPIC, body))
        # Delivery order: transfers before the end (the producer keys by contact_id, so their order is
        # kept), but the start may arrive anywhere, and surveys come from another system: anywhere.
        if has_start and rng.random() < 0.3:
            start_event = contact.pop()
            tail.insert(rng.randint(0, len(tail)), start_event)
        contact += tail
        for survey_event in surveys:
            contact.insert(rng.randint(0, len(contact)), survey_event)
        plans.append((cid, has_start, queue, channel, transfers, ended, end_ts, contact))

    # Interleave contacts, keeping each contact's order.
    queues = [list(plan[-1]) for plan in plans]
    while any(queues):
        q = rng.choice([q for q in queues if q])
        events.append(q.pop(0))

    expected: dict[tuple[int, str, str], Counter[str]] = defaultdict(Counter)
    seen_answers: set[tuple[str, str, str]] = set()
    for cid, has_start, queue, channel, transfers, ended, end_ts, _ in plans:
        q, ch = (queue, channel) if has_start else (UNKNOWN, UNKNOWN)
        if has_start:
            start = next(
                e for t, e in events if e["contact_id"] == cid and e.get("type") == "contact_started"
            )
            expected[(bucket_of(start["timestamp"]), q, ch)]["contacts"] += 1
        if ended:
            end_event = next(
                e for t, e in events if e["contact_id"] == cid and e.get("type") == "contact_ended"
            )
            key = (bucket_of(end_ts), q, ch)
            expected[key]["contacts_ended"] += 1
            expected[key]["transferred_contacts"] += 1 if transfers else 0
            if "resolved" in end_event:
                expected[key]["resolution_reported"] += 1
                expected[key]["resolved"] += int(end_event["resolved"])
    for topic, e in events:  # surveys in delivery order: the first answer per (survey_id, metric) counts
        if topic != S_TOPIC:
            continue
        plan = next(p for p in plans if p[0] == e["contact_id"])
        if "survey_id" in e:
            answer = (e["contact_id"], e["survey_id"], e["metric"])
            if answer in seen_answers:
                continue
            seen_answers.add(answer)
        q = e.get("queue") or (plan[2] if plan[1] else UNKNOWN)
        ch = plan[3] if plan[1] else UNKNOWN
        key = (bucket_of(e["timestamp"]), q, ch)
        metric, score = e["metric"], e["score"]
        expected[key][f"{metric}_responses"] += 1
        if metric == "csat":
            expected[key]["csat_satisfied"] += score >= 4
            expected[key]["csat_score_sum"] += score
        elif metric == "nps":
            category = "promoters" if score >= 9 else "passives" if score >= 7 else "detractors"
            expected[key][f"nps_{category}"] += 1
        else:
            effort = e.get("scale") == "effort_1_5"
            expected[key]["ces_easy"] += (score <= 2) if effort else (score >= 5)
            expected[key]["ces_high_effort"] += (score >= 4) if effort else (score <= 3)
    return events, expected


@pytest.mark.parametrize("seed", range(40))
def test_random_streams_match_independent_counts(seed: int) -> None:
    rng = random.Random(seed)
    events, expected = _scenario(rng)
    proc, state, _ = make()
    offsets = {I_TOPIC: 0, S_TOPIC: 0}
    messages = []
    for topic, event in events:
        messages.append(InputMessage(topic, offsets[topic], None, orjson.dumps(event)))
        offsets[topic] += 1
        if rng.random() < 0.1:  # a producer retry: same event, new offset
            messages.append(InputMessage(topic, offsets[topic], None, orjson.dumps(event)))
            offsets[topic] += 1
    duplicates = len(messages) - len(events)

    position = 0
    previous: list[InputMessage] = []
    while position < len(messages):
        size = rng.randint(1, 12)
        batch = messages[position : position + size]
        if previous and rng.random() < 0.2:  # redelivery of the previous batch (crash before commit ack)
            batch = previous + batch
        assert proc.process_batch(state, batch, WALL) == []
        if rng.random() < 0.5:
            commit(state)
        previous = messages[position : position + size]
        position += size
    proc.tick(state, WALL + GRACE)

    got: dict[tuple[int, str, str], Counter[str]] = defaultdict(Counter)
    for bucket, dims in state.buckets.items():
        for dim, counts in dims.items():
            queue, channel = dim.split("\x1f")
            for index, name in enumerate(kpi.COUNTERS):
                if counts[index]:
                    got[(bucket, queue, channel)][name] += counts[index]
    expected_clean = {k: +v for k, v in expected.items() if +v}
    assert dict(got) == expected_clean
    assert proc.outcomes[(I_TOPIC, "duplicate")] + proc.outcomes[(S_TOPIC, "duplicate")] == duplicates
    accepted = proc.outcomes[(I_TOPIC, "accepted")] + proc.outcomes[(S_TOPIC, "accepted")]
    assert accepted == len(events)
    assert all(not record.pending for record in state.contacts.values())


def test_recovered_bucket_with_older_shorter_layout_is_padded() -> None:
    """Vectors recovered from an older version are shorter; counting into them must not fail."""
    proc, state, feed = make()
    short = [0] * 11
    short[kpi.CONTACTS] = 4
    state.buckets[bucket_of(WALL - MIN)] = {dim_key("billing", "voice"): short}
    proc.process_batch(
        state,
        [feed.start("c1", WALL - 2 * MIN), feed.end("c1", WALL - MIN, resolved=True, handle_seconds=30)],
        WALL,
    )
    counts = state.buckets[bucket_of(WALL - MIN)][dim_key("billing", "voice")]
    assert len(counts) == kpi.N_COUNTERS
    assert counts[kpi.CONTACTS] == 4
    assert counts[kpi.CONTACTS_ENDED] == 1
    assert counts[kpi.RESOLVED] == 1
    assert counts[kpi.HANDLE_SECONDS_SUM] == 30
