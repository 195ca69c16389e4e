"""The simulator's queues (stream.generator.queueing): believable, valid, deterministic.

A demo-speed run (at the demo's contact rate) replayed through the real pipeline
(in-process, no broker) must give service levels and abandonment in the ranges the demo
promises, move over the simulated day, and produce nothing the validator refuses.
"""

from __future__ import annotations

import os

import orjson
import pytest

from stream.config.settings import ENV_PREFIX, load_settings
from stream.domain import kpi
from stream.generator import TrafficProfile, TrafficSimulator
from stream.query.windows import reader_for
from stream.tools.replay import Replay

START = 1_795_341_600_000


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def simulate(n: int, seed: int = 3, rate: float = 12.0) -> list[tuple[str, str, dict | bytes]]:
    profile = TrafficProfile.demo(queues=True, contacts_per_second=rate)
    sim = TrafficSimulator(profile, seed=seed, start_ms=START)
    return [(e.topic_kind, e.key, e.value) for e in sim.events(n)]


def test_the_same_seed_gives_the_same_queue_traffic() -> None:
    assert simulate(3000) == simulate(3000)
    kinds = {v["type"] for k, _, v in simulate(10_000) if isinstance(v, dict) and "type" in v}
    assert {"contact_queued", "contact_answered", "contact_abandoned", "agent_state"} <= kinds


def test_without_queueing_the_stream_is_unchanged() -> None:
    plain = TrafficSimulator(TrafficProfile.demo(), seed=3, start_ms=START)
    kinds = {e.value.get("type") for e in plain.events(3000) if isinstance(e.value, dict)}
    assert "contact_queued" not in kinds and "agent_state" not in kinds


def test_a_simulated_quarter_hour_looks_like_a_contact_center() -> None:
    events = simulate(70_000)
    settings = load_settings(clock="event", windows="5m,1h")
    replay = Replay(settings)
    topic = {"interactions": settings.topic_interactions, "surveys": settings.topic_surveys,
             "agents": settings.topic_agents}  # fmt: skip
    replay.feed((topic[kind], key.encode(), orjson.dumps(value)) for kind, key, value in events)
    assert replay.dead_letters == 0
    now = replay.processor.watermark_ms
    assert now - START > 12 * 60_000, "a quarter of an hour of simulated time"
    reader = reader_for(settings)
    total = kpi.sum_counts(reader.read(replay.states, now)["1h"].values())
    derived = kpi.derived_kpis(total)
    assert total[kpi.WAITS_ENDED] > 1000
    assert 0.6 <= derived["service_level_ratio"] <= 0.97, derived["service_level_ratio"]
    assert 0.005 <= derived["abandon_ratio"] <= 0.12, derived["abandon_ratio"]
    assert total[kpi.SHORT_ABANDONED_CONTACTS] > 0
    assert 2 <= derived["answer_wait_seconds_average"] <= 60
    # each queue's arrivals follow its own daily curve: its 5m service level moves
    moves = {}
    for end in range(START + 5 * 60_000, now, 60_000):
        for dim, counts in reader.read(replay.states, end)["5m"].items():
            value = kpi.derived_kpis(counts)["service_level_ratio"]
            if value is not None and counts[kpi.WAITS_ENDED] >= 50:
                moves.setdefault(dim, []).append(value)
    assert max(max(v) - min(v) for v in moves.values()) > 0.05, moves
    waiting = sum(len(state.waiting) for state in replay.states)
    agents = sum(len(state.agents) for state in replay.states)
    assert agents > 20 and waiting < agents
