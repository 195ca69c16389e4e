"""Fuzz run on real parts: hostile messages among valid traffic, through a real worker.

The corpus (tests/unit/test_fuzz_validation.py::hostile_corpus) holds malformed and
hostile messages on both input topics -- broken JSON, huge strings, wrong types, NaN,
out-of-range scores, far-future and pre-1970 timestamps, invalid UTF-8, very deep
nesting, 1 MB values, tombstones and hostile keys -- each with the outcome the contract
prescribes, plus hostile-looking *valid* events (unknown fields, labels with quotes and
emoji, ancient timestamps counted as late, re-sent event ids). They are interleaved with
simulated traffic and produced to the broker. Then:

* every malformed message is on the dead-letter topic exactly once, with its original
  bytes and the expected ``cx-reason`` header; nothing else is;
* ``cx_events_total`` counts exactly the rejected, accepted, late and duplicate messages;
* the KPI counts equal the independent computation of tests/expected.py over the valid
  events (hostile labels round-trip through the exposition format);
* the worker never crashes (still alive, no crash in its log) and its resident memory
  grows by a bounded amount.

CI runs 1,000 malformed messages; ``-m slow`` runs 10,000 (``make test-slow``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.generator import TrafficProfile, TrafficSimulator
from tests.expected import expected_kpis
from tests.harness import Topics, WorkerProcess, by_labels, wait_until
from tests.unit.test_fuzz_validation import FuzzCase, hostile_corpus

pytestmark = pytest.mark.integration

WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400}
CHECKED = [
    "cx_contacts",
    "cx_contacts_ended",
    "cx_transferred_contacts",
    "cx_csat_responses",
    "cx_csat_satisfied",
    "cx_nps_responses",
    "cx_nps_promoters",
    "cx_nps_passives",
    "cx_nps_detractors",
    "cx_ces_responses",
    "cx_ces_easy",
    "cx_ces_high_effort",
]
#: The producer must take the 1 MB values (aiokafka's default max_request_size is 1 MiB).
MAX_REQUEST = 4 * 1024 * 1024
#: A worker that dead-letters thousands of messages (2 MB of them 1 MB values) may grow
#: by buffers, dedup memory and Python's allocator high-water mark; not by the input size.
RSS_GROWTH_LIMIT_KIB = 200 * 1024
#: Rejected input leaves nothing behind: once the allocator's high-water mark is reached,
#: another wave of it reuses freed memory.
REPEAT_GROWTH_LIMIT_KIB = 32 * 1024


# -- helpers --------------------------------------------------------------------------------
async def produce_raw(bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]]) -> None:
    """Send (topic, key, value) as-is -- None keys and tombstones included -- and await acks."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=MAX_REQUEST, request_timeout_ms=60_000
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """Read ``topic`` from the start until ``expected`` records (then one more empty poll)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_REQUEST,
        fetch_max_bytes=4 * MAX_REQUEST,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got = [r for rs in batch.values() for r in rs]
            records.extend(got)
            if len(records) >= expected and not got:
                break
    finally:
        await consumer.stop()
    return records


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def outcomes(worker: WorkerProcess, topic: str) -> Counter[str]:
    return Counter(
        {
            labels["outcome"]: int(value)
            for labels, value in worker.samples().get("cx_events_total", [])
            if labels.get("topic") == topic
        }
    )


def kpi_mismatch(worker: WorkerProcess, valid: list[tuple[str, dict[str, Any]]]) -> str | None:
    """None when the worker's counts equal the independent computation (1h, 24h windows)."""
    samples = worker.samples()
    expected = expected_kpis(valid, int(time.time() * 1000), WINDOWS)
    for window in ("1h", "24h"):
        for name in CHECKED:
            got = {k: v for k, v in by_labels(samples, name, window=window).items() if v}
            want = {d: c[name] for d, c in expected[window].items() if c.get(name)}
            if got != want:
                extra = {k: v for k, v in got.items() if want.get(k) != v}
                missing = {k: v for k, v in want.items() if got.get(k) != v}
                return f"{name}[{window}]: worker has {extra}, expected {missing}"
    return None


