"""Queues and agents on a real broker (contract v2): every new KPI equals an independent count.

The traffic (tests/queue_traffic.py) is built from each contact's waits and each agent's
state changes; the expected KPIs are computed from those lists with the contract's
formulas, not by pairing events, and compared with a worker's /metrics per queue x
channel and window (``15m``, ``1h`` and ``today`` in a half-hour time zone), with the
live gauges at scrape time, and with ``cxstream replay`` of the same recording.

A second test kills the worker with SIGKILL between batches of waits and checks that the
restarted worker's live waiting counts, oldest waits and wait counts are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis

from tests.harness import Topics, by_labels, produce_records, replay_prometheus, wait_until, write_recording
from tests.queue_checks import mismatches
from tests.queue_traffic import QUEUES_FILE, build, expected_waiting, expected_waits

pytestmark = pytest.mark.integration

WINDOWS = {"15m": 900, "1h": 3600, "today": 90_000}
ZONE = "America/St_Johns"
S = 1000


RULES = """
rules:
  - name: longest_wait_high
    metric: cx_longest_wait_seconds
    group_by: [queue]
    op: ">"
    threshold: 120
  - name: service_level_low
    metric: cx_service_level_ratio
    window: 1h
    group_by: [queue]
    op: "<"
    threshold: 0.8
    min_samples: 5
