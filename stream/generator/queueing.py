"""Queues with staffed agent pools for the traffic simulator: waits that depend on load.

A contact on a real-time channel (voice, chat, messaging) enters its queue a few seconds
after it starts and waits for the first agent of the queue's pool to come free. Customers
have a patience (lognormal; a small share hangs up within seconds, the *short abandons*):
whoever waits longer than theirs abandons. An answered contact keeps its agent busy for
the handle time, then in after-contact work, then available again (now and then after a
break, "away"). Every change is an ``agent_state`` event on ``cx.agents``.

Pools are staffed from the offered load (contacts per second x handle time) with
square-root safety staffing, and arrivals follow a daily curve per queue
(:attr:`QueueingProfile.day_period_s`, compressed in the demo), so a queue is overstaffed in
its troughs and waits build up in its peaks: service level and abandonment move like a real
floor's. The floor starts mid-shift (agents busy at the queue's occupancy), not idle.

Deterministic: the simulator's seeded ``Random`` drives everything. Agents are taken in
the order contacts are scheduled, so a transfer's re-queue (scheduled ahead of later
arrivals) may take an agent a little earlier than a strict simulation would: fine for
traffic, not a queueing-theory oracle.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Any, NamedTuple

#: Channels whose contacts wait in a queue for an agent (the others are worked from a backlog).
REAL_TIME_CHANNELS: tuple[str, ...] = ("voice", "chat", "messaging")


@dataclass(frozen=True, slots=True)
class QueueingProfile:
    """How queues, customers' patience and agents behave."""

    safety_staffing: float = 0.4
    """Square-root staffing: a pool gets ``load + safety_staffing * sqrt(load)`` agents, which
    gives big and small queues about the same chance to wait (Halfin-Whitt)."""
    patience_median_s: float = 90.0
    """Median time a customer waits before giving up (lognormal)."""
    patience_sigma: float = 0.9
    short_hangup_share: float = 0.02
    """Customers who hang up within the first seconds whatever the wait (short abandons)."""
    ivr_s: float = 6.0
    """From the contact's start to entering the queue (menu, identification)."""
    ring_s: float = 2.0
    """From an agent coming free to the answer."""
    acw_median_s: float = 30.0
    """After-contact work (notes, dispositions), lognormal median."""
    break_probability: float = 0.03
    """Chance that an agent takes a break after a contact."""
    break_median_s: float = 600.0
    day_period_s: float = 86_400.0
    """Length of the arrival curve's cycle: a day, or minutes in the demo."""
    day_amplitude: float = 0.1
    """Arrivals swing this much above and below the mean over the cycle."""

    @classmethod
    def demo(cls, speed: float = 10.0) -> QueueingProfile:
        """Fast-forward like :meth:`TrafficProfile.demo`: a 'day' of 30 minutes, shorter work."""
        return cls(
            # Waits are real seconds on the wallboard: customers' patience is not sped up, but
            # handle times are, so a pool clears its queue faster: staff tighter.
            safety_staffing=0.0,
            ivr_s=3.0,
            ring_s=1.0,
            acw_median_s=30.0 / speed,
            break_median_s=600.0 / speed,
            day_period_s=1_800.0,
        )


class Agent(NamedTuple):
    agent_id: str
    team: str
    skill: float
    queue: str


class Taken(NamedTuple):
    """The outcome of a wait: answered by ``agent`` at ``at`` or, with ``agent`` None, abandoned."""

    at: float
    agent: Agent | None


Push = Callable[[float, tuple[Any, ...]], None]


