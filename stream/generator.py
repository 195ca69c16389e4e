"""Synthetic contact-center traffic: the input a real contact center would send.

Why this exists: the processor's KPIs (CSAT, NPS, CES, repeat contacts, channel
switches, transfers) only mean something on traffic whose *causes* are realistic.
A repeat contact must come from the same customer a few hours or days later, often
on another channel and about the same issue; a transferred or unresolved contact
must score worse, or the effort signal the dashboards exist to show is invisible.
Uniform random JSON would exercise the parser and nothing else.

The module has three layers, I/O at the edges:

* :class:`TrafficSimulator` -- a pure, deterministic (seeded ``random.Random``)
  discrete-event simulation. No I/O, no wall clock unless asked (``clock="real"``),
  so tests get the same stream for the same seed and benchmarks measure generation
  alone.
* :func:`write_jsonl` / :func:`read_jsonl` -- a replay file in simulated time, the
  input of ``cxstream replay``.
* :func:`produce` -- live traffic into Kafka with aiokafka, paced at a target rate,
  surviving a broker that comes and goes.

Model, in contact-center terms
------------------------------
Fresh contacts arrive as a Poisson process. Each picks a queue (billing,
tech_support, ...) and a channel by volume share, a reason from the queue's reasons,
and an agent of the queue. Handle time is lognormal per channel. A contact may be
transferred once or twice (``to_queue`` follows each queue's usual routes), is
resolved with the queue's first-contact-resolution rate (lower when transferred),
and may get a post-contact survey some seconds to minutes after it ends.

Repeat contacts are *caused*: after a contact ends, the same customer comes back
with a probability that is higher when the contact was unresolved or transferred,
after a lognormal delay (hours, occasionally days, always inside the processor's
repeat horizon), usually about the same reason and often on another channel. Fresh
contacts are drawn from a customer base with a Zipf-like skew but never from a
customer who already had a contact within the repeat horizon -- at any realistic
volume a 20 000-customer base would otherwise make nearly every contact a repeat --
so the measured repeat and channel-switch rates match
:meth:`TrafficProfile.expected_rates`. When every drawn customer is recent, a new
customer joins the base.

Survey scores come from a latent "experience" per contact: queue quality, agent
skill, channel, customer loyalty, minus penalties for each transfer, for being
unresolved, for being a repeat and for a channel switch. CES carries an extra
penalty for the effort drivers (transfers, repeats, switches), so high effort shows
up where it should.

Faults for demos and tests: ``duplicate_ratio`` re-emits a recent event verbatim
(same ``event_id``), ``bad_ratio`` emits a malformed message as raw ``bytes``
(broken JSON, missing required field, out-of-range score, unknown channel, ...).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import heapq
import itertools
import logging
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from pathlib import Path
from random import Random
from typing import Any, Literal, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

__all__ = [
    "CHANNELS",
    "ChannelProfile",
    "GeneratedEvent",
    "GeneratorStats",
    "QueueProfile",
    "ReplayRecord",
    "ScoreModel",
    "TrafficProfile",
    "TrafficSimulator",
    "produce",
    "read_jsonl",
    "write_jsonl",
]

log = logging.getLogger(__name__)

TopicKind = Literal["interactions", "surveys"]
Clock = Literal["simulated", "real"]

CHANNELS: tuple[str, ...] = ("voice", "chat", "email", "sms", "social", "messaging", "web")
METRICS: tuple[str, ...] = ("csat", "nps", "ces")

_DAY_S = 86_400.0
# Offsets used for ISO timestamps with a non-UTC offset: producers in other regions.
_ISO_OFFSETS: tuple[tuple[int, str], ...] = (
    (3_600, "+01:00"),
    (-18_000, "-05:00"),
    (19_800, "+05:30"),
    (0, "+00:00"),
)
_MIN_HANDLE_S = 5.0
_MAX_HANDLE_S = 4 * 3_600.0
_MAX_SURVEY_DELAY_S = 6 * 3_600.0


# --------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    """How one channel behaves: its share of volume, handle time and survey timing."""

    weight: float
    """Share of fresh contacts (relative; normalised over all channels)."""
    handle_median_s: float
    """Median agent handle time in seconds; handle time is lognormal."""
    handle_sigma: float
    """Lognormal sigma of the handle time (0.5 ~ the 90th percentile is 1.9x the median)."""
    survey_delay_median_s: float
    """Median delay between contact end and survey response (IVR: seconds; e-mail: minutes)."""
    experience: float = 0.0
    """Offset on the latent experience score: how the channel tends to feel to customers."""


@dataclass(frozen=True, slots=True)
class QueueProfile:
    """One routing queue: its volume, difficulty, agents and where it transfers to."""

    weight: float
    """Share of fresh contacts (relative)."""
    resolve_probability: float
    """Agent-reported first-contact resolution for contacts that stay in this queue."""
    transfer_probability: float
    """Chance that a contact entering this queue is transferred at least once."""
    quality: float
    """Offset on the latent experience score (harder issues, less-tenured agents: negative)."""
    agents: int
    """Number of agents; each has a fixed skill drawn at simulator start."""
    teams: tuple[str, ...]
    """Team names; agents are spread over them round-robin."""
    reasons: tuple[str, ...]
    """Contact reasons (intents) that land in this queue."""
    transfer_targets: Mapping[str, float] = field(default_factory=dict)
    """Relative weights of the queues this one transfers to; empty = any other queue."""


@dataclass(frozen=True, slots=True)
class ScoreModel:
    """Maps a contact's latent experience to CSAT, NPS and CES scores.

    The latent value is ``base + queue.quality + channel.experience + agent skill +
    customer loyalty - penalties + noise``; each metric cuts it into its own scale.
    The penalties are what make transferred, repeat and unresolved contacts score
    worse -- the signal the processor's dashboards and alerts are meant to surface.
    """

    base: float = 1.25
    noise: float = 0.9
    transfer_penalty: float = 0.55
    """Per transfer."""
    unresolved_penalty: float = 1.5
    repeat_penalty: float = 0.5
    channel_switch_penalty: float = 0.3
    effort_penalty: float = 0.45
    """Extra CES-only penalty per effort driver (each transfer, repeat, channel switch)."""
    csat_cuts: tuple[float, float, float, float] = (-1.7, -0.9, -0.2, 0.75)
    """Latent thresholds between CSAT 1|2, 2|3, 3|4 and 4|5."""
    nps_center: float = 7.1
    nps_slope: float = 1.65
    ces_agree_center: float = 4.9
    ces_agree_slope: float = 1.35
    ces_effort_center: float = 2.3
    ces_effort_slope: float = 1.1


def _default_channels() -> dict[str, ChannelProfile]:
    return {
        "voice": ChannelProfile(0.45, 330.0, 0.55, 40.0, 0.10),
        "chat": ChannelProfile(0.20, 540.0, 0.60, 25.0, 0.05),
        "email": ChannelProfile(0.12, 420.0, 0.70, 900.0, -0.15),
        "messaging": ChannelProfile(0.09, 480.0, 0.65, 120.0, 0.0),
        "web": ChannelProfile(0.06, 240.0, 0.60, 60.0, 0.0),
        "sms": ChannelProfile(0.05, 300.0, 0.70, 300.0, -0.05),
        "social": ChannelProfile(0.03, 360.0, 0.70, 600.0, -0.30),
    }


def _default_queues() -> dict[str, QueueProfile]:
    return {
        "billing": QueueProfile(
            weight=0.30,
            resolve_probability=0.80,
            transfer_probability=0.12,
            quality=0.0,
            agents=60,
            teams=("billing-east", "billing-west"),
            reasons=(
                "billing_dispute",
                "payment_failed",
                "refund_request",
                "invoice_question",
                "plan_change",
            ),
            transfer_targets={
                "retention": 0.35,
                "tech_support": 0.25,
                "general": 0.2,
                "sales": 0.2,
            },
        ),
        "tech_support": QueueProfile(
            weight=0.28,
            resolve_probability=0.66,
            transfer_probability=0.20,
            quality=-0.30,
            agents=80,
            teams=("tech-l1", "tech-l2"),
            reasons=("no_service", "slow_connection", "device_setup", "outage", "password_reset"),
            transfer_targets={"billing": 0.4, "general": 0.3, "retention": 0.2, "sales": 0.1},
        ),
        "sales": QueueProfile(
            weight=0.16,
            resolve_probability=0.86,
            transfer_probability=0.08,
            quality=0.30,
            agents=35,
            teams=("sales-inbound",),
            reasons=("new_subscription", "upgrade", "pricing_question", "order_status"),
            transfer_targets={"billing": 0.5, "tech_support": 0.3, "general": 0.2},
        ),
        "retention": QueueProfile(
            weight=0.08,
            resolve_probability=0.72,
            transfer_probability=0.10,
            quality=-0.20,
            agents=20,
            teams=("retention",),
            reasons=("cancel_request", "competitor_offer", "price_complaint"),
            transfer_targets={"billing": 0.6, "sales": 0.4},
        ),
        "general": QueueProfile(
            weight=0.18,
            resolve_probability=0.80,
            transfer_probability=0.18,
            quality=0.10,
            agents=50,
            teams=("general-a", "general-b"),
            reasons=("account_update", "address_change", "general_inquiry", "complaint"),
            transfer_targets={
                "billing": 0.35,
                "tech_support": 0.35,
                "sales": 0.2,
                "retention": 0.1,
            },
        ),
    }


def _default_survey_rates() -> dict[str, float]:
    return {"csat": 0.25, "nps": 0.15, "ces": 0.20}


@dataclass(frozen=True)
class TrafficProfile:
    """Everything that shapes the traffic; the defaults describe a mid-size telco.

    Change it with :func:`dataclasses.replace`. :meth:`expected_rates` gives the
    steady-state KPI rates the profile implies, which tests and demos compare the
    processor's output against.
    """

    contacts_per_second: float = 5.0
    """All contacts started per second, repeats included (simulated time)."""
    customers: int = 20_000
    """Established customer base; fresh contacts draw from it with a Zipf-like skew."""
    customer_skew: float = 2.0
    """Draw index ``customers * u**skew``: 1 = uniform, 2 ~ Zipf exponent 0.5 (heavy users)."""
    queues: Mapping[str, QueueProfile] = field(default_factory=_default_queues)
    channels: Mapping[str, ChannelProfile] = field(default_factory=_default_channels)

    repeat_probability: float = 0.12
    """Chance that a resolved, untransferred contact is followed by another from the customer."""
    repeat_unresolved_factor: float = 2.5
    """Multiplier on :attr:`repeat_probability` when the contact was not resolved."""
    repeat_transferred_factor: float = 1.4
    """Multiplier on :attr:`repeat_probability` when the contact was transferred."""
    repeat_delay_median_s: float = 3_600.0
    """Median gap between a contact's end and the customer's next contact."""
    repeat_delay_sigma: float = 2.0
    """Lognormal sigma of that gap (2.0: a quarter within 15 min, 94 % within a day)."""
    repeat_window_s: float = 6 * _DAY_S
    """Longest gap; kept under :attr:`repeat_horizon_s` so every follow-up counts as repeat."""
    repeat_horizon_s: float = 7 * _DAY_S
    """The processor's repeat horizon; fresh contacts avoid customers seen within it."""
    repeat_same_reason_probability: float = 0.75
    """Chance that a repeat contact is about the same reason (and so the same queue)."""
    channel_switch_probability: float = 0.40
    """Chance that a repeat contact uses a different channel from the previous contact."""

    second_transfer_probability: float = 0.25
    """Chance that a transferred contact is transferred again."""
    transfer_resolve_factor: float = 0.85
    """Multiplier on the queue's resolve probability for transferred contacts."""

    survey_response_rates: Mapping[str, float] = field(default_factory=_default_survey_rates)
    """Responses per ended contact, per metric. One invitation asks all metrics."""
    ces_effort_scale_share: float = 0.15
    """Share of CES responses on the ``effort_1_5`` scale; the rest ``agree_1_7``."""
    ces_scale_field_share: float = 0.6
    """Share of ``agree_1_7`` responses that state ``scale`` (it is the default)."""
    survey_context_share: float = 0.4
    """Share of surveys carrying queue/channel/agent themselves; the rest need the join."""
    survey_id_share: float = 0.7
    """Share of surveys carrying a ``survey_id``."""
    ended_context_share: float = 0.5
    """Share of ``contact_ended`` events repeating customer_id, channel and (final) queue."""
    reason_missing_share: float = 0.08
    resolved_missing_share: float = 0.05
    to_agent_share: float = 0.8

    timestamp_epoch_share: float = 0.5
    """Share of events with integer epoch-ms timestamps."""
    timestamp_offset_share: float = 0.2
    """Share with an ISO timestamp in a non-``Z`` offset; the rest are ISO with ``Z``."""
    scores: ScoreModel = field(default_factory=ScoreModel)

    @classmethod
    def demo(cls, speed: float = 10.0, **overrides: Any) -> TrafficProfile:
        """The default contact center on fast-forward, for live demos.

        Why: with real handle times a freshly started live run sends only
        ``contact_started`` for its first minutes, surveys arrive minutes later and
        repeats hours later, so a dashboard stays empty for too long. Here handle
        times and survey delays are ``speed`` times shorter and repeat contacts come
        back within minutes, so every KPI shows within a minute or two. Rates, mixes
        and score distributions are unchanged. ``overrides`` are profile fields.
        """
        base = cls()
        channels = {
            name: replace(
                ch,
                handle_median_s=ch.handle_median_s / speed,
                survey_delay_median_s=ch.survey_delay_median_s / speed,
            )
            for name, ch in base.channels.items()
        }
        values: dict[str, Any] = {
            "channels": channels,
            "repeat_delay_median_s": 120.0,
            "repeat_delay_sigma": 0.8,
        }
        values.update(overrides)
        return replace(base, **values)

    def expected_rates(self) -> dict[str, float]:
        """Steady-state rates this profile implies, the way CONTRACT.md defines the KPIs.

        Keys: ``repeat_contact`` and ``channel_switch`` (shares of contacts started),
        ``channel_switch_of_repeats``, ``transferred`` and ``resolved`` (shares of
        contacts ended), ``transfers_per_contact``, ``survey_<metric>`` (responses per
        ended contact), ``events_per_contact`` (valid events, no faults).

        Steady state means after the first few repeat delays of a run: the first
        contacts of a run cannot be repeats. Each contact causes at most one follow-up,
        so the repeat share is the mean follow-up probability over all contacts; a
        follow-up stays in its queue with the same-reason probability, so the queue mix
        of all contacts is the fixed point of that flow, found by iteration.
        """
        names = list(self.queues)
        total_w = sum(q.weight for q in self.queues.values())
        fresh = [self.queues[n].weight / total_w for n in names]
        follow_p: list[float] = []
        transferred: list[float] = []
        resolved: list[float] = []
        for name in names:
            q = self.queues[name]
            tau = q.transfer_probability
            rho0 = q.resolve_probability
            rho1 = min(1.0, rho0 * self.transfer_resolve_factor)
            base = self.repeat_probability
            u_f, t_f = self.repeat_unresolved_factor, self.repeat_transferred_factor
            p = (1 - tau) * (rho0 * min(1.0, base) + (1 - rho0) * min(1.0, base * u_f)) + tau * (
                rho1 * min(1.0, base * t_f) + (1 - rho1) * min(1.0, base * u_f * t_f)
            )
            follow_p.append(p)
            transferred.append(tau)
            resolved.append((1 - tau) * rho0 + tau * rho1)
        same = self.repeat_same_reason_probability
        volume = fresh[:]
        for _ in range(500):
            follow = [volume[i] * follow_p[i] for i in range(len(names))]
            spread = (1 - same) * sum(follow)
            new = [fresh[i] + same * follow[i] + spread * fresh[i] for i in range(len(names))]
            if max(abs(a - b) for a, b in zip(new, volume, strict=True)) < 1e-13:
                volume = new
                break
            volume = new
        total = sum(volume)

        def mean(values: Sequence[float]) -> float:
            return sum(v * w for v, w in zip(values, volume, strict=True)) / total

        repeat = mean(follow_p)
        tau_mean = mean(transferred)
        survey = {f"survey_{m}": float(self.survey_response_rates.get(m, 0.0)) for m in METRICS}
        transfers = tau_mean * (1 + self.second_transfer_probability)
        return {
            "repeat_contact": repeat,
            "channel_switch": repeat * self.channel_switch_probability,
            "channel_switch_of_repeats": self.channel_switch_probability,
            "transferred": tau_mean,
            "transfers_per_contact": transfers,
            "resolved": mean(resolved),
            **survey,
            "events_per_contact": 2.0 + transfers + sum(survey.values()),
        }


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
        self._queue_cum = _cumulative([q.weight for q in profile.queues.values()])
        self._agents: dict[str, list[_Agent]] = {}
        for name, q in profile.queues.items():
            prefix = "".join(part[0] for part in name.split("_"))[:3] or "q"
            teams = q.teams or (name,)
            self._agents[name] = [
                _Agent(f"{prefix}-{i + 1:03d}", teams[i % len(teams)], rng.gauss(0.0, 0.3))
                for i in range(max(1, q.agents))
            ]
        self._routes: dict[str, tuple[list[str], list[float]]] = {}
        for name, q in profile.queues.items():
            targets = {t: w for t, w in q.transfer_targets.items() if t in profile.queues and t != name}
            if not targets:
                targets = {t: 1.0 for t in profile.queues if t != name} or {name: 1.0}
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

    def _start_contact(self, t: float, follow: _FollowUp | None) -> None:
        rng = self._rng
        p = self.profile
        rand = rng.random
        if follow is None:
            cust_idx = self._draw_customer(t)
            customer_id = f"cust-{cust_idx:07d}"
            queue = self._queue_names[bisect.bisect_left(self._queue_cum, rand())]
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
        self._push(t, ("interactions", contact_id, started, "contact_started"))

        handle_ms = handle_s * 1000.0
        final_queue, final_agent = queue, agent
        for i in range(transfers):
            low, high = (0.15, 0.45) if i == 0 else (0.55, 0.85)
            names, cum = self._routes[final_queue]
            final_queue = names[bisect.bisect_left(cum, rand())]
            pool = self._agents[final_queue]
            final_agent = pool[int(rand() * len(pool))]
            transfer: dict[str, Any] = {
                "event_id": self._event_id(),
                "type": "contact_transferred",
                "contact_id": contact_id,
                "timestamp": None,
                "to_queue": final_queue,
            }
            if rand() < p.to_agent_share:
                transfer["to_agent"] = final_agent.agent_id
            at = t + handle_ms * (low + (high - low) * rand())
            self._push(at, ("interactions", contact_id, transfer, "contact_transferred"))

        end_t = t + handle_ms
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

    def _schedule_surveys(
        self,
        end_t: float,
        contact_id: str,
        customer_id: str,
        cust_idx: int,
        channel: str,
        queue: str,
        agent: _Agent,
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


# --------------------------------------------------------------------------------------
# Replay files
# --------------------------------------------------------------------------------------


class ReplayRecord(NamedTuple):
    """One line of a replay file: the topic, the key and the value to send."""

    topic: str
    key: str
    value: dict[str, Any] | bytes
    """A JSON object to serialise, or raw bytes to send verbatim (malformed on purpose)."""


def write_jsonl(
    path: str | os.PathLike[str],
    count: int,
    profile: TrafficProfile | None = None,
    seed: int | None = None,
    start_ms: int | None = None,
    *,
    duplicate_ratio: float = 0.0,
    bad_ratio: float = 0.0,
    interactions_topic: str = "cx.interactions",
    surveys_topic: str = "cx.surveys",
) -> int:
    """Write ``count`` simulated-time events to a replay file; return the number written.

    Why a file: a fixed, reviewable input for ``cxstream replay FILE.jsonl``,
    integration tests and benchmarks, independent of the generator's future changes.

    Format (JSON Lines, UTF-8, one object per line, in generation order)::

        {"topic": "cx.interactions", "key": "c-…", "value": {…event…}, "kind": "contact_started"}
        {"topic": "cx.surveys", "key": "c-…", "value_b64": "eyJldmVud…", "kind": "bad:broken_json"}

    * ``topic`` -- the Kafka topic (``interactions_topic`` / ``surveys_topic``).
    * ``key`` -- the partition key, the ``contact_id``; send it UTF-8 encoded.
    * ``value`` -- the event as a JSON object; send ``orjson.dumps(value)``.
    * ``value_b64`` -- instead of ``value`` for a deliberately malformed message: the
      exact bytes, base64; send them verbatim.
    * ``kind`` -- informational (what :meth:`TrafficSimulator.events_with_kind`
      reports); a reader must ignore it and any other unknown field.

    Timestamps are simulated time from ``start_ms`` (default: now), so a replay is
    meaningful to a processor whose future-skew check uses the wall clock only when
    ``start_ms`` is in the past. The file is written to a temporary name and renamed,
    so a reader never sees half a file.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    sim = TrafficSimulator(profile, seed, start_ms, duplicate_ratio=duplicate_ratio, bad_ratio=bad_ratio)
    log.info("writing %d events to %s (seed %d)", count, path, sim.seed)
    topics = {"interactions": interactions_topic, "surveys": surveys_topic}
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    written = 0
    try:
        with tmp.open("wb") as fh:
            for ev, kind in sim.events_with_kind(count):
                record: dict[str, Any] = {"topic": topics[ev.topic_kind], "key": ev.key}
                if isinstance(ev.value, bytes):
                    record["value_b64"] = base64.b64encode(ev.value).decode("ascii")
                else:
                    record["value"] = ev.value
                record["kind"] = kind
                fh.write(dumps(record, option=newline))
                written += 1
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return written


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[ReplayRecord]:
    """Read a replay file written by :func:`write_jsonl` (format documented there).

    Blank lines are skipped; a line that is not a valid record raises ``ValueError``
    naming the line, because a replay that silently skips input would mislead.
    """
    with Path(path).open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                topic, key = obj["topic"], obj["key"]
                if "value" in obj:
                    value: dict[str, Any] | bytes = obj["value"]
                else:
                    value = base64.b64decode(obj["value_b64"], validate=True)
                if not isinstance(topic, str) or not isinstance(key, str):
                    raise TypeError("topic and key must be strings")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a replay record ({exc})") from None
            yield ReplayRecord(topic, key, value)


# --------------------------------------------------------------------------------------
# Live produce
# --------------------------------------------------------------------------------------


@dataclass
class GeneratorStats:
    """What :func:`produce` delivered: counts per topic and per kind, and errors.

    Counts are of messages the broker acknowledged. ``by_kind`` uses the kinds of
    :meth:`TrafficSimulator.events_with_kind` (``contact_started`` ... ``csat`` ...
    ``duplicate``, ``bad:<fault>``).
    """

    by_topic: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    send_errors: int = 0
    """Failed send attempts (each retried)."""
    dropped: int = 0
    """Messages abandoned because the run was stopped while they were still failing."""
    elapsed_s: float = 0.0
    seed: int | None = None

    @property
    def sent(self) -> int:
        """Messages acknowledged, all topics."""
        return sum(self.by_topic.values())

    @property
    def duplicates(self) -> int:
        """Injected duplicates acknowledged."""
        return self.by_kind.get("duplicate", 0)

    @property
    def bad(self) -> int:
        """Injected malformed messages acknowledged."""
        return sum(n for k, n in self.by_kind.items() if k.startswith("bad:"))

    @property
    def events_per_second(self) -> float:
        """Achieved rate over the run."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, for logs and the CLI."""
        return {
            "sent": self.sent,
            "by_topic": dict(self.by_topic),
            "by_kind": dict(self.by_kind),
            "duplicates": self.duplicates,
            "bad": self.bad,
            "send_errors": self.send_errors,
            "dropped": self.dropped,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_second": round(self.events_per_second, 1),
            "seed": self.seed,
        }


# (future, topic, key, value, kind) of a message handed to the producer.
_InFlight = tuple["asyncio.Future[Any]", str, bytes, bytes, str]


class _Run:
    """Stop conditions and error-log throttling shared by the pieces of :func:`produce`."""

    def __init__(self, stop_event: asyncio.Event | None, deadline: float | None) -> None:
        self.stop_event = stop_event
        self.deadline = deadline
        self._last_warning = -math.inf
        self._suppressed = 0

    def stopping(self) -> bool:
        if self.stop_event is not None and self.stop_event.is_set():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    async def sleep(self, seconds: float) -> None:
        """Sleep, waking early when the run is stopped."""
        if self.deadline is not None:
            seconds = min(seconds, self.deadline - time.monotonic())
        if seconds <= 0:
            return
        if self.stop_event is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

    def warn(self, msg: str, *args: Any) -> None:
        # A down broker fails every send; one line every few seconds is enough.
        now = time.monotonic()
        if now - self._last_warning >= 5.0:
            if self._suppressed:
                msg += " (%d similar messages suppressed)"
                args = (*args, self._suppressed)
            log.warning(msg, *args)
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1


async def _start_producer(bootstrap: str, options: Mapping[str, Any], run: _Run) -> AIOKafkaProducer | None:
    """Start a producer, retrying with backoff while the broker is unreachable."""
    backoff = 0.5
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "cxstream-generator",
        "linger_ms": 5,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
    }
    config.update(options)
    while not run.stopping():
        producer = AIOKafkaProducer(**config)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            run.warn("broker %s unreachable (%s); retrying in %.1fs", bootstrap, exc, backoff)
            with contextlib.suppress(Exception):
                await producer.stop()
            await run.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            continue
        log.info("producer connected to %s", bootstrap)
        return producer
    return None