def interleave(valid: list[Any], hostile: list[Any], rng: random.Random) -> list[Any]:
    """A random merge that keeps each list's own order (per-contact event order matters)."""
    total = len(valid) + len(hostile)
    slots = set(rng.sample(range(total), len(hostile)))
    vi, hi = iter(valid), iter(hostile)
    return [next(hi) if i in slots else next(vi) for i in range(total)]


def digest(value: bytes | None) -> str:
    return hashlib.sha1(value or b"").hexdigest()


# -- the run --------------------------------------------------------------------------------
def fuzz_run(
    broker: Any, topics: Topics, start_worker: Any, *, n_rejected: int, n_valid: int, one_mb: int, seed: int
) -> dict[str, Any]:
    worker = start_worker()
    worker.wait_ready(partitions=4, timeout=120)
    assert worker.proc is not None
    rss_before = rss_kib(worker.proc.pid)

    now = int(time.time() * 1000)
    sim = TrafficSimulator(TrafficProfile.demo(), seed=seed, start_ms=now - 40 * 60_000, duplicate_ratio=0.03)
    simulated = [(e.topic_kind, e.key, e.value) for e in sim.events(n_valid)]
    assert not any(isinstance(v, bytes) for _, _, v in simulated)
    corpus = hostile_corpus(n_rejected, seed=seed, now_ms=now, one_mb=one_mb)
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}

    valid_msgs = [(kind, key.encode(), orjson.dumps(value), value, "valid") for kind, key, value in simulated]
    hostile_msgs = [(c.kind, c.key, c.value, c, "case") for c in corpus]
    stream = interleave(valid_msgs, hostile_msgs, random.Random(seed))
    records = [(topic_of[kind], key, value) for kind, key, value, _, _ in stream]

    # What the contract says must come out.
    valid_events: list[tuple[str, dict[str, Any]]] = [(kind, value) for kind, _, value in simulated]
    # The contract treats an explicit null like an absent field (e.g. "scale": null is the
    # default agree_1_7); tests/expected.py reads fields with dict.get(name, default), so
    # hand it the events without their nulls.
    valid_events += [
        (c.kind, {k: v for k, v in c.event.items() if v is not None})
        for c in corpus
        if c.outcome != "rejected" and c.event is not None
    ]
    want: dict[str, Counter[str]] = {kind: Counter() for kind in topic_of}
    seen: set[tuple[str, str]] = set()
    for kind, _, _, payload, source in stream:
        if source == "case" and payload.outcome in ("rejected", "late"):
            want[kind][payload.outcome] += 1
            continue
        event = payload.event if source == "case" else payload
        key = (kind, event["event_id"])
        want[kind]["duplicate" if key in seen else "accepted"] += 1
        seen.add(key)
    rejects: list[FuzzCase] = [c for c in corpus if c.outcome == "rejected"]

    started = time.monotonic()
    asyncio.run(produce_raw(broker.bootstrap, records))
    produced_s = time.monotonic() - started

    def converged() -> bool:
        for kind, topic in topic_of.items():
            got = outcomes(worker, topic)
            assert {k: got[k] for k in want[kind]} == dict(want[kind]), (
                f"{kind}: {dict(got)} != {dict(want[kind])}"
            )
        problem = kpi_mismatch(worker, valid_events)
        assert problem is None, problem
        return True

    try:
        wait_until(converged, timeout=180, interval=1.0)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{worker.log_tail(40)}") from None
    converged_s = time.monotonic() - started

    dead = asyncio.run(read_topic(broker.bootstrap, topics.deadletter, len(rejects)))
    got_dead = Counter((digest(r.value), dict(r.headers)["cx-reason"].decode()) for r in dead)
    want_dead = Counter((digest(c.value), c.reason) for c in rejects)
    assert got_dead == want_dead, (
        f"dead letters differ: {len(dead)} read, {len(rejects)} expected; "
        f"missing {list((want_dead - got_dead).items())[:5]}, "
        f"unexpected {list((got_dead - want_dead).items())[:5]}"
    )
    source_topics = Counter(dict(r.headers)["cx-source-topic"].decode() for r in dead)
    assert source_topics == Counter(topic_of[c.kind] for c in rejects)
    # Original bytes, byte for byte (the digests above), and the key too.
    assert Counter(r.key or b"" for r in dead) == Counter(c.key or b"" for c in rejects)

    assert worker.alive(), worker.log_tail(40)
    log_text = worker.log_path.read_text(errors="replace")
    for marker in ("Crashed", "Traceback", "CRITICAL"):
        assert marker not in log_text, f"{marker!r} in worker log:\n{worker.log_tail(60)}"
    rss_after = rss_kib(worker.proc.pid)

    # Memory is bounded by state, not by bad input: send the malformed messages twice more.
    # The first repeat may still raise the allocator's high-water mark (1 MB values); the
    # second must find the memory already there: a per-message leak would keep growing.
    resend = [(topic_of[c.kind], c.key, c.value) for c in rejects]
    rss_waves = []
    for wave in (2, 3):
        asyncio.run(produce_raw(broker.bootstrap, resend))

        def rejected_again(wave: int = wave) -> bool:
            for kind, topic in topic_of.items():
                assert outcomes(worker, topic)["rejected"] == wave * want[kind]["rejected"]
            return True

        wait_until(rejected_again, timeout=180, interval=1.0)
        time.sleep(2)
        rss_waves.append(rss_kib(worker.proc.pid))
    assert worker.alive(), worker.log_tail(40)
    figures = {
        "malformed": len(rejects),
        "messages": len(records),
        "bytes": sum(len(v or b"") for _, _, v in records),
        "outcomes": {kind: dict(counts) for kind, counts in want.items()},
        "reasons": len({c.reason for c in rejects}),
        "produce_s": round(produced_s, 1),
        "converged_s": round(converged_s, 1),
        "rss_before_mib": round(rss_before / 1024),
        "rss_after_mib": round(rss_after / 1024),
        "rss_after_repeats_mib": [round(r / 1024) for r in rss_waves],
    }
    print(f"fuzz figures: {figures}")
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB, figures
    assert rss_waves[1] - rss_waves[0] < REPEAT_GROWTH_LIMIT_KIB, figures
    return figures


