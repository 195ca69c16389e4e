"""End to end on real parts: events into a real broker, KPIs out of the real worker's /metrics.

The expected values come from tests/expected.py, an independent naive computation
over the same events, with duplicates removed there by event_id and malformed
messages excluded; the malformed ones must appear on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from stream.generator import TrafficProfile, TrafficSimulator
from tests.expected import expected_kpis
from tests.harness import Topics, by_labels, produce_records, wait_until

pytestmark = pytest.mark.integration

WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400}
COUNT_NAMES = [
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
RATIO_NAMES = [
    "cx_csat_ratio",
    "cx_csat_average",
    "cx_nps_score",
    "cx_ces_easy_ratio",
    "cx_ces_high_effort_ratio",
    "cx_transfer_ratio",
]


def simulated_traffic(
    n: int, start_ms: int, profile: TrafficProfile | None = None
) -> tuple[list[tuple[str, str, Any]], int]:
    """(kind, key, value) records with 3% duplicates and 2% malformed; and the bad count."""
    sim = TrafficSimulator(profile, seed=7, start_ms=start_ms, duplicate_ratio=0.03, bad_ratio=0.02)
    records = [(e.topic_kind, e.key, e.value) for e in sim.events(n)]
    bad = sum(isinstance(v, bytes) for _, _, v in records)
    return records, bad


async def read_deadletters(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(messages) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                messages.extend(records)
    finally:
        await consumer.stop()
    return messages


def test_kpis_match_independent_computation(broker, topics: Topics, start_worker) -> None:
    worker = start_worker()
    worker.wait_ready(partitions=4)

    now = int(time.time() * 1000)
    records, bad = simulated_traffic(3000, start_ms=now - 20 * 60_000)
    assert bad > 10
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}
    to_send = [
        (topic_of[kind], key, value if isinstance(value, bytes) else orjson.dumps(value))
        for kind, key, value in records
    ]
    asyncio.run(produce_records(broker.bootstrap, to_send))
    valid = [(kind, value) for kind, _, value in records if not isinstance(value, bytes)]
    duplicates = len(valid) - len({(k, v["event_id"]) for k, v in valid})
    assert duplicates > 10

    def all_consumed() -> bool:
        events = worker.samples()["cx_events_total"]
        return sum(v for labels, v in events if labels["topic"] in topic_of.values()) == len(records)

    wait_until(all_consumed, timeout=90)
    outcomes: dict[str, float] = {}
    for labels, value in worker.samples()["cx_events_total"]:
        if labels["topic"] in topic_of.values():
            outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + value
    assert outcomes == {
        "accepted": len(valid) - duplicates,
        "duplicate": duplicates,
        "rejected": bad,
        "late": 0,
    }

    for _attempt in range(5):
        before = time.time()
        samples = worker.samples()
        after = time.time()
        if int(before // 60) == int(after // 60):
            break
    expected = expected_kpis(valid, int(before * 1000), WINDOWS)
    assert expected["24h"], "the test data must produce some series"
    for window in WINDOWS:
        exp = expected[window]
        for name in COUNT_NAMES:
            got = by_labels(samples, name, window=window)
            want = {dims: c.get(name, 0) for dims, c in expected["24h"].items()}
            want = {dims: exp.get(dims, {}).get(name, 0) for dims in want}
            assert got == want, f"{name} window={window}"
        for name in RATIO_NAMES:
            got = by_labels(samples, name, window=window)
            want = {dims: c[name] for dims, c in exp.items() if name in c}
            assert got.keys() == want.keys(), f"{name} window={window}"
            for dims, value in want.items():
                assert math.isclose(got[dims], value, rel_tol=1e-9), (name, window, dims)
        got = by_labels(samples, "cx_survey_response_ratio", window=window)
        want = {
            (*dims, m): c[f"response:{m}"]
            for dims, c in exp.items()
            for m in ("csat", "nps", "ces")
            if f"response:{m}" in c
        }
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert math.isclose(got[key], value, rel_tol=1e-9)

    dead = asyncio.run(read_deadletters(broker.bootstrap, topics.deadletter, bad))
    assert len(dead) == bad
    bad_values = sorted(v for _, _, v in records if isinstance(v, bytes))
    assert sorted(m.value or b"" for m in dead) == sorted(bad_values)
    for message in dead:
        headers = dict(message.headers)
        assert headers["cx-reason"], "every dead letter carries a reason"
        assert headers["cx-source-topic"] in (topics.interactions.encode(), topics.surveys.encode())


def test_metrics_exposition_passes_promtool(broker, topics: Topics, start_worker) -> None:
    """`promtool check metrics` on the live output: no errors, no lint warnings."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus; `make system-deps`)"
    worker = start_worker()
    worker.wait_ready(partitions=4)
    now = int(time.time() * 1000)
    records, _ = simulated_traffic(600, start_ms=now - 5 * 60_000, profile=TrafficProfile.demo())
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}
    asyncio.run(
        produce_records(
            broker.bootstrap,
            [(topic_of[k], key, v if isinstance(v, bytes) else orjson.dumps(v)) for k, key, v in records],
        )
    )
    wait_until(lambda: "cx_csat_ratio{" in worker.metrics_text(), timeout=60)
    text = worker.metrics_text()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output
