"""An independent, deliberately naive computation of the contract KPIs from a list of events.

Integration tests compare the worker's /metrics with this. It shares no code
with the ``stream`` package's KPI math or state: it re-reads CONTRACT.md's
definitions and applies them to the whole event list at once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

#: The range of every exported ratio and average gauge, from the contract's definitions.
RATIO_RANGES: dict[str, tuple[float, float]] = {
    "cx_csat_ratio": (0.0, 1.0),
    "cx_csat_average": (1.0, 5.0),
    "cx_nps_score": (-100.0, 100.0),
    "cx_ces_easy_ratio": (0.0, 1.0),
    "cx_ces_high_effort_ratio": (0.0, 1.0),
    "cx_repeat_contact_ratio": (0.0, 1.0),
    "cx_channel_switch_ratio": (0.0, 1.0),
    "cx_transfer_ratio": (0.0, 1.0),
    "cx_resolved_ratio": (0.0, 1.0),
    "cx_handle_seconds_average": (0.0, float("inf")),
    "cx_service_level_ratio": (0.0, 1.0),
    "cx_abandon_ratio": (0.0, 1.0),
    "cx_answer_wait_seconds_average": (0.0, float("inf")),
}


#: The contract's count gauges of contacts and surveys that expected_kpis computes.
CONTACT_AND_SURVEY_COUNTS = (
    "cx_contacts",
    "cx_contacts_ended",
    "cx_transferred_contacts",
    "cx_csat_responses",
    "cx_csat_satisfied",
    "cx_nps_responses",
    "cx_nps_promoters",
    "cx_nps_detractors",
    "cx_ces_responses",
    "cx_ces_easy",
    "cx_ces_high_effort",
)


def _ms(ts: Any) -> int:
    if isinstance(ts, int):
        return ts
    parsed = datetime.fromisoformat(ts)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def in_window(ts_ms: int, now_ms: int, window_s: int, bucket_s: int = 60) -> bool:
    """The documented window rule: the bucket holding ``now`` and the ones before it."""
    bucket = ts_ms // 1000 // bucket_s * bucket_s
    last = now_ms // 1000 // bucket_s * bucket_s
    return last - window_s + bucket_s <= bucket <= last


def expected_kpis(
    events: list[tuple[str, dict[str, Any]]],
    now_ms: int,
    windows: dict[str, int],
    bucket_s: int = 60,
) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """window -> (queue, channel) -> metric name -> value.

    ``events`` are (kind, value) with kind "interactions" or "surveys", valid
    events only, duplicates included (they are removed here by event_id).
    """
    seen: set[tuple[str, str]] = set()
    unique: list[tuple[str, dict[str, Any]]] = []
    for kind, event in events:
        key = (kind, event["event_id"])
        if key not in seen:
            seen.add(key)
            unique.append((kind, event))

    starts: dict[str, dict[str, Any]] = {}
    transferred: set[str] = set()
    for kind, event in unique:
        if kind == "interactions" and event["type"] == "contact_started":
            starts.setdefault(event["contact_id"], event)
        if kind == "interactions" and event["type"] == "contact_transferred":
            transferred.add(event["contact_id"])

    result: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    for window, seconds in windows.items():
        counts: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        ended_once: set[str] = set()
        answered: set[tuple[str, str, str]] = set()
        for kind, event in unique:
            ts = _ms(event["timestamp"])
            cid = event["contact_id"]
            start = starts.get(cid, {})
            if kind == "interactions":
                if event["type"] == "contact_started":
                    if starts[cid] is not event:
                        continue
                    dims = (event["queue"], event["channel"])
                    if in_window(ts, now_ms, seconds, bucket_s):
                        counts[dims]["cx_contacts"] += 1
                elif event["type"] == "contact_ended":
                    if cid in ended_once:
                        continue
                    ended_once.add(cid)
                    dims = (start.get("queue", "unknown"), start.get("channel", "unknown"))
                    if in_window(ts, now_ms, seconds, bucket_s):
                        c = counts[dims]
                        c["cx_contacts_ended"] += 1
                        c["cx_transferred_contacts"] += cid in transferred
                continue
            if event.get("survey_id") is not None:
                answer = (cid, event["survey_id"], event["metric"])
                if answer in answered:
                    continue
                answered.add(answer)
            dims = (
                event.get("queue") or start.get("queue") or "unknown",
                event.get("channel") or start.get("channel") or "unknown",
            )
            if not in_window(ts, now_ms, seconds, bucket_s):
                continue
            c = counts[dims]
            score = event["score"]
            if event["metric"] == "csat":
                c["cx_csat_responses"] += 1
                c["cx_csat_satisfied"] += score in (4, 5)
                c["_csat_sum"] += score
            elif event["metric"] == "nps":
                c["cx_nps_responses"] += 1
                c["cx_nps_promoters"] += score in (9, 10)
                c["cx_nps_passives"] += score in (7, 8)
                c["cx_nps_detractors"] += score <= 6
            else:
                c["cx_ces_responses"] += 1
                if (event.get("scale") or "agree_1_7") == "agree_1_7":
                    c["cx_ces_easy"] += score >= 5
                    c["cx_ces_high_effort"] += score <= 3
                else:
                    c["cx_ces_easy"] += score <= 2
                    c["cx_ces_high_effort"] += score >= 4
        for c in counts.values():
            if c["cx_csat_responses"]:
                c["cx_csat_ratio"] = c["cx_csat_satisfied"] / c["cx_csat_responses"]
                c["cx_csat_average"] = c["_csat_sum"] / c["cx_csat_responses"]
            if c["cx_nps_responses"]:
                c["cx_nps_score"] = (
                    100 * (c["cx_nps_promoters"] - c["cx_nps_detractors"]) / c["cx_nps_responses"]
                )
            if c["cx_ces_responses"]:
                c["cx_ces_easy_ratio"] = c["cx_ces_easy"] / c["cx_ces_responses"]
                c["cx_ces_high_effort_ratio"] = c["cx_ces_high_effort"] / c["cx_ces_responses"]
            if c["cx_contacts_ended"]:
                c["cx_transfer_ratio"] = c["cx_transferred_contacts"] / c["cx_contacts_ended"]
                for metric in ("csat", "nps", "ces"):
                    c[f"response:{metric}"] = c[f"cx_{metric}_responses"] / c["cx_contacts_ended"]
            c.pop("_csat_sum", None)
        result[window] = {dims: dict(c) for dims, c in counts.items()}
    return result
