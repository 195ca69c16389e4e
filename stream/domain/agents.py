"""Agents: who is available now, and how agents' time splits over states (contract v2).

An agent's ``agent_state`` events are kept in event-time order, so a late event lands in
its place and "the latest state is the one with the newest event time" holds whatever
the arrival order. Everything else is computed when read, from that short history:

* ``cx_agents{state,team}``: each agent's newest state, under its team;
* ``cx_agent_state_seconds{window,team,state}``: the intervals from each state's event
  time to the agent's next state event (or now), clipped to the window's span and
  credited to the team of the event that began them;
* ``cx_occupancy_ratio{window,team}``: ``(busy + after_contact_work) / (busy +
  after_contact_work + available)``.

An event without ``team`` takes the agent's last known team (the team of the newest
earlier event that names one). History older than the retention is trimmed, keeping the
newest older entry: it says what state the agent was in when the window began.

Pure: no I/O. The processor keeps the records (:class:`AgentRecord` per agent id in
:attr:`stream.domain.state.PartitionState.agents`); the exporter reads them through
:func:`agents_now` and :func:`state_seconds`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from stream.domain.ordered import insert_in_order

AGENT_STATES: Final = ("available", "busy", "after_contact_work", "away", "offline")
#: States that count as occupied, and those that count towards occupancy's denominator.
OCCUPIED: Final = ("busy", "after_contact_work")
STAFFED: Final = ("busy", "after_contact_work", "available")
UNKNOWN_TEAM: Final = "unknown"


class AgentChange(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One ``agent_state``: the state from ``ts_ms`` on."""

    ts_ms: int
    state: str
    #: As sent (None: the agent's last known team).
    team: str | None
    event_id: str = ""

    def order(self) -> tuple[int, str]:
        return self.ts_ms, self.event_id


class AgentRecord(msgspec.Struct, array_like=True, gc=False):
    """One agent's recent state changes, oldest first."""

    changes: list[AgentChange]
    #: Queues the agent serves, from its newest event that lists them.
    queues: list[str] | None = None


def insert(record: AgentRecord, change: AgentChange) -> bool:
    """Insert in event-time order; False for an identical event already there (a redelivery)."""
    return insert_in_order(record.changes, change, AgentChange.order)


def teams(record: AgentRecord) -> list[str]:
    """The effective team of each change: its own, else the last known before it."""
    out: list[str] = []
    known = UNKNOWN_TEAM
    for change in record.changes:
        if change.team is not None:
            known = change.team
        out.append(known)
    return out


def trim(record: AgentRecord, before_ms: int) -> bool:
    """Drop changes older than ``before_ms`` except the newest of them; True if any went.

    The kept entry is re-stamped with its effective team, so trimming never changes
    which team a later team-less event inherits.
    """
    changes = record.changes
    older = 0
    while older < len(changes) and changes[older].ts_ms < before_ms:
        older += 1
    if older <= 1:
        return False
    keep = changes[older - 1]
    team = teams(record)[older - 1]
    record.changes = [AgentChange(keep.ts_ms, keep.state, team, keep.event_id), *changes[older:]]
    return True


def agents_now(records: Iterable[AgentRecord]) -> dict[tuple[str, str], int]:
    """(state, team) -> agents whose newest state that is (``cx_agents``)."""
    out: dict[tuple[str, str], int] = {}
    for record in records:
        if record.changes:
            key = (record.changes[-1].state, teams(record)[-1])
            out[key] = out.get(key, 0) + 1
    return out


def state_seconds(records: Iterable[AgentRecord], start_ms: int, now_ms: int) -> dict[tuple[str, str], float]:
    """(team, state) -> seconds agents spent in that state between ``start_ms`` and ``now_ms``."""
    out: dict[tuple[str, str], float] = {}
    for record in records:
        changes = record.changes
        effective = teams(record)
        for index, change in enumerate(changes):
            end = changes[index + 1].ts_ms if index + 1 < len(changes) else now_ms
            begin = max(change.ts_ms, start_ms)
            end = min(end, now_ms)
            if end > begin:
                key = (effective[index], change.state)
                out[key] = out.get(key, 0.0) + (end - begin) / 1000
    return out


def occupancy(seconds: dict[str, float]) -> float | None:
    """Occupancy from one team's state seconds; None when nobody was staffed."""
    staffed = sum(seconds.get(state, 0.0) for state in STAFFED)
    if staffed <= 0:
        return None
    return sum(seconds.get(state, 0.0) for state in OCCUPIED) / staffed
