"""``cxstream bridge`` on real parts: vendor payloads on Kafka -> input topics -> worker, exactly once.

Amazon Connect contact records (re-delivered and updated copies included) and contact
events (one re-delivered) sit on two source topics, as a Kinesis -> Kafka connector would
leave them, with a garbage record and a tombstone among them. A bridge translates them for
a worker on the event clock; the KPIs must be those worked out by hand from the fixtures
(the two formats overlap on purpose: events and records of different contacts). Then a
second bridge in a fresh consumer group re-reads every source record, as a bridge that
lost its commits would: everything is re-produced with the same event ids and the worker's
KPIs do not move.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Topics, WorkerProcess, by_labels, produce_records, wait_until, worker_env
from tests.integration.test_fuzz import read_topic

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
Q1 = "4c1f2a9e-0b7c-4d1e-9f3a-billing00001"
Q2 = "7d2e3b0f-1c8d-4e2f-8a4b-support00002"
EXPECTED = {  # 24h window by (queue, channel)
    "cx_contacts": {(Q1, "voice"): 2, (Q2, "chat"): 1},  # records D, F; E (events name no customer)
    # records D 15 s, F 10 s / 29 s; events A 18.5 s, C 12 s / 39 s
    "cx_answered_contacts": {(Q1, "voice"): 4, (Q2, "voice"): 2},
    "cx_answered_within_threshold": {(Q1, "voice"): 4, (Q2, "voice"): 0},
    "cx_abandoned_contacts": {(Q2, "chat"): 2},  # record E after 116 s, events B after 90 s
    "cx_contacts_ended": {(Q1, "voice"): 2, (Q2, "chat"): 1},
    "cx_transferred_contacts": {(Q1, "voice"): 1},  # F (C's transfer: C never ends in events)
}


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def kpis(worker: WorkerProcess) -> dict[str, dict[tuple[str, ...], float]]:
    samples = worker.samples()
    return {name: {k: v for k, v in by_labels(samples, name, window="24h").items() if v} for name in EXPECTED}


def want() -> dict[str, dict[tuple[str, ...], float]]:
    return {name: {k: float(v) for k, v in values.items() if v} for name, values in EXPECTED.items()}


def test_bridge_translates_exactly_once_even_when_it_reads_everything_again(
    broker: Any, redis_server: Any, topics: Topics, tmp_path: Path
) -> None:
    ctr, events = f"{topics.prefix}.connect-ctr", f"{topics.prefix}.connect-events"
    records = [
        (ctr, "k", body)
        for name in ("answered", "abandoned", "transferred")
        for body in lines(FIXTURES / f"amazon-connect-ctr/{name}.jsonl")
    ]
    records += [
        (events, "k", body)
        for name in ("answered", "abandoned", "transferred")
        for body in lines(FIXTURES / f"amazon-connect-events/{name}.jsonl")
    ]
    records.append((ctr, "k", b"not json at all"))
    asyncio.run(produce_records(broker.bootstrap, records))

    # The fixtures span 1.5 h of event time: the dedup horizon (1h by default, in event time on
    # the event clock) must cover them for a re-read of *everything* to be all duplicates. A
    # crashed bridge re-reads only its last uncommitted batch, seconds old.
    env = worker_env(
        broker.url,
        topics,
        tmp_path / "data",
        CXSTREAM_REDIS_URL=redis_server.url,
        CXSTREAM_DEDUP_HORIZON="1d",
    )
    env.update(
        CXSTREAM_CLOCK="event",
        CXSTREAM_BRIDGE_SOURCES=f"{ctr}=amazon-connect-ctr,{events}=amazon-connect-events",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    first = WorkerProcess(
        dict(env, CXSTREAM_BRIDGE_GROUP=f"{topics.prefix}-g1"), tmp_path / "b1.log", command="bridge"
    )
    first.start()
    second = None
    try:
        try:
            wait_until(lambda: kpis(worker) == want(), 120)
        except TimeoutError:
            raise AssertionError(f"{kpis(worker)}\n{first.log_tail()}\n{worker.log_tail()}") from None
        dead = asyncio.run(read_topic(broker.bootstrap, topics.deadletter, 1))
        assert [dict(r.headers)["cx-reason"] for r in dead] == [b"invalid_json"]
        assert dict(dead[0].headers)["cx-source-topic"] == ctr.encode()
        first.kill()  # a crash; its replacement below starts from scratch

        duplicates_before = _duplicates(worker, topics)
        accepted_before = _outcome(worker, topics, "accepted")
        before_all = worker.samples().get("cx_events_total")
        second = WorkerProcess(
            dict(env, CXSTREAM_BRIDGE_GROUP=f"{topics.prefix}-g2"), tmp_path / "b2.log", command="bridge"
        ).start()
        # the 32 events the first bridge produced, all again: all duplicates, no KPI moves
        try:
            wait_until(lambda: _duplicates(worker, topics) - duplicates_before >= 32, 120)
        except TimeoutError:
            counts = worker.samples().get("cx_events_total")
            raise AssertionError(f"{counts} (before: {before_all})\n{second.log_tail()}") from None
        time.sleep(2)
        assert _duplicates(worker, topics) - duplicates_before == 32
        assert _outcome(worker, topics, "accepted") == accepted_before
        assert kpis(worker) == want()
        assert worker.alive() and second.alive()
    finally:
        for process in (first, second, worker):
            if process is not None:
                process.stop()


def _outcome(worker: WorkerProcess, topics: Topics, outcome: str) -> float:
    return sum(
        value
        for labels, value in worker.samples().get("cx_events_total", [])
        if labels["topic"] == topics.interactions and labels["outcome"] == outcome
    )


def _duplicates(worker: WorkerProcess, topics: Topics) -> float:
    return _outcome(worker, topics, "duplicate")
