"""Every ratio a worker exports is a ratio of counts made on that worker.

The pipeline runs in-process (:class:`stream.tools.replay.Replay`, the worker's own code with
the customer re-keying between partitions), then its partitions are dealt to 1-4
workers at random, as a consumer group would. For every worker, each exported ratio,
average and interval must stay in its range (a repeat-contact ratio above 1 is the
defect this guards against: repeats are classified on the customer's partition, which
is usually another worker than the contact's). And the per-worker figures must be
samples of the global one: numerators and denominators add up over workers to the
global counts, so the global ratio is the denominator-weighted mean of the workers'.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.config.settings import ENV_PREFIX, load_settings
from stream.domain import kpi, stats
from stream.domain.state import TRANSITION_MARK, PartitionState
from stream.outputs.exporter import KpiCollector, build_registry
from stream.query.windows import reader_for
from stream.tools.replay import Replay
from tests.expected import RATIO_RANGES as RANGES

NOW = 1_795_341_600_000  # 2026-11-22T10:00:00Z
MIN = 60_000
CHANNELS = ("voice", "chat", "email")
QUEUES = ("billing", "sales")
#: The ratios with a numerator (proportions), for the additivity check.
PARTS = {key: spec for key, spec in stats.KPI_SAMPLES.items() if spec.numerator is not None}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def traffic(seed: int, contacts: int, customers: int) -> list[tuple[str, bytes, bytes]]:
    """Contacts of few customers (so most are repeats, on mixed channels), ends, surveys."""
    rng = random.Random(seed)
    records: list[tuple[str, bytes, bytes]] = []
    for i in range(contacts):
        contact = f"c{seed}-{i}"
        start = NOW - rng.randrange(1, 20 * 60) * MIN
        queue, channel = rng.choice(QUEUES), rng.choice(CHANNELS)
        events = [
            {
                "event_id": f"s-{contact}",
                "type": "contact_started",
                "contact_id": contact,
                "customer_id": f"cust{rng.randrange(customers)}",
                "channel": channel,
                "queue": queue,
                "timestamp": start,
            }
        ]
        if rng.random() < 0.3:
            events.append(
                {
                    "event_id": f"t-{contact}",
                    "type": "contact_transferred",
                    "contact_id": contact,
                    "to_queue": rng.choice(QUEUES),
                    "timestamp": start + MIN,
                }
            )
        if rng.random() < 0.8:
            events.append(
                {
                    "event_id": f"e-{contact}",
                    "type": "contact_ended",
                    "contact_id": contact,
                    "resolved": rng.random() < 0.6,
                    "handle_seconds": rng.randrange(30, 900),
                    "timestamp": start + 2 * MIN,
                }
            )
        for event in events:
            records.append(("cx.interactions", contact.encode(), orjson.dumps(event)))
        metric = rng.choice(("csat", "nps", "ces"))
        score = {"csat": rng.randint(1, 5), "nps": rng.randint(0, 10), "ces": rng.randint(1, 7)}[metric]
        survey = {
            "event_id": f"v-{contact}",
            "contact_id": contact,
            "metric": metric,
            "score": score,
            "timestamp": start + 3 * MIN,
        }
        records.append(("cx.surveys", contact.encode(), orjson.dumps(survey)))
    rng.shuffle(records)  # starts arrive after their repeats, surveys before their starts ...
    return records


def scrape(states: list[PartitionState], replay: Replay) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What a worker owning ``states`` exports on /metrics, parsed as Prometheus would."""
    reader = reader_for(replay.settings)
    collector = KpiCollector(
        lambda: states,
        replay.processor,
        reader,
        topics=("cx.interactions", "cx.surveys"),
        clock=lambda: NOW,
    )
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(generate_latest(build_registry(collector)).decode()):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def run_pipeline(seed: int, partitions: int, contacts: int, customers: int) -> Replay:
    replay = Replay(load_settings(partitions=partitions, clock="event"))
    replay.feed(traffic(seed, contacts, customers))
    return replay