"""


def expected_alerts(truth: Any) -> set[str]:
    """The alert ids RULES must fire on the truth: every queue with someone waiting over 120 s,
    every queue whose 1h service level (over all channels) is under 80 % on >= 5 waits."""
    ids = {
        f'longest_wait_high{{queue="{queue}"}}'
        for (queue, _), (count, age) in expected_waiting(truth).items()
        if count and age > 120
    }
    per_queue: dict[str, list[float]] = {}
    for (queue, _), c in expected_waits(truth, {"1h": 3600}, ZoneInfo(ZONE))["1h"].items():
        sums = per_queue.setdefault(queue, [0.0, 0.0])
        sums[0] += c["cx_answered_within_threshold"]
        sums[1] += c["cx_answered_contacts"] + c["cx_abandoned_contacts"] - c["cx_short_abandoned_contacts"]
    ids |= {
        f'service_level_low{{queue="{q}"}}'
        for q, (within, offered) in per_queue.items()
        if offered >= 5 and within / offered < 0.8
    }
    return ids


def test_every_queue_and_agent_kpi_equals_the_independent_computation(
    broker: Any, topics: Topics, start_worker: Any, redis_server: Any, tmp_path: Path
) -> None:
    now = int(time.time() * 1000) - 60_000
    records, truth = build(seed=7, t0=now - 3 * 3_600_000, t_end=now)
    queues = tmp_path / "queues.yml"
    queues.write_text(QUEUES_FILE)
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    prefix = f"q{topics.prefix}"
    settings = {
        "CXSTREAM_CLOCK": "event",
        "CXSTREAM_WINDOWS": "15m,1h,today",
        "CXSTREAM_TIMEZONE": ZONE,
        "CXSTREAM_QUEUES_FILE": str(queues),
        "CXSTREAM_ALERT_RULES": str(rules),
        "CXSTREAM_ALERT_INTERVAL": "1s",
        "CXSTREAM_SNAPSHOT_INTERVAL": "1s",
        "CXSTREAM_REDIS_PREFIX": prefix,
    }
    worker = start_worker(**settings)
    worker.wait_ready(0)
    topic_of = {"interactions": topics.interactions, "agents": topics.agents}
    payload = [(topic_of[kind], key, orjson.dumps(value)) for kind, key, value in records]
    asyncio.run(produce_records(broker.bootstrap, payload))

    def counted() -> float:
        samples = worker.samples()
        return sum(
            v
            for labels, v in samples["cx_events_total"]
            if labels["topic"] in topic_of.values() and labels["outcome"] in ("accepted", "duplicate")
        )

    wait_until(lambda: counted() == len(records), timeout=90, interval=0.5)
    zone = ZoneInfo(ZONE)
    with contextlib.suppress(TimeoutError):  # the assertion below shows what differs
        wait_until(lambda: not mismatches(worker.samples(), truth, WINDOWS, zone), timeout=20)
    assert mismatches(worker.samples(), truth, WINDOWS, zone) == []
    assert sum(v for labels, v in worker.samples()["cx_events_total"] if labels["outcome"] == "rejected") == 0

    # The alert rules, on the live gauge and on the service level, see the same numbers.
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    want = expected_alerts(truth)
    assert any(a.startswith("longest_wait_high") for a in want) and any(
        a.startswith("service_level") for a in want
    )
    try:
        wait_until(lambda: set(client.hgetall(f"{prefix}:alerts:active")) == want, timeout=30)
        firing = {k: orjson.loads(v) for k, v in client.hgetall(f"{prefix}:alerts:active").items()}
    finally:
        client.close()
    longest = next(a for a in firing.values() if a["rule"] == "longest_wait_high")
    assert longest["window"] == "now" and longest["samples"] >= 1 and longest["value"] > 120

    # The same recording through `cxstream replay` gives the same numbers.
    path = write_recording(tmp_path / "queues.jsonl", [(topic_of[k], key, v) for k, key, v in records])
    replayed = replay_prometheus(
        path,
        topics,
        CXSTREAM_CLOCK="event",
        CXSTREAM_WINDOWS="15m,1h,today",
        CXSTREAM_TIMEZONE=ZONE,
        CXSTREAM_QUEUES_FILE=str(queues),
    )
    assert mismatches(replayed, truth, WINDOWS, zone) == []


def _wait_event(kind: str, contact: str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"{kind}-{contact}", "type": kind, "contact_id": contact, "timestamp": ts, **fields}


def test_sigkill_keeps_live_waiting_counts_exact(broker: Any, topics: Topics, start_worker: Any) -> None:
    now = int(time.time() * 1000)
    queued = {f"w{i}": (("billing", "sales")[i % 2], now - (90 - i) * S) for i in range(30)}
    batch_1: list[dict[str, Any]] = []
    for contact, (queue, ts) in queued.items():
        batch_1.append(_wait_event("contact_queued", contact, ts, queue=queue, channel="voice"))
    answered_1 = [f"w{i}" for i in range(0, 10)]
    batch_1 += [_wait_event("contact_answered", c, queued[c][1] + 12 * S) for c in answered_1]

    def send(events: list[dict[str, Any]]) -> None:
        asyncio.run(
            produce_records(
                broker.bootstrap, [(topics.interactions, e["contact_id"], orjson.dumps(e)) for e in events]
            )
        )

    def waiting(worker: Any) -> dict[tuple[str, ...], float]:
        return {k: v for k, v in by_labels(worker.samples(), "cx_contacts_waiting").items() if v}

    def ended(worker: Any) -> float:
        return sum(by_labels(worker.samples(), "cx_waits_ended", window="15m").values())

    first = start_worker(CXSTREAM_WINDOWS="15m")
    first.wait_ready(0)
    send(batch_1)
    wait_until(lambda: ended(first) == 10 and sum(waiting(first).values()) == 20, timeout=60)
    first.kill()

    # While the worker is down: five more answers and eight new waits.
    answered_2 = [f"w{i}" for i in range(10, 15)]
    later = now + 5 * S
    new = {f"n{i}": ("sales", later + i * S) for i in range(8)}
    batch_2 = [_wait_event("contact_answered", c, later + 20 * S) for c in answered_2]
    batch_2 += [_wait_event("contact_queued", c, ts, queue=q, channel="chat") for c, (q, ts) in new.items()]
    batch_2 += [_wait_event("contact_answered", c, queued[c][1] + 12 * S) for c in answered_1[:3]]  # re-sent
    send(batch_2)

    second = start_worker(CXSTREAM_WINDOWS="15m")
    second.wait_ready(0)
    still = {c: v for c, v in queued.items() if c not in answered_1 + answered_2}
    expected = {("billing", "voice"): 0.0, ("sales", "voice"): 0.0, ("sales", "chat"): 8.0}
    for queue, _ in still.values():
        expected[(queue, "voice")] += 1
    expected = {k: v for k, v in expected.items() if v}
    wait_until(lambda: waiting(second) == expected and ended(second) == 15, timeout=90)
    samples = second.samples()
    scraped_at = time.time() * 1000
    longest = by_labels(samples, "cx_longest_wait_seconds")
    for key in expected:
        oldest = min(
            [ts for c, (q, ts) in still.items() if (q, "voice") == key]
            + [ts for c, (q, ts) in new.items() if (q, "chat") == key]
        )
        assert abs(longest[key] - (scraped_at - oldest) / 1000) < 3.0, (key, longest[key])
    answered = by_labels(samples, "cx_answered_contacts", window="15m")
    assert sum(answered.values()) == 15  # the re-sent answers counted once
    time.sleep(2)
    assert waiting(second) == expected and ended(second) == 15
