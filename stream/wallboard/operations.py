"""The queue figures a wallboard leads with: waiting now, longest wait, service level,
abandonment, speed of answer and agents, coloured against each queue's own targets.

Pure, like :mod:`stream.wallboard.aggregate`: the live part comes from the partition views'
waiting and agent summaries (one view per partition, aged to now), the windowed part from
the same summed counts as the CX tiles, so the ratios are computed from counts
(:func:`stream.domain.kpi.derived_kpis`) with the worker's service-level policy.

Colours: service level ``good`` at or above the queue's target, ``warn`` up to ten points
below, ``bad`` under that; longest wait ``good`` under half the queue's limit, ``warn``
under the limit, ``bad`` from it; abandonment ``good`` up to 5 %, ``warn`` up to 10 %. A
queue outside its business hours is ``closed`` (shown, never red).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from stream.config.queues import QueueTarget, QueueTargets
from stream.domain import kpi
from stream.domain.state import split_dim_key
from stream.domain.stats import kpi_interval, sample_size
from stream.query.live import WaitingNow, add_waiting_now
from stream.query.partition_views import GlobalView

#: Queue key of the row that sums every queue.
ALL_QUEUES: Final = "*"
ABANDON_GOOD, ABANDON_BAD = 0.05, 0.10
SERVICE_LEVEL_WARN_BELOW = 0.10
#: Alert metric (without ``cx_``) -> the queue figure it marks on the board.
ALERT_FIGURES: Final = {
    "contacts_waiting": "waiting",
    "longest_wait_seconds": "longest_wait",
    "service_level_ratio": "service_level",
    "abandon_ratio": "abandon",
}
#: States that count as busy on the board (on a contact or wrapping it up).
BUSY_STATES: Final = ("busy", "after_contact_work")

#: queue -> (contacts waiting, longest wait in seconds or None)
LiveWaiting = dict[str, WaitingNow]
#: queue -> agent state -> agents
LiveAgents = dict[str, dict[str, int]]


def live_by_queue(view: GlobalView, now_ms: int) -> tuple[LiveWaiting, LiveAgents]:
    """Waiting and agents per queue, plus :data:`ALL_QUEUES` for the whole contact center."""
    waiting: LiveWaiting = {}
    for dim, (count, longest) in view.waiting_now(now_ms).items():
        for key in (split_dim_key(dim)[0], ALL_QUEUES):
            add_waiting_now(waiting, key, count, longest)
    agents: LiveAgents = {}
    by_team, by_queue = view.agents_now()
    for key, n in by_queue.items():
        state, queue = split_dim_key(key)[:2]
        per = agents.setdefault(queue, {})
        per[state] = per.get(state, 0) + n
    everyone = agents.setdefault(ALL_QUEUES, {})
    for key, n in by_team.items():
        state = split_dim_key(key)[0]
        everyone[state] = everyone.get(state, 0) + n
    return waiting, agents


def _service_level_status(value: float | None, target: QueueTarget) -> str:
    if value is None:
        return "empty"
    if value >= target.service_level_target:
        return "good"
    return "warn" if value >= target.service_level_target - SERVICE_LEVEL_WARN_BELOW else "bad"


def _wait_status(longest: float | None, target: QueueTarget) -> str:
    if longest is None:
        return "good"
    limit = target.longest_wait_limit_s
    return "good" if longest < limit / 2 else "warn" if longest < limit else "bad"


def _abandon_status(value: float | None) -> str:
    if value is None:
        return "empty"
    return "good" if value <= ABANDON_GOOD else "warn" if value <= ABANDON_BAD else "bad"


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def queue_operations(
    queue: str,
    counts: Sequence[float],
    waiting: LiveWaiting,
    agents: LiveAgents,
    targets: QueueTargets,
    *,
    now_ms: int,
    min_samples: int,
    policy: str = kpi.DEFAULT_SERVICE_LEVEL_POLICY,
) -> dict[str, Any]:
    """One queue's operations block of the state document (docs/wallboard.md)."""
    target = targets.default if queue == ALL_QUEUES else targets.of(queue)
    derived = kpi.derived_kpis(counts, policy)
    service_level = derived["service_level_ratio"]
    abandon = derived["abandon_ratio"]
    count, longest = waiting.get(queue, (0, None))
    staff = agents.get(queue, {})
    open_now = queue == ALL_QUEUES or target.is_open(now_ms / 1000)
    offered = sample_size("service_level_ratio", counts, policy)
    interval = kpi_interval("service_level_ratio", counts, policy=policy)
    statuses = {
        "waiting": _wait_status(longest, target),
        "service_level": _service_level_status(service_level, target),
        "abandon": _abandon_status(abandon),
    }
    if not open_now:
        statuses = dict.fromkeys(statuses, "closed")
    return {
        "open": open_now,
        "waiting": count,
        "longest_wait_s": _round(longest, 1),
        "service_level": _round(service_level),
        "service_level_interval": [_round(interval[0]), _round(interval[1])] if interval else None,
        "service_level_target": target.service_level_target,
        "service_level_threshold_s": target.service_level_threshold_s,
        "offered": int(offered),
        "low_confidence": offered < min_samples,
        "abandon": _round(abandon),
        "answer_wait_s": _round(derived["answer_wait_seconds_average"], 1),
        "longest_wait_limit_s": target.longest_wait_limit_s,
        "agents": {
            "available": staff.get("available", 0),
            "busy": sum(staff.get(state, 0) for state in BUSY_STATES),
            "away": staff.get("away", 0),
        },
        "status": statuses,
    }


def queues_with_live_data(waiting: Mapping[str, Any], agents: Mapping[str, Any]) -> set[str]:
    """Queues the board shows although their windows may hold no counts (someone waits, or
    agents serve them)."""
    return {q for q, (n, _) in waiting.items() if n} | {
        q for q, states in agents.items() if any(states.values())
    }