class QueueFloor:
    """The agent pools of every queue, and the agent events they emit."""

    def __init__(
        self,
        profile: QueueingProfile,
        pools: dict[str, list[Agent]],
        rng: Random,
        push: Push,
        event_id: Callable[[], str],
        start_ms: float,
        warm: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        """``warm``: queue -> (occupancy, mean seconds an agent stays busy per contact): start
        like a floor in mid-shift, that share of agents busy for part of a contact, instead of
        everyone idle (which would show a perfect service level for the first minutes)."""
        self.profile = profile
        self._rng = rng
        self._push = push
        self._event_id = event_id
        self._phase = {queue: 2 * math.pi * i / max(1, len(pools)) for i, queue in enumerate(pools)}
        #: queue -> heap of (free at ms, tie, agent)
        self._free: dict[str, list[tuple[float, int, Agent]]] = {}
        tie = 0
        busy: list[tuple[Agent, float]] = []
        for queue, agents in pools.items():
            occupancy, mean_s = (warm or {}).get(queue, (0.0, 0.0))
            heap = []
            for agent in agents:
                if rng.random() < occupancy:
                    self._state(start_ms, agent, "busy", first=True)
                    busy.append((agent, start_ms + 2000.0 * mean_s * rng.random()))
                    continue
                heap.append((start_ms, tie, agent))
                tie += 1
                self._state(start_ms, agent, "available", first=True)
            heapq.heapify(heap)
            self._free[queue] = heap
        self._tie = tie
        for agent, until in busy:
            self.release(agent, until)

    # -- arrivals --------------------------------------------------------------------------
    def intensity(self, t_ms: float, queue: str | None = None) -> float:
        """Arrival rate multiplier at ``t_ms``: the whole floor's, or one queue's (its own phase)."""
        p = self.profile
        phase = self._phase.get(queue, 0.0) if queue is not None else 0.0
        return max(0.05, 1.0 + p.day_amplitude * math.sin(2 * math.pi * t_ms / 1000 / p.day_period_s + phase))

    def patience_ms(self) -> float:
        p, rng = self.profile, self._rng
        if rng.random() < p.short_hangup_share:
            return rng.random() * 4_000.0
        return 1000.0 * rng.lognormvariate(math.log(p.patience_median_s), p.patience_sigma)

    def ivr_ms(self) -> float:
        return 1000.0 * self.profile.ivr_s * (0.5 + self._rng.random())

    # -- agents ----------------------------------------------------------------------------
    def take(self, queue: str, queued_ms: float, patience_ms: float = math.inf) -> Taken:
        """Wait in ``queue`` from ``queued_ms``: answered by the first agent free, or abandoned
        when that comes after the customer's patience."""
        heap = self._free[queue]
        free_at, _, agent = heap[0]
        answer = max(queued_ms, free_at) + 1000.0 * self.profile.ring_s * self._rng.random()
        if answer - queued_ms > patience_ms:
            return Taken(queued_ms + patience_ms, None)
        heapq.heappop(heap)
        self._state(answer, agent, "busy")
        return Taken(answer, agent)

    def release(self, agent: Agent, at_ms: float) -> None:
        """The agent's contact ended at ``at_ms``: after-contact work, maybe a break, then free."""
        p, rng = self.profile, self._rng
        self._state(at_ms, agent, "after_contact_work")
        free = at_ms + 1000.0 * rng.lognormvariate(math.log(p.acw_median_s), 0.5)
        if rng.random() < p.break_probability:
            self._state(free, agent, "away")
            free += 1000.0 * rng.lognormvariate(math.log(p.break_median_s), 0.4)
        self._state(free, agent, "available")
        self._tie += 1
        heapq.heappush(self._free[agent.queue], (free, self._tie, agent))

    def _state(self, at_ms: float, agent: Agent, state: str, first: bool = False) -> None:
        value: dict[str, Any] = {
            "event_id": self._event_id(),
            "type": "agent_state",
            "agent_id": agent.agent_id,
            "state": state,
            "timestamp": None,
        }
        if first or self._rng.random() < 0.3:  # the team now and then; the queues at login
            value["team"] = agent.team
        if first:
            value["queues"] = [agent.queue]
        self._push(at_ms, ("agents", agent.agent_id, value, "agent_state"))


def staffing(load_erlangs: float, safety: float) -> int:
    """Agents for an offered load with square-root safety staffing (at least two)."""
    return max(2, math.ceil(load_erlangs + safety * math.sqrt(max(0.0, load_erlangs))))
