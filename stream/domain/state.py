"""Per-partition processing state: event-time buckets, contacts, dedup memory.

One :class:`PartitionState` holds everything derived from one partition number
of the (co-partitioned) input topics. It is plain Python containers holding counter
vectors and the typed records of :mod:`stream.domain.records`, so the hot path is dict
and attribute operations only; :mod:`stream.runtime.commitlog` makes it durable by
writing the keys a batch touched, plus a commit marker, to a Faust changelog.

Buckets are keyed by their event-time start (epoch seconds) and hold one
counter vector (:mod:`stream.domain.kpi`) per dimension key ``"queue\\x1fchannel"``.
A rolling window is a sum of buckets at read time (:mod:`stream.query.windows`); we
expire buckets ourselves instead of using Faust's windowed tables, which close
windows by wall clock and stop expiring after recovery (faust-streaming #385, #193).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stream.domain.agents import AgentRecord
from stream.domain.customer_store import DictCustomerStore
from stream.domain.kpi import N_COUNTERS, Counts, upgrade_counts
from stream.domain.records import Contact

DIM_SEPARATOR = "\x1f"
UNKNOWN = "unknown"

# Changelog key prefixes (see stream.runtime.commitlog).
BUCKET_PREFIX = "b:"
CONTACT_PREFIX = "c:"
DEDUP_PREFIX = "d:"
CUSTOMER_PREFIX = "u:"
LABELS_PREFIX = "l:"
AGENT_PREFIX = "a:"
#: Dimension keys of channel-transition counts start with this (labels never contain it).
TRANSITION_MARK = "\x1e"
MARKER_KEY = "m"


def dim_key(*labels: str) -> str:
    """Dimension key of a counter vector: queue, channel [, team][, agent] joined by a unit separator."""
    return DIM_SEPARATOR.join(labels)


def split_dim_key(key: str) -> list[str]:
    """Inverse of :func:`dim_key`."""
    return key.split(DIM_SEPARATOR)


@dataclass(slots=True)
class DedupBatch:
    """The event ids first seen in one committed batch, kept to expire them together."""

    key: str
    newest_ms: int
    ids: list[str]


@dataclass(slots=True)
class BatchChanges:
    """What one batch (or tick) changed, taken from the state by :meth:`PartitionState.take_changes`.

    The one place a batch's bookkeeping ends: the live worker persists it
    (:func:`stream.runtime.commitlog.changelog_records`), replay drops it; both get the same
    state afterwards (dedup batches registered for expiry, change sets cleared).
    """

    generation: int
    sequence: int
    buckets: set[int]
    contacts: set[str]
    customers: set[str]
    labels: set[str]
    agents: set[str]
    deleted_keys: list[str]
    #: The event ids first seen in this batch, as one unit of dedup expiry (None: no new ids).
    dedup: DedupBatch | None


@dataclass
class PartitionState:
    """All state derived from one partition number of the input topics."""

    partition: int
    #: Last applied input offset per topic; events at or below it are already reflected.
    offsets: dict[str, int] = field(default_factory=dict)
    #: bucket start (epoch s) -> dimension key -> counter vector.
    buckets: dict[int, dict[str, Counts]] = field(default_factory=dict)
    #: contact_id -> its record (stream.domain.records.Contact).
    contacts: dict[str, Contact] = field(default_factory=dict)
    #: customer_id -> recent contacts, oldest first (see stream.domain.processor).
    #: A DictCustomerStore or RocksCustomerStore (stream.domain.customer_store).
    customers: Any = field(default_factory=DictCustomerStore)
    #: "<topic code><event_id>" -> input offset where it was first seen.
    dedup: dict[str, int] = field(default_factory=dict)
    dedup_batches: deque[DedupBatch] = field(default_factory=deque)
    #: (event time ms, contact_id), oldest first: candidates for contact expiry.
    contact_expiry: deque[tuple[int, str]] = field(default_factory=deque)
    #: (wall ms when the grace ends, contact_id): joins waiting for contact_started.
    pending_expiry: deque[tuple[int, str]] = field(default_factory=deque)
    #: contact_id -> (queued at, event time ms; "queue\x1fchannel") of every contact waiting now:
    #: the live queue gauges. Derived from the contact records (rebuilt after recovery).
    waiting: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: agent_id -> its recent state changes (stream.domain.agents), for the cx.agents topic.
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    #: When agent histories were last trimmed (in memory: trimming is idempotent).
    agents_checked_ms: int = 0
    #: Newest event time applied, for event-clock windows.
    watermark_ms: int = 0
    #: Bumped per bucket-hour on change, so window readers can cache hourly sums.
    hour_versions: dict[int, int] = field(default_factory=dict)
    #: The same per quarter hour (stream.query.windows.BLOCK), for the hours still filling.
    block_versions: dict[int, int] = field(default_factory=dict)
    #: Bumped with any hour version: window readers cache a partition's totals until it moves.
    buckets_version: int = 0
    #: label -> the values this partition exports under their own name, in the order it
    #: first saw them (the cardinality cap, see :meth:`admit_label`); durable like the rest.
    label_values: dict[str, list[str]] = field(default_factory=dict)
    _label_index: dict[str, set[str]] = field(default_factory=dict, repr=False, compare=False)

    # -- what the current batch changed (drained by commitlog) --------------
    generation: int = field(default_factory=lambda: secrets.randbits(48))
    sequence: int = 0
    dirty_buckets: set[int] = field(default_factory=set)
    dirty_contacts: set[str] = field(default_factory=set)
    dirty_customers: set[str] = field(default_factory=set)
    dirty_labels: set[str] = field(default_factory=set)
    dirty_agents: set[str] = field(default_factory=set)
    new_dedup: list[str] = field(default_factory=list)
    new_dedup_newest_ms: int = 0
    deleted_keys: list[str] = field(default_factory=list)

    def bucket_counts(self, bucket_start: int, dim: str) -> Counts:
        """Counter vector for (bucket, dimension), created on first use and marked dirty."""
        dims = self.buckets.get(bucket_start)
        if dims is None:
            dims = self.buckets[bucket_start] = {}
        counts = dims.get(dim)
        if counts is None:
            counts = dims[dim] = [0] * N_COUNTERS
        elif len(counts) < N_COUNTERS:  # recovered from an older, shorter counter layout
            upgrade_counts(counts)
        if bucket_start not in self.dirty_buckets:
            self.dirty_buckets.add(bucket_start)
            self.bucket_changed(bucket_start)
        return counts

    def bucket_changed(self, bucket_start: int) -> None:
        """Invalidate cached sums that include this bucket (its hour's, and the partition's)."""
        hour = bucket_start - bucket_start % 3600
        self.hour_versions[hour] = self.hour_versions.get(hour, 0) + 1
        block = bucket_start - bucket_start % 900
        self.block_versions[block] = self.block_versions.get(block, 0) + 1
        self.buckets_version += 1

    def admit_label(self, label: str, value: str, cap: int) -> bool:
        """Is ``value`` exported under its own name? Yes if admitted before, or now while the
        label has fewer than ``cap`` values in this partition.

        Kept per partition and persisted, so the answer depends only on the partition's
        input: the same on any number of workers and after any restart.
        """
        index = self._label_index.get(label)
        if index is None:
            index = self._label_index[label] = set(self.label_values.setdefault(label, []))
        if value in index:
            return True
        values = self.label_values[label]
        if len(values) >= cap:
            return False
        values.append(value)
        index.add(value)
        self.dirty_labels.add(label)
        return True

    def restore_label_values(self, label: str, values: list[str]) -> None:
        """Recovery: the admitted values of ``label`` as the changelog holds them."""
        self.label_values[label] = list(values)
        self._label_index.pop(label, None)

    def touch_contact(self, contact_id: str) -> None:
        """Mark a contact record as changed in this batch."""
        self.dirty_contacts.add(contact_id)

    def drop_bucket(self, bucket_start: int) -> None:
        """Expire a bucket (persisted as a tombstone)."""
        self.buckets.pop(bucket_start, None)
        self.dirty_buckets.discard(bucket_start)
        self.bucket_changed(bucket_start)
        self.deleted_keys.append(f"{BUCKET_PREFIX}{bucket_start}")

    def drop_contact(self, contact_id: str) -> None:
        """Expire a contact record (persisted as a tombstone)."""
        self.contacts.pop(contact_id, None)
        self.waiting.pop(contact_id, None)
        self.dirty_contacts.discard(contact_id)
        self.deleted_keys.append(f"{CONTACT_PREFIX}{contact_id}")

    def drop_customer(self, customer_id: str) -> None:
        """Expire a customer's contact history (persisted as a tombstone)."""
        self.customers.pop(customer_id, None)
        self.dirty_customers.discard(customer_id)
        self.deleted_keys.append(f"{CUSTOMER_PREFIX}{customer_id}")

    def drop_agent(self, agent_id: str) -> None:
        """Forget an agent (persisted as a tombstone)."""
        self.agents.pop(agent_id, None)
        self.dirty_agents.discard(agent_id)
        self.deleted_keys.append(f"{AGENT_PREFIX}{agent_id}")

    def remember_ids(self, ids: list[str], offsets: list[int], newest_ms: int) -> None:
        """Record first-seen event ids of this batch (already checked as new)."""
        dedup = self.dedup
        for event_key, offset in zip(ids, offsets, strict=True):
            dedup[event_key] = offset
        self.new_dedup.extend(ids)
        if newest_ms > self.new_dedup_newest_ms:
            self.new_dedup_newest_ms = newest_ms

    def expire_dedup(self, *, horizon_start_ms: int, max_ids: int) -> None:
        """Forget whole dedup batches older than the horizon or beyond the size bound."""
        batches = self.dedup_batches
        dedup = self.dedup
        while batches and (batches[0].newest_ms < horizon_start_ms or len(dedup) > max_ids):
            batch = batches.popleft()
            for event_key in batch.ids:
                dedup.pop(event_key, None)
            self.deleted_keys.append(batch.key)

    def take_changes(self) -> BatchChanges:
        """End the batch: return what it changed and start the next one with empty change sets.

        New event ids become one :class:`DedupBatch` (expired together by
        :meth:`expire_dedup`), so dedup memory expires the same way live and in replay.
        """
        self.sequence += 1
        dedup = None
        if self.new_dedup:
            dedup = DedupBatch(
                f"{DEDUP_PREFIX}{self.generation}:{self.sequence}", self.new_dedup_newest_ms, self.new_dedup
            )
            self.dedup_batches.append(dedup)
        changes = BatchChanges(
            self.generation,
            self.sequence,
            self.dirty_buckets,
            self.dirty_contacts,
            self.dirty_customers,
            self.dirty_labels,
            self.dirty_agents,
            self.deleted_keys,
            dedup,
        )
        self.dirty_buckets, self.dirty_contacts, self.dirty_customers = set(), set(), set()
        self.dirty_labels, self.dirty_agents = set(), set()
        self.deleted_keys, self.new_dedup, self.new_dedup_newest_ms = [], [], 0
        return changes

    def has_changes(self) -> bool:
        """True when the batch changed anything that must be persisted."""
        return bool(
            self.dirty_buckets
            or self.dirty_contacts
            or self.dirty_customers
            or self.dirty_labels
            or self.dirty_agents
            or self.new_dedup
            or self.deleted_keys
        )
