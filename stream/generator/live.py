"""Live traffic into Kafka: aiokafka, paced at a target rate, surviving a broker that comes and goes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.config.retry import Backoff
from stream.generator.profile import TrafficProfile
from stream.generator.simulator import TrafficSimulator

log = logging.getLogger(__name__)

#: Connecting, queueing a message, re-sending unacknowledged ones (no jitter: one client).
CONNECT_BACKOFF = Backoff(0.5, 10.0, jitter=0)
SEND_BACKOFF = Backoff(0.2, 5.0, jitter=0)
RESEND_BACKOFF = Backoff(0.5, 5.0, jitter=0)

# --------------------------------------------------------------------------------------
# Live produce
# --------------------------------------------------------------------------------------


@dataclass
class GeneratorStats:
    """What :func:`produce` delivered: counts per topic and per kind, and errors.

    Counts are of messages the broker acknowledged. ``by_kind`` uses the kinds of
    :meth:`TrafficSimulator.events_with_kind` (``contact_started`` ... ``csat`` ...
    ``duplicate``, ``bad:<fault>``).
    """

    by_topic: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    send_errors: int = 0
    """Failed send attempts (each retried)."""
    dropped: int = 0
    """Messages abandoned because the run was stopped while they were still failing."""
    elapsed_s: float = 0.0
    seed: int | None = None

    @property
    def sent(self) -> int:
        """Messages acknowledged, all topics."""
        return sum(self.by_topic.values())

    @property
    def duplicates(self) -> int:
        """Injected duplicates acknowledged."""
        return self.by_kind.get("duplicate", 0)

    @property
    def bad(self) -> int:
        """Injected malformed messages acknowledged."""
        return sum(n for k, n in self.by_kind.items() if k.startswith("bad:"))

    @property
    def events_per_second(self) -> float:
        """Achieved rate over the run."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, for logs and the CLI."""
        return {
            "sent": self.sent,
            "by_topic": dict(self.by_topic),
            "by_kind": dict(self.by_kind),
            "duplicates": self.duplicates,
            "bad": self.bad,
            "send_errors": self.send_errors,
            "dropped": self.dropped,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_second": round(self.events_per_second, 1),
            "seed": self.seed,
        }


# (future, topic, key, value, kind) of a message handed to the producer.
_InFlight = tuple["asyncio.Future[Any]", str, bytes, bytes, str]