async def _send(
    producer: AIOKafkaProducer,
    topic: str,
    key: bytes,
    value: bytes,
    kind: str,
    run: _Run,
    stats: GeneratorStats,
) -> _InFlight | None:
    """Hand one message to the producer; retry while it cannot even be queued."""
    backoff = 0.2
    while True:
        try:
            future = await producer.send(topic, value=value, key=key)
        except KafkaError as exc:  # e.g. KafkaTimeoutError: no metadata, broker down
            stats.send_errors += 1
            run.warn("cannot send to %s (%r); retrying", topic, exc)
            if run.stopping():
                return None
            await run.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        return future, topic, key, value, kind


async def _settle(
    producer: AIOKafkaProducer, batch: list[_InFlight], run: _Run, stats: GeneratorStats
) -> None:
    """Wait for a batch's acknowledgements, re-sending what failed until it lands.

    A re-sent message may reach the broker twice; it carries the same ``event_id``,
    so the processor's dedup counts it once.
    """
    backoff = 0.5
    while batch:
        results = await asyncio.gather(*(item[0] for item in batch), return_exceptions=True)
        failed: list[_InFlight] = []
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(item)
            else:
                stats.by_topic[item[1]] += 1
                stats.by_kind[item[4]] += 1
        if not failed:
            return
        stats.send_errors += len(failed)
        run.warn("%d messages not acknowledged; re-sending", len(failed))
        if run.stopping():
            stats.dropped += len(failed)
            return
        await run.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
        batch = []
        for _, topic, key, value, kind in failed:
            resent = await _send(producer, topic, key, value, kind, run, stats)
            if resent is None:
                stats.dropped += 1
            else:
                batch.append(resent)


