"""High-effort signals on a real broker: a scripted multi-day customer history.

Repeats inside and outside the horizon, a channel switch, a same-reason repeat, an
out-of-order start that turns a later contact into a repeat after the fact,
transfers (one before its contact's start), a survey that arrives before its
contact, duplicates and a malformed message: /metrics must equal the expected
values, and `cxstream replay` over the same events must agree.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.expected import in_window
from tests.harness import Topics, by_labels, produce_records, replay_prometheus, wait_until, write_recording

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 24 * HOUR
HORIZON = 2 * DAY
WINDOWS = {"1h": 3600, "24h": 86400, "4d": 4 * 86400}


def scripted_history(now: int) -> list[list[tuple[str, dict[str, Any]]]]:
    """Phases of (kind, event); each phase is produced after the previous one is processed."""
    n = iter(range(1000))

    def start(cid: str, cust: str, channel: str, queue: str, ago: int, reason: str | None = None):
        event = {
            "event_id": f"e{next(n)}",
            "type": "contact_started",
            "contact_id": cid,
            "customer_id": cust,
            "channel": channel,
            "queue": queue,
            "timestamp": now - ago,
        }
        if reason:
            event["reason"] = reason
        return ("interactions", event)

    def other(kind: str, cid: str, ago: int, **extra: Any):
        return (
            "interactions",
            {"event_id": f"e{next(n)}", "type": kind, "contact_id": cid, "timestamp": now - ago, **extra},
        )

    def survey(cid: str, metric: str, score: int, ago: int, **extra: Any):
        return (
            "surveys",
            {
                "event_id": f"s{next(n)}",
                "contact_id": cid,
                "metric": metric,
                "score": score,
                "timestamp": now - ago,
                **extra,
            },
        )

    phase1 = [
        # survey before its contact exists; CES effort scale 5 = very high effort
        survey("c3", "ces", 5, 9 * HOUR, scale="effort_1_5"),
        # customer C, out of order: the later contact first
        start("c7", "C", "email", "tech", 20 * 60_000),
        # transfer before its start
        other("contact_transferred", "c7", 19 * 60_000, to_queue="billing"),
    ]
    c2 = start("c2", "A", "chat", "billing", 2 * DAY, reason="refund")
    phase2 = [
        start("c1", "A", "voice", "billing", int(3.5 * DAY), reason="refund"),
        c2,
        start("c3", "A", "chat", "billing", 10 * HOUR, reason="password"),
        other("contact_transferred", "c3", 10 * HOUR - 60_000, to_queue="tech"),
        other("contact_ended", "c3", 10 * HOUR - 120_000, resolved=False, handle_seconds=600),
        start("c4", "B", "voice", "sales", int(3.9 * DAY)),
        start("c5", "B", "voice", "sales", 30 * 60_000),
        other("contact_ended", "c5", 25 * 60_000, resolved=True, handle_seconds=240),
        start("c6", "C", "voice", "tech", 50 * 60_000),
        other("contact_ended", "c7", 10 * 60_000, resolved=True, handle_seconds=120),
        survey("c7", "csat", 2, 5 * 60_000),
        survey("c5", "nps", 10, 5 * 60_000, survey_id="sv5"),
        survey("c5", "nps", 9, 4 * 60_000, survey_id="sv5"),  # same survey_id+metric: not counted
        c2,  # duplicate: same event_id
    ]
    return [phase1, phase2]


def expected(
    events: list[tuple[str, dict[str, Any]]], now: int
) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """Naive expected counts per window and (queue, channel), written from the contract."""
    unique = {(k, e["event_id"]): (k, e) for k, e in events}.values()
    starts = {e["contact_id"]: e for k, e in unique if k == "interactions" and e["type"] == "contact_started"}
    transferred = {
        e["contact_id"] for k, e in unique if k == "interactions" and e["type"] == "contact_transferred"
    }
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in starts.values():
        by_customer[s["customer_id"]].append(s)
    flags: dict[str, tuple[bool, bool, bool, str | None]] = {}
    for history in by_customer.values():
        history.sort(key=lambda s: s["timestamp"])
        for i, s in enumerate(history):
            prev = history[i - 1] if i else None
            repeat = prev is not None and s["timestamp"] - prev["timestamp"] <= HORIZON
            switch = repeat and prev["channel"] != s["channel"]
            same = repeat and s.get("reason") is not None and s.get("reason") == prev.get("reason")
            flags[s["contact_id"]] = (repeat, switch, same, prev["channel"] if switch else None)
    result: dict[str, dict[Any, dict[str, float]]] = {}
    for window, seconds in WINDOWS.items():
        counts: dict[Any, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        answered: set[tuple[str, str, str]] = set()
        for kind, e in unique:
            if not in_window(e["timestamp"], now, seconds):
                continue
            start = starts.get(e["contact_id"], {})
            dims = (start.get("queue", "unknown"), start.get("channel", "unknown"))
            if kind == "interactions" and e["type"] == "contact_started":
                c = counts[dims]
                repeat, switch, same, prev_channel = flags[e["contact_id"]]
                c["cx_contacts"] += 1
                c["cx_repeat_contacts"] += repeat
                c["cx_channel_switches"] += switch
                c["cx_same_reason_repeats"] += same
                if switch:
                    counts[("transition", prev_channel, e["channel"])]["n"] += 1
            elif kind == "interactions" and e["type"] == "contact_ended":
                c = counts[dims]
                c["cx_contacts_ended"] += 1
                c["cx_transferred_contacts"] += e["contact_id"] in transferred
                c["cx_handle_time_seconds"] += e["handle_seconds"]
                c["cx_resolved_contacts"] += e["resolved"]
            elif kind == "surveys":
                key = (e["contact_id"], e.get("survey_id", e["event_id"]), e["metric"])
                if key in answered:
                    continue
                answered.add(key)
                c = counts[dims]
                c[f"cx_{e['metric']}_responses"] += 1
                if e["metric"] == "ces":
                    c["cx_ces_high_effort"] += e["score"] >= 4
        result[window] = {d: dict(c) for d, c in counts.items()}
    return result


COUNT_NAMES = [
    "cx_contacts",
    "cx_repeat_contacts",
    "cx_channel_switches",
    "cx_same_reason_repeats",
    "cx_contacts_ended",
    "cx_transferred_contacts",
    "cx_handle_time_seconds",
    "cx_resolved_contacts",
    "cx_csat_responses",
    "cx_nps_responses",
    "cx_ces_responses",
    "cx_ces_high_effort",
]


def assert_matches(samples, want_all, windows=WINDOWS) -> None:
    for window in windows:
        want = {d: c for d, c in want_all[window].items() if d[0] != "transition"}
        for name in COUNT_NAMES:
            got = {k: v for k, v in by_labels(samples, name, window=window).items() if v}
            exp = {d: c[name] for d, c in want.items() if c.get(name)}
            assert got == exp, f"{name} window={window}"
        got_ratio = by_labels(samples, "cx_repeat_contact_ratio", window=window)
        exp_ratio = {
            d: c["cx_repeat_contacts"] / c["cx_contacts"] for d, c in want.items() if c.get("cx_contacts")
        }
        assert got_ratio == pytest.approx(exp_ratio), f"repeat ratio window={window}"
        transitions = {
            (labels["from_channel"], labels["to_channel"]): value
            for labels, value in samples.get("cx_channel_switch_transitions", [])
            if labels["window"] == window and value
        }
        exp_t = {(d[1], d[2]): c["n"] for d, c in want_all[window].items() if d[0] == "transition"}
        assert transitions == exp_t, f"transitions window={window}"


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_scripted_customer_history_gives_exact_effort_kpis(
    broker, topics: Topics, start_worker, tmp_path: Path, store: str
) -> None:
    worker = start_worker(CXSTREAM_WINDOWS="1h,24h,4d", CXSTREAM_REPEAT_HORIZON="2d", CXSTREAM_STORE=store)
    worker.wait_ready(partitions=4)
    now = int(time.time() * 1000)
    phases = scripted_history(now)
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}
    sent = 0
    for phase in phases:
        asyncio.run(
            produce_records(
                broker.bootstrap, [(topic_of[k], e["contact_id"], orjson.dumps(e)) for k, e in phase]
            )
        )
        sent += len(phase)

        def consumed(total: int = sent) -> bool:
            return (
                sum(
                    v
                    for labels, v in worker.samples()["cx_events_total"]
                    if not labels["topic"].endswith("customer-contacts")
                )
                == total
            )

        wait_until(consumed, timeout=60)
        time.sleep(1.5)  # let the re-keyed starts of this phase reach the customer state
    asyncio.run(
        produce_records(broker.bootstrap, [(topics.interactions, "bad", b'{"type": "contact_started"')])
    )
    events = [item for phase in phases for item in phase]
    want = expected(events, now)
    # sanity: the script exercises what it claims
    assert want["4d"][("billing", "chat")]["cx_repeat_contacts"] == 2
    assert want["4d"][("tech", "email")]["cx_channel_switches"] == 1

    def matches() -> bool:
        assert_matches(worker.samples(), expected(events, int(time.time() * 1000)))
        return True

    wait_until(matches, timeout=30)
    wait_until(
        lambda: (
            sum(v for labels, v in worker.samples()["cx_events_total"] if labels["outcome"] == "rejected")
            == 1
        ),
        timeout=30,
    )

    # the same history through `cxstream replay`, in event time
    path = write_recording(tmp_path / "history.jsonl", [(topic_of[k], e["contact_id"], e) for k, e in events])
    env = {
        "CXSTREAM_TOPIC_INTERACTIONS": topics.interactions,
        "CXSTREAM_TOPIC_SURVEYS": topics.surveys,
        "CXSTREAM_WINDOWS": "1h,24h,4d",
        "CXSTREAM_REPEAT_HORIZON": "2d",
        "PATH": "/usr/bin:/bin",
    }
    replayed = replay_prometheus(path, topics, CXSTREAM_WINDOWS="1h,24h,4d", CXSTREAM_REPEAT_HORIZON="2d")
    newest = max(e["timestamp"] for _, e in events)
    assert_matches(replayed, expected(events, newest))
    summary = subprocess.run(
        [sys.executable, "-m", "stream", "replay", str(path), "--format", "json"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert json.loads(summary.stdout)["as_of_ms"] == newest
    assert b"100.0%" in summary.stderr, "a progress bar is drawn"
