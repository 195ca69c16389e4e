"""The traffic model in contact-center terms: channels, queues, score model, volumes.

Pure data and arithmetic; see the package docstring for the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from stream.generator.queueing import REAL_TIME_CHANNELS, QueueingProfile

TopicKind = Literal["interactions", "surveys", "agents"]
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
    queueing: QueueingProfile | None = None
    """Queues with staffed agent pools (contact_queued / answered / abandoned, agent_state);
    None: contacts start with their agent, as before contract v2."""

    @classmethod
    def demo(cls, speed: float = 10.0, *, queues: bool = False, **overrides: Any) -> TrafficProfile:
        """The default contact center on fast-forward, for live demos.

        Why: with real handle times a freshly started live run sends only
        ``contact_started`` for its first minutes, surveys arrive minutes later and
        repeats hours later, so a dashboard stays empty for too long. Here handle
        times and survey delays are ``speed`` times shorter and repeat contacts come
        back within minutes, so every KPI shows within a minute or two. Rates, mixes
        and score distributions are unchanged. ``queues``: simulate queues and agents too
        (:meth:`QueueingProfile.demo`). ``overrides`` are profile fields.
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
        if queues:
            values["queueing"] = QueueingProfile.demo(speed)
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
        queue_events = 0.0
        if self.queueing is not None:
            # Per real-time contact: queued, answered (or abandoned), busy / after-contact work /
            # available; each transfer re-queues (queued, answered) and moves an agent (3 more).
            queue_events = self.real_time_share() * (5.0 + 5.0 * transfers)
        return {
            "repeat_contact": repeat,
            "channel_switch": repeat * self.channel_switch_probability,
            "channel_switch_of_repeats": self.channel_switch_probability,
            "transferred": tau_mean,
            "transfers_per_contact": transfers,
            "resolved": mean(resolved),
            **survey,
            "events_per_contact": 2.0 + transfers + sum(survey.values()) + queue_events,
        }

    def transfer_routes(self, queue: str) -> dict[str, float]:
        """Where ``queue`` transfers to, with weights: its ``transfer_targets`` (other known
        queues), else every other queue alike (itself when it is the only one)."""
        q = self.queues[queue]
        targets = {t: w for t, w in q.transfer_targets.items() if t in self.queues and t != queue}
        return targets or {t: 1.0 for t in self.queues if t != queue} or {queue: 1.0}

    def real_time_share(self) -> float:
        """Share of contacts on channels that wait in a queue (voice, chat, messaging)."""
        total = sum(c.weight for c in self.channels.values())
        return sum(c.weight for n, c in self.channels.items() if n in REAL_TIME_CHANNELS) / total

    def _agent_times(self) -> tuple[float, float]:
        """Mean handle time of a real-time contact, and the agent time around it (after-contact
        work, ringing), in seconds."""
        assert self.queueing is not None
        rt = {n: c for n, c in self.channels.items() if n in REAL_TIME_CHANNELS}
        weight = sum(c.weight for c in rt.values()) or 1.0
        handle = sum(c.weight * c.handle_median_s * math.exp(c.handle_sigma**2 / 2) for c in rt.values())
        return handle / weight, self.queueing.acw_median_s * math.exp(0.125) + self.queueing.ring_s / 2

    def mean_agent_time_s(self, queue: str) -> float:
        """How long an agent of ``queue`` is busy per contact on average (handle + after-contact work)."""
        handle, around = self._agent_times()
        q = self.queues[queue]
        return handle * (1 + 0.4 * q.transfer_probability * (1 + self.second_transfer_probability)) + around

    def offered_load(self, queue: str) -> float:
        """Agents the queue keeps busy on average (Erlangs): its real-time contacts per second x
        (handle time + after-contact work), with a transferred contact's time split between
        the queue it started in and the queues it is transferred to."""
        handle, acw = self._agent_times()
        total_weight = sum(x.weight for x in self.queues.values())
        load = 0.0
        for name, q in self.queues.items():
            share = q.weight / total_weight
            transfers = q.transfer_probability * (1 + self.second_transfer_probability)
            if name == queue:  # the part before any transfer (a third of the longer handle)
                kept = 1 - q.transfer_probability * (2 / 3)
                load += share * (handle * (1 + 0.4 * transfers) * kept + acw)
            targets = self.transfer_routes(name)
            if queue in targets:
                routed = targets[queue] / sum(targets.values())
                load += (
                    share * q.transfer_probability * routed * (handle * (1 + 0.4 * transfers) * (2 / 3) + acw)
                )
        return self.contacts_per_second * self.real_time_share() * load
