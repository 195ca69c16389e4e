"""The queue as of now: contacts waiting and agents by state, summed over partitions.

Unlike the windowed counts these are not sums of buckets but of each partition's live
index (:attr:`stream.domain.state.PartitionState.waiting`, ``agents``). The exporter
reads them for this worker's partitions; the partition views carry them to the alert
evaluator and the wallboard, which add every partition's (one view each).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from stream.domain import agents
from stream.domain.state import PartitionState, dim_key

#: "queue\x1fchannel" -> [contacts waiting, oldest queued at (event time ms)]
Waiting = dict[str, list[int]]
#: (contacts waiting, longest wait in seconds; None when nobody waits)
WaitingNow = tuple[int, float | None]
K = TypeVar("K")


def add_oldest(into: Waiting, dim: str, count: int, oldest_ms: int) -> None:
    """Add ``count`` contacts queued since ``oldest_ms`` to ``into[dim]``: counts add, the
    oldest is the earliest of those that have contacts."""
    entry = into.get(dim)
    if entry is None:
        into[dim] = [count, oldest_ms]
    elif count:
        entry[1] = oldest_ms if not entry[0] else min(entry[1], oldest_ms)
        entry[0] += count


def add_waiting_now(into: dict[K, WaitingNow], key: K, count: int, longest: float | None) -> None:
    """Add a group's waiting now into ``into[key]``: counts add, the longest wait is the largest."""
    held, held_longest = into.get(key, (0, None))
    if longest is not None and (held_longest is None or longest > held_longest):
        held_longest = longest
    into[key] = (held + count, held_longest)


def waiting_by_dim(states: Iterable[PartitionState]) -> Waiting:
    """Contacts waiting and the oldest one's queued time, per queue x channel."""
    out: Waiting = {}
    for state in states:
        for queued_ms, dim in state.waiting.values():
            add_oldest(out, dim, 1, queued_ms)
    return out


def agents_by(states: Iterable[PartitionState]) -> tuple[dict[str, int], dict[str, int]]:
    """Agents by their newest state: ``"state\\x1fteam" -> n`` and ``"state\\x1fqueue" -> n``
    (each queue an agent serves, from its ``queues``)."""
    by_team: dict[str, int] = {}
    by_queue: dict[str, int] = {}
    for state in states:
        records = list(state.agents.values())
        for (state_name, team), n in agents.agents_now(records).items():
            key = dim_key(state_name, team)
            by_team[key] = by_team.get(key, 0) + n
        for record in records:
            if record.changes and record.queues:
                state_name = record.changes[-1].state
                for queue in record.queues:
                    key = dim_key(state_name, queue)
                    by_queue[key] = by_queue.get(key, 0) + 1
    return by_team, by_queue
