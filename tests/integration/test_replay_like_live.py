"""``cxstream replay`` and a live worker give identical KPIs on the same recording.

Both run the same pipeline with the event clock; the recording exercises what used to
make them differ: events re-sent after ``CXSTREAM_DEDUP_HORIZON`` (new again, so counted
again -- replay used to keep every event id forever and call them duplicates), surveys
and ends that arrive before their contact's start (out-of-order joins) and repeat
customers on changing channels.

The recording has three parts: A (an hour of traffic with the originals), B (an hour of
filler, several replay chunks long, so replay's periodic expiry runs after the horizon
has passed, as the live worker's timer does) and C (re-sends of A's CSAT answers). The
live worker gets the parts with a pause between them for its timer.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from stream.config.timeutil import local_midnight_s
from stream.tools.replay import CHUNK
from tests.harness import Topics, produce_records, replay_prometheus, wait_until, write_recording

pytestmark = pytest.mark.integration

MIN = 60_000
CHECKED = (
    "cx_contacts",
    "cx_repeat_contacts",
    "cx_channel_switches",
    "cx_contacts_ended",
    "cx_transferred_contacts",
    "cx_csat_responses",
    "cx_csat_satisfied",
    "cx_nps_responses",
    "cx_ces_responses",
    "cx_ces_high_effort",
    "cx_repeat_contact_ratio",
    "cx_csat_ratio",
    "cx_transfer_ratio",
)
Record = tuple[str, dict[str, Any]]  # (kind, event)


def part_a(t0: int) -> list[Record]:
    """An hour: 40 contacts of 10 customers (repeats, channel switches), ends, transfers,
    surveys; every fourth contact's survey and end arrive before its start."""
    records: list[Record] = []
    for i in range(40):
        contact, ts = f"a{i}", t0 + i * 90_000
        start: Record = (
            "interactions",
            {
                "event_id": f"start-{contact}",
                "type": "contact_started",
                "contact_id": contact,
                "customer_id": f"cust{i % 10}",
                "channel": ("voice", "chat", "email")[i % 3],
                "queue": ("billing", "sales")[i % 2],
                "timestamp": ts,
            },
        )
        later: list[Record] = [
            ("surveys", {"event_id": f"csat-{contact}", "contact_id": contact, "metric": "csat",
                         "score": 1 + i % 5, "timestamp": ts + 3 * MIN}),
            ("interactions", {"event_id": f"end-{contact}", "type": "contact_ended", "contact_id": contact,
                              "resolved": i % 3 == 0, "timestamp": ts + 2 * MIN}),
        ]  # fmt: skip
        if i % 5 == 0:
            later.append(
                ("interactions", {"event_id": f"xfer-{contact}", "type": "contact_transferred",
                                  "contact_id": contact, "to_queue": "sales", "timestamp": ts + MIN})
            )  # fmt: skip
        records += [*later, start] if i % 4 == 0 else [start, *later]
        if i % 2:
            records.append(
                ("surveys", {"event_id": f"ces-{contact}", "contact_id": contact, "metric": "ces",
                             "score": 1 + i % 7, "timestamp": ts + 4 * MIN})
            )  # fmt: skip
    return records


def part_b(t0: int) -> list[Record]:
    """Filler over the hour after A: NPS answers with their own queue and channel.

    Event ids expire per batch, from the newest event time in the batch (live: an agent
    batch; replay: a chunk of the file), and replay's first chunk holds A's end and B's
    beginning; three chunks over an hour put more than the horizon after that batch.
    """
    n = 3 * CHUNK
    return [
        (
            "surveys",
            {
                "event_id": f"fill-{i}",
                "contact_id": f"f{i}",
                "metric": "nps",
                "score": i % 11,
                "queue": "general",
                "channel": "web",
                "timestamp": t0 + 70 * MIN + i * 60 * MIN // n,
            },
        )
        for i in range(n)
    ]


def part_c(a: list[Record]) -> list[Record]:
    """A's CSAT answers sent again, unchanged (same event_id, same timestamp)."""
    return [(kind, event) for kind, event in a if event["event_id"].startswith("csat-")]


def kpis(samples: dict[str, list[tuple[dict[str, str], float]]]) -> dict[tuple[str, ...], float]:
    return {
        (name, labels["window"], labels["queue"], labels["channel"]): value
        for name in CHECKED
        for labels, value in samples.get(name, [])
        if value
    }


def test_replay_and_live_agree_with_resends_after_the_dedup_horizon(
    broker: Any, topics: Topics, start_worker: Any, tmp_path: Path
) -> None:
    t0 = int(time.time() * 1000) - 3 * 60 * MIN
    a, b = part_a(t0), part_b(t0)
    c = part_c(a)
    settings = {
        "CXSTREAM_CLOCK": "event",
        "CXSTREAM_DEDUP_HORIZON": "20m",
        # `today` in a zone 5:45 ahead of UTC: its midnight is a 15-minute bucket edge only
        "CXSTREAM_WINDOWS": "15m,1h,24h,today",
        "CXSTREAM_TIMEZONE": "Asia/Kathmandu",
    }
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}

    def payload(records: list[Record]) -> list[tuple[str, str, bytes]]:
        return [(topic_of[k], e["contact_id"], orjson.dumps(e)) for k, e in records]

    worker = start_worker(**settings)
    worker.wait_ready(partitions=4)

    def accepted() -> float:
        return sum(v for labels, v in worker.samples()["cx_events_total"] if labels["outcome"] == "accepted")

    sent = 0
    for part in (a, b, c):
        asyncio.run(produce_records(broker.bootstrap, payload(part)))
        sent += len(part)
        wait_until(lambda total=sent: accepted() == total, timeout=60, interval=0.3)  # type: ignore[misc]
        time.sleep(2.5)  # the worker's timer (CXSTREAM_TICK_INTERVAL=1s) expires old event ids
    live = kpis(worker.samples())

    path = write_recording(
        tmp_path / "recording.jsonl", [(topic_of[k], e["contact_id"], e) for k, e in a + b + c]
    )
    replayed_samples = replay_prometheus(path, topics, **settings)
    replayed = kpis(replayed_samples)

    # The re-sent answers are new again (the horizon passed): counted twice, in both.
    csat = sum(
        v for (name, window, _, _), v in live.items() if name == "cx_csat_responses" and window == "24h"
    )
    assert csat == 2 * len(c)
    assert sum(
        v for labels, v in replayed_samples["cx_events_total"] if labels["outcome"] == "accepted"
    ) == len(a) + len(b) + len(c)
    assert replayed == live

    # `today` runs from Kathmandu's midnight before the newest event (the event clock's now).
    newest = max(e["timestamp"] for _, e in a + b + c)
    midnight_ms = local_midnight_s(newest // 1000, ZoneInfo("Asia/Kathmandu")) * 1000
    today_csat = sum(
        v for (name, window, _, _), v in live.items() if name == "cx_csat_responses" and window == "today"
    )
    assert today_csat == sum(
        1 for _, e in a + c if e["event_id"].startswith("csat-") and e["timestamp"] >= midnight_ms
    )
    assert any(window == "today" for _, window, _, _ in live)  # the newest event is always in it
