"""The deterministic discrete-event simulation of contacts, transfers, surveys and repeats.

No I/O: seeded ``random.Random``, simulated time unless ``clock="real"``.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from operator import itemgetter
from random import Random
from typing import Any, NamedTuple

import orjson

from stream.generator.profile import (
    _ISO_OFFSETS,
    _MAX_HANDLE_S,
    _MAX_SURVEY_DELAY_S,
    _MIN_HANDLE_S,
    CHANNELS,
    METRICS,
    Clock,
    TopicKind,
    TrafficProfile,
)
from stream.generator.queueing import REAL_TIME_CHANNELS, Agent, QueueFloor, staffing

# --------------------------------------------------------------------------------------
# Simulator
# --------------------------------------------------------------------------------------


class GeneratedEvent(NamedTuple):
    """One message to produce: which input topic, its key (``contact_id``) and value.

    ``value`` is a JSON-ready dict for a valid event, or raw ``bytes`` for a
    deliberately malformed one (``bad_ratio``), sent as-is.
    """

    topic_kind: TopicKind
    key: str
    value: dict[str, Any] | bytes


class _Agent(NamedTuple):
    agent_id: str
    team: str
    skill: float


class _FollowUp:
    """A scheduled repeat contact: who comes back, from which channel, about what."""

    __slots__ = ("channel", "customer_id", "customer_idx", "queue", "reason")

    def __init__(self, customer_idx: int, customer_id: str, channel: str, queue: str, reason: str) -> None:
        self.customer_idx = customer_idx
        self.customer_id = customer_id
        self.channel = channel
        self.queue = queue
        self.reason = reason


# (topic_kind, key, value, kind) of an event waiting in the schedule.
_Pending = tuple[TopicKind, str, dict[str, Any], str]

# Malformed-message kinds and their relative frequency.
_BAD_KINDS: tuple[tuple[str, float], ...] = (
    ("broken_json", 3.0),
    ("missing_field", 3.0),
    ("out_of_range_score", 2.0),
    ("unknown_channel", 1.0),
    ("unknown_metric", 1.0),
    ("unknown_type", 1.0),
    ("unknown_scale", 0.5),
    ("invalid_score_type", 1.0),
    ("invalid_timestamp", 1.0),
    ("future_timestamp", 1.0),
    ("negative_handle_time", 0.5),
    ("not_an_object", 1.0),
    ("not_utf8", 0.5),
    ("empty", 0.5),
)
_REQUIRED = {
    "contact_started": (
        "event_id",
        "type",
        "contact_id",
        "timestamp",
        "customer_id",
        "channel",
        "queue",
    ),
    "contact_ended": ("event_id", "type", "contact_id", "timestamp"),
    "survey": ("event_id", "contact_id", "metric", "score", "timestamp"),
}


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    out = list(itertools.accumulate(w / total for w in weights))
    out[-1] = 1.0  # guard against rounding leaving a gap at the top
    return out


class TrafficSimulator:
    """Deterministic discrete-event simulation of a contact center's input events.

    Same ``profile``, ``seed`` and ``start_ms`` give the same events, byte for byte
    (with ``clock="simulated"``). The simulator keeps a schedule (a heap) of pending
    events and of customers due to come back; :meth:`events` merges it with the
    Poisson arrivals of fresh contacts, so events come out in event-time order --
    except injected duplicates, which are re-sent copies of earlier events.

    ``clock="simulated"`` stamps events with simulated time (files, replay, tests);
    ``clock="real"`` stamps them with the wall clock at the moment they are yielded
    (live produce), while the schedule still decides the order.
    """

    def __init__(
        self,
        profile: TrafficProfile | None = None,
        seed: int | None = None,
        start_ms: int | None = None,
        *,
        clock: Clock = "simulated",
        duplicate_ratio: float = 0.0,
        bad_ratio: float = 0.0,
    ) -> None:
        """Set up the simulation; ``seed=None`` picks a random seed (see :attr:`seed`).

        ``duplicate_ratio`` and ``bad_ratio`` are shares of all yielded events.
        """
        if not (0.0 <= duplicate_ratio < 1.0 and 0.0 <= bad_ratio < 1.0):
            raise ValueError("duplicate_ratio and bad_ratio must be in [0, 1)")
        if duplicate_ratio + bad_ratio >= 1.0:
            raise ValueError("duplicate_ratio + bad_ratio must be below 1")
        if clock not in ("simulated", "real"):
            raise ValueError(f"clock must be 'simulated' or 'real', not {clock!r}")
        profile = profile if profile is not None else TrafficProfile()
        if profile.contacts_per_second <= 0:
            raise ValueError("contacts_per_second must be positive")
        if profile.customers <= 0:
            raise ValueError("customers must be positive")
        unknown = set(profile.channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"profile has channels outside the contract: {sorted(unknown)}")
        if not profile.queues:
            raise ValueError("profile needs at least one queue")

        self.profile = profile
        self.seed: int = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        """The seed in use; log it to reproduce a run started with ``seed=None``."""
        self.clock: Clock = clock
        self.duplicate_ratio = duplicate_ratio
        self.bad_ratio = bad_ratio
        self._rng = Random(self.seed)
        rng = self._rng

        start = float(start_ms) if start_ms is not None else time.time() * 1000.0
        self.now_ms: float = start
        """Simulated time of the latest scheduled step, in epoch ms."""

        # Channels.
        self._channel_names = list(profile.channels)
        self._channel_cum = _cumulative([c.weight for c in profile.channels.values()])
        self._handle = {n: (math.log(c.handle_median_s), c.handle_sigma) for n, c in profile.channels.items()}
        self._survey_mu = {n: math.log(c.survey_delay_median_s) for n, c in profile.channels.items()}
        self._channel_experience = {n: c.experience for n, c in profile.channels.items()}

        # Queues, their agents and transfer routes.
        self._queue_names = list(profile.queues)
        self._queue_weights = [q.weight for q in profile.queues.values()]
        self._queue_cum = _cumulative(self._queue_weights)
        self._agents: dict[str, list[_Agent | Agent]] = {}
        queueing = profile.queueing
        for name, q in profile.queues.items():
            prefix = "".join(part[0] for part in name.split("_"))[:3] or "q"
            teams = q.teams or (name,)
            # With queueing the pool is staffed for the load, else the profile's head count.
            size = (
                staffing(profile.offered_load(name), queueing.safety_staffing)
                if queueing
                else max(1, q.agents)
            )
            self._agents[name] = [
                Agent(f"{prefix}-{i + 1:03d}", teams[i % len(teams)], rng.gauss(0.0, 0.3), name)
                if queueing
                else _Agent(f"{prefix}-{i + 1:03d}", teams[i % len(teams)], rng.gauss(0.0, 0.3))
                for i in range(size)
            ]
        self._routes: dict[str, tuple[list[str], list[float]]] = {}
        for name in profile.queues:
            targets = profile.transfer_routes(name)
            self._routes[name] = (list(targets), _cumulative(list(targets.values())))

        # Surveys: one invitation answered at the highest metric rate; each metric is
        # then included with rate/max so every metric's marginal rate is as configured.
        rates = {m: float(profile.survey_response_rates.get(m, 0.0)) for m in METRICS}
        self._survey_p = max(rates.values())
        self._survey_metric_p = {
            m: (r / self._survey_p if self._survey_p > 0 else 0.0) for m, r in rates.items()
        }

        expected = profile.expected_rates()
        self.expected = expected
        fresh_per_s = profile.contacts_per_second * max(0.01, 1.0 - expected["repeat_contact"])
        self._fresh_gap_ms = 1000.0 / fresh_per_s
        self._next_fresh_ms = start + rng.expovariate(1.0) * self._fresh_gap_ms
        self._horizon_ms = profile.repeat_horizon_s * 1000.0
        self._repeat_mu = math.log(max(1.0, profile.repeat_delay_median_s))
        self._repeat_cap_s = max(1.0, min(profile.repeat_window_s, profile.repeat_horizon_s - _MAX_HANDLE_S))

        self._schedule: list[tuple[float, int, _Pending | _FollowUp]] = []
        self._seq = itertools.count()
        self._floor: QueueFloor | None = None
        if queueing is not None:
            pools = {
                name: [a for a in agents if isinstance(a, Agent)] for name, agents in self._agents.items()
            }
            warm = {
                name: (min(0.95, profile.offered_load(name) / len(pool)), profile.mean_agent_time_s(name))
                for name, pool in pools.items()
            }
            self._floor = QueueFloor(queueing, pools, rng, self._push, self._event_id, start, warm)
        self._last_contact_ms: dict[int, float] = {}
        self._recent: deque[GeneratedEvent] = deque(maxlen=2048)
        self._bad_names = [k for k, _ in _BAD_KINDS]
        self._bad_cum = _cumulative([w for _, w in _BAD_KINDS])
        self._stream = self._run()

    # -- public --------------------------------------------------------------------
    def events(self, n: int | None = None) -> Iterator[GeneratedEvent]:
        """Yield the next ``n`` events (all of them if ``None``), continuing the stream.

        Calling again carries on where the previous call stopped; faults are included
        in ``n``.
        """
        return map(itemgetter(0), self.events_with_kind(n))

    def events_with_kind(self, n: int | None = None) -> Iterator[tuple[GeneratedEvent, str]]:
        """Like :meth:`events`, each paired with what it is.

        The kind is the interaction type (``contact_started``, ...), the survey metric
        (``csat``, ``nps``, ``ces``), ``duplicate``, or ``bad:<fault>`` for a malformed
        message (``bad:broken_json``, ``bad:missing_field``, ...). Useful for counting
        what a run should make the processor accept, reject and drop.
        """
        if n is None:
            return self._stream
        if n < 0:
            raise ValueError("n must be >= 0")
        return itertools.islice(self._stream, n)

    # -- the event loop ----------------------------------------------------------------
    def _run(self) -> Iterator[tuple[GeneratedEvent, str]]:
        rng = self._rng
        bad = self.bad_ratio
        fault = bad + self.duplicate_ratio
        recent = self._recent
        next_valid = self._next_valid
        while True:
            u = rng.random() if fault > 0.0 else 1.0
            if u < bad:
                yield self._bad_event()
            elif u < fault and recent:
                ev = recent[int(rng.random() * len(recent))]
                value = ev.value
                copy = dict(value) if isinstance(value, dict) else value
                yield GeneratedEvent(ev.topic_kind, ev.key, copy), "duplicate"
            else:
                item = next_valid()
                recent.append(item[0])
                yield item

    def _next_valid(self) -> tuple[GeneratedEvent, str]:
        schedule = self._schedule
        while True:
            if schedule and schedule[0][0] <= self._next_fresh_ms:
                t, _, payload = heapq.heappop(schedule)
                self.now_ms = t
                if isinstance(payload, _FollowUp):
                    self._start_contact(t, payload)
                    continue
                topic_kind, key, value, kind = payload
                value["timestamp"] = self._timestamp(t)
                return GeneratedEvent(topic_kind, key, value), kind
            t = self._next_fresh_ms
            self.now_ms = t
            self._next_fresh_ms = t + self._rng.expovariate(1.0) * self._fresh_gap_ms
            self._start_contact(t, None)

    def _push(self, t: float, payload: _Pending | _FollowUp) -> None:
        heapq.heappush(self._schedule, (t, next(self._seq), payload))

    def _event_id(self) -> str:
        # A UUID4 from the seeded generator, so ids are unique yet reproducible.
        bits = self._rng.getrandbits(128)
        bits = (bits & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
        return f"{bits:032x}"

    def _timestamp(self, t_ms: float) -> int | str:
        ms = int(t_ms) if self.clock == "simulated" else int(time.time() * 1000)
        u = self._rng.random()
        p = self.profile
        if u < p.timestamp_epoch_share:
            return ms
        sec, milli = divmod(ms, 1000)
        if u < p.timestamp_epoch_share + p.timestamp_offset_share:
            offset_s, suffix = _ISO_OFFSETS[int(self._rng.random() * len(_ISO_OFFSETS))]
        else:
            offset_s, suffix = 0, "Z"
        head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec + offset_s))
        return f"{head}.{milli:03d}{suffix}"

    def _draw_customer(self, t: float) -> int:
        rng = self._rng
        n = self.profile.customers
        skew = self.profile.customer_skew
        last = self._last_contact_ms
        horizon = self._horizon_ms
        for _ in range(4):
            idx = int(n * rng.random() ** skew)
            prev = last.get(idx)
            if prev is None or t - prev >= horizon:
                return idx
        # Every try hit a customer in contact within the horizon: a new customer joins.
        # Random, not sequential, so separate runs do not share "new" customers.
        return n + rng.getrandbits(40)

    def _pick_channel(self, exclude: str | None) -> str:
        rng = self._rng
        names, cum = self._channel_names, self._channel_cum
        if exclude is None or len(names) == 1:
            return names[bisect.bisect_left(cum, rng.random())]
        while True:  # rejection sampling: the mix of the other channels, renormalised
            ch = names[bisect.bisect_left(cum, rng.random())]
            if ch != exclude:
                return ch

    def _pick_queue(self, t: float) -> str:
        """A fresh contact's queue: by the profile's weights, moved by each queue's daily curve."""
        if self._floor is None:
            return self._queue_names[bisect.bisect_left(self._queue_cum, self._rng.random())]
        floor = self._floor
        weights = [
            w * floor.intensity(t, q) for q, w in zip(self._queue_names, self._queue_weights, strict=True)
        ]
        return self._queue_names[bisect.bisect_left(_cumulative(weights), self._rng.random())]

    def _start_contact(self, t: float, follow: _FollowUp | None) -> None:
        rng = self._rng
        p = self.profile
        rand = rng.random
        if follow is None:
            cust_idx = self._draw_customer(t)
            customer_id = f"cust-{cust_idx:07d}"
            queue = self._pick_queue(t)
            reasons = p.queues[queue].reasons
            reason = reasons[int(rand() * len(reasons))] if reasons else "other"
            channel = self._pick_channel(None)
            repeat = switched = False
        else:
            cust_idx, customer_id = follow.customer_idx, follow.customer_id
            if rand() < p.repeat_same_reason_probability:
                queue, reason = follow.queue, follow.reason
            else:
                queue = self._queue_names[bisect.bisect_left(self._queue_cum, rand())]
                reasons = p.queues[queue].reasons
                reason = reasons[int(rand() * len(reasons))] if reasons else "other"
            if rand() < p.channel_switch_probability and len(self._channel_names) > 1:
                channel = self._pick_channel(follow.channel)
            else:
                channel = follow.channel
            repeat = True
            switched = channel != follow.channel
        if cust_idx < p.customers:
            self._last_contact_ms[cust_idx] = t

        qp = p.queues[queue]
        agents = self._agents[queue]
        agent = agents[int(rand() * len(agents))]
        contact_id = f"c-{rng.getrandbits(64):016x}"

        transfers = 0
        if rand() < qp.transfer_probability:
            transfers = 2 if rand() < p.second_transfer_probability else 1
        mu, sigma = self._handle[channel]
        handle_s = rng.lognormvariate(mu, sigma) * (1.0 + 0.4 * transfers)
        handle_s = min(_MAX_HANDLE_S, max(_MIN_HANDLE_S, handle_s))
        resolve_p = qp.resolve_probability * (p.transfer_resolve_factor if transfers else 1.0)
        resolved = rand() < resolve_p

        started: dict[str, Any] = {
            "event_id": self._event_id(),
            "type": "contact_started",
            "contact_id": contact_id,
            "timestamp": None,
            "customer_id": customer_id,
            "channel": channel,
            "queue": queue,
            "agent_id": agent.agent_id,
            "team": agent.team,
        }
        if rand() >= p.reason_missing_share:
            started["reason"] = reason
        floor = self._floor if channel in REAL_TIME_CHANNELS else None
        handle_start = t
        if floor is not None:
            queued_at = t + floor.ivr_ms()
            self._push(queued_at, self._wait_event("contact_queued", contact_id, queue=queue))
            taken = floor.take(queue, queued_at, floor.patience_ms())
            if taken.agent is None:  # gave up waiting: no agent, no survey; may call again
                del started["agent_id"], started["team"]
                self._push(t, ("interactions", contact_id, started, "contact_started"))
                self._push(taken.at, self._wait_event("contact_abandoned", contact_id))
                self._push(taken.at + 800.0, self._wait_event("contact_ended", contact_id))
                if rand() < 0.25:  # calls back a few minutes later (a repeat contact)
                    delay_s = 60.0 + 240.0 * rand()
                    self._push(
                        taken.at + delay_s * 1000.0, _FollowUp(cust_idx, customer_id, channel, queue, reason)
                    )
                return
            agent = taken.agent
            started["agent_id"], started["team"] = agent.agent_id, agent.team
            self._push(taken.at, self._wait_event("contact_answered", contact_id, agent_id=agent.agent_id))
            handle_start = taken.at
        self._push(t, ("interactions", contact_id, started, "contact_started"))

        handle_ms = handle_s * 1000.0
        final_queue, final_agent = queue, agent
        shift = 0.0  # how much the re-queues after transfers delayed the contact
        for i in range(transfers):
            low, high = (0.15, 0.45) if i == 0 else (0.55, 0.85)
            names, cum = self._routes[final_queue]
            final_queue = names[bisect.bisect_left(cum, rand())]
            pool = self._agents[final_queue]
            next_agent = pool[int(rand() * len(pool))]
            transfer: dict[str, Any] = {
                "event_id": self._event_id(),
                "type": "contact_transferred",
                "contact_id": contact_id,
                "timestamp": None,
                "to_queue": final_queue,
            }
            at = handle_start + shift + handle_ms * (low + (high - low) * rand())
            if floor is not None and isinstance(final_agent, Agent):
                floor.release(final_agent, at)
                requeued = at + 1000.0
                self._push(requeued, self._wait_event("contact_queued", contact_id, queue=final_queue))
                taken = floor.take(final_queue, requeued)
                assert taken.agent is not None  # a transferred customer waits
                next_agent = taken.agent
                self._push(
                    taken.at, self._wait_event("contact_answered", contact_id, agent_id=next_agent.agent_id)
                )
                shift += taken.at - at
            final_agent = next_agent
            if rand() < p.to_agent_share:
                transfer["to_agent"] = final_agent.agent_id
            self._push(at, ("interactions", contact_id, transfer, "contact_transferred"))

        end_t = handle_start + shift + handle_ms
        if floor is not None and isinstance(final_agent, Agent):
            floor.release(final_agent, end_t)
        ended: dict[str, Any] = {
            "event_id": self._event_id(),
            "type": "contact_ended",
            "contact_id": contact_id,
            "timestamp": None,
            "agent_id": final_agent.agent_id,
            "team": final_agent.team,
            "handle_seconds": round(handle_s, 1),
        }
        if rand() >= p.resolved_missing_share:
            ended["resolved"] = resolved
        if rand() < p.ended_context_share:
            ended["customer_id"] = customer_id
            ended["channel"] = channel
            ended["queue"] = final_queue
        self._push(end_t, ("interactions", contact_id, ended, "contact_ended"))

        if self._survey_p > 0 and rand() < self._survey_p:
            self._schedule_surveys(
                end_t,
                contact_id,
                customer_id,
                cust_idx,
                channel,
                final_queue,
                final_agent,
                transfers,
                resolved,
                repeat,
                switched,
            )

        # Does this customer come back? More likely when the issue is still open.
        follow_p = p.repeat_probability
        if not resolved:
            follow_p *= p.repeat_unresolved_factor
        if transfers:
            follow_p *= p.repeat_transferred_factor
        if rand() < follow_p:
            delay_s = min(self._repeat_cap_s, rng.lognormvariate(self._repeat_mu, p.repeat_delay_sigma))
            self._push(end_t + delay_s * 1000.0, _FollowUp(cust_idx, customer_id, channel, queue, reason))

    def _wait_event(self, kind: str, contact_id: str, **fields: Any) -> _Pending:
        """A contract-v2 queue event of the contact, for the schedule."""
        value: dict[str, Any] = {
            "event_id": self._event_id(),
            "type": kind,
            "contact_id": contact_id,
            "timestamp": None,
        }
        value.update(fields)
        return ("interactions", contact_id, value, kind)

    def _schedule_surveys(
        self,
        end_t: float,
        contact_id: str,
        customer_id: str,
        cust_idx: int,
        channel: str,
        queue: str,
        agent: _Agent | Agent,
        transfers: int,
        resolved: bool,
        repeat: bool,
        switched: bool,
    ) -> None:
        rng = self._rng
        rand = rng.random
        gauss = rng.gauss
        p = self.profile
        s = p.scores
        # A stable per-customer loyalty in [-0.5, 0.5): cheap, and the same customer
        # answers NPS alike across contacts.
        loyalty = ((cust_idx * 2_654_435_761) % 4096) / 4096.0 - 0.5
        latent = (
            s.base
            + p.queues[queue].quality
            + self._channel_experience[channel]
            + agent.skill
            + 0.4 * loyalty
            - s.transfer_penalty * transfers
            - (0.0 if resolved else s.unresolved_penalty)
            - (s.repeat_penalty if repeat else 0.0)
            - (s.channel_switch_penalty if switched else 0.0)
        )
        effort_drivers = transfers + int(repeat) + int(switched)

        delay_s = rng.lognormvariate(self._survey_mu[channel], 0.9)
        at = end_t + 1000.0 * min(_MAX_SURVEY_DELAY_S, max(3.0, delay_s))
        survey_id = f"s-{rng.getrandbits(64):016x}" if rand() < p.survey_id_share else None
        context = rand() < p.survey_context_share
        for metric in METRICS:
            if rand() >= self._survey_metric_p[metric]:
                continue
            value: dict[str, Any] = {
                "event_id": self._event_id(),
                "contact_id": contact_id,
                "metric": metric,
                "score": 0,
                "timestamp": None,
            }
            if metric == "csat":
                x = latent + gauss(0.0, s.noise)
                value["score"] = 1 + bisect.bisect_right(s.csat_cuts, x)
            elif metric == "nps":
                x = latent + 0.8 * loyalty + gauss(0.0, s.noise)
                value["score"] = min(10, max(0, round(s.nps_center + s.nps_slope * x)))
            else:
                x = latent - s.effort_penalty * effort_drivers + gauss(0.0, s.noise)
                if rand() < p.ces_effort_scale_share:
                    value["score"] = min(5, max(1, round(s.ces_effort_center - s.ces_effort_slope * x)))
                    value["scale"] = "effort_1_5"
                else:
                    value["score"] = min(7, max(1, round(s.ces_agree_center + s.ces_agree_slope * x)))
                    if rand() < p.ces_scale_field_share:
                        value["scale"] = "agree_1_7"
            if survey_id is not None:
                value["survey_id"] = survey_id
            if context:
                value["customer_id"] = customer_id
                value["channel"] = channel
                value["queue"] = queue
                value["agent_id"] = agent.agent_id
                value["team"] = agent.team
            self._push(at, ("surveys", contact_id, value, metric))
            at += 1000.0 * (2.0 + 25.0 * rand())  # the next question, a few seconds later

    # -- faults ------------------------------------------------------------------------
    def _bad_event(self) -> tuple[GeneratedEvent, str]:
        """A malformed message around a recent contact, as the bytes a broken producer sends."""
        rng = self._rng
        rand = rng.random
        fault = self._bad_names[bisect.bisect_left(self._bad_cum, rand())]
        key = self._recent[-1].key if self._recent else f"c-{rng.getrandbits(64):016x}"
        ts = self._timestamp(self.now_ms)
        started: dict[str, Any] = {
            "event_id": self._event_id(),
            "type": "contact_started",
            "contact_id": key,
            "timestamp": ts,
            "customer_id": f"cust-{int(rand() * self.profile.customers):07d}",
            "channel": self._pick_channel(None),
            "queue": self._queue_names[bisect.bisect_left(self._queue_cum, rand())],
        }
        survey: dict[str, Any] = {
            "event_id": self._event_id(),
            "contact_id": key,
            "metric": "csat",
            "score": 4,
            "timestamp": ts,
        }
        topic: TopicKind = "interactions"
        obj: Any = started
        if fault == "broken_json":
            topic, obj = ("surveys", survey) if rand() < 0.5 else ("interactions", started)
            raw = orjson.dumps(obj)
            cut = max(1, int(len(raw) * (0.2 + 0.6 * rand())))
            return GeneratedEvent(topic, key, raw[:cut]), f"bad:{fault}"
        if fault == "missing_field":
            kind = ("contact_started", "contact_ended", "survey")[int(rand() * 3)]
            if kind == "survey":
                topic, obj = "surveys", survey
            elif kind == "contact_ended":
                obj = {k: started[k] for k in ("event_id", "contact_id", "timestamp")}
                obj["type"] = "contact_ended"
                obj["handle_seconds"] = 120.0
            required = _REQUIRED[kind]
            del obj[required[int(rand() * len(required))]]
        elif fault == "out_of_range_score":
            topic, obj = "surveys", survey
            metric, score, scale = (
                ("csat", 6, None),
                ("csat", 0, None),
                ("nps", 11, None),
                ("nps", -1, None),
                ("ces", 8, "agree_1_7"),
                ("ces", 0, None),
                ("ces", 6, "effort_1_5"),
            )[int(rand() * 7)]
            survey["metric"], survey["score"] = metric, score
            if scale is not None:
                survey["scale"] = scale
        elif fault == "unknown_channel":
            started["channel"] = ("fax", "pager", "carrier_pigeon", "telegram")[int(rand() * 4)]
        elif fault == "unknown_metric":
            topic, obj = "surveys", survey
            survey["metric"] = ("nss", "fcr", "csat2")[int(rand() * 3)]
        elif fault == "unknown_type":
            started["type"] = ("contact_paused", "contact_resumed", "started")[int(rand() * 3)]
        elif fault == "unknown_scale":
            topic, obj = "surveys", survey
            survey.update(metric="ces", score=5, scale="likert_1_10")
        elif fault == "invalid_score_type":
            topic, obj = "surveys", survey
            survey["score"] = ("five", 4.5, [5], {"value": 5})[int(rand() * 4)]
        elif fault == "invalid_timestamp":
            started["timestamp"] = ("yesterday", "2026-13-45T99:00:00Z", "", True)[int(rand() * 4)]
        elif fault == "future_timestamp":
            # Far beyond any sane clock-skew allowance, whichever clock stamps events.
            now = self.now_ms if self.clock == "simulated" else time.time() * 1000.0
            started["timestamp"] = int(now) + 30 * 86_400_000
        elif fault == "negative_handle_time":
            obj = {
                "event_id": started["event_id"],
                "type": "contact_ended",
                "contact_id": key,
                "timestamp": ts,
                "handle_seconds": -round(1 + 300 * rand(), 1),
            }
        elif fault == "not_an_object":
            raw = (b'["contact_started"]', b"42", b"null", b'"contact_ended"')[int(rand() * 4)]
            return GeneratedEvent(topic, key, raw), f"bad:{fault}"
        elif fault == "not_utf8":
            raw = b'{"event_id": "\xff\xfe", "type": "contact_started"}'
            return GeneratedEvent(topic, key, raw), f"bad:{fault}"
        elif fault == "empty":
            return GeneratedEvent("surveys" if rand() < 0.5 else "interactions", key, b""), (f"bad:{fault}")
        return GeneratedEvent(topic, key, orjson.dumps(obj)), f"bad:{fault}"
