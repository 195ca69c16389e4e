"""Translated events onto the input topics, acknowledged or not at all.

The ingest server and the Kafka bridge promise the same thing: a payload is reported as
taken (HTTP 2xx, a committed source offset) only after the broker acknowledged every event
it maps to, with ``acks=all``. A failure or a timeout is reported as not taken (HTTP 503,
no commit) and the sender retries; the deterministic event ids make the retry harmless if
the first attempt did land after all. Bad payloads get a dead-letter copy with the same
headers the worker writes (``cx-reason``, ``cx-detail``, ``cx-source-*``), so one topic holds
every rejected input (:meth:`~stream.domain.processor.DeadLetter.record`).

The producer connects in the background with backoff: a broker that is down at start-up
or goes away later makes :meth:`Delivery.send` fail fast (:class:`BrokerUnavailable`)
instead of the process crashing, and it recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.config.retry import Backoff
from stream.config.security import kafka_client_kwargs
from stream.config.settings import Settings
from stream.domain.processor import DeadLetter
from stream.platforms.mapping import Topic, Translated, input_topics

log = logging.getLogger(__name__)

CONNECT_BACKOFF = Backoff(0.5, 10.0)


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; nothing may be reported as taken."""


class Delivery:
    """One aiokafka producer for the input topics and the dead-letter topic."""

    def __init__(self, settings: Settings, *, client_id: str = "cxstream-ingest") -> None:
        self.settings = settings
        self.topics: dict[Topic, str] = input_topics(settings)
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        #: False after a send failed, until one succeeds (for /healthz).
        self.healthy = False

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting in the background (returns at once)."""
        self._connector = asyncio.create_task(self._connect(), name="delivery-connect")

    async def _connect(self) -> None:
        failures = 0
        while True:  # until connected, or cancelled by stop()
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.bootstrap_servers,
                client_id=self._client_id,
                acks="all",
                linger_ms=2,
                request_timeout_ms=int(self.settings.ingest_send_timeout * 1000),
                retry_backoff_ms=200,
                max_request_size=max(self.settings.deadletter_max_bytes + 4096, 1_048_576),
                **kafka_client_kwargs(self.settings),
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                failures += 1
                delay = CONNECT_BACKOFF.delay(failures)
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "broker %s unreachable (%s); retrying in %.1fs", self.settings.broker, exc, delay
                    )
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                continue
            log.info("connected to the broker %s", self.settings.broker)
            self._producer = producer
            self.healthy = True
            return

    async def stop(self) -> None:
        """Flush and close."""
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()

    @property
    def connected(self) -> bool:
        """Whether the producer is up (it may still fail a send)."""
        return self._producer is not None

    # -- sending -----------------------------------------------------------------
    async def send(
        self,
        events: Sequence[Translated],
        rejected: Sequence[DeadLetter] = (),
        *,
        timeout: float | None = None,
    ) -> None:
        """Produce every event (keyed by contact or agent id) and dead letter; wait for all acks.

        Raises :class:`BrokerUnavailable` when the producer is not connected, a send fails, or
        the acknowledgements take longer than ``CXSTREAM_INGEST_SEND_TIMEOUT``.
        """
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("not connected to the broker yet")
        if not events and not rejected:
            return
        try:
            async with asyncio.timeout(timeout or self.settings.ingest_send_timeout):
                futures: list[Any] = []
                for event in events:
                    futures.append(
                        await producer.send(self.topics[event.topic], event.value, key=event.key.encode())
                    )
                for item in rejected:
                    value, headers = item.record(self.settings.deadletter_max_bytes)
                    futures.append(
                        await producer.send(
                            self.settings.topic_deadletter, value, key=item.key, headers=headers
                        )
                    )
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            self.healthy = False
            raise BrokerUnavailable(f"the broker did not acknowledge: {type(exc).__name__}: {exc}") from None
        self.healthy = True
