"""Rebalance: a second worker joins, later it is killed; counts stay exact at every stable point.

Each worker exports only the partitions it owns (docs/architecture.md, "Export"), so the
union of the two workers' /metrics must equal the independent computation over all
events, and each worker's own /metrics must equal the computation over exactly the
events of its partitions (the producer's partitioner is deterministic, so the test knows
which events those are). A series exported by both workers at once would double a sum or
break a worker's own figure.

A *stable point* is when the two /healthz partition lists are disjoint and together cover
every partition. tansu holds a group join for half the session timeout (6 s in tests)
and a rebalance can take 10-20 s here, so timeouts are generous.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream.generator import TrafficProfile, TrafficSimulator
from tests.expected import CONTACT_AND_SURVEY_COUNTS, expected_kpis
from tests.harness import Topics, WorkerProcess, _get, by_labels, produce_records, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = [0, 1, 2, 3]
WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400}
CHECKED = list(CONTACT_AND_SURVEY_COUNTS)
Event = tuple[str, str, dict[str, Any]]  # (kind, key, value)


def partition_of(key: str) -> int:
    """The partition the test producer's default partitioner (murmur2) sends ``key`` to."""
    return int(DefaultPartitioner()(key.encode(), PARTITIONS, PARTITIONS))


def owned(worker: WorkerProcess) -> set[int]:
    return set(orjson.loads(_get(worker.url + "/healthz"))["partitions"])


def counts(workers: list[WorkerProcess], window: str) -> dict[str, dict[tuple[str, ...], float]]:
    """Count gauges summed over ``workers``: name -> (queue, channel) -> value (zeros dropped)."""
    total: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in CHECKED}
    for worker in workers:
        samples = worker.samples()
        for name in CHECKED:
            for dims, value in by_labels(samples, name, window=window).items():
                total[name][dims] = total[name].get(dims, 0) + value
    return {name: {d: v for d, v in values.items() if v} for name, values in total.items()}


def mismatch(
    workers: list[WorkerProcess], events: list[Event], partitions: set[int] | None = None
) -> str | None:
    """None when the summed counts of ``workers`` equal the computation over ``events``
    (restricted to ``partitions`` if given)."""
    valid = [
        (kind, value) for kind, key, value in events if partitions is None or partition_of(key) in partitions
    ]
    expected = expected_kpis(valid, int(time.time() * 1000), WINDOWS)
    for window in ("1h", "24h"):
        got = counts(workers, window)
        for name in CHECKED:
            want = {d: c[name] for d, c in expected[window].items() if c.get(name)}
            if got[name] != want:
                return (
                    f"{name}[{window}] over partitions {sorted(partitions or PARTITIONS)}: "
                    f"got total {sum(got[name].values())}, want {sum(want.values())}"
                )
    return None


def accepted(worker: WorkerProcess, topics: Topics) -> float:
    """cx_events_total{outcome="accepted"} over the two input topics."""
    return sum(
        value
        for labels, value in worker.samples().get("cx_events_total", [])
        if labels.get("outcome") == "accepted"
        and labels.get("topic") in (topics.interactions, topics.surveys)
    )


def summary(workers: list[WorkerProcess]) -> dict[str, float]:
    """A few 24h totals over ``workers``, for the log of what each stable point held."""
    got = counts(workers, "24h")
    return {
        name: sum(got[name].values()) for name in ("cx_contacts", "cx_contacts_ended", "cx_csat_responses")
    }


def stable(workers: list[WorkerProcess]) -> list[set[int]]:
    """The workers' partition sets once they are disjoint and cover every partition."""
    sets = [owned(w) for w in workers]
    union: set[int] = set().union(*sets)
    disjoint = sum(len(s) for s in sets) == len(union)
    assert disjoint and union == set(PARTITIONS) and all(sets), f"not stable yet: {sets}"
    return sets


