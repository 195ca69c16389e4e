"""Compare scraped samples with the ground truth of tests/queue_traffic.py (shared by the
unit test, which replays in-process, and the integration test on a real broker)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from tests.harness import Samples
from tests.queue_traffic import Truth, expected_agents, expected_waiting, expected_waits


def mismatches(samples: Samples, truth: Truth, windows: dict[str, int], zone: ZoneInfo) -> list[str]:
    """Every difference between the samples and the truth (empty: all equal)."""
    problems: list[str] = []
    expected = expected_waits(truth, windows, zone)
    for window, per in expected.items():
        for (queue, channel), metrics in per.items():
            for name, value in metrics.items():
                got = [
                    v
                    for labels, v in samples.get(name, [])
                    if (labels.get("window"), labels.get("queue"), labels.get("channel"))
                    == (window, queue, channel)
                ]
                if len(got) != 1 or abs(got[0] - value) > 1e-6:
                    problems.append(f"{name}{{{window},{queue},{channel}}}: got {got}, expected {value}")
    for name in ("cx_waits_ended", "cx_answered_contacts", "cx_abandoned_contacts"):
        for labels, v in samples.get(name, []):
            if v and (labels["queue"], labels["channel"]) not in expected.get(labels["window"], {}):
                problems.append(f"{name}{labels}: got {v}, expected nothing")
    waiting = {(lb["queue"], lb["channel"]): v for lb, v in samples.get("cx_contacts_waiting", []) if v}
    longest = {(lb["queue"], lb["channel"]): v for lb, v in samples.get("cx_longest_wait_seconds", [])}
    truth_waiting = expected_waiting(truth)
    if waiting != {key: count for key, (count, _) in truth_waiting.items()}:
        problems.append(f"cx_contacts_waiting: got {waiting}, expected {truth_waiting}")
    if set(longest) != set(truth_waiting) or any(
        abs(longest[key] - age) > 1e-6 for key, (_, age) in truth_waiting.items()
    ):
        problems.append(f"cx_longest_wait_seconds: got {longest}, expected {truth_waiting}")
    zeros = {(lb["queue"], lb["channel"]) for lb, v in samples.get("cx_contacts_waiting", []) if not v}
    if zeros & set(truth_waiting):
        problems.append(f"cx_contacts_waiting reads 0 for waiting queues {zeros & set(truth_waiting)}")
    unmatched = sum(v for _, v in samples.get("cx_unmatched_wait_events_total", []))
    if unmatched != truth.unmatched:
        problems.append(f"cx_unmatched_wait_events_total: got {unmatched}, expected {truth.unmatched}")
    agents_now, seconds, occupancy = expected_agents(truth, windows, zone)
    got_agents = {(lb["state"], lb["team"]): v for lb, v in samples.get("cx_agents", [])}
    if got_agents != agents_now:
        problems.append(f"cx_agents: got {got_agents}, expected {agents_now}")
    got_seconds = {
        (lb["window"], lb["team"], lb["state"]): v for lb, v in samples.get("cx_agent_state_seconds", []) if v
    }
    for key in set(got_seconds) | set(seconds):
        if abs(got_seconds.get(key, 0.0) - seconds.get(key, 0.0)) > 1e-6:
            problems.append(
                f"cx_agent_state_seconds{key}: got {got_seconds.get(key)}, expected {seconds.get(key)}"
            )
    got_occupancy = {(lb["window"], lb["team"]): v for lb, v in samples.get("cx_occupancy_ratio", [])}
    for key in set(got_occupancy) | set(occupancy):
        if abs(got_occupancy.get(key, -1.0) - occupancy.get(key, -1.0)) > 1e-9:
            problems.append(
                f"cx_occupancy_ratio{key}: got {got_occupancy.get(key)}, expected {occupancy.get(key)}"
            )
    return problems
