"""Replay (in-process) of queue and agent traffic equals the independent computation.

The same recordings and checks as tests/integration/test_queues.py, without a broker, over
several seeds: duplicates, starts after their waits, late re-queues, waits across window
edges, thresholds at the edge, per-queue targets, agents out of order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from prometheus_client import generate_latest

from stream.config.settings import ENV_PREFIX, load_settings
from stream.outputs.exporter import KpiCollector, build_registry
from stream.query.windows import reader_for
from stream.tools.replay import Replay
from tests.harness import parse_samples
from tests.queue_checks import mismatches
from tests.queue_traffic import QUEUES_FILE, build

WINDOWS = {"15m": 900, "1h": 3600, "today": 90_000}
ZONE = "America/St_Johns"  # -03:30 / -02:30: midnight on a half hour


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("seed", range(6))
def test_replayed_queue_kpis_equal_the_independent_computation(seed: int, tmp_path: Path) -> None:
    now = int(time.time() * 1000) - 60_000
    records, truth = build(seed, now - 3 * 3_600_000, now)
    queues = tmp_path / "queues.yml"
    queues.write_text(QUEUES_FILE)
    settings = load_settings(clock="event", windows="15m,1h,today", timezone=ZONE, queues_file=queues)
    replay = Replay(settings)
    topic = {"interactions": settings.topic_interactions, "agents": settings.topic_agents}
    replay.feed((topic[kind], key.encode(), orjson.dumps(value)) for kind, key, value in records)
    collector = KpiCollector(
        lambda: replay.states, replay.processor, reader_for(settings), topics=sorted(replay.known_topics)
    )
    samples = parse_samples(generate_latest(build_registry(collector)).decode())
    assert mismatches(samples, truth, WINDOWS, ZoneInfo(ZONE)) == []
    assert replay.dead_letters == 0
