"""Durable partition state: a Faust changelog written as atomic batches.

Why not ``table[key] = value``? Faust writes each key as its own changelog
record. A worker killed between two of a batch's records leaves a changelog in
which some keys reflect the batch and others do not, and at-least-once
redelivery then counts part of the batch twice. Instead, every batch writes the
keys it touched, each tagged with ``(generation, sequence)``, followed by a
*commit marker* (key ``m``) that carries the same tag and the input offsets the
batch reached. All records of one partition go to the same changelog partition,
so Kafka keeps them in order and a crash can only lose a suffix.

On recovery, records are buffered per partition and applied only when the
marker with their tag arrives; a batch whose marker never made it is dropped
whole, and redelivery of its input (offsets above the marker's) redoes it. The
result: the recovered state reflects exactly the input up to the marker's
offsets, and events at or below them are skipped, so counts are exact after a
``kill -9``. Faust still owns topic creation, recovery scheduling and commits
(its commit waits for the producer to flush the changelog first).
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import faust
import orjson
from faust.types import TP, EventT

from stream.domain.kpi import upgrade_counts
from stream.domain.records import agent_from_changelog, contact_from_changelog, history_from_changelog
from stream.domain.records import encoder as records_encoder
from stream.domain.state import (
    AGENT_PREFIX,
    BUCKET_PREFIX,
    CONTACT_PREFIX,
    CUSTOMER_PREFIX,
    DEDUP_PREFIX,
    LABELS_PREFIX,
    MARKER_KEY,
    DedupBatch,
    PartitionState,
)
from stream.runtime.transport import BatchingProducer

log = logging.getLogger(__name__)


def changelog_records(state: PartitionState) -> list[tuple[bytes, bytes]]:
    """Encode what the last batch changed as changelog records ending with the marker.

    Every record is tagged with the batch's ``(generation, sequence)``; taking the
    changes (:meth:`PartitionState.take_changes`) resets them, so the next batch starts clean.
    """
    changes = state.take_changes()
    generation, sequence = changes.generation, changes.sequence
    dumps = records_encoder.encode
    records: list[tuple[bytes, bytes]] = []

    def put(key: str, payload: Any) -> None:
        records.append((key.encode(), dumps([generation, sequence, payload])))

    for key in changes.deleted_keys:
        put(key, None)
    for bucket_start in changes.buckets:
        dims = state.buckets.get(bucket_start)
        if dims is not None:
            put(f"{BUCKET_PREFIX}{bucket_start}", dims)
    for contact_id in changes.contacts:
        record = state.contacts.get(contact_id)
        if record is not None:
            put(f"{CONTACT_PREFIX}{contact_id}", record)
    for customer_id in changes.customers:
        history = state.customers.get(customer_id)
        if history is not None:
            put(f"{CUSTOMER_PREFIX}{customer_id}", history)
    for label in changes.labels:
        put(f"{LABELS_PREFIX}{label}", state.label_values.get(label, []))
    for agent_id in changes.agents:
        agent = state.agents.get(agent_id)
        if agent is not None:
            put(f"{AGENT_PREFIX}{agent_id}", agent)
    if changes.dedup is not None:
        dedup, batch = state.dedup, changes.dedup
        put(batch.key, {"n": batch.newest_ms, "ids": batch.ids, "o": [dedup[i] for i in batch.ids]})
    put(MARKER_KEY, {"o": state.offsets, "w": state.watermark_ms})
    return records


class StateLogTable(faust.Table):
    """A Faust table used as the transactional log of :class:`PartitionState` objects.

    Its own key/value store stays empty: the live state is the PartitionState objects in
    :attr:`states`, which recovery rebuilds from the changelog.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Records are pre-encoded bytes; Faust must not JSON-decode them on recovery.
        self.key_serializer = "raw"
        self.value_serializer = "raw"
        #: Active partition -> state. Only partitions this worker owns are present.
        self.states: dict[int, PartitionState] = {}
        self._recovering: dict[int, PartitionState] = {}
        self._pending: dict[int, list[tuple[str, list[Any]]]] = defaultdict(list)
        #: Dedup batches by changelog key while recovering, so tombstones can find them.
        self._dedup_index: dict[int, dict[str, DedupBatch]] = defaultdict(dict)
        #: Topics whose partition numbers map to states: inputs and this changelog.
        self.owned_topics: set[str] = set()
        #: partition -> customer store for a new state (dict, or RocksDB; see customer_store).
        self.customer_store_factory: Callable[[int], Any] | None = None
        self.on_state_ready: Callable[[PartitionState], None] | None = None

    def new_state(self, partition: int) -> PartitionState:
        """An empty state for ``partition`` with the configured customer store."""
        if self.customer_store_factory is None:
            return PartitionState(partition)
        return PartitionState(partition, customers=self.customer_store_factory(partition))

    @staticmethod
    def _release(state: PartitionState | None) -> None:
        close = getattr(state.customers, "close", None) if state is not None else None
        if close is not None:
            close()

    # -- writing -----------------------------------------------------------------
    def commit_batch(self, state: PartitionState, after: Sequence[Awaitable[Any]] = ()) -> int:
        """Write what the last batch changed, then the marker; return records written.

        ``after``: writes (dead letters, re-keyed records) that must be stored before
        this batch's records and marker are sent.
        """
        records = changelog_records(state)
        self.write_changelog(state.partition, records, after)
        return len(records)

    def write_changelog(
        self, partition: int, records: list[tuple[bytes, bytes]], after: Sequence[Awaitable[Any]] = ()
    ) -> None:
        """Send one commit's records to the changelog partition as producer batches, in order.

        Needs cxstream's producer (stream/runtime/transport.py ``BatchingProducer``), which
        Faust's pre-commit flush waits for.
        """
        producer = cast(BatchingProducer, self.app.producer)
        producer.send_records(self.changelog_topic.get_topic_name(), partition, records, after=after)

    # -- recovery ----------------------------------------------------------------
    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Buffer recovered records per partition; apply a batch when its marker arrives."""
        for event in batch:
            message = event.message
            partition = message.partition
            if partition in self.states:
                continue  # our own writes, re-read when a still-owned partition is recovered
            key = message.key.decode() if isinstance(message.key, bytes) else str(message.key)
            raw = message.value
            if raw is None:
                continue  # a compaction tombstone: nothing to apply
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.error("partition %d: unreadable changelog record %r=%r", partition, key, raw[:80])
                continue
            if key == MARKER_KEY:
                self._apply_committed(partition, value)
            else:
                self._pending[partition].append((key, value))

    def _apply_committed(self, partition: int, marker: list[Any]) -> None:
        generation, sequence, body = marker
        state = self._recovering.get(partition)
        if state is None:
            state = self._recovering[partition] = self.new_state(partition)
        for key, (gen, seq, payload) in self._pending.pop(partition, ()):
            if gen != generation or seq != sequence:
                continue  # from a batch whose marker never arrived: dropped whole
            self._apply_record(state, self._dedup_index[partition], key, payload)
        state.offsets = dict(body["o"])
        state.watermark_ms = max(state.watermark_ms, body.get("w", 0))

    @staticmethod
    def _apply_record(
        state: PartitionState, dedup_index: dict[str, DedupBatch], key: str, payload: Any
    ) -> None:
        if key.startswith(BUCKET_PREFIX):
            bucket = int(key[len(BUCKET_PREFIX) :])
            if payload is None:
                state.buckets.pop(bucket, None)
            else:
                for counts in payload.values():
                    upgrade_counts(counts)
                state.buckets[bucket] = payload
            state.bucket_changed(bucket)
        elif key.startswith(CONTACT_PREFIX):
            contact_id = key[len(CONTACT_PREFIX) :]
            if payload is None:
                state.contacts.pop(contact_id, None)
            else:
                state.contacts[contact_id] = contact_from_changelog(payload)
        elif key.startswith(CUSTOMER_PREFIX):
            customer_id = key[len(CUSTOMER_PREFIX) :]
            if payload is None:
                state.customers.pop(customer_id, None)
            else:
                state.customers[customer_id] = history_from_changelog(payload)
        elif key.startswith(AGENT_PREFIX):
            agent_id = key[len(AGENT_PREFIX) :]
            if payload is None:
                state.agents.pop(agent_id, None)
            else:
                state.agents[agent_id] = agent_from_changelog(payload)
        elif key.startswith(LABELS_PREFIX):
            if isinstance(payload, list):
                state.restore_label_values(key[len(LABELS_PREFIX) :], [str(v) for v in payload])
        elif key.startswith(DEDUP_PREFIX):
            if payload is None:
                batch = dedup_index.pop(key, None)
                if batch is not None:
                    for event_key in batch.ids:
                        state.dedup.pop(event_key, None)
            else:
                ids = payload["ids"]
                for event_key, offset in zip(ids, payload["o"], strict=True):
                    state.dedup[event_key] = offset
                batch = DedupBatch(key, payload["n"], ids)
                dedup_index[key] = batch

    # -- rebalance hooks ---------------------------------------------------------
    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Drop state of revoked partitions; newly assigned ones are rebuilt by recovery."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        for partition in self._partitions_of(revoked) | self._partitions_of(newly_assigned):
            self._release(self.states.pop(partition, None))
            self._release(self._recovering.pop(partition, None))
            self._pending.pop(partition, None)
            self._dedup_index.pop(partition, None)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Promote recovered states to live ones; discard any incomplete trailing batch."""
        await super().on_recovery_completed(active_tps, standby_tps)
        changelog = self.changelog_topic_name
        for tp in active_tps:
            if tp.topic != changelog or tp.partition in self.states:
                continue
            state = self._recovering.pop(tp.partition, None) or self.new_state(tp.partition)
            dropped = self._pending.pop(tp.partition, [])
            if dropped:
                log.warning(
                    "partition %d: dropped %d changelog records of an uncommitted batch "
                    "(the worker stopped mid-batch); their input will be reprocessed",
                    tp.partition,
                    len(dropped),
                )
            index = self._dedup_index.pop(tp.partition, {})
            state.dedup_batches = deque(sorted(index.values(), key=lambda b: b.newest_ms))
            self.states[tp.partition] = state
            log.info(
                "partition %d ready: %d buckets, %d contacts, %d remembered event ids, offsets %s",
                tp.partition,
                len(state.buckets),
                len(state.contacts),
                len(state.dedup),
                state.offsets,
            )
            if self.on_state_ready is not None:
                self.on_state_ready(state)

    def _partitions_of(self, tps: Iterable[TP]) -> set[int]:
        """Partition numbers among ``tps`` that belong to this state (input or changelog)."""
        return {tp.partition for tp in tps if tp.topic in self.owned_topics}

    def state_for(self, partition: int) -> PartitionState:
        """Live state of an active partition (created empty if recovery had nothing)."""
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = self.new_state(partition)
        return state