async def produce(
    bootstrap: str,
    *,
    interactions_topic: str = "cx.interactions",
    surveys_topic: str = "cx.surveys",
    rate: float = 200.0,
    duration: float | None = None,
    count: int | None = None,
    profile: TrafficProfile | None = None,
    seed: int | None = None,
    duplicate_ratio: float = 0.0,
    bad_ratio: float = 0.0,
    progress: Callable[[GeneratorStats], None] | None = None,
    stop_event: asyncio.Event | None = None,
    progress_interval: float = 1.0,
    producer_options: Mapping[str, Any] | None = None,
) -> GeneratorStats:
    """Produce live traffic to Kafka until ``duration``, ``count`` or ``stop_event``.

    ``rate`` is events per second over both topics, faults included (``rate <= 0``:
    as fast as the broker takes them). Events carry wall-clock timestamps. The
    profile's ``contacts_per_second`` is rescaled so that simulated time runs at
    wall-clock speed in steady state (handle times and repeat delays then look real
    to the processor). With the default profile the first minutes hold mostly
    ``contact_started`` events, since real contacts take minutes to end; pass
    ``TrafficProfile.demo()`` for a demo that shows every KPI within a minute or two.

    Messages are keyed by ``contact_id`` and JSON-encoded with orjson. Sends are not
    awaited one by one: each small batch is handed to the producer (``linger_ms=5``)
    and acknowledgements are awaited a few batches later, so pacing never waits on a
    round trip. A broker that is down or goes away is logged and retried -- at start
    and for every failed message -- never raised; messages still failing when the
    run stops are counted in ``dropped``. ``producer_options`` go to
    ``AIOKafkaProducer`` (e.g. security settings). ``progress`` is called with the
    running stats every ``progress_interval`` seconds and at the end.

    With no ``duration``, ``count`` or ``stop_event`` it runs until cancelled.
    """
    started_at = time.monotonic()
    run = _Run(stop_event, started_at + duration if duration is not None else None)
    profile = profile if profile is not None else TrafficProfile()
    if rate > 0:
        per_contact = profile.expected_rates()["events_per_contact"]
        valid_share = 1.0 - duplicate_ratio - bad_ratio
        profile = replace(profile, contacts_per_second=max(1e-3, rate * valid_share / per_contact))
    sim = TrafficSimulator(profile, seed, clock="real", duplicate_ratio=duplicate_ratio, bad_ratio=bad_ratio)
    stats = GeneratorStats(seed=sim.seed)
    log.info(
        "producing to %s at %s events/s (seed %d, duplicates %.1f%%, bad %.1f%%)",
        bootstrap,
        f"{rate:g}" if rate > 0 else "max",
        sim.seed,
        100 * duplicate_ratio,
        100 * bad_ratio,
    )
    topics = {"interactions": interactions_topic, "surveys": surveys_topic}
    options = dict(producer_options or {})
    stream = sim.events_with_kind(None)
    dumps = orjson.dumps
    batch_size = max(1, min(500, round(rate * 0.02))) if rate > 0 else 500
    max_in_flight = 4

    def report() -> None:
        stats.elapsed_s = time.monotonic() - started_at
        if progress is not None:
            progress(stats)

    producer = await _start_producer(bootstrap, options, run)
    if producer is None:
        report()
        return stats
    in_flight: deque[list[_InFlight]] = deque()
    generated = 0
    pace_start = time.monotonic()
    next_progress = pace_start + progress_interval
    try:
        while not run.stopping() and (count is None or generated < count):
            n = batch_size if count is None else min(batch_size, count - generated)
            batch: list[_InFlight] = []
            for ev, kind in itertools.islice(stream, n):
                generated += 1
                value = ev.value if isinstance(ev.value, bytes) else dumps(ev.value)
                item = await _send(producer, topics[ev.topic_kind], ev.key.encode(), value, kind, run, stats)
                if item is None:
                    stats.dropped += 1
                else:
                    batch.append(item)
            in_flight.append(batch)
            while len(in_flight) > max_in_flight:
                await _settle(producer, in_flight.popleft(), run, stats)
            now = time.monotonic()
            if now >= next_progress:
                report()
                next_progress = now + progress_interval
            if rate > 0:
                behind = now - (pace_start + generated / rate)
                if behind > 1.0:
                    # Stalled (broker outage): resume at the target rate, no catch-up burst.
                    pace_start += behind
                elif behind < 0:
                    await run.sleep(-behind)
        while in_flight:
            await _settle(producer, in_flight.popleft(), run, stats)
    finally:
        try:
            await asyncio.wait_for(producer.stop(), 15.0)  # flushes what is still queued
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("producer did not stop cleanly: %r", exc)
        # Only non-empty when cancelled or failing: count what the flush delivered.
        for batch in in_flight:
            for future, topic, _, _, kind in batch:
                if future.done() and not future.cancelled() and future.exception() is None:
                    stats.by_topic[topic] += 1
                    stats.by_kind[kind] += 1
                else:
                    stats.dropped += 1
        report()
        log.info("generator finished: %s", stats.as_dict())
    return stats
