"""Queue and agent traffic with its ground truth, for the integration tests of contract v2.

The traffic is built from each contact's *waits* (queue, channel, queued at, ended at,
outcome) and each agent's state changes, and the expected KPIs are computed from those
lists directly with the contract's formulas -- not by pairing events the way the
product does -- so a test compares the product with an independent computation.

What makes the recording hard: duplicates (re-sent event ids), starts that arrive after
their contact's wait events, re-queues whose ``contact_queued`` arrives after the wait's
answer, waits that span bucket and window edges, answers at exactly the threshold and
abandons at exactly the short-abandon time, contacts still waiting at the end, answers
with no wait (unmatched), agents' events out of order and without a team.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from stream.config.timeutil import local_midnight_s
from tests.expected import in_window

S = 1000
MIN = 60 * S
QUEUES = ("billing", "sales", "support")
CHANNELS = ("voice", "chat")
#: Per-queue thresholds of the queues file the tests write: (service level threshold s, short abandon s).
TARGETS = {"billing": (30.0, 10.0), "sales": (15.0, 5.0)}
DEFAULT_TARGET = (20.0, 5.0)
QUEUES_FILE = (
    "queues:\n"
    "  billing: {service_level_threshold: 30s, short_abandon: 10s}\n"
    "  sales: {service_level_threshold: 15s}\n"
)
AGENT_STATES = ("available", "busy", "after_contact_work", "away", "offline")
Record = tuple[str, str, dict[str, Any]]  # (kind: interactions | agents, key, event)


@dataclass
class TrueWait:
    queue: str
    channel: str
    queued_ms: int
    ended_ms: int | None = None
    outcome: str | None = None  # answered | abandoned | transferred | None (still waiting)


@dataclass
class Truth:
    """What was sent, as the contract counts it."""

    waits: list[TrueWait] = field(default_factory=list)
    unmatched: int = 0
    #: agent -> [(ts, state, team as sent)] in event-time order (unique times)
    agents: dict[str, list[tuple[int, str, str | None]]] = field(default_factory=dict)
    now_ms: int = 0


def _target(queue: str) -> tuple[float, float]:
    return TARGETS.get(queue, DEFAULT_TARGET)


def _wait_seconds(rng: random.Random, queue: str) -> float:
    threshold, short = _target(queue)
    roll = rng.random()
    if roll < 0.08:
        return threshold  # exactly the threshold: within
    if roll < 0.14:
        return short  # exactly the short-abandon time: not short
    if roll < 0.2:
        return short - 0.001
    return rng.randrange(0, 150_000) / 1000


def build(
    seed: int, t0: int, t_end: int, contacts: int = 160, agents: int = 10
) -> tuple[list[Record], Truth]:
    """Traffic between ``t0`` and ``t_end`` (the newest event time) and its truth."""
    rng = random.Random(seed)
    truth = Truth(now_ms=t_end)
    per_contact: list[list[Record]] = []
    for i in range(contacts):
        contact = f"k{seed}-{i}"
        channel = rng.choice(CHANNELS)
        start_ms = rng.randrange(t0, t_end - 10 * MIN)
        n = 0

        def ev(kind: str, ts: int, contact: str = contact, **fields: Any) -> Record:
            nonlocal n
            n += 1
            body = {
                "event_id": f"{contact}-{n}",
                "type": kind,
                "contact_id": contact,
                "timestamp": ts,
                **fields,
            }
            return ("interactions", contact, body)

        start = ev("contact_started", start_ms, customer_id=f"cu{i % 40}", channel=channel, queue="front")
        events: list[Record] = []
        if i % 31 == 5:  # answered without ever queueing: unmatched
            events.append(ev("contact_answered", start_ms + 5 * S))
            truth.unmatched += 1
            per_contact.append([start, *events])
            continue
        t = start_ms + rng.randrange(1, 5) * S
        held: Record | None = None  # a re-queue sent after the next wait's end
        hold_next = False
        for hop in range(3):
            queue = rng.choice(QUEUES)
            own_channel = rng.choice(CHANNELS) if rng.random() < 0.2 else None
            fields: dict[str, Any] = {"queue": queue}
            if own_channel:
                fields["channel"] = own_channel
            queued = ev("contact_queued", t, **fields)
            if hold_next and held is None:
                held = queued
            else:
                events.append(queued)
            wait = TrueWait(queue, own_channel or channel, t)
            truth.waits.append(wait)
            end_ms = t + int(_wait_seconds(rng, queue) * 1000)
            roll = rng.random()
            if hop < 2 and roll < 0.12:  # queued again while waiting: transferred, a new wait
                wait.ended_ms, wait.outcome = end_ms, "transferred"
                hold_next = rng.random() < 0.5
                t = end_ms
                continue
            hold_next = False
            if roll < 0.6:
                events.append(ev("contact_answered", end_ms, agent_id=f"a{rng.randrange(agents)}"))
                wait.ended_ms, wait.outcome = end_ms, "answered"
                t = end_ms + rng.randrange(30, 400) * S
                if hop < 2 and rng.random() < 0.15:  # transferred after the answer: a new wait
                    events.append(ev("contact_transferred", t, to_queue="retention"))
                    t += S
                    continue
                events.append(ev("contact_ended", t, handle_seconds=(t - end_ms) / 1000))
            elif roll < 0.8:
                events.append(ev("contact_abandoned", end_ms))
                wait.ended_ms, wait.outcome = end_ms, "abandoned"
            elif roll < 0.9:
                events.append(ev("contact_ended", end_ms))  # hung up while waiting: an abandon
                wait.ended_ms, wait.outcome = end_ms, "abandoned"
            # else: still waiting at the end
            break
        if held is not None:
            events.append(held)
        ordered = [*events, start] if i % 4 == 0 else [start, *events]
        per_contact.append(ordered)

    for a in range(agents):
        agent = f"a{a}"
        team = "t1" if a % 2 else "t2"
        t = t0 - rng.randrange(10, 60) * MIN
        changes: list[tuple[int, str, str | None]] = []
        while t < t_end:
            if a == 3 and len(changes) == 4:
                team = "t3"  # moves team; says so on this event
                sent_team: str | None = team
            else:
                sent_team = team if not changes or rng.random() < 0.5 else None
            changes.append((t, rng.choice(AGENT_STATES), sent_team))
            t += rng.randrange(2 * 60, 25 * 60) * S + rng.randrange(0, 1000)
        truth.agents[agent] = changes
        events = [
            ("agents", agent, {"event_id": f"{agent}-{k}", "type": "agent_state", "agent_id": agent,
                               "timestamp": ts, "state": state, **({"team": tm} if tm else {})})
            for k, (ts, state, tm) in enumerate(changes)
        ]  # fmt: skip
        rng.shuffle(events)
        per_contact.append(events)
    # The newest event time is t_end: one more agent state at exactly t_end.
    truth.agents["a0"].append((t_end, "available", None))
    per_contact.append(
        [("agents", "a0", {"event_id": "a0-last", "type": "agent_state", "agent_id": "a0", "timestamp": t_end,
                           "state": "available"})]
    )  # fmt: skip

    # Interleave the contacts' lists, each in its own order; re-send about 10% as duplicates.
    records: list[Record] = []
    cursors = [0] * len(per_contact)
    live = [i for i, events in enumerate(per_contact) if events]
    while live:
        pick = rng.choice(live)
        records.append(per_contact[pick][cursors[pick]])
        cursors[pick] += 1
        if cursors[pick] == len(per_contact[pick]):
            live.remove(pick)
    duplicates = rng.sample(records, len(records) // 10)
    for record in duplicates:
        records.insert(rng.randrange(records.index(record) + 1, len(records) + 1), record)
    return records, truth


# -- the expected KPIs -------------------------------------------------------------------------
def window_start_ms(label: str, seconds: int, now_ms: int, zone: ZoneInfo, bucket_s: int = 60) -> int:
    """Where a window's first bucket starts (the documented rule, written out again)."""
    now_s = now_ms // 1000
    last = now_s - now_s % bucket_s
    if label == "today":
        return local_midnight_s(now_s, zone) * 1000
    return (last - seconds + bucket_s) * 1000