def deal(partitions: int, workers: int, rng: random.Random) -> list[list[int]]:
    """A random assignment of every partition to one of ``workers`` (none left empty)."""
    order = list(range(partitions))
    rng.shuffle(order)
    owned: list[list[int]] = [[] for _ in range(workers)]
    for i, partition in enumerate(order):
        owned[i % workers if i < workers else rng.randrange(workers)].append(partition)
    return owned


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    partitions=st.integers(1, 8),
    workers=st.integers(1, 4),
    customers=st.integers(3, 40),
)
def test_every_exported_ratio_in_range_on_every_worker(
    seed: int, partitions: int, workers: int, customers: int
) -> None:
    workers = min(workers, partitions)
    replay = run_pipeline(seed, partitions, contacts=120, customers=customers)
    for owned in deal(partitions, workers, random.Random(seed)):
        samples = scrape([replay.states[p] for p in owned], replay)
        for name, (low, high) in RANGES.items():
            for labels, value in samples.get(name, []):
                assert low <= value <= high, (name, labels, value, owned)
        for name, series in samples.items():
            if name.endswith(("_lower", "_upper")):
                ratio = name.rsplit("_", 1)[0]
                low, high = RANGES[ratio]
                for labels, value in series:
                    assert low <= value <= high, (name, labels, value)
        for labels, value in samples.get("cx_survey_response_ratio", []):
            assert value >= 0, labels


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), partitions=st.integers(2, 8), workers=st.integers(2, 4))
def test_per_worker_ratios_are_samples_of_the_global_one(seed: int, partitions: int, workers: int) -> None:
    workers = min(workers, partitions)
    replay = run_pipeline(seed, partitions, contacts=150, customers=12)
    reader = reader_for(replay.settings)
    everything = reader.read(replay.states, NOW)
    per_worker = [
        reader.read([replay.states[p] for p in owned], NOW)
        for owned in deal(partitions, workers, random.Random(seed))
    ]
    for window, per_dim in everything.items():
        for dim, total in per_dim.items():
            if dim.startswith(TRANSITION_MARK):
                continue
            parts = [w[window].get(dim, kpi.zero_counts()) for w in per_worker]
            for key, spec in PARTS.items():
                # Counts add up over workers ...
                assert sum(spec.successes(p) for p in parts) == spec.successes(total)
                assert sum(spec.n(p) for p in parts) == spec.n(total)
                # ... each worker's numerator is within its own denominator ...
                assert all(spec.successes(p) <= spec.n(p) for p in parts), (key, window, dim)
                # ... so the global ratio is the denominator-weighted mean of the workers'.
                if spec.n(total):
                    weighted = sum(kpi.derived_kpis(p)[key] * spec.n(p) for p in parts if spec.n(p)) / sum(
                        spec.n(p) for p in parts
                    )
                    assert weighted == pytest.approx(kpi.derived_kpis(total)[key])
            # Summed over workers, the repeat denominator is every contact started.
            assert total[kpi.REPEAT_CHECKED_CONTACTS] == total[kpi.CONTACTS], (window, dim)


def test_old_layout_takes_contacts_as_the_checked_count() -> None:
    """A vector stored before repeat_checked_contacts existed keeps its old ratio."""
    old = [0.0] * kpi.REPEAT_CHECKED_CONTACTS
    old[kpi.CONTACTS], old[kpi.REPEAT_CONTACTS] = 10, 4
    upgraded = kpi.upgrade_counts(old)
    assert len(upgraded) == kpi.N_COUNTERS
    assert kpi.derived_kpis(upgraded)["repeat_contact_ratio"] == 0.4
    current = kpi.zero_counts()
    current[kpi.CONTACTS] = 10
    assert kpi.upgrade_counts(current)[kpi.REPEAT_CHECKED_CONTACTS] == 0
