"""EXPERIMENT: the cxstream worker with two hot-path changes, applied by patching at start-up.

``python -m bench.fastpath`` runs exactly ``python -m stream worker`` (same settings,
same ``create_app``, same Faust agent, tables, changelog and commit protocol) after
patching two things, so ``python -m bench --worker-module bench.fastpath`` measures
what the changes are worth before anyone edits stream/. They are a proposal for
stream/app.py and stream/commitlog.py (see docs/performance.md), not production code:

1. **One Faust event per fetched partition chunk, not per record.** Faust's
   ``Consumer._drain_messages`` awaits ``wait_first(callback(message), ...)`` for every
   record (two tasks and an ``asyncio.wait`` each), then the conductor decodes it,
   builds an ``Event``, queues it, and the stream acks it: about 100 us per record
   here, the whole budget of a 10k events/s worker. The patched drain loop hands
   each topic-partition's records from one ``getmany`` to the agent as a single
   message whose value is the list of ``InputMessage`` objects; acking it acks
   every offset it carries (Faust's offset tracking and commits are unchanged).
2. **Changelog records of one commit as one producer batch.** ``commit_batch``
   writes ~1 record per event, each through ``Table.send_changelog`` ->
   ``Topic.send_soon`` -> ``FutureMessage`` -> ``ProducerBuffer`` -> ``AIOKafkaProducer.send``
   (~30 us each). All records of one commit go to one changelog partition, so they
   are appended to one aiokafka ``BatchBuilder`` and sent with ``send_batch``, in
   order per partition; Faust's pre-commit ``producer.flush()`` waits for them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from typing import Any

log = logging.getLogger("bench.fastpath")


class RecordBatch(list):  # type: ignore[type-arg]
    """The ``InputMessage`` objects of one topic-partition chunk, as one Faust message value."""

    __slots__ = ("offsets",)


class _ExpandingList(list):  # type: ignore[type-arg]
    """A list whose ``append`` of a :class:`RecordBatch` adds its messages."""

    def append(self, item: Any) -> None:
        if type(item) is RecordBatch:
            self.extend(item)
        else:
            list.append(self, item)


_pending_sends: set[asyncio.Future[Any]] = set()
_chains: dict[tuple[str, int], asyncio.Future[Any]] = {}


def install(patches: str | None = None) -> None:
    """Install the patches named in ``patches`` / ``$BENCH_FASTPATH`` (default: all three).

    Names: ``chunks`` (1), ``changelog`` (2), ``fetchwait`` (3), comma-separated.
    """
    wanted = set((patches or os.environ.get("BENCH_FASTPATH", "chunks,changelog,fetchwait")).split(","))
    if "chunks" in wanted:
        _install_chunks()
    if "changelog" in wanted:
        _install_changelog()
    if "fetchwait" in wanted:
        _install_fetchwait()
    if "gc" in wanted:
        _install_gc()
    log.warning("bench.fastpath: patches %s installed (experiment)", sorted(wanted))


def _install_chunks() -> None:
    from faust.transport import consumer as base_consumer
    from faust.transport.drivers import aiokafka as driver
    from faust.types.tuples import ConsumerMessage

    import stream.app as app_module
    from stream.processor import InputMessage

    # -- 1. chunked delivery ---------------------------------------------------------------
    async def _drain_messages(self: Any, fetcher: Any) -> None:
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        make = InputMessage
        while not (consumer_should_stop() or fetcher_should_stop()):
            records, active = await self._wait_next_records(1.0)
            await self.sleep(0)
            if not records or self.should_stop or not self.flow_active:
                continue
            generation = self.app.consumer_generation_id
            for tp, chunk in records.items():
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                if self.app.consumer_generation_id != generation:
                    break
                r_offset = get_read_offset(tp)
                if r_offset is not None:
                    chunk = [r for r in chunk if r.offset >= r_offset]
                if not chunk:
                    continue
                first = chunk[0].offset
                if r_offset and first - r_offset > 1 and acks_enabled_for(tp.topic):
                    await self._add_gap(tp, r_offset + 1, first)
                topic = tp.topic
                batch = RecordBatch(make(topic, r.offset, r.key, r.value) for r in chunk)
                batch.offsets = [r.offset for r in chunk]
                last = chunk[-1]
                message = ConsumerMessage(
                    topic,
                    tp.partition,
                    last.offset,
                    (last.timestamp or 0) / 1000.0,
                    last.timestamp_type,
                    [],
                    None,
                    batch,
                    None,
                    0,
                    sum(r.serialized_value_size for r in chunk),
                    tp,
                    generation_id=generation,
                )
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await self.wait_first(callback(message), self.suspend_flow.wait())
                set_read_offset(tp, last.offset)

    original_ack = base_consumer.Consumer.ack

    def ack(self: Any, message: Any) -> bool:
        done: bool = original_ack(self, message)
        value = message.value
        if done and type(value) is RecordBatch:
            tp = message.tp
            committed = self._committed_offset[tp]
            offsets = [o for o in value.offsets[:-1] if committed is None or o >= committed]
            index = self._acked_index[tp]
            fresh = [o for o in offsets if o not in index]
            index.update(fresh)
            self._acked[tp].extend(fresh)
            self._n_acked += len(fresh)
        return done

    driver.Consumer._drain_messages = _drain_messages
    driver.Consumer.ack = ack

    # The agent (stream/app.py handle_batch) wraps each event's message in an
    # InputMessage and appends it to a per-partition list: let a chunk expand there.
    def input_message(topic: str, offset: int, key: Any, value: Any) -> Any:
        return value if type(value) is RecordBatch else InputMessage(topic, offset, key, value)

    app_module.InputMessage = input_message  # type: ignore[assignment, misc]
    app_module.defaultdict = lambda factory: collections.defaultdict(_ExpandingList)  # type: ignore[assignment, misc]


def _install_changelog() -> None:
    from faust.transport.drivers import aiokafka as driver

    import stream.app as app_module
    from stream.commitlog import StateLogTable

    # -- 2. one producer batch per commit --------------------------------------------------
    original_config = app_module.faust_config

    def faust_config(settings: Any) -> dict[str, Any]:
        config = original_config(settings)
        config["producer_max_batch_size"] = 1024 * 1024
        return config

    app_module.faust_config = faust_config

    original_commit = StateLogTable.commit_batch

    def commit_batch(self: Any, state: Any) -> int:
        records: list[tuple[bytes, bytes | None]] = []
        self.send_changelog = lambda partition, key, value, **_: records.append((key, value))
        try:
            written: int = original_commit(self, state)
        finally:
            del self.send_changelog
        if records:
            producer = self.app.producer._ensure_producer()
            topic = self.changelog_topic.get_topic_name()
            builders = []
            builder = producer.create_batch()
            for key, value in records:
                if builder.append(key=key, value=value, timestamp=None) is None:
                    builders.append(builder)
                    builder = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=None)
            builders.append(builder)
            chain_key = (topic, state.partition)
            previous = _chains.get(chain_key)

            async def send_in_order() -> None:
                nonlocal previous
                if previous is not None:
                    await previous
                    previous = None  # no chain of finished tasks (and their batches) in memory
                futures = [await producer.send_batch(b, topic, partition=state.partition) for b in builders]
                await asyncio.gather(*futures)

            task = asyncio.ensure_future(send_in_order())
            _chains[chain_key] = task
            _pending_sends.add(task)
            task.add_done_callback(_pending_sends.discard)
        return written

    StateLogTable.commit_batch = commit_batch  # type: ignore[method-assign]

    original_flush = driver.Producer.flush

    async def flush(self: Any) -> None:
        if _pending_sends:
            await asyncio.gather(*list(_pending_sends))
        await original_flush(self)

    driver.Producer.flush = flush  # type: ignore[method-assign]


def _install_fetchwait() -> None:
    from faust.transport.drivers import aiokafka as driver

    # -- 3. shorter fetch long-poll (tansu) --------------------------------------------------
    # Faust hard-codes fetch_max_wait_ms=1500 for its consumer. Kafka answers a fetch as
    # soon as data arrives, so that only matters when idle; tansu holds every fetch for
    # the full wait even when records arrive meanwhile, which adds up to 1.5 s per hop.
    wait_ms = int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "100"))
    original_create = driver.AIOKafkaConsumerThread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original_create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


def _install_gc() -> None:
    """4. Fewer full collections: the state is millions of small acyclic dicts and lists.

    A full (generation 2) collection walks every tracked object: ~0.3 s per 300k
    contacts here, i.e. seconds with a day of state, stalling the event loop. Python
    runs one whenever the objects that survived since the last one exceed 25 % of the
    long-lived heap, which steady churn of contact records reaches every minute or
    two. Almost nothing in the state is cyclic (reference counting frees it), so
    generation-2 collections are made rare; cycles (asyncio futures, tracebacks) are
    still collected by the young generations.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 1_000_000)


def main() -> None:
    import sys

    install()
    from stream.cli import main as cli_main

    sys.exit(cli_main(["worker"]))


if __name__ == "__main__":
    main()
