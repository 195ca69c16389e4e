"""The pure pipeline, in process: ``Processor.process_batch`` and the changelog encoding, no broker.

``python -m bench.profile_pipeline [--events N] [--batch 2000] [--pyinstrument] [--cprofile]``

Pre-generates the same realistic events as ``python -m bench``, assigns them to 4
partitions exactly as the Kafka default partitioner does (murmur2 of the
``contact_id`` key), cuts the interleaved stream into agent-sized batches and
times three stages over it:

* ``decode``: ``orjson.loads`` of every value (the floor for any Python consumer);
* ``process``: ``Processor.process_batch`` per partition (validation, dedup, joins,
  buckets), what the agent calls;
* ``process+commit``: the above plus ``StateLogTable.commit_batch`` with a stub
  ``write_changelog`` (so it measures the changelog encoding, not the producer).

Comparing ``process+commit`` with the worker's end-to-end rate (``python -m bench``)
tells how much of the worker's time is the pipeline and how much Faust's per-event
stream machinery. ``--pyinstrument`` / ``--cprofile`` print where the pipeline
itself spends its time.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import orjson

from bench.common import make_dataset


def build_batches(
    records: list[tuple[str, bytes, bytes]], batch: int, partitions: int = 4
) -> tuple[list[list[tuple[int, Any]]], Any]:
    """[(partition, InputMessage)] per agent batch, with per-topic-partition offsets."""
    from aiokafka.partitioner import DefaultPartitioner

    from stream.config.settings import Settings
    from stream.domain.processor import InputMessage

    settings = Settings(partitions=partitions)
    topic_of = {"interactions": settings.topic_interactions, "surveys": settings.topic_surveys}
    partitioner = DefaultPartitioner()
    all_partitions = list(range(partitions))
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    messages: list[tuple[int, Any]] = []
    for kind, key, value in records:
        topic = topic_of[kind]
        partition = partitioner(key, all_partitions, all_partitions)
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] = offset + 1
        messages.append((partition, InputMessage(topic, offset, key, value)))
    return [messages[i : i + batch] for i in range(0, len(messages), batch)], settings


def run_pipeline(batches: list[list[tuple[int, Any]]], settings: Any, commit: bool) -> dict[str, Any]:
    """Process every batch the way ``stream.runtime.app.handle_batch`` does; return counters.

    Contact starts the processor forwards (re-keyed by customer_id, for repeat
    detection) are partitioned like the worker's producer does and fed back in the
    next batch, as the worker's own consumer would deliver them.
    """
    from stream.domain.processor import InputMessage, Processor, customer_partition, customer_topic_name
    from stream.domain.state import PartitionState
    from stream.runtime.commitlog import StateLogTable

    processor = Processor(settings)
    customer_topic = customer_topic_name(settings)
    customer_offsets = [0] * settings.partitions
    states: dict[int, PartitionState] = {}
    written = {"records": 0, "bytes": 0}

    def write_changelog(partition: int, records: list[tuple[bytes, bytes]], after: Any = ()) -> None:
        written["records"] += len(records)
        written["bytes"] += sum(len(key) + len(value) for key, value in records)

    table = SimpleNamespace(write_changelog=write_changelog)
    wall = int(time.time() * 1000)
    dead_letters = forwarded = 0
    forwards: list[tuple[int, Any]] = []
    for batch in [*batches, []]:
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for partition, message in forwards:
            by_partition[partition].append(message)
        forwards = []
        for partition, message in batch:
            by_partition[partition].append(message)
        for partition, messages in by_partition.items():
            state = states.get(partition)
            if state is None:
                state = states[partition] = PartitionState(partition)
            outcome = processor.apply(state, messages, wall)
            dead_letters += len(outcome.dead_letters)
            for customer, record in outcome.forwards:
                key = customer.encode()
                target = customer_partition(key, settings.partitions)
                offset = customer_offsets[target]
                customer_offsets[target] += 1
                forwards.append((target, InputMessage(customer_topic, offset, key, record)))
            forwarded += len(outcome.forwards)
            if commit:
                StateLogTable.commit_batch(table, state)  # type: ignore[arg-type]
    outcomes: dict[str, dict[str, int]] = defaultdict(dict)
    for (topic, outcome), n in sorted(processor.outcomes.items()):
        kind = "customer_contacts" if topic == customer_topic else topic.rsplit(".", 1)[-1]
        outcomes[kind][outcome] = n
    return {
        "outcomes": dict(outcomes),
        "dead_letters": dead_letters,
        "forwarded": forwarded,
        "changelog_records": written["records"],
        "changelog_bytes": written["bytes"],
        "contacts": sum(len(s.contacts) for s in states.values()),
    }


def expected_outcomes(
    records: list[tuple[str, bytes, bytes]], batch: int = 2000, partitions: int = 4
) -> dict[str, Any]:
    """What the worker must report for ``records``: the in-process pipeline's outcome counts."""
    batches, settings = build_batches(records, batch, partitions)
    return run_pipeline(batches, settings, False)


def timed(fn: Any, *args: Any, repeat: int = 3) -> tuple[float, Any]:
    """Best-of-``repeat`` wall time of ``fn(*args)`` with the GC as in production (on)."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_pipeline", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000, help="events per agent batch (CXSTREAM_BATCH_MAX)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--pyinstrument", action="store_true", help="print a pyinstrument profile")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions by cProfile")
    parser.add_argument("--html", default=None, help="write the pyinstrument profile as HTML here")
    args = parser.parse_args(argv)

    data = make_dataset(args.events)
    batches, settings = build_batches(data.records, args.batch)
    n = len(data.records)
    values = [v for _, _, v in data.records]

    def decode_all(values: list[bytes]) -> int:
        loads = orjson.loads
        bad = 0
        for value in values:
            try:
                loads(value)
            except orjson.JSONDecodeError:
                bad += 1
        return bad

    t_decode, _ = timed(decode_all, values, repeat=args.repeat)
    t_process, _ = timed(run_pipeline, batches, settings, False, repeat=args.repeat)
    t_commit, info = timed(run_pipeline, batches, settings, True, repeat=args.repeat)
    result = {
        "events": n,
        "batch": args.batch,
        "decode_eps": round(n / t_decode),
        "process_eps": round(n / t_process),
        "process_commit_eps": round(n / t_commit),
        "us_per_event": {
            "decode": round(1e6 * t_decode / n, 2),
            "process": round(1e6 * t_process / n, 2),
            "commit_encoding": round(1e6 * (t_commit - t_process) / n, 2),
        },
        **info,
    }
    print(f"pure pipeline, {n:,} events in batches of {args.batch} over 4 partitions (best of {args.repeat})")
    print(f"  orjson.loads only           {result['decode_eps']:>10,} events/s")
    print(f"  process_batch               {result['process_eps']:>10,} events/s")
    print(f"  process_batch + changelog   {result['process_commit_eps']:>10,} events/s")
    print(
        f"  changelog: {info['changelog_records']:,} records, {info['changelog_bytes'] / 1e6:.1f} MB "
        f"({info['changelog_records'] / n:.2f} records/event); outcomes {info['outcomes']}"
    )

    if args.pyinstrument or args.html:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        run_pipeline(batches, settings, True)
        profiler.stop()
        if args.html:
            with open(args.html, "w") as fh:
                fh.write(profiler.output_html())
            print(f"pyinstrument profile written to {args.html}")
        if args.pyinstrument:
            print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.cprofile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        run_pipeline(batches, settings, True)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    return result


if __name__ == "__main__":
    main()
