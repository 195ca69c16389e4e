"""Synthetic contact-center traffic: the input a real contact center would send.

Why this exists: the processor's KPIs (CSAT, NPS, CES, repeat contacts, channel
switches, transfers) only mean something on traffic whose *causes* are realistic.
A repeat contact must come from the same customer a few hours or days later, often
on another channel and about the same issue; a transferred or unresolved contact
must score worse, or the effort signal the dashboards exist to show is invisible.
Uniform random JSON would exercise the parser and nothing else.

The package has four modules, I/O at the edges: ``profile`` (the model's parameters),

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

from stream.generator.jsonl import ReplayRecord, read_jsonl, write_jsonl
from stream.generator.live import GeneratorStats, produce
from stream.generator.profile import CHANNELS, ChannelProfile, QueueProfile, ScoreModel, TrafficProfile
from stream.generator.simulator import GeneratedEvent, TrafficSimulator

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
