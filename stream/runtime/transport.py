"""Faust's Kafka transport with cxstream's hot-path changes: chunked delivery, batched writes.

Why: stock Faust spends about 100 us of event-loop time per consumed record (two
tasks and an ``asyncio.wait`` in the fetcher, a decode, an ``Event``, a queue hop
and an ack) and about 30 us per produced record (``FutureMessage``, producer buffer,
``AIOKafkaProducer.send``). That caps any Faust worker near 5-10k events/s however
lean the agent is (docs/performance.md has the profiles). Three changes, each kept
inside Faust's own contracts (offset tracking, commits, rebalances, recovery):

1. :class:`ChunkedConsumer` hands the records of one topic-partition from one fetch
   to the agent as *one* Faust message whose value is a :class:`RecordChunk`, for the
   topics named in :attr:`CxApp.chunked_topics` only (never table changelogs:
   Faust's recovery reads those record by record). Acking the message acks every
   offset it carries, so commits and gap tracking are unchanged.
2. :class:`BatchingProducer.send_records` appends many records for one partition to
   aiokafka ``BatchBuilder`` objects and sends them with ``send_batch``, in order per
   partition; ``flush`` (which Faust awaits before every offset commit) waits for
   them, so a commit never gets ahead of the state it covers.
3. The consumer's fetch long-poll (Faust hard-codes 1.5 s) is a setting: Kafka
   answers a fetch as soon as data arrives, but the tansu of November 2026 held it for
   the full wait, adding up to 1.5 s of latency per hop. Below a set input rate it is
   lengthened and asks for more data (:mod:`stream.runtime.fetch_pacing`), so a quiet
   worker does not spend its CPU on fetch rounds.

The consumer overrides Faust internals (``_drain_messages``, ``ack``), so
pyproject.toml pins faust-streaming to the 0.15 series this was written against.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, cast

import faust
from faust.transport import consumer as base_consumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.runtime.fetch_pacing import FetchPacer

log = logging.getLogger(__name__)

#: Faust's hard-coded fetch long-poll, kept when the setting is absent.
FAUST_FETCH_MAX_WAIT_MS = 1500
#: Faust's lock around ack bookkeeping (0.15.3 added it); nothing to hold without it.
_ACK_LOCK: Any = getattr(base_consumer, "ack_lock", None) or contextlib.nullcontext()
#: Largest producer batch: below Kafka's default message.max.bytes (1 MiB + overhead).
MAX_BATCH_BYTES = 1_000_000
#: fetch.min.bytes with the idle long-poll: Kafka then answers a quiet consumer when the
#: wait is over (or this much data is there) instead of as soon as one record arrives.
IDLE_FETCH_MIN_BYTES = 256 * 1024


class RecordChunk(list):  # type: ignore[type-arg]
    """The aiokafka records of one topic-partition from one fetch, as one Faust message value."""

    __slots__ = ()


class CxApp(faust.App):
    """A Faust app whose transport is :class:`CxTransport`.

    ``chunked_topics``: topics delivered as :class:`RecordChunk` messages (raw bytes
    serializers only). ``fetch_max_wait_ms``: the consumer's fetch long-poll.
    """

    chunked_topics: frozenset[str] = frozenset()
    fetch_max_wait_ms: int = FAUST_FETCH_MAX_WAIT_MS
    #: The long-poll below ``fetch_idle_rate`` events/s (stream.runtime.fetch_pacing); 0: none.
    fetch_max_wait_idle_ms: int = 0
    fetch_idle_rate: float = 0.0
    #: Read recovery end offsets the tansu way (stream.runtime.tansu_compat); never on Apache Kafka.
    tansu_compat: bool = False

    def _new_transport(self) -> Any:
        return CxTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return CxTransport(self.conf.broker_producer, self)

    @property
    def batching_producer(self) -> BatchingProducer:
        """``app.producer``, typed as what :class:`CxTransport` makes it."""
        return cast(BatchingProducer, self.producer)


class TunedConsumerThread(driver.AIOKafkaConsumerThread):
    """The aiokafka consumer thread with the app's fetch long-poll and, on tansu, true end offsets."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", FAUST_FETCH_MAX_WAIT_MS)
        return consumer

    def set_fetch_wait(self, wait_ms: int, min_bytes: int) -> bool:
        """Change the long-poll of the next fetch requests (the fetcher reads both per request).

        Called from the worker's main thread: two int attributes the consumer thread reads.
        False while the consumer has no fetcher yet (nothing changed).
        """
        consumer = getattr(self, "_consumer", None)
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is None:
            return False
        fetcher._fetch_max_wait_ms = wait_ms
        fetcher._fetch_min_bytes = min_bytes
        return True

    async def _highwaters(self, partitions: list[TP]) -> Any:
        """Recovery's end offsets; on tansu read forward past its ListOffsets answer (tansu_compat)."""
        if not getattr(self.app, "tansu_compat", False) or self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        from stream.runtime.tansu_compat import true_end_offsets

        conf = self.app.conf
        auth = driver.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)
        return await true_end_offsets(self._ensure_consumer(), list(partitions), auth)


