"""The Faust application: one agent over the input topics, a state log, a timer, /metrics.

``create_app(settings)`` builds everything from settings (no module-level app),
so tests and benchmarks can run several differently configured apps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.alerting.rules import load_rules_for
from stream.alerting.service import AlertService, build_service, collectors
from stream.config.settings import Settings
from stream.config.timeutil import now_ms
from stream.domain.customer_store import customer_store_factory
from stream.domain.processor import (
    DeadLetter,
    Processor,
    RawMessage,
    customer_partition,
    customer_topic_name,
)
from stream.domain.state import PartitionState
from stream.outputs.exporter import KpiCollector, build_registry
from stream.query.windows import WindowReader, reader_for
from stream.runtime.commitlog import StateLogTable
from stream.runtime.transport import MAX_BATCH_BYTES, CxApp, RecordChunk

log = logging.getLogger(__name__)

#: Batched producer writes (changelog, re-keying) queued before the agent waits.
MAX_WRITES_IN_FLIGHT = 256


@dataclass
class CxStream:
    """The pieces of a running cxstream worker, for the CLI, tests and benchmarks."""

    settings: Settings
    app: faust.App
    table: StateLogTable
    processor: Processor
    reader: WindowReader
    registry: CollectorRegistry
    #: Alert evaluation, Redis writes and partition views (set by :func:`install_alerting`).
    alerting: AlertService | None = None

    def states(self) -> list[PartitionState]:
        """States of the partitions this worker owns right now."""
        return list(self.table.states.values())

    def metrics_text(self) -> bytes:
        """The /metrics exposition."""
        return generate_latest(self.registry)


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings derived from ours, with the reasons for the non-defaults."""
    from stream.config.security import faust_broker_credentials

    session_timeout = settings.session_timeout
    return {
        "broker": settings.broker,
        # SASL (PLAIN/SCRAM) and TLS for every Faust client: see stream/config/security.py.
        "broker_credentials": faust_broker_credentials(settings),
        "store": "memory://",
        "datadir": str(settings.data_dir / "faust"),
        "autodiscover": False,
        "web_enabled": True,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": "127.0.0.1" if settings.web_host == "0.0.0.0" else settings.web_host,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        # tansu holds each group join for half the session timeout: keep it short there.
        "broker_session_timeout": session_timeout,
        "broker_heartbeat_interval": max(1.0, session_timeout / 5),
        # State is rebuilt from the changelog; standby replicas would double memory
        # and never be exported, so recovery speed is bought with partitions instead.
        "table_standby_replicas": 0,
        "stream_buffer_maxsize": 65536,
        "producer_linger": 0.005,
        # Whole commits go out as producer batches (stream/runtime/transport.py).
        "producer_max_batch_size": MAX_BATCH_BYTES,
        # A dead letter is a rejected input plus headers, so the producer must take more
        # than the largest input the broker accepts (Faust's default, 1,000,000 bytes, is
        # below Kafka's 1 MiB message.max.bytes: a 1 MB input would crash the worker).
        "producer_max_request_size": 16 * 1024 * 1024,
        "broker_commit_interval": 1.0,
        "logging_config": None,
    }


