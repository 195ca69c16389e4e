"""Input topic checks at start-up: create what is missing, refuse a partition mismatch.

The state changelog has ``CXSTREAM_PARTITIONS`` partitions and partition *n* of
every input topic maps to state partition *n*, so the input topics must have
exactly that many partitions. Finding out at start-up beats silently splitting a
contact's events across workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from stream.config.security import kafka_client_kwargs
from stream.config.settings import Settings

log = logging.getLogger(__name__)


class TopicConfigError(RuntimeError):
    """An input topic exists with the wrong number of partitions."""


async def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> None:
    """Create the input and dead-letter topics if needed; verify partition counts."""
    from stream.domain.processor import customer_topic_name

    names = [
        settings.topic_interactions,
        settings.topic_surveys,
        settings.topic_agents,
        customer_topic_name(settings),
        settings.topic_deadletter,
    ]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_timeout_ms=int(timeout * 1000),
        **kafka_client_kwargs(settings),
    )
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError(
                    f"cannot reach the broker at CXSTREAM_BROKER={settings.broker}: {exc}"
                ) from exc
            log.warning("broker %s not reachable yet (%s); retrying", settings.broker, exc)
            await asyncio.sleep(1.0)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing and settings.create_topics:
            log.info("creating topics %s with %d partitions", missing, settings.partitions)
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing]
                )
        elif missing:
            raise TopicConfigError(f"topics {missing} do not exist and CXSTREAM_CREATE_TOPICS is false")
        described = await admin.describe_topics(names[:4])
        for topic in described:
            count = len(topic.get("partitions", []))
            if count and count != settings.partitions:
                raise TopicConfigError(
                    f"topic {topic['topic']} has {count} partitions but CXSTREAM_PARTITIONS="
                    f"{settings.partitions}; they must match (state is co-partitioned)"
                )
    finally:
        await admin.close()