def fair_order(tps: Iterable[TP]) -> list[TP]:
    """Topic-partitions round-robin over topics, like Faust's scheduler does for records.

    A fetch's records are ordered by topic; delivering them in that order would let a
    topic with many partitions (or a large backlog) starve the others for a whole fetch.
    """
    by_topic: dict[str, list[TP]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp)
    ordered: list[TP] = []
    for group in itertools.zip_longest(*by_topic.values()):
        ordered.extend(tp for tp in group if tp is not None)
    return ordered


class ChunkedConsumer(driver.Consumer):
    """Faust's aiokafka consumer, delivering chunks of records for chosen topics."""

    def _new_consumer_thread(self) -> Any:
        return TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        """Faust's fetch loop, one callback per chunk instead of per record.

        Mirrors ``faust.transport.consumer.Consumer._drain_messages`` and ``getmany``
        (read-offset filtering, gap tracking, commit_every, flow control, generation
        checks, round-robin over topics) for faust-streaming 0.15.x, pinned by
        tests/unit/test_faust_pin.py; topics not in ``chunked_topics`` go record by record.
        """
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        chunked_topics: frozenset[str] = getattr(self.app, "chunked_topics", frozenset())
        to_message = self._to_message
        track_end_offset = self.app.monitor.track_tp_end_offset
        pacer = self._fetch_pacer()
        applied_wait = getattr(self.app, "fetch_max_wait_ms", FAUST_FETCH_MAX_WAIT_MS)
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                if pacer is not None:
                    fetched_n = sum(map(len, records.values())) if records else 0
                    wait = pacer.observe(time.monotonic(), fetched_n)
                    if wait != applied_wait and cast(TunedConsumerThread, self._thread).set_fetch_wait(
                        wait, IDLE_FETCH_MIN_BYTES if wait > pacer.busy_wait_ms else 1
                    ):
                        applied_wait = wait
                await self.sleep(0)
                if not records or self.should_stop or not self.flow_active:
                    continue
                generation = self.app.consumer_generation_id
                for tp in fair_order(records):
                    fetched = records[tp]
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    if self.app.consumer_generation_id != generation or not self.flow_active:
                        break
                    r_offset = get_read_offset(tp)
                    chunk = fetched if r_offset is None else [r for r in fetched if r.offset >= r_offset]
                    if not chunk:
                        continue
                    track_end_offset(tp, self.highwater(tp))
                    first = chunk[0].offset
                    if r_offset and first - r_offset > 1 and acks_enabled_for(tp.topic):
                        await self._add_gap(tp, r_offset + 1, first)
                    if tp.topic in chunked_topics:
                        await self._deliver(callback(self._chunk_message(tp, chunk)))
                    else:
                        for record in chunk:
                            await self._deliver(callback(to_message(tp, record)))
                    set_read_offset(tp, chunk[-1].offset)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    def _fetch_pacer(self) -> FetchPacer | None:
        idle_ms = getattr(self.app, "fetch_max_wait_idle_ms", 0)
        busy_ms = getattr(self.app, "fetch_max_wait_ms", FAUST_FETCH_MAX_WAIT_MS)
        rate = getattr(self.app, "fetch_idle_rate", 0.0)
        if not isinstance(self._thread, TunedConsumerThread) or rate <= 0 or idle_ms <= busy_ms:
            return None
        return FetchPacer(busy_ms, idle_ms, rate)

    async def _deliver(self, delivery: Any) -> None:
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        await self.wait_first(delivery, self.suspend_flow.wait())

    def _chunk_message(self, tp: TP, chunk: Sequence[Any]) -> ConsumerMessage:
        """One Faust message for a chunk: the last record's position, all records as value."""
        last = chunk[-1]
        return ConsumerMessage(
            tp.topic,
            tp.partition,
            last.offset,
            (last.timestamp or 0) / 1000.0,
            last.timestamp_type,
            [],
            None,
            RecordChunk(chunk),  # type: ignore[arg-type]  # the agent reads it, not a serializer
            None,
            0,
            sum(r.serialized_value_size for r in chunk),
            tp,
            generation_id=self.app.consumer_generation_id,
        )

    def ack(self, message: Any) -> bool:
        """Ack a message; for a chunk, also every earlier offset it carries."""
        done: bool = base_consumer.Consumer.ack(self, message)
        value = message.value
        if done and type(value) is RecordChunk and len(value) > 1:
            with _ACK_LOCK:
                tp = message.tp
                committed = self._committed_offset[tp]
                index = self._acked_index[tp]
                acked = self._acked[tp]
                for record in value[:-1]:
                    offset = record.offset
                    if (committed is None or offset >= committed) and offset not in index:
                        index.add(offset)
                        acked.append(offset)
                        self._n_acked += 1
        return done


