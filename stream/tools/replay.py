"""``cxstream replay FILE.jsonl``: recompute KPIs from recorded events, in event time.

The records run through the same pipeline code as the worker (validation, dedup,
contact join, customer repartition and repeat detection, event-time buckets)
with the event clock: windows end at the newest event time in the file, so a
month-old recording gives the figures as they were at its end. Two modes:

* default: in-process, no broker needed; prints the KPIs per window and queue
  (``--format table``), as JSON, or in the Prometheus text format;
* ``--produce``: sends the records to the configured Kafka topics unchanged (event
  time is in the events), for a worker started with ``CXSTREAM_CLOCK=event``.

File format: one JSON object per line, ``{"topic", "key", "value"}`` or, for
bytes that are not JSON, ``{"topic", "key", "value_b64"}`` (see
:func:`stream.generator.write_jsonl`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from stream.config.settings import Settings, load_settings
from stream.domain.kpi import COUNTERS, derived_kpis
from stream.domain.processor import InputMessage, Processor, customer_partition, customer_topic_name
from stream.domain.state import TRANSITION_MARK, PartitionState, split_dim_key
from stream.query.windows import WindowTotals, reader_for

CHUNK = 5000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream replay``."""
    parser.add_argument("file", type=Path, help="JSONL file: {topic, key, value|value_b64} per line")
    parser.add_argument(
        "--format", choices=["table", "json", "prometheus"], default="table", help="output (default table)"
    )
    parser.add_argument(
        "--produce", action="store_true", help="send the records to Kafka instead of computing in-process"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream replay``."""
    if not args.file.is_file():
        print(f"cxstream replay: no such file: {args.file}", file=sys.stderr)
        return 2
    settings = load_settings(clock="event")
    progress = None if args.quiet else Progress(count_lines(args.file))
    if args.produce:
        sent = asyncio.run(produce_file(settings, args.file, progress))
        print(f"sent {sent} records to {settings.broker}", file=sys.stderr)
        return 0
    replay = Replay(settings)
    replay.feed(read_records(args.file), progress)
    totals = replay.totals()
    write_output(totals, replay, args.format, sys.stdout)
    return 0


def read_records(path: Path) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value bytes) per line; malformed values stay bytes for the dead-letter path.

    The values as :func:`stream.generator.jsonl.read_raw` reads them: JSON text verbatim.
    """
    from stream.generator.jsonl import read_raw

    for topic, key, value, _is_json in read_raw(path):
        yield topic, key.encode(), value


def count_lines(path: Path) -> int:
    """Number of non-empty lines, for the progress bar."""
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


class Progress:
    """A one-line progress bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._drawn > 0.2 or self.done >= self.total:
            self._drawn = now
            share = min(self.done / self.total, 1.0)
            rate = self.done / max(now - self.started, 1e-9)
            bar = "#" * int(share * 30)
            self.stream.write(f"\r[{bar:<30}] {share:6.1%} {self.done}/{self.total} {rate:,.0f} events/s")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()


class Replay:
    """The worker's pipeline without Kafka: partitions by key hash, repartition in-process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processor = Processor(settings)
        self.partitions = settings.partitions
        self.states = [PartitionState(p) for p in range(self.partitions)]
        self.customer_topic = customer_topic_name(settings)
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.dead_letters = 0
        self.known_topics = {settings.topic_interactions, settings.topic_surveys, settings.topic_agents}

    def _partition(self, key: bytes) -> int:
        # The worker's own partitioner for the customer topic; for the input topics any
        # fixed hash does (Kafka's producers choose there, and no KPI depends on which).
        return customer_partition(key, self.partitions)

    def _message(self, topic: str, key: bytes, value: bytes) -> tuple[int, InputMessage]:
        partition = self._partition(key)
        offset = self._offsets[(topic, partition)]
        self._offsets[(topic, partition)] = offset + 1
        return partition, InputMessage(topic, offset, key, value)

    def feed(self, records: Iterable[tuple[str, bytes, bytes]], progress: Progress | None = None) -> None:
        """Process all records in chunks, then release every pending join."""
        chunk: list[tuple[str, bytes, bytes]] = []
        for record in records:
            if record[0] not in self.known_topics:
                raise ValueError(
                    f"record for topic {record[0]!r}; expected {sorted(self.known_topics)} "
                    "(set CXSTREAM_TOPIC_INTERACTIONS / CXSTREAM_TOPIC_SURVEYS / CXSTREAM_TOPIC_AGENTS)"
                )
            chunk.append(record)
            if len(chunk) >= CHUNK:
                self._process(chunk)
                if progress:
                    progress.advance(len(chunk))
                chunk = []
        if chunk:
            self._process(chunk)
            if progress:
                progress.advance(len(chunk))
        # Joins still waiting for their contact_started are released as 'unknown'.
        release_at = int(time.time() * 1000) + int(self.settings.join_grace * 1000) + 1
        for state in self.states:
            self.processor.tick(state, release_at)

    def _process(self, records: list[tuple[str, bytes, bytes]]) -> None:
        wall = int(time.time() * 1000)
        by_partition: dict[int, list[InputMessage]] = defaultdict(list)
        for topic, key, value in records:
            partition, message = self._message(topic, key, value)
            by_partition[partition].append(message)
        forwards: dict[int, list[InputMessage]] = defaultdict(list)
        for partition, messages in by_partition.items():
            state = self.states[partition]
            outcome = self.processor.apply(state, messages, wall)
            self.dead_letters += len(outcome.dead_letters)
            for customer, record in outcome.forwards:
                target, message = self._message(self.customer_topic, customer.encode(), record)
                forwards[target].append(message)
        for partition, messages in forwards.items():
            self.processor.process_batch(self.states[partition], messages, wall)
        for state in self.states:
            # What the live worker does after every batch and on its timer, minus the
            # writing: end the batch (dedup ids become an expiring unit) and expire state.
            state.take_changes()
            self.processor.tick(state, wall)
            state.take_changes()

    def totals(self) -> WindowTotals:
        """Per-window totals at the newest event time."""
        reader = reader_for(self.settings)
        return reader.read(self.states, self.processor.watermark_ms)


def write_output(totals: WindowTotals, replay: Replay, fmt: str, out: TextIO) -> None:
    """Print the replayed KPIs."""
    labels = replay.processor.label_names()
    rows: list[dict[str, Any]] = []
    for window, per_dim in totals.items():
        for dim, counts in sorted(per_dim.items()):
            if dim.startswith(TRANSITION_MARK):
                continue
            row: dict[str, Any] = {"window": window, **dict(zip(labels, split_dim_key(dim), strict=False))}
            row.update({name: counts[i] for i, name in enumerate(COUNTERS)})
            derived = derived_kpis(counts, replay.settings.service_level_policy)
            row.update({k: v for k, v in derived.items() if v is not None})
            rows.append(row)
    if fmt == "json":
        summary = {
            "as_of_ms": replay.processor.watermark_ms,
            "events": {f"{t}:{o}": n for (t, o), n in sorted(replay.processor.outcomes.items())},
            "rows": rows,
        }
        out.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "prometheus":
        from prometheus_client import generate_latest

        from stream.outputs.exporter import KpiCollector, build_registry

        collector = KpiCollector(
            lambda: replay.states,
            replay.processor,
            reader_for(replay.settings),
            topics=sorted(replay.known_topics),
        )
        out.write(generate_latest(build_registry(collector)).decode())
    else:
        as_of = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(replay.processor.watermark_ms / 1000))
        out.write(f"KPIs as of {as_of} UTC (newest event time in the file)\n")
        out.write(
            f"{'window':<7}{'queue':<16}{'channel':<10}{'contacts':>9}{'repeat':>8}{'switch':>8}"
            f"{'transf':>8}{'CSAT':>7}{'NPS':>6}{'CES hi':>8}\n"
        )
        for row in rows:

            def pct(key: str, row: dict[str, Any] = row) -> str:
                return f"{100 * row[key]:.0f}%" if key in row else "-"

            nps = f"{row['nps_score']:.0f}" if "nps_score" in row else "-"
            out.write(
                f"{row['window']:<7}{row.get('queue', ''):<16}{row.get('channel', ''):<10}"
                f"{row['contacts']:>9.0f}{pct('repeat_contact_ratio'):>8}{pct('channel_switch_ratio'):>8}"
                f"{pct('transfer_ratio'):>8}{pct('csat_ratio'):>7}{nps:>6}{pct('ces_high_effort_ratio'):>8}\n"
            )


async def produce_file(settings: Settings, path: Path, progress: Progress | None) -> int:
    """Send the file's records to Kafka, keys and values unchanged."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=10)
    await producer.start()
    sent = 0
    try:
        pending = []
        for topic, key, value in read_records(path):
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= CHUNK:
                await asyncio.gather(*pending)
                if progress:
                    progress.advance(len(pending))
                pending = []
        await asyncio.gather(*pending)
        if progress:
            progress.advance(len(pending))
    finally:
        await producer.stop()
    return sent
