"""``cxstream bridge``: vendor payloads already on Kafka (Kinesis -> Kafka, a CDC feed, an
MSK connector) translated onto cxstream's input topics.

``CXSTREAM_BRIDGE_SOURCES=connect-ctr=amazon-connect-ctr,genesys=genesys-cloud`` names each
source topic and its format. The bridge consumes in its own group
(``CXSTREAM_BRIDGE_GROUP``), translates a batch, produces every event (and a dead-letter
copy of every payload that maps to nothing valid) and commits the source offsets only after
the broker acknowledged all of it. A crash or rebalance in between re-translates the same
payloads into the same deterministic event ids, which the worker deduplicates (within
``CXSTREAM_DEDUP_HORIZON``): every payload counts exactly once, like the worker's own input.
A broker that goes away pauses the bridge; it carries on where it committed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream.config.retry import Backoff
from stream.config.security import install_log_redaction, kafka_client_kwargs
from stream.config.settings import Settings, SettingsError, load_settings
from stream.domain.processor import DeadLetter
from stream.ingest.delivery import BrokerUnavailable, Delivery
from stream.ingest.process import run_until_signalled
from stream.platforms.mapping import Translated, TranslationError
from stream.platforms.registry import Platform, configured_platforms

log = logging.getLogger(__name__)

RETRY = Backoff(0.5, 10.0)
PROGRESS_EVERY_S = 30.0


def parse_sources(settings: Settings, platforms: dict[str, Platform]) -> dict[str, Platform]:
    """``CXSTREAM_BRIDGE_SOURCES`` as source topic -> platform; errors name the setting."""
    sources: dict[str, Platform] = {}
    for item in (p.strip() for p in settings.bridge_sources.split(",")):
        if not item:
            continue
        topic, sep, fmt = (s.strip() for s in item.partition("="))
        if not sep or not topic or not fmt:
            raise SettingsError(
                f"invalid configuration:\n  CXSTREAM_BRIDGE_SOURCES: {item!r} is not topic=format"
            )
        if fmt not in platforms:
            raise SettingsError(
                "invalid configuration:\n  CXSTREAM_BRIDGE_SOURCES: "
                f"unknown format {fmt!r} for topic {topic!r} (formats: {', '.join(sorted(platforms))})"
            )
        if topic in sources or topic in (
            settings.topic_interactions,
            settings.topic_surveys,
            settings.topic_agents,
        ):
            raise SettingsError(
                "invalid configuration:\n  CXSTREAM_BRIDGE_SOURCES: "
                f"topic {topic!r} is listed twice or is an input topic of the worker"
            )
        sources[topic] = platforms[fmt]
    if not sources:
        raise SettingsError(
            "invalid configuration:\n  CXSTREAM_BRIDGE_SOURCES: required by `cxstream bridge`"
        )
    return sources


class Bridge:
    """Consume, translate, produce, then commit; see the module docstring."""

    def __init__(self, settings: Settings, sources: dict[str, Platform]) -> None:
        self.settings = settings
        self.sources = sources
        self.delivery = Delivery(settings, client_id="cxstream-bridge")
        self.payloads = 0
        self.events = 0
        self.rejected = 0

    def translate(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, now_ms: int
    ) -> list[Translated] | DeadLetter:
        """One source record -> its events, or its dead-letter entry."""
        platform = self.sources[topic]
        if not value:
            return DeadLetter(topic, partition, offset, key, value, "empty_value", "message has no value")
        try:
            return platform.mapping.translate_body(value, now_ms)
        except TranslationError as exc:
            return DeadLetter(topic, partition, offset, key, value, exc.reason, exc.detail)

    async def run(self, stop: asyncio.Event) -> None:
        """Bridge until ``stop`` is set."""
        await self.delivery.start()
        consumer = AIOKafkaConsumer(
            *self.sources,
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.settings.bridge_group,
            client_id="cxstream-bridge",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=max(int(self.settings.session_timeout * 1000 / 3), 100),
            max_partition_fetch_bytes=max(self.settings.deadletter_max_bytes, 1_048_576),
            **kafka_client_kwargs(self.settings),
        )
        failures = 0
        while not stop.is_set():
            try:
                await consumer.start()
                break
            except (KafkaError, OSError) as exc:
                failures += 1
                log.warning("broker unreachable for the bridge's consumer (%s); retrying", exc)
                await _sleep(stop, RETRY.delay(failures))
        log.info("bridging %s", ", ".join(f"{t} ({p.format})" for t, p in self.sources.items()))
        last_progress = time.monotonic()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                if not batches:
                    continue
                await self._batch(consumer, batches, stop)
                if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                    last_progress = time.monotonic()
                    log.info(
                        "bridged %d payloads: %d events, %d dead-lettered",
                        self.payloads,
                        self.events,
                        self.rejected,
                    )
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.delivery.stop()

    async def _batch(self, consumer: AIOKafkaConsumer, batches: dict, stop: asyncio.Event) -> None:
        now_ms = int(time.time() * 1000)
        events: list[Translated] = []
        rejected: list[DeadLetter] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            for record in records:
                result = self.translate(
                    tp.topic, tp.partition, record.offset, record.key, record.value, now_ms
                )
                if isinstance(result, DeadLetter):
                    rejected.append(result)
                else:
                    events += result
            offsets[tp] = records[-1].offset + 1
        failures = 0
        while True:
            try:
                await self.delivery.send(events, rejected)
                break
            except BrokerUnavailable as exc:
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("bridge paused: %s", exc)
                if stop.is_set():
                    return  # nothing committed: the next run translates the batch again
                await _sleep(stop, RETRY.delay(failures))
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance: the batch is re-read, its ids deduplicated downstream
            log.warning("could not commit the bridge's offsets (%s); the batch will be re-read", exc)
            return
        self.payloads += sum(len(records) for records in batches.values())
        self.events += len(events)
        self.rejected += len(rejected)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream bridge``."""
    parser.add_argument(
        "--source",
        action="append",
        metavar="TOPIC=FORMAT",
        help="a source topic and its format (repeatable; CXSTREAM_BRIDGE_SOURCES)",
    )
    parser.add_argument("--broker", help="Kafka bootstrap (CXSTREAM_BROKER)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream bridge``."""
    overrides: dict[str, object] = {}
    if args.source:
        overrides["bridge_sources"] = ",".join(args.source)
    if args.broker is not None:
        overrides["broker"] = args.broker
    settings = load_settings(**overrides)
    install_log_redaction(settings)
    kafka_client_kwargs(settings)  # bad TLS / SASL settings stop here, not in the background
    bridge = Bridge(settings, parse_sources(settings, configured_platforms(settings)))

    run_until_signalled(bridge.run)
    return 0