class OrderedWrites:
    """Write tasks chained per key: in order per key, waited for by snapshot, failures sticky.

    Pure asyncio, so the rules the state log relies on are unit-tested on their own:

    * writes with the same key (topic, partition) run one after the other, in call order;
    * a write starts only after the awaitables passed as ``after`` are done;
    * :meth:`wait_scheduled` waits for the writes submitted *before* it was called (under
      steady traffic there is always a newer one, so waiting for all would never end);
    * after one failure every wait raises it, and every later write on that key fails.
    """

    def __init__(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self._tails: dict[Hashable, asyncio.Future[None]] = {}
        self._in_flight: set[asyncio.Future[None]] = set()
        self._on_failure = on_failure
        self.failure: BaseException | None = None

    def __len__(self) -> int:
        return len(self._in_flight)

    def submit(
        self,
        key: Hashable,
        write: Callable[[], Awaitable[Any]],
        after: Sequence[Awaitable[Any]] = (),
    ) -> asyncio.Future[None]:
        """Run ``write()`` after the previous write with ``key`` and after ``after``."""
        previous = self._tails.get(key)

        async def run() -> None:
            nonlocal previous, after
            if previous is not None:
                await previous
                previous = None  # no chain of finished futures kept alive
            if after:
                await asyncio.gather(*after)
                after = ()
            await write()

        task: asyncio.Future[None] = asyncio.ensure_future(run())
        self._tails[key] = task
        self._in_flight.add(task)
        task.add_done_callback(lambda done: self._done(key, done))
        return task

    def _done(self, key: Hashable, task: asyncio.Future[None]) -> None:
        self._in_flight.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
        exc = None if task.cancelled() else task.exception()
        if exc is not None and self.failure is None:
            self.failure = exc
            if self._on_failure is not None:
                self._on_failure(exc)

    async def wait_scheduled(self) -> None:
        """Wait for the writes submitted so far; raise the first failure, if any."""
        pending = list(self._in_flight)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.failure is not None:
            raise self.failure

    async def wait_for_room(self, limit: int) -> None:
        """Backpressure: wait while more than ``limit`` writes are in flight."""
        while len(self._in_flight) > limit:
            await asyncio.wait(list(self._in_flight), return_when=asyncio.FIRST_COMPLETED)


class BatchingProducer(driver.Producer):
    """Faust's aiokafka producer plus ordered, batched writes of many records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes = OrderedWrites(on_failure=self._write_failed)
        self._crashing: asyncio.Future[None] | None = None

    def send_records(
        self,
        topic: str,
        partition: int,
        records: Iterable[tuple[bytes | None, bytes | None]],
        *,
        after: Sequence[Awaitable[Any]] = (),
    ) -> asyncio.Future[None]:
        """Schedule ``(key, value)`` records for one partition; resolves once all are stored.

        Writes for the same partition are sent in call order (each waits for the one
        before), so the state log's commit markers always follow their records. With
        ``after``, the records are sent only once those writes are stored: a batch's
        commit marker never becomes durable before its dead letters and re-keyed
        records, yet the caller does not have to wait for them.
        """
        producer = self._ensure_producer()
        batches = [producer.create_batch()]
        for key, value in records:
            if batches[-1].append(key=key, value=value, timestamp=None) is None:
                batches.append(producer.create_batch())
                if batches[-1].append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes exceeds a producer batch")

        async def send() -> None:
            delivered = [await producer.send_batch(b, topic, partition=partition) for b in batches]
            await asyncio.gather(*delivered)

        return self.writes.submit((topic, partition), send, after)

    def _write_failed(self, exc: BaseException) -> None:
        # No later commit may cover records that were never stored: every flush fails
        # from now on and the worker stops; a restart resumes from the last commit
        # marker and re-reads the input after it.
        log.error("batched write failed, stopping the worker: %r", exc)
        self._crashing = asyncio.ensure_future(self.crash(exc))

    async def flush(self) -> None:
        """Wait for batched writes too (Faust calls this before committing offsets).

        Only for the writes scheduled before the call: those cover every offset the
        commit can include.
        """
        await self.writes.wait_scheduled()
        await super().flush()


class CxTransport(driver.Transport):
    """The aiokafka transport with :class:`ChunkedConsumer` and :class:`BatchingProducer`."""

    Consumer = ChunkedConsumer
    Producer = BatchingProducer