def create_app(settings: Settings) -> CxStream:
    """Build the Faust app, its table, agent, timer and web pages from settings."""
    app = CxApp(settings.app_id, **faust_config(settings))
    app.fetch_max_wait_ms = int(settings.fetch_max_wait * 1000)
    app.fetch_max_wait_idle_ms = int(settings.fetch_max_wait_idle * 1000)
    app.fetch_idle_rate = settings.fetch_idle_rate
    app.tansu_compat = settings.tansu_compat
    if settings.tansu_compat:
        log.info(
            "tansu compatibility on: recovery reads to the true end offset (stream/runtime/tansu_compat.py)"
        )
    # Faust hard-codes a 100-message producer buffer; each batch writes more than that.
    app.producer.buffer.max_messages = settings.producer_buffer_max

    customer_topic_name_ = customer_topic_name(settings)
    inputs = app.topic(
        settings.topic_interactions,
        settings.topic_surveys,
        settings.topic_agents,
        customer_topic_name_,
        partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    deadletter = app.topic(
        settings.topic_deadletter,
        partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    # Input topics arrive as one message per fetched chunk (stream/runtime/transport.py).
    app.chunked_topics = frozenset(
        (settings.topic_interactions, settings.topic_surveys, settings.topic_agents, customer_topic_name_)
    )
    table = StateLogTable(
        app,
        name="state",
        partitions=settings.partitions,
        store="memory://",
        help="cxstream partition state (buckets, contacts, dedup) as atomic batches",
    )
    app.tables.add(table)
    table.owned_topics = {
        settings.topic_interactions,
        settings.topic_surveys,
        settings.topic_agents,
        customer_topic_name_,
        table.changelog_topic_name,
    }

    processor = Processor(settings)
    table.customer_store_factory = customer_store_factory(settings.store, settings.data_dir)
    table.on_state_ready = lambda state: processor.recovered(state, now_ms())
    reader = reader_for(settings)
    collector = KpiCollector(
        lambda: table.states.values(),
        processor,
        reader,
        topics=(settings.topic_interactions, settings.topic_surveys, settings.topic_agents),
        internal_topics=(customer_topic_name_,),
    )
    registry = build_registry(collector)

    def send_dead_letters(dead: list[DeadLetter]) -> list[Any]:
        futures = []
        for item in dead:
            value, headers = item.record(settings.deadletter_max_bytes)
            futures.append(deadletter.send_soon(key=item.key, value=value, headers=headers))
        return futures

    partitions = settings.partitions

    def send_forwards(forwards: list[tuple[str, bytes]]) -> list[Any]:
        """Re-key contact starts by customer: one producer batch per customer-topic partition.

        The customer topic (``<app_id>-customer-contacts``, an input of the agent too)
        lets one partition see all of a customer's contacts, like Faust's ``group_by``.

        A customer always lands on the same partition (:func:`customer_partition`).
        """
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for customer, record in forwards:
            key = customer.encode()
            by_partition[customer_partition(key, partitions)].append((key, record))
        send_records = app.batching_producer.send_records
        return [send_records(customer_topic_name_, p, records) for p, records in by_partition.items()]

    # Batches and timer ticks both mutate partition state and then commit it; the lock
    # keeps them from interleaving should either ever await between the two.
    state_lock = asyncio.Lock()

    async def handle_batch(events: list[EventT]) -> None:
        """Apply one batch: group by partition, process, emit outputs, persist atomically.

        Dead letters and customer re-keyed records must be durable before the commit
        marker says their input is done, or a crash in between would lose them. The
        changelog write of each partition's batch therefore waits for that batch's
        outputs (``after``) in the producer, not here: the agent goes on with the next
        batch meanwhile, and Faust commits offsets only after all of it is stored.
        """
        by_partition: dict[int, list[RawMessage]] = defaultdict(list)
        for event in events:
            message = event.message
            value = message.value
            # aiokafka records, and Faust's message itself, carry topic, offset, key and
            # value: the pipeline reads them as they are.
            if type(value) is RecordChunk:
                by_partition[message.partition].extend(value)
            else:
                by_partition[message.partition].append(message)
        wall = now_ms()
        async with state_lock:
            for partition, messages in by_partition.items():
                state = table.state_for(partition)
                outcome = processor.apply(state, messages, wall)
                outputs = send_dead_letters(outcome.dead_letters) if outcome.dead_letters else []
                if outcome.forwards:
                    outputs.extend(send_forwards(outcome.forwards))
                table.commit_batch(state, after=outputs)
        # Bounded memory when the broker is slow: at most this many writes queued.
        await app.batching_producer.writes.wait_for_room(MAX_WRITES_IN_FLIGHT)

    @app.agent(inputs, name="cx-process")
    async def process(stream: faust.StreamT) -> None:
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.batch_max, within=settings.batch_within
        ):
            await handle_batch(list(events))

    @app.timer(interval=settings.tick_interval)
    async def tick() -> None:
        wall = now_ms()
        async with state_lock:
            for state in list(table.states.values()):
                processor.tick(state, wall)
                if state.has_changes():
                    table.commit_batch(state)

    # Text format 0.0.4, uncompressed, on purpose: prometheus_client's aiohttp handler gives
    # Prometheus OpenMetrics (+30 % worker CPU per scrape) and gzip (+50 %), measured with
    # `make bench` after 100,000 events (docs/prometheus.md); the text format carries all we export.
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "partitions": sorted(table.states)})

    cx = CxStream(settings, app, table, processor, reader, registry)
    cx.alerting = install_alerting(cx)
    return cx


def install_alerting(cx: CxStream) -> AlertService:
    """Run the alert service in the worker: its loop as a task, views on a timer, /metrics.

    The rules file is loaded and validated here, so a bad file stops the worker at
    start-up (:class:`stream.alerting.rules.RuleError`, a ``SettingsError``).
    """
    settings, app = cx.settings, cx.app
    rules = load_rules_for(settings, settings.label_names)
    states, reader, reference_now = cx.states, cx.reader, cx.processor.reference_now_ms
    service = build_service(settings, rules, states=states, reader=reader, reference_now=reference_now)
    for collector in collectors(service, settings, states=states, reader=reader, reference_now=reference_now):
        cx.registry.register(collector)

    @app.timer(interval=settings.snapshot_interval, name="cx-kpi-views")
    async def write_views() -> None:
        await service.snapshot_tick()

    @app.task
    async def alert_evaluator() -> None:
        await service.run()

    async def flush_alerts(sender: Any, *args: Any, **kwargs: Any) -> None:
        await service.shutdown()

    app.on_before_shutdown.connect(flush_alerts)  # type: ignore[arg-type]
    return service
