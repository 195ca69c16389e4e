"""The queue as of now: contacts waiting and agents by state, summed over partitions.

Unlike the windowed counts these are not sums of buckets but of each partition's live
index (:attr:`stream.domain.state.PartitionState.waiting`, ``agents``). The exporter
reads them for this worker's partitions; the partition views carry them to the alert
evaluator and the wallboard, which add every partition's (one view each).
"""

from __future__ import annotations

from collections.abc import Iterable

from stream.domain import agents
from stream.domain.state import DIM_SEPARATOR, PartitionState, dim_key

#: "queue\x1fchannel" -> [contacts waiting, oldest queued at (event time ms)]
Waiting = dict[str, list[int]]


def waiting_by_dim(states: Iterable[PartitionState]) -> Waiting:
    """Contacts waiting and the oldest one's queued time, per queue x channel."""
    out: Waiting = {}
    for state in states:
        for queued_ms, dim in state.waiting.values():
            entry = out.get(dim)
            if entry is None:
                out[dim] = [1, queued_ms]
            else:
                entry[0] += 1
                if queued_ms < entry[1]:
                    entry[1] = queued_ms
    return out


def add_waiting(into: Waiting, part: Waiting) -> None:
    """Add ``part`` into ``into`` (counts add, the oldest is the minimum)."""
    for dim, (count, oldest) in part.items():
        entry = into.get(dim)
        if entry is None:
            into[dim] = [count, oldest]
        else:
            entry[0] += count
            entry[1] = min(entry[1], oldest) if count else entry[1]


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


def queue_of(dim: str) -> str:
    """The queue of a ``"queue\\x1fchannel"`` key."""
    return dim.split(DIM_SEPARATOR, 1)[0]