def in_named_window(ts_ms: int, label: str, seconds: int, now_ms: int, zone: ZoneInfo) -> bool:
    if label == "today":
        bucket = ts_ms // MIN * 60
        last = now_ms // MIN * 60
        return local_midnight_s(now_ms // 1000, zone) <= bucket <= last
    return in_window(ts_ms, now_ms, seconds)


def expected_waits(
    truth: Truth, windows: dict[str, int], zone: ZoneInfo
) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """window -> (queue, channel) -> the six wait counts and three ratios (where defined)."""
    out: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    for label, seconds in windows.items():
        per: dict[tuple[str, str], dict[str, float]] = {}
        for wait in truth.waits:
            if wait.outcome not in ("answered", "abandoned") or wait.ended_ms is None:
                continue
            if not in_named_window(wait.ended_ms, label, seconds, truth.now_ms, zone):
                continue
            c = per.setdefault(
                (wait.queue, wait.channel),
                dict.fromkeys(
                    (
                        "cx_waits_ended",
                        "cx_answered_contacts",
                        "cx_answered_within_threshold",
                        "cx_abandoned_contacts",
                        "cx_short_abandoned_contacts",
                        "cx_answer_wait_seconds",
                    ),
                    0.0,
                ),
            )
            threshold, short = _target(wait.queue)
            waited = (wait.ended_ms - wait.queued_ms) / 1000
            c["cx_waits_ended"] += 1
            if wait.outcome == "answered":
                c["cx_answered_contacts"] += 1
                c["cx_answer_wait_seconds"] += waited
                c["cx_answered_within_threshold"] += waited <= threshold
            else:
                c["cx_abandoned_contacts"] += 1
                c["cx_short_abandoned_contacts"] += waited < short
        for c in per.values():
            offered = (
                c["cx_answered_contacts"] + c["cx_abandoned_contacts"] - c["cx_short_abandoned_contacts"]
            )
            if offered:
                c["cx_service_level_ratio"] = c["cx_answered_within_threshold"] / offered
                c["cx_abandon_ratio"] = (
                    c["cx_abandoned_contacts"] - c["cx_short_abandoned_contacts"]
                ) / offered
            if c["cx_answered_contacts"]:
                c["cx_answer_wait_seconds_average"] = c["cx_answer_wait_seconds"] / c["cx_answered_contacts"]
        out[label] = per
    return out


def expected_waiting(truth: Truth) -> dict[tuple[str, str], tuple[int, float]]:
    """(queue, channel) -> (contacts waiting, longest wait in seconds) at ``truth.now_ms``."""
    out: dict[tuple[str, str], tuple[int, float]] = {}
    for wait in truth.waits:
        if wait.outcome is None:
            count, longest = out.get((wait.queue, wait.channel), (0, 0.0))
            out[(wait.queue, wait.channel)] = (
                count + 1,
                max(longest, (truth.now_ms - wait.queued_ms) / 1000),
            )
    return out


def expected_agents(
    truth: Truth, windows: dict[str, int], zone: ZoneInfo
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str, str], float], dict[tuple[str, str], float]]:
    """cx_agents {(state, team)}, cx_agent_state_seconds {(window, team, state)}, cx_occupancy_ratio."""
    now = truth.now_ms
    agents_now: dict[tuple[str, str], int] = {}
    seconds: dict[tuple[str, str, str], float] = {}
    for changes in truth.agents.values():
        ordered = sorted(changes)
        teams, known = [], "unknown"
        for _, _, team in ordered:
            known = team or known
            teams.append(known)
        key = (ordered[-1][1], teams[-1])
        agents_now[key] = agents_now.get(key, 0) + 1
        for label, window_s in windows.items():
            start = window_start_ms(label, window_s, now, zone)
            for k, (ts, state, _) in enumerate(ordered):
                end = ordered[k + 1][0] if k + 1 < len(ordered) else now
                overlap = min(end, now) - max(ts, start)
                if overlap > 0:
                    skey = (label, teams[k], state)
                    seconds[skey] = seconds.get(skey, 0.0) + overlap / 1000
    occupancy: dict[tuple[str, str], float] = {}
    for label in windows:
        for team in {t for (w, t, _) in seconds if w == label}:

            def s(state: str, label: str = label, team: str = team) -> float:
                return seconds.get((label, team, state), 0.0)

            staffed = s("busy") + s("after_contact_work") + s("available")
            if staffed:
                occupancy[(label, team)] = (s("busy") + s("after_contact_work")) / staffed
    return agents_now, seconds, occupancy