def test_fuzz_1000_malformed_messages_among_valid_traffic(broker, topics: Topics, start_worker) -> None:
    fuzz_run(broker, topics, start_worker, n_rejected=1000, n_valid=2000, one_mb=2, seed=101)


@pytest.mark.slow
def test_fuzz_10000_malformed_messages_among_valid_traffic(broker, topics: Topics, start_worker) -> None:
    fuzz_run(broker, topics, start_worker, n_rejected=10_000, n_valid=20_000, one_mb=20, seed=202)


@pytest.mark.slow
def test_input_too_large_for_a_dead_letter_copy_does_not_crash_the_worker(
    broker, topics: Topics, start_worker
) -> None:
    worker = start_worker()
    worker.wait_ready(partitions=4, timeout=120)
    now = int(time.time() * 1000)
    valid = {"event_id": "after-big", "contact_id": "c1", "metric": "csat", "score": 5, "timestamp": now}
    valid.update(queue="q", channel="voice")
    huge = b'{"blob": "' + b"x" * (20 * 1024 * 1024) + b'"}'

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=32 * 1024 * 1024)
        await producer.start()
        try:
            await producer.send_and_wait(topics.surveys, huge, key=b"c1")
            await producer.send_and_wait(topics.surveys, orjson.dumps(valid), key=b"c1")
        finally:
            await producer.stop()

    asyncio.run(send())

    def done() -> bool:
        if not worker.alive():
            raise RuntimeError(f"worker died:\n{worker.log_tail(15)}")  # not retried by wait_until
        got = outcomes(worker, topics.surveys)
        return got["rejected"] == 1 and got["accepted"] == 1

    wait_until(done, timeout=90, interval=1.0)