def exact_at_stable_point(
    workers: list[WorkerProcess], events: list[Event], timeout: float
) -> list[set[int]]:
    """Wait for a stable point at which the union and every worker on its own are exact."""

    def check() -> list[set[int]]:
        sets = stable(workers)
        problem = mismatch(workers, events)
        assert problem is None, problem
        for worker, partitions in zip(workers, sets, strict=True):
            problem = mismatch([worker], events, partitions)
            assert problem is None, f"worker on :{worker.port}: {problem}"
        assert stable(workers) == sets, "partitions moved while checking"
        return sets

    try:
        return wait_until(check, timeout=timeout, interval=1.0)  # type: ignore[no-any-return]
    except TimeoutError as exc:
        logs = "\n".join(f"--- worker :{w.port} ---\n{w.log_tail(25)}" for w in workers)
        raise AssertionError(f"{exc}\n{logs}") from None


def traffic(
    topics: Topics, n: int, seed: int, start_ms: int
) -> tuple[list[Event], list[tuple[str, str, bytes]]]:
    sim = TrafficSimulator(TrafficProfile.demo(), seed=seed, start_ms=start_ms, duplicate_ratio=0.03)
    events = [(e.topic_kind, e.key, e.value) for e in sim.events(n)]
    assert not any(isinstance(v, bytes) for _, _, v in events)
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}
    return events, [(topic_of[kind], key, orjson.dumps(value)) for kind, key, value in events]  # type: ignore[misc]


def test_second_worker_joins_then_is_killed_counts_stay_exact(broker, topics: Topics, start_worker) -> None:
    now = int(time.time() * 1000)
    # Three disjoint slices of simulated traffic (different seeds and customer ids).
    first, first_payload = traffic(topics, 3000, seed=31, start_ms=now - 40 * 60_000)
    second, second_payload = traffic(topics, 3000, seed=32, start_ms=now - 35 * 60_000)
    third, third_payload = traffic(topics, 2000, seed=33, start_ms=now - 30 * 60_000)
    keys = {key for _, key, _ in first + second + third}
    assert {partition_of(k) for k in keys} == set(PARTITIONS)

    a = start_worker()
    a.wait_ready(partitions=4, timeout=120)
    asyncio.run(produce_records(broker.bootstrap, first_payload))
    exact_at_stable_point([a], first, timeout=120)

    # B joins: the group rebalances and B recovers its partitions from the changelog A wrote.
    b = start_worker()
    print(f"one worker, first slice: {summary([a])}")
    sets = exact_at_stable_point([a, b], first, timeout=180)
    print(f"B joined: A owns {sorted(sets[0])} {summary([a])}, B owns {sorted(sets[1])} {summary([b])}")

    # Traffic while both run lands on both, each counting only its own partitions.
    asyncio.run(produce_records(broker.bootstrap, second_payload))
    sets = exact_at_stable_point([a, b], first + second, timeout=120)
    print(f"second slice: A {summary([a])} + B {summary([b])} = {summary([a, b])}")

    # B crashes (kill -9) while traffic flows, so some of its input is processed but not
    # committed; after the session timeout A takes every partition back, recovers what B
    # committed, gets the rest redelivered, and alone equals the whole.
    def produce_slowly() -> None:
        for start in range(0, len(third_payload), 250):
            asyncio.run(produce_records(broker.bootstrap, third_payload[start : start + 250]))
            time.sleep(0.3)

    accepted_before = accepted(b, topics)
    producer = threading.Thread(target=produce_slowly)
    producer.start()
    wait_until(lambda: accepted(b, topics) > accepted_before + 300, timeout=60, interval=0.2)
    b.kill()
    producer.join()
    exact_at_stable_point([a], first + second + third, timeout=180)
    # and stays exact (no late double counting from B's uncommitted input being redelivered)
    time.sleep(3)
    assert mismatch([a], first + second + third) is None
    assert owned(a) == set(PARTITIONS)
    print(f"B killed mid-stream (third slice): A alone {summary([a])}")
