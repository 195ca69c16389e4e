"""Steady background load for the latency, idle and soak runs, in its own process.

``python -m bench.loadgen --bootstrap HOST:PORT --prefix P --rate R [--duration S] --stats FILE``
produces live contact-centre traffic (the benchmark profile, wall-clock timestamps,
1 % duplicates, 0.2 % malformed) and rewrites ``FILE`` every second with its running
totals: ``sent`` (acknowledged by the broker), ``events_per_second`` since the start
and ``last_second_eps``.

Why not :func:`stream.generator.produce`: it hands every record to
``AIOKafkaProducer.send`` (tens of microseconds each), which capped it at 10-12 k
events/s here, below the rate the latency target is defined at. This generator asks
the simulator for every 10 ms tick's events, appends them to one aiokafka
``BatchBuilder`` per topic-partition (a few microseconds per record) and sends each
batch with ``send_batch``. Records are keyed by ``contact_id`` and partitioned by
CRC-32 of the key (any fixed hash keeps a contact's events on one partition, which
is all the pipeline needs). A separate process keeps this CPU off the benchmark
driver's event loop, which times the latency markers; the driver checks from
``FILE`` that the requested rate was reached.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
import zlib
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from bench.common import BAD_RATIO, DUPLICATE_RATIO, TopicSet, bench_profile
from stream.generator import TrafficSimulator

TICK_S = 0.01
#: After a stall, catch up at most this much traffic at once (no unbounded bursts).
MAX_CATCH_UP_S = 0.1


class Stats:
    """Running totals, written to the stats file once a second."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = time.monotonic()
        self.generated = 0
        self.sent = 0
        self.send_errors = 0
        self.in_flight = 0
        self._last = (self.started, 0)
        self.last_second_eps = 0.0

    def write(self) -> None:
        now = time.monotonic()
        at, sent = self._last
        if now - at >= 0.5:
            self.last_second_eps = (self.sent - sent) / (now - at)
            self._last = (now, self.sent)
        elapsed = max(1e-9, now - self.started)
        body = {
            "generated": self.generated,
            "sent": self.sent,
            "send_errors": self.send_errors,
            "dropped": self.generated - self.sent - self.in_flight,
            "elapsed_s": round(elapsed, 3),
            "events_per_second": round(self.sent / elapsed, 1),
            "last_second_eps": round(self.last_second_eps, 1),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(body))
        os.replace(tmp, self.path)


async def generate(
    bootstrap: str, topics: TopicSet, rate: float, duration: float | None, seed: int | None, stats: Stats
) -> None:
    """Produce ``rate`` events/s until ``duration`` or SIGTERM/SIGINT."""
    from aiokafka import AIOKafkaProducer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    profile = bench_profile()
    per_contact = profile.expected_rates()["events_per_contact"]
    valid_share = 1.0 - DUPLICATE_RATIO - BAD_RATIO
    profile = replace(profile, contacts_per_second=max(1e-3, rate * valid_share / per_contact))
    sim = TrafficSimulator(profile, seed, clock="real", duplicate_ratio=DUPLICATE_RATIO, bad_ratio=BAD_RATIO)
    stream = sim.events_with_kind(None)
    names = {"interactions": topics.interactions, "surveys": topics.surveys, "agents": topics.agents}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1024 * 1024, acks=1)
    await producer.start()
    try:
        counts = {name: len(await producer.partitions_for(name)) for name in set(names.values())}
        pending: deque[tuple[asyncio.Future[Any], int]] = deque()

        async def send(builder: Any, slot: tuple[str, int]) -> tuple[asyncio.Future[Any], int]:
            return await producer.send_batch(builder, slot[0], partition=slot[1]), builder.record_count()

        dumps = orjson.dumps
        crc32 = zlib.crc32
        start = time.monotonic()
        next_report = start + 1.0
        generated = 0
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            due = int((now - start) * rate) - generated
            if due > rate * MAX_CATCH_UP_S:
                skipped = due - int(rate * MAX_CATCH_UP_S)
                generated += skipped  # pace restarts from here; no catch-up burst
                due -= skipped
            if due > 0:
                builders: dict[tuple[str, int], Any] = {}
                for event, _kind in itertools.islice(stream, due):
                    topic = names[event.topic_kind]
                    key = event.key.encode()
                    value = event.value if isinstance(event.value, bytes) else dumps(event.value)
                    slot = (topic, crc32(key) % counts[topic])
                    builder = builders.get(slot)
                    if builder is None:
                        builder = builders[slot] = producer.create_batch()
                    if builder.append(key=key, value=value, timestamp=None) is None:
                        pending.append(
                            (
                                await producer.send_batch(builder, slot[0], partition=slot[1]),
                                builder.record_count(),
                            )
                        )
                        builder = builders[slot] = producer.create_batch()
                        builder.append(key=key, value=value, timestamp=None)
                generated += due
                stats.generated += due
                for slot, builder in builders.items():
                    pending.append(
                        (
                            await producer.send_batch(builder, slot[0], partition=slot[1]),
                            builder.record_count(),
                        )
                    )
            while pending and pending[0][0].done():
                future, n = pending.popleft()
                if future.exception() is None:
                    stats.sent += n
                else:
                    stats.send_errors += n
            stats.in_flight = sum(n for _, n in pending)
            if now >= next_report:
                stats.write()
                next_report = now + 1.0
            await asyncio.sleep(TICK_S)
        for future, n in pending:
            try:
                await future
                stats.sent += n
            except Exception:  # counted, not raised: the driver reads the totals
                stats.send_errors += n
        stats.in_flight = 0
    finally:
        await producer.stop()
        stats.write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True, help="topic prefix (bench.common.TopicSet)")
    parser.add_argument("--rate", type=float, required=True, help="events/s over both input topics")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM)")
    parser.add_argument("--stats", type=Path, required=True, help="running totals, rewritten every second")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    stats = Stats(args.stats)
    asyncio.run(generate(args.bootstrap, TopicSet(args.prefix), args.rate, args.duration, args.seed, stats))


if __name__ == "__main__":
    main()
