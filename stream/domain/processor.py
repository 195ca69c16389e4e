"""The event pipeline for one batch of one partition: validate, dedup, join, bucket.

Pure logic over :class:`stream.domain.state.PartitionState`, with no Faust and no I/O,
so the whole path from raw bytes to counts is unit-testable and benchmarkable on
its own. The Faust agent (:mod:`stream.runtime.app`) feeds it batches and persists what
it changed.

Contact records and customer histories are the typed records of :mod:`stream.domain.records`.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from sys import intern
from typing import Protocol

import msgspec

from stream.config.queues import load_queue_targets
from stream.config.settings import Settings
from stream.config.timeutil import WindowClock
from stream.domain import agents, kpi, records, waits
from stream.domain.events import (
    WAIT_EVENTS,
    AgentState,
    ContactAbandoned,
    ContactAnswered,
    ContactEnded,
    ContactQueued,
    ContactStarted,
    ContactTransferred,
    EventValidator,
    Interaction,
    Rejection,
    Survey,
)
from stream.domain.records import (
    Contact,
    ContactStart,
    CountedWait,
    CustomerContact,
    History,
    Pending,
    PendingEnd,
    PendingSurvey,
    PendingWaits,
)
from stream.domain.state import DIM_SEPARATOR, TRANSITION_MARK, UNKNOWN, PartitionState, dim_key
from stream.domain.waits import Wait, WaitEvent

log = logging.getLogger(__name__)

INTERACTIONS = "i"
SURVEYS = "s"
AGENTS = "a"
#: Contact starts re-keyed by customer_id (the repartition topic), see _apply_customer_contact.
CUSTOMER_CONTACTS = "r"
OTHER = "other"
REPEAT, SWITCH, SAME_REASON = 1, 2, 4
MAX_CONTACTS_PER_CUSTOMER = 16
#: Keys of Processor.wait_anomalies (cx_unmatched_wait_events_total, cx_waits_expired_total).
UNMATCHED, EXPIRED = "unmatched", "expired"
_WAIT_KIND = {ContactQueued: waits.QUEUED, ContactAnswered: waits.ANSWERED, ContactAbandoned: waits.ABANDONED}


class RawMessage(Protocol):
    """What the pipeline reads of a message: aiokafka's ``ConsumerRecord`` has it as is."""

    @property
    def topic(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(slots=True)
class InputMessage:
    """One raw message, for callers without an aiokafka record (replay, tests)."""

    topic: str
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class DeadLetter:
    """A rejected message: original bytes plus why and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str

    def record(self, max_bytes: int) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The dead-letter topic's value and headers (docs/faults.md: ``cx-reason`` ...).

        A copy larger than ``max_bytes`` (``CXSTREAM_DEADLETTER_MAX_BYTES``) would fail to send
        and, redelivered, fail again forever: the head is kept and the header says how big the
        original was.
        """
        value = self.value if self.value is not None else b""
        headers = [
            ("cx-reason", self.reason.encode()),
            ("cx-detail", self.detail.encode(errors="replace")),
            ("cx-source-topic", self.topic.encode()),
            ("cx-source-partition", str(self.partition).encode()),
            ("cx-source-offset", str(self.offset).encode()),
        ]
        if len(value) > max_bytes:
            headers += [("cx-truncated", b"true"), ("cx-original-size", str(len(value)).encode())]
            value = value[:max_bytes]
        return value, headers


@dataclass(slots=True)
class BatchOutcome:
    """What applying a batch produced besides the state it changed (``PartitionState.take_changes``).

    ``forwards``: contact starts re-keyed by customer, ``(customer_id, record bytes)``, for
    ``<app>-customer-contacts``; the live worker sends both lists before the batch's commit
    marker, replay feeds the forwards straight back in.
    """

    dead_letters: list[DeadLetter]
    forwards: list[tuple[str, bytes]]


class Processor:
    """Applies batches of input messages to partition states.

    Holds the settings-derived constants and the in-process outcome counters
    (``cx_events_total``), which the exporter reads at scrape time.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Re-keyed starts of the batch being applied (returned in its BatchOutcome).
        self._forwards: list[tuple[str, bytes]] = []
        self.validator = EventValidator.for_settings(settings)
        self.topic_kind = {
            settings.topic_interactions: INTERACTIONS,
            settings.topic_surveys: SURVEYS,
            settings.topic_agents: AGENTS,
            customer_topic_name(settings): CUSTOMER_CONTACTS,
        }
        #: Per-queue thresholds (CXSTREAM_QUEUES_FILE over the defaults); read when a wait ends.
        self.queues = load_queue_targets(settings)
        self.service_level_policy = settings.service_level_policy
        #: UNMATCHED / EXPIRED -> count, for the wait counters (like ``outcomes``, per process).
        self.wait_anomalies: Counter[str] = Counter()
        self.repeat_horizon_ms = int(settings.repeat_horizon * 1000)
        self.label_team = settings.label_team
        self.label_agent = settings.label_agent
        self.max_label_values = settings.max_label_values
        #: label -> the only values exported under their own name, where configured.
        self.allowed = settings.allowed_label_values
        self.bucket_s = settings.bucket_seconds
        self.bucket_ms = self.bucket_s * 1000
        longest_window_s = max(seconds for _, seconds in settings.window_list)
        #: Event time older than (now - retention) can no longer reach any window.
        self.retention_ms = (longest_window_s + self.bucket_s) * 1000
        self.grace_ms = int(settings.join_grace * 1000)
        self.contact_ttl_ms = int(settings.contact_ttl * 1000)
        self.dedup_horizon_ms = int(settings.dedup_horizon * 1000)
        #: Where windows end (CXSTREAM_CLOCK); advanced by every applied event.
        self.clock = WindowClock(event_time=settings.clock == "event")
        #: (topic, outcome) -> count, for cx_events_total.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        #: Event time before which nothing is counted (set per batch).
        self._late_before = 0

    # -- clock -----------------------------------------------------------------
    def reference_now_ms(self, wall_ms: int) -> int:
        """The 'now' that windows end at (:meth:`WindowClock.now_ms`)."""
        return self.clock.now_ms(wall_ms)

    @property
    def watermark_ms(self) -> int:
        """Newest event time applied over all partitions."""
        return self.clock.watermark_ms

    # -- batch -------------------------------------------------------------------
    def process_batch(
        self, state: PartitionState, messages: Iterable[RawMessage], wall_ms: int
    ) -> list[DeadLetter]:
        """:meth:`apply`, for callers that route no re-keyed starts (tests): the rejects only."""
        return self.apply(state, messages, wall_ms).dead_letters

    def apply(self, state: PartitionState, messages: Iterable[RawMessage], wall_ms: int) -> BatchOutcome:
        """Apply messages (in offset order per topic) to ``state``: the pipeline's one entry."""
        dead: list[DeadLetter] = []
        self._forwards = []
        forwards = self._forwards
        outcomes = self.outcomes
        offsets = state.offsets
        dedup = state.dedup
        validator = self.validator
        late_before = self.reference_now_ms(wall_ms) - self.retention_ms
        self._late_before = late_before
        new_ids: list[str] = []
        new_offsets: list[int] = []
        newest = 0
        for message in messages:
            topic = message.topic
            offset = message.offset
            if offset <= offsets.get(topic, -1):
                continue  # already reflected in recovered state: redelivery after a crash
            offsets[topic] = offset
            kind = self.topic_kind[topic]
            if kind == CUSTOMER_CONTACTS:
                self._apply_customer_message(state, message)
                continue
            event: Interaction | Survey | AgentState | Rejection = (
                validator.interaction(message.value, wall_ms)
                if kind == INTERACTIONS
                else validator.survey(message.value, wall_ms)
                if kind == SURVEYS
                else validator.agent(message.value, wall_ms)
            )
            if isinstance(event, Rejection):
                outcomes[(topic, "rejected")] += 1
                dead.append(
                    DeadLetter(
                        topic,
                        state.partition,
                        offset,
                        message.key,
                        message.value,
                        event.reason,
                        event.detail,
                    )
                )
                continue
            event_key = kind + event.event_id
            first_offset = dedup.get(event_key)
            if first_offset is not None and first_offset != offset:
                outcomes[(topic, "duplicate")] += 1
                continue
            ts = event.ts_ms
            if ts < late_before and kind != AGENTS:  # an agent's state holds until its next event
                outcomes[(topic, "late")] += 1
                if isinstance(event, ContactStarted):
                    # Too old for any window, but still the customer's previous contact
                    # when deciding whether a newer contact is a repeat.
                    self._forward_start(event)
                continue
            dedup[event_key] = offset
            new_ids.append(event_key)
            new_offsets.append(offset)
            if ts > newest:
                newest = ts
            try:
                if isinstance(event, Survey):
                    self._apply_survey(state, event, wall_ms)
                elif isinstance(event, AgentState):
                    self._apply_agent(state, event)
                else:
                    self._apply_interaction(state, event, wall_ms)
            except Exception as exc:  # a bug must cost one event, never the agent
                log.exception("event at %s[%d]@%d could not be applied", topic, state.partition, offset)
                outcomes[(topic, "rejected")] += 1
                dead.append(
                    DeadLetter(
                        topic,
                        state.partition,
                        offset,
                        message.key,
                        message.value,
                        f"processing_error:{type(exc).__name__}",
                        str(exc)[:200],
                    )
                )
                continue
            outcomes[(topic, "accepted")] += 1
        if newest > state.watermark_ms:
            state.watermark_ms = newest
        self.clock.observe(newest)
        if new_ids:
            # The dedup horizon runs from when the ids were seen, not from their event time:
            # a retried event stamped hours ago (still inside a window) must stay a duplicate.
            state.remember_ids(new_ids, new_offsets, max(newest, self.reference_now_ms(wall_ms)))
        return BatchOutcome(dead, forwards)

    # -- interactions ------------------------------------------------------------
    def _contact(self, state: PartitionState, contact_id: str, ts: int) -> Contact:
        record = state.contacts.get(contact_id)
        if record is None:
            record = state.contacts[contact_id] = Contact(newest_ms=ts)
            state.contact_expiry.append((ts, contact_id))
        elif ts > record.newest_ms:
            record.newest_ms = ts
        state.touch_contact(contact_id)
        return record

    # -- labels ---------------------------------------------------------------------
    def _capped(self, state: PartitionState, label: str, value: str) -> str:
        """The value, or 'other': outside the label's allow-list if it has one, else beyond the
        first ``max_label_values`` values this partition has seen (a durable, per-partition cap)."""
        allowed = self.allowed.get(label)
        if allowed is not None:
            return value if value in allowed else OTHER
        return value if state.admit_label(label, value, self.max_label_values) else OTHER

    def dim(
        self,
        state: PartitionState,
        queue: str,
        channel: str,
        team: str | None = None,
        agent: str | None = None,
    ) -> str:
        """Dimension key for the configured label set (queue, channel[, team][, agent])."""
        parts = [self._capped(state, "queue", queue), channel]
        if self.label_team:
            parts.append(self._capped(state, "team", team) if team else UNKNOWN)
        if self.label_agent:
            parts.append(self._capped(state, "agent", agent) if agent else UNKNOWN)
        return intern(dim_key(*parts))  # held by every customer history entry: one copy

    def label_names(self) -> tuple[str, ...]:
        """Label names of a dimension key, in order."""
        return self.settings.label_names

    def _bucket(self, state: PartitionState, ts: int, dim: str) -> kpi.Counts:
        return state.bucket_counts(ts // self.bucket_ms * self.bucket_s, dim)

    def _contact_dim(self, state: PartitionState, record: Contact) -> str:
        return self.dim(state, record.queue or UNKNOWN, record.channel or UNKNOWN, record.team, record.agent)

    def _apply_interaction(self, state: PartitionState, event: Interaction, wall_ms: int) -> None:
        record = self._contact(state, event.contact_id, event.ts_ms)
        if isinstance(event, ContactStarted):
            if record.started_ms is not None:
                return  # a contact is counted once, whatever its number of start events
            record.started_ms = event.ts_ms
            # Labels are shared by many contacts: one interned copy each, not one per
            # contact (a third of a held contact's memory was these few short strings).
            record.queue = intern(event.queue)
            record.channel = intern(event.channel)
            record.customer = event.customer_id
            if event.agent_id is not None:
                record.agent = intern(event.agent_id)
            if event.team is not None:
                record.team = intern(event.team)
            if event.reason is not None:
                record.reason = intern(event.reason)
            self._bucket(state, event.ts_ms, self._contact_dim(state, record))[kpi.CONTACTS] += 1
            self._forward_start(event)
            pending = record.pending
            if pending:
                record.pending = None
                for item in pending:
                    self._apply_pending(state, event.contact_id, record, item)
            if event.contact_id in state.waiting:  # it may have waited under channel 'unknown'
                self._settle_waits(state, event.contact_id, record, wall_ms)
        elif isinstance(event, ContactTransferred):
            record.transfers += 1
            if event.to_queue is not None:
                record.to_queue = intern(event.to_queue)
        elif isinstance(event, ContactEnded):
            if record.ended:
                return
            record.ended = True
            record.ended_ms = event.ts_ms
            end = PendingEnd(event.ts_ms, event.resolved, event.handle_seconds, wall_ms)
            if record.started_ms is not None:
                self._apply_pending(state, event.contact_id, record, end)
            else:
                self._defer(state, event.contact_id, record, end, wall_ms)
            if record.wait_events:
                self._settle_waits(state, event.contact_id, record, wall_ms)
        elif isinstance(event, WAIT_EVENTS):
            wait_event = WaitEvent(
                event.ts_ms,
                _WAIT_KIND[type(event)],
                event.queue if isinstance(event, ContactQueued) else None,
                event.channel,
                event.event_id,
            )
            events = record.wait_events
            if events is None:
                events = record.wait_events = []
            if waits.insert(events, wait_event):
                self._settle_waits(state, event.contact_id, record, wall_ms)

    def _forward_start(self, event: ContactStarted) -> None:
        """Queue the start for the repartition topic keyed by customer_id."""
        if event.customer_id is None:
            return
        start = ContactStart(
            event_id=event.event_id,
            customer=event.customer_id,
            contact_id=event.contact_id,
            ts_ms=event.ts_ms,
            queue=event.queue,
            channel=event.channel,
            reason=event.reason,
            team=event.team,
            agent=event.agent_id,
        )
        self._forwards.append((event.customer_id, records.encoder.encode(start)))

    def _count_end(self, counts: kpi.Counts, transfers: int, end: PendingEnd) -> None:
        counts[kpi.CONTACTS_ENDED] += 1
        if transfers:
            counts[kpi.TRANSFERRED_CONTACTS] += 1
        resolved, handle = end.resolved, end.handle_seconds
        if resolved is not None:
            counts[kpi.RESOLUTION_REPORTED] += 1
            if resolved:
                counts[kpi.RESOLVED] += 1
        if handle is not None:
            counts[kpi.HANDLE_SECONDS_SUM] += handle
            counts[kpi.HANDLE_COUNT] += 1

    # -- surveys ------------------------------------------------------------------
    def _apply_survey(self, state: PartitionState, event: Survey, wall_ms: int) -> None:
        record = self._contact(state, event.contact_id, event.ts_ms)
        if event.survey_id is not None:
            answered = f"{event.survey_id}:{event.metric}"
            seen = record.surveys
            if seen is None:
                seen = record.surveys = []
            elif answered in seen:
                return  # one response per (survey_id, metric) counts
            seen.append(answered)
        item = PendingSurvey(
            event.ts_ms,
            event.metric,
            event.score,
            event.scale,
            wall_ms,
            event.queue,
            event.channel,
            event.team,
            event.agent_id,
        )
        if record.started_ms is not None or (event.queue is not None and event.channel is not None):
            self._apply_pending(state, event.contact_id, record, item)
        else:
            self._defer(state, event.contact_id, record, item, wall_ms)

    # -- joins: events waiting for their contact_started ------------------------------
    def _defer(
        self,
        state: PartitionState,
        contact_id: str,
        record: Contact,
        item: Pending,
        wall_ms: int,
    ) -> None:
        if record.pending is None:
            record.pending = [item]
        else:
            record.pending.append(item)
        state.pending_expiry.append((wall_ms + self.grace_ms, contact_id))

    def _apply_pending(self, state: PartitionState, contact_id: str, record: Contact, item: Pending) -> None:
        """Count a survey, end or waits, attributed to the contact's queue/channel (or 'unknown')."""
        if isinstance(item, PendingEnd):
            self._count_end(
                self._bucket(state, item.ts_ms, self._contact_dim(state, record)), record.transfers, item
            )
        elif isinstance(item, PendingWaits):
            self._settle_waits(state, contact_id, record, item.received_ms, final=True)
        else:
            dim = self.dim(
                state,
                item.queue or record.queue or UNKNOWN,
                item.channel or record.channel or UNKNOWN,
                item.team or record.team,
                item.agent or record.agent,
            )
            kpi.add_survey(self._bucket(state, item.ts_ms, dim), item.metric, item.score, item.scale)

    # -- waits in queue (contract v2) ---------------------------------------------------
    def _settle_waits(
        self, state: PartitionState, contact_id: str, record: Contact, wall_ms: int, final: bool = False
    ) -> None:
        """Re-pair the contact's wait events and count what changed (stream.domain.waits).

        The waiting index (live gauges) follows the open wait at once. Ended waits are
        counted as soon as their channel is known (on the event, or from the contact's
        start); otherwise they wait for the start like surveys do, until the join grace
        ends (``final``) and they count under channel ``unknown``. A wait ending before
        the oldest bucket still kept is neither counted nor uncounted.
        """
        events = record.wait_events
        if not events:
            return
        pairing = _pairing(record)
        grew = pairing.unmatched - record.wait_unmatched
        if grew > 0:
            self.wait_anomalies[UNMATCHED] += grew
        record.wait_unmatched = pairing.unmatched
        open_wait = pairing.open
        if open_wait is None:
            state.waiting.pop(contact_id, None)
        else:
            state.waiting[contact_id] = (open_wait.queued_ms, self._live_dim(state, open_wait, record))
        state.touch_contact(contact_id)

        ended = [w for w in pairing.waits if w.outcome == "answered" or w.outcome == "abandoned"]
        counted = record.counted_waits or []
        new = [w for w in ended if not any(c.wait == w for c in counted)]
        if not final and record.started_ms is None and any(w.channel is None for w in new):
            if not any(isinstance(item, PendingWaits) for item in record.pending or ()):
                self._defer(state, contact_id, record, PendingWaits(wall_ms, events[-1].ts_ms), wall_ms)
            return
        late_before = self._late_before
        kept: list[CountedWait] = []
        for item in counted:
            if item.wait in ended:
                kept.append(item)
            elif item.wait.ended_ms is not None and item.wait.ended_ms >= late_before:
                self._count_wait(state, item, -1)
        for wait in new:
            if wait.ended_ms is not None and wait.ended_ms >= late_before:
                kept.append(self._count_wait(state, self._as_counted(state, wait, record), 1))
        record.counted_waits = kept or None

    def _as_counted(self, state: PartitionState, wait: Wait, record: Contact) -> CountedWait:
        """How an ended wait counts: its dimension and, by its queue's targets, the two flags."""
        target = self.queues.of(wait.queue)
        seconds = wait.seconds or 0.0
        channel = wait.channel or record.channel or UNKNOWN
        return CountedWait(
            wait,
            self.dim(state, wait.queue, channel, record.team, record.agent),
            within_threshold=wait.outcome == "answered" and seconds <= target.service_level_threshold_s,
            short_abandon=wait.outcome == "abandoned" and seconds < target.short_abandon_s,
        )

    def _count_wait(self, state: PartitionState, item: CountedWait, sign: int) -> CountedWait:
        """Add (sign 1) or take back (-1) an ended wait's counts at its end's event time."""
        wait = item.wait
        assert wait.ended_ms is not None
        counts = self._bucket(state, wait.ended_ms, item.dim)
        counts[kpi.WAITS_ENDED] += sign
        if wait.outcome == "answered":
            counts[kpi.ANSWERED_CONTACTS] += sign
            counts[kpi.ANSWER_WAIT_SECONDS] += sign * (wait.seconds or 0.0)
            if item.within_threshold:
                counts[kpi.ANSWERED_WITHIN_THRESHOLD] += sign
        else:
            counts[kpi.ABANDONED_CONTACTS] += sign
            if item.short_abandon:
                counts[kpi.SHORT_ABANDONED_CONTACTS] += sign
        return item

    def _live_dim(self, state: PartitionState, wait: Wait, record: Contact) -> str:
        """The queue x channel a waiting contact shows under (cx_contacts_waiting)."""
        return dim_key(self._capped(state, "queue", wait.queue), wait.channel or record.channel or UNKNOWN)

    def recovered(self, state: PartitionState, wall_ms: int) -> None:
        """After recovery: rebuild the in-memory queues and the waiting index from the records."""
        rebuild_expiry_queues(state, wall_ms, self.grace_ms)
        state.waiting.clear()
        for contact_id, record in state.contacts.items():
            if record.wait_events:
                open_wait = _pairing(record).open
                if open_wait is not None:
                    state.waiting[contact_id] = (
                        open_wait.queued_ms,
                        self._live_dim(state, open_wait, record),
                    )

    # -- agents (cx.agents) -----------------------------------------------------------
    def _apply_agent(self, state: PartitionState, event: AgentState) -> None:
        """An agent's state from its event time on (stream.domain.agents)."""
        team = self._capped(state, "team", event.team) if event.team is not None else None
        change = agents.AgentChange(event.ts_ms, event.state, team, event.event_id)
        record = state.agents.get(event.agent_id)
        if record is None:
            record = state.agents[event.agent_id] = agents.AgentRecord([])
        if agents.insert(record, change):
            if event.queues is not None and record.changes[-1] is change:
                record.queues = list(event.queues)
            state.dirty_agents.add(event.agent_id)

    def _expire_agents(self, state: PartitionState, now: int) -> None:
        """Trim agent histories to the retention; forget agents offline for longer than the
        contact TTL (about once a minute: a walk over every agent)."""
        keep_from = now - self.retention_ms
        gone_before = now - self.contact_ttl_ms
        for agent_id, record in list(state.agents.items()):
            newest = record.changes[-1] if record.changes else None
            if newest is None or (newest.state == "offline" and newest.ts_ms < gone_before):
                state.drop_agent(agent_id)
            elif agents.trim(record, keep_from):
                state.dirty_agents.add(agent_id)

    # -- customers: repeat contacts and channel switches --------------------------------
    def _apply_customer_message(self, state: PartitionState, message: RawMessage) -> None:
        """A contact start re-keyed by customer_id: decide repeat / channel switch."""
        topic = message.topic
        try:
            start = records.start_decoder.decode(message.value or b"")
        except msgspec.DecodeError:
            self.outcomes[(topic, "rejected")] += 1
            return
        event_key = CUSTOMER_CONTACTS + start.event_id
        customer_id, ts = start.customer, start.ts_ms
        if event_key in state.dedup:
            self.outcomes[(topic, "duplicate")] += 1  # re-forwarded after a crash
            return
        state.remember_ids([event_key], [message.offset], max(ts, self.watermark_ms))
        self.outcomes[(topic, "accepted")] += 1
        dim = self.dim(state, start.queue, start.channel, start.team, start.agent)
        reason = intern(start.reason) if start.reason is not None else None
        entry = CustomerContact(ts, intern(start.channel), dim, reason, start.contact_id)
        history: History | None = state.customers.get(customer_id)
        is_new = history is None
        if history is None:
            history = []
        position = len(history)
        key = (ts, start.contact_id)
        while position and (history[position - 1].ts_ms, history[position - 1].contact_id) > key:
            position -= 1
        history.insert(position, entry)
        if ts >= self._late_before:
            # The repeat ratio's denominator, counted here beside its numerator: the
            # contact's own partition (cx_contacts) may belong to another worker.
            self._bucket(state, ts, dim)[kpi.REPEAT_CHECKED_CONTACTS] += 1
        self._classify(state, history, position)
        if position + 1 < len(history):
            self._classify(state, history, position + 1)  # it has a new, closer predecessor
        # An entry matters while a start that is not yet late could still follow it within
        # the horizon (starts arrive out of order across partitions), so trim by that bound.
        cutoff = self._late_before - self.repeat_horizon_ms
        while len(history) > MAX_CONTACTS_PER_CUSTOMER or (history and history[0].ts_ms < cutoff):
            history.pop(0)
        if not history:
            if customer_id in state.customers:
                state.drop_customer(customer_id)
            return
        state.customers[customer_id] = history
        state.customers.note_contact(customer_id, history[-1].ts_ms, is_new)
        state.dirty_customers.add(customer_id)

    def _classify(self, state: PartitionState, history: History, index: int) -> None:
        """(Re)decide whether history[index] is a repeat / switch; count only the difference."""
        entry = history[index]
        ts, channel, dim, reason = entry.ts_ms, entry.channel, entry.dim, entry.reason
        flags, previous_channel = 0, None
        if index > 0:
            previous = history[index - 1]
            if ts - previous.ts_ms <= self.repeat_horizon_ms:
                flags = REPEAT
                previous_channel = previous.channel
                if previous_channel != channel:
                    flags |= SWITCH
                if reason is not None and reason == previous.reason:
                    flags |= SAME_REASON
        old_flags, old_previous = entry.flags, entry.previous_channel
        if flags == old_flags and previous_channel == old_previous:
            return
        entry.flags, entry.previous_channel = flags, previous_channel
        if ts < self._late_before:
            return  # outside every window: history only, nothing to count
        counts = self._bucket(state, ts, dim)
        for bit, index_ in (
            (REPEAT, kpi.REPEAT_CONTACTS),
            (SWITCH, kpi.CHANNEL_SWITCHES),
            (SAME_REASON, kpi.SAME_REASON_REPEATS),
        ):
            counts[index_] += bool(flags & bit) - bool(old_flags & bit)
        if old_flags & SWITCH:
            self._bucket(state, ts, transition_key(str(old_previous), channel))[kpi.CHANNEL_SWITCHES] -= 1
        if flags & SWITCH:
            self._bucket(state, ts, transition_key(str(previous_channel), channel))[kpi.CHANNEL_SWITCHES] += 1

    # -- time-driven work ----------------------------------------------------------
    def tick(self, state: PartitionState, wall_ms: int) -> None:
        """Release joins past their grace, expire old buckets, contacts and dedup ids."""
        now = self.reference_now_ms(wall_ms)
        pending = state.pending_expiry
        while pending and pending[0][0] <= wall_ms:
            _, contact_id = pending.popleft()
            record = state.contacts.get(contact_id)
            if record is None or not record.pending or record.started_ms is not None:
                continue
            still: list[Pending] = []
            for item in record.pending:
                if item.received_ms + self.grace_ms <= wall_ms:
                    self._apply_pending(state, contact_id, record, item)
                else:
                    still.append(item)
            record.pending = still or None
            state.touch_contact(contact_id)

        oldest_bucket = (now - self.retention_ms) // 1000
        for bucket_start in [b for b in state.buckets if b < oldest_bucket]:
            state.drop_bucket(bucket_start)

        expiry = state.contact_expiry
        cutoff = now - self.contact_ttl_ms
        while expiry and expiry[0][0] < cutoff:
            _, contact_id = expiry.popleft()
            record = state.contacts.get(contact_id)
            if record is None:
                continue
            if record.newest_ms >= cutoff or record.pending:
                expiry.append((max(record.newest_ms, cutoff + 1), contact_id))
                continue
            if contact_id in state.waiting:
                self.wait_anomalies[EXPIRED] += 1  # never answered nor abandoned: not waiting forever
            state.drop_contact(contact_id)

        for customer_id in state.customers.expired(now - self.repeat_horizon_ms - self.retention_ms):
            state.drop_customer(customer_id)

        if state.agents and now - state.agents_checked_ms >= 60_000:
            state.agents_checked_ms = now
            self._expire_agents(state, now)

        state.expire_dedup(horizon_start_ms=now - self.dedup_horizon_ms, max_ids=self.settings.dedup_max_ids)


def _pairing(record: Contact) -> waits.Pairing:
    """The contact's waits from its wait events and its end (which ends an open wait)."""
    events = record.wait_events or []
    if record.ended_ms is not None:
        events = [*events, WaitEvent(record.ended_ms, waits.ENDED)]
    return waits.pair(events)


def customer_topic_name(settings: Settings) -> str:
    """The internal repartition topic: contact starts keyed by customer_id."""
    return f"{settings.app_id}-customer-contacts"


def customer_partition(customer_key: bytes, partitions: int) -> int:
    """The customer-topic partition of a customer: CRC-32 of the key modulo the partitions.

    Any fixed hash keeps a customer's contacts together; CRC-32 is computed in C,
    whereas aiokafka's murmur2 (Kafka's default partitioner) is a Python loop that
    cost ~5 % of the worker. Only cxstream writes this internal topic, so it need
    not match other producers' partitioning.
    """
    return zlib.crc32(customer_key) % partitions


def transition_key(from_channel: str, to_channel: str) -> str:
    """Dimension key of a from -> to channel-switch count (never a label value)."""
    return f"{TRANSITION_MARK}{from_channel}{DIM_SEPARATOR}{to_channel}"


def rebuild_expiry_queues(state: PartitionState, wall_ms: int, grace_ms: int) -> None:
    """After recovery, rebuild the in-memory expiry queues from contact and customer records."""
    state.customers.rebuild_index()
    contacts = sorted(state.contacts.items(), key=lambda item: item[1].newest_ms)
    state.contact_expiry = deque((record.newest_ms, cid) for cid, record in contacts)
    state.pending_expiry = deque((wall_ms + grace_ms, cid) for cid, record in contacts if record.pending)


__all__ = [
    "DeadLetter",
    "InputMessage",
    "Processor",
    "RawMessage",
    "customer_partition",
    "rebuild_expiry_queues",
]