class _Run:
    """Stop conditions and error-log throttling shared by the pieces of :func:`produce`."""

    def __init__(self, stop_event: asyncio.Event | None, deadline: float | None) -> None:
        self.stop_event = stop_event
        self.deadline = deadline
        self._last_warning = -math.inf
        self._suppressed = 0

    def stopping(self) -> bool:
        if self.stop_event is not None and self.stop_event.is_set():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when the run is stopped."""
        if self.deadline is not None:
            seconds = min(seconds, self.deadline - time.monotonic())
        if seconds <= 0:
            return
        if self.stop_event is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

    def warn(self, msg: str, *args: Any) -> None:
        # A down broker fails every send; one line every few seconds is enough.
        now = time.monotonic()
        if now - self._last_warning >= 5.0:
            if self._suppressed:
                msg += " (%d similar messages suppressed)"
                args = (*args, self._suppressed)
            log.warning(msg, *args)
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1


async def _start_producer(bootstrap: str, options: Mapping[str, Any], run: _Run) -> AIOKafkaProducer | None:
    """Start a producer, retrying with backoff while the broker is unreachable."""
    failures = 0
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "cxstream-generator",
        "linger_ms": 5,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
    }
    config.update(options)
    while not run.stopping():
        producer = AIOKafkaProducer(**config)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            failures += 1
            delay = CONNECT_BACKOFF.delay(failures)
            run.warn("broker %s unreachable (%s); retrying in %.1fs", bootstrap, exc, delay)
            with contextlib.suppress(Exception):
                await producer.stop()
            await run.sleep(delay)
            continue
        log.info("producer connected to %s", bootstrap)
        return producer
    return None


async def _send(
    producer: AIOKafkaProducer,
    topic: str,
    key: bytes,
    value: bytes,
    kind: str,
    run: _Run,
    stats: GeneratorStats,
) -> _InFlight | None:
    """Hand one message to the producer; retry while it cannot even be queued."""
    failures = 0
    while True:
        try:
            future = await producer.send(topic, value=value, key=key)
        except KafkaError as exc:  # e.g. KafkaTimeoutError: no metadata, broker down
            stats.send_errors += 1
            run.warn("cannot send to %s (%r); retrying", topic, exc)
            if run.stopping():
                return None
            failures += 1
            await run.sleep(SEND_BACKOFF.delay(failures))
            continue
        return future, topic, key, value, kind


async def _settle(
    producer: AIOKafkaProducer, batch: list[_InFlight], run: _Run, stats: GeneratorStats
) -> None:
    """Wait for a batch's acknowledgements, re-sending what failed until it lands.

    A re-sent message may reach the broker twice; it carries the same ``event_id``,
    so the processor's dedup counts it once.
    """
    failures = 0
    while batch:
        results = await asyncio.gather(*(item[0] for item in batch), return_exceptions=True)
        failed: list[_InFlight] = []
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(item)
            else:
                stats.by_topic[item[1]] += 1
                stats.by_kind[item[4]] += 1
        if not failed:
            return
        stats.send_errors += len(failed)
        run.warn("%d messages not acknowledged; re-sending", len(failed))
        if run.stopping():
            stats.dropped += len(failed)
            return
        failures += 1
        await run.sleep(RESEND_BACKOFF.delay(failures))
        batch = []
        for _, topic, key, value, kind in failed:
            resent = await _send(producer, topic, key, value, kind, run, stats)
            if resent is None:
                stats.dropped += 1
            else:
                batch.append(resent)


async def produce(
    bootstrap: str,
    *,
    interactions_topic: str = "cx.interactions",
    surveys_topic: str = "cx.surveys",
    agents_topic: str = "cx.agents",
    rate: float = 200.0,
    duration: float | None = None,
    count: int | None = None,
    profile: TrafficProfile | None = None,
    seed: int | None = None,
    duplicate_ratio: float = 0.0,
    bad_ratio: float = 0.0,
    progress: Callable[[GeneratorStats], None] | None = None,
    stop_event: asyncio.Event | None = None,
    progress_interval: float = 1.0,
    producer_options: Mapping[str, Any] | None = None,
) -> GeneratorStats:
    """Produce live traffic to Kafka until ``duration``, ``count`` or ``stop_event``.

    ``rate`` is events per second over both topics, faults included (``rate <= 0``:
    as fast as the broker takes them). Events carry wall-clock timestamps. The
    profile's ``contacts_per_second`` is rescaled so that simulated time runs at
    wall-clock speed in steady state (handle times and repeat delays then look real
    to the processor). With the default profile the first minutes hold mostly
    ``contact_started`` events, since real contacts take minutes to end; pass
    ``TrafficProfile.demo()`` for a demo that shows every KPI within a minute or two.

    Messages are keyed by ``contact_id`` and JSON-encoded with orjson. Sends are not
    awaited one by one: each small batch is handed to the producer (``linger_ms=5``)
    and acknowledgements are awaited a few batches later, so pacing never waits on a
    round trip. A broker that is down or goes away is logged and retried -- at start
    and for every failed message -- never raised; messages still failing when the
    run stops are counted in ``dropped``. ``producer_options`` go to
    ``AIOKafkaProducer`` (e.g. security settings). ``progress`` is called with the
    running stats every ``progress_interval`` seconds and at the end.

    With no ``duration``, ``count`` or ``stop_event`` it runs until cancelled.
    """
    started_at = time.monotonic()
    run = _Run(stop_event, started_at + duration if duration is not None else None)
    profile = profile if profile is not None else TrafficProfile()
    if rate > 0:
        per_contact = profile.expected_rates()["events_per_contact"]
        valid_share = 1.0 - duplicate_ratio - bad_ratio
        profile = replace(profile, contacts_per_second=max(1e-3, rate * valid_share / per_contact))
    sim = TrafficSimulator(profile, seed, clock="real", duplicate_ratio=duplicate_ratio, bad_ratio=bad_ratio)
    stats = GeneratorStats(seed=sim.seed)
    log.info(
        "producing to %s at %s events/s (seed %d, duplicates %.1f%%, bad %.1f%%)",
        bootstrap,
        f"{rate:g}" if rate > 0 else "max",
        sim.seed,
        100 * duplicate_ratio,
        100 * bad_ratio,
    )
    topics = {"interactions": interactions_topic, "surveys": surveys_topic, "agents": agents_topic}
    options = dict(producer_options or {})
    stream = sim.events_with_kind(None)
    dumps = orjson.dumps
    batch_size = max(1, min(500, round(rate * 0.02))) if rate > 0 else 500
    max_in_flight = 4

    def report() -> None:
        stats.elapsed_s = time.monotonic() - started_at
        if progress is not None:
            progress(stats)

    producer = await _start_producer(bootstrap, options, run)
    if producer is None:
        report()
        return stats
    in_flight: deque[list[_InFlight]] = deque()
    generated = 0
    pace_start = time.monotonic()
    next_progress = pace_start + progress_interval
    try:
        while not run.stopping() and (count is None or generated < count):
            n = batch_size if count is None else min(batch_size, count - generated)
            batch: list[_InFlight] = []
            for ev, kind in itertools.islice(stream, n):
                generated += 1
                value = ev.value if isinstance(ev.value, bytes) else dumps(ev.value)
                item = await _send(producer, topics[ev.topic_kind], ev.key.encode(), value, kind, run, stats)
                if item is None:
                    stats.dropped += 1
                else:
                    batch.append(item)
            in_flight.append(batch)
            while len(in_flight) > max_in_flight:
                await _settle(producer, in_flight.popleft(), run, stats)
            now = time.monotonic()
            if now >= next_progress:
                report()
                next_progress = now + progress_interval
            if rate > 0:
                behind = now - (pace_start + generated / rate)
                if behind > 1.0:
                    # Stalled (broker outage): resume at the target rate, no catch-up burst.
                    pace_start += behind
                elif behind < 0:
                    await run.sleep(-behind)
        while in_flight:
            await _settle(producer, in_flight.popleft(), run, stats)
    finally:
        try:
            await asyncio.wait_for(producer.stop(), 15.0)  # flushes what is still queued
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("producer did not stop cleanly: %r", exc)
        # Only non-empty when cancelled or failing: count what the flush delivered.
        for batch in in_flight:
            for future, topic, _, _, kind in batch:
                if future.done() and not future.cancelled() and future.exception() is None:
                    stats.by_topic[topic] += 1
                    stats.by_kind[kind] += 1
                else:
                    stats.dropped += 1
        report()
        log.info("generator finished: %s", stats.as_dict())
    return stats
