"""Prometheus exposition (stream.outputs.exporter) over hand-built partition states."""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.config.settings import ENV_PREFIX, load_settings
from stream.domain import kpi
from stream.domain.metrics_catalog import ALL_METRICS, COUNT_METRICS, OUTCOMES, RATIO_METRICS
from stream.domain.processor import Processor
from stream.domain.state import PartitionState, dim_key
from stream.outputs.exporter import KpiCollector, build_registry
from stream.query.windows import WindowReader

NOW = 1_795_341_600_000  # 2026-11-22T10:00:00Z
NOW_S = NOW // 1000
TOPICS = ("cx.interactions", "cx.surveys")

CONTRACT_METRICS = {
    "cx_csat_responses",
    "cx_csat_satisfied",
    "cx_csat_ratio",
    "cx_csat_average",
    "cx_nps_responses",
    "cx_nps_promoters",
    "cx_nps_passives",
    "cx_nps_detractors",
    "cx_nps_score",
    "cx_ces_responses",
    "cx_ces_easy",
    "cx_ces_high_effort",
    "cx_ces_easy_ratio",
    "cx_ces_high_effort_ratio",
    "cx_contacts",
    "cx_repeat_contacts",
    "cx_repeat_contact_ratio",
    "cx_channel_switches",
    "cx_channel_switch_ratio",
    "cx_contacts_ended",
    "cx_transferred_contacts",
    "cx_transfer_ratio",
    "cx_survey_response_ratio",
    "cx_events_total",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def vec(**values: float) -> list[float]:
    out = kpi.zero_counts()
    for name, value in values.items():
        out[kpi.COUNTERS.index(name)] = value
    return out


def build(states: list[PartitionState], **settings: Any) -> tuple[CollectorRegistry, Processor]:
    s = load_settings(**settings)
    processor = Processor(s)
    reader = WindowReader(s.window_list, s.bucket_seconds)
    collector = KpiCollector(lambda: states, processor, reader, topics=TOPICS, clock=lambda: NOW)
    return build_registry(collector), processor


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the text exposition (as Prometheus would) into sample -> value."""
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def states_fixture() -> list[PartitionState]:
    """Two partitions; billing/voice has surveys and contacts, sales/chat only contacts."""
    p0, p1 = PartitionState(0), PartitionState(1)
    recent = NOW_S - NOW_S % 60 - 5 * 60  # 09:55, in every window
    older = NOW_S - NOW_S % 60 - 30 * 60  # 09:30, in 1h and 24h only
    bv, sc = dim_key("billing", "voice"), dim_key("sales", "chat")
    p0.buckets[recent] = {
        bv: vec(
            csat_responses=4,
            csat_satisfied=3,
            csat_score_sum=16,
            nps_responses=4,
            nps_promoters=2,
            nps_passives=1,
            nps_detractors=1,
            ces_responses=2,
            ces_easy=1,
            ces_high_effort=1,
            contacts=5,
            repeat_checked_contacts=5,
            repeat_contacts=1,
            channel_switches=1,
            contacts_ended=4,
            transferred_contacts=1,
        )
    }
    p1.buckets[recent] = {bv: vec(csat_responses=1, csat_satisfied=0, csat_score_sum=1, contacts_ended=4)}
    p1.buckets[older] = {sc: vec(contacts=3, repeat_checked_contacts=3)}
    return [p0, p1]


# -- values -------------------------------------------------------------------------------------
def test_exported_values_equal_expected() -> None:
    registry, _ = build(states_fixture())
    s = scrape(registry)
    bv = {"queue": "billing", "channel": "voice"}
    for window in ("15m", "1h", "24h"):
        labels = {"window": window, **bv}
        assert value(s, "cx_csat_responses", **labels) == 5  # summed over both partitions
        assert value(s, "cx_csat_satisfied", **labels) == 3
        assert value(s, "cx_csat_ratio", **labels) == pytest.approx(3 / 5)  # from counts, not mean of ratios
        assert value(s, "cx_csat_average", **labels) == pytest.approx(17 / 5)
        assert value(s, "cx_nps_responses", **labels) == 4
        assert value(s, "cx_nps_promoters", **labels) == 2
        assert value(s, "cx_nps_passives", **labels) == 1
        assert value(s, "cx_nps_detractors", **labels) == 1
        assert value(s, "cx_nps_score", **labels) == pytest.approx(25.0)
        assert value(s, "cx_ces_responses", **labels) == 2
        assert value(s, "cx_ces_easy_ratio", **labels) == pytest.approx(0.5)
        assert value(s, "cx_ces_high_effort_ratio", **labels) == pytest.approx(0.5)
        assert value(s, "cx_contacts", **labels) == 5
        assert value(s, "cx_repeat_contacts", **labels) == 1
        assert value(s, "cx_repeat_contact_ratio", **labels) == pytest.approx(0.2)
        assert value(s, "cx_channel_switch_ratio", **labels) == pytest.approx(0.2)
        assert value(s, "cx_contacts_ended", **labels) == 8
        assert value(s, "cx_transferred_contacts", **labels) == 1
        assert value(s, "cx_transfer_ratio", **labels) == pytest.approx(1 / 8)
        assert value(s, "cx_survey_response_ratio", metric="csat", **labels) == pytest.approx(5 / 8)
        assert value(s, "cx_survey_response_ratio", metric="nps", **labels) == pytest.approx(4 / 8)
        assert value(s, "cx_survey_response_ratio", metric="ces", **labels) == pytest.approx(2 / 8)
    sc = {"queue": "sales", "channel": "chat"}
    assert value(s, "cx_contacts", window="15m", **sc) == 0  # 09:30 is outside 15m ...
    assert value(s, "cx_contacts", window="1h", **sc) == 3  # ... and inside 1h
    assert value(s, "cx_contacts", window="24h", **sc) == 3
    assert value(s, "cx_state_partitions") == 2
    assert value(s, "cx_state_buckets") == 3


def test_empty_denominator_ratio_absent_count_zero() -> None:
    registry, _ = build(states_fixture())
    s = scrape(registry)
    sc = {"queue": "sales", "channel": "chat"}
    for window in ("15m", "1h", "24h"):
        labels = {"window": window, **sc}
        assert value(s, "cx_csat_responses", **labels) == 0
        assert value(s, "cx_csat_ratio", **labels) is None
        assert value(s, "cx_csat_average", **labels) is None
        assert value(s, "cx_nps_responses", **labels) == 0
        assert value(s, "cx_nps_score", **labels) is None
        assert value(s, "cx_ces_easy_ratio", **labels) is None
        assert value(s, "cx_contacts_ended", **labels) == 0
        assert value(s, "cx_transfer_ratio", **labels) is None
        for metric in ("csat", "nps", "ces"):
            assert value(s, "cx_survey_response_ratio", metric=metric, **labels) is None
    # contacts > 0 in 1h: the contact ratios are present there (as 0), absent in 15m.
    assert value(s, "cx_repeat_contact_ratio", window="1h", **sc) == 0.0
    assert value(s, "cx_repeat_contact_ratio", window="15m", **sc) is None
    assert not any(math.isnan(v) or math.isinf(v) for v in s.values())


def test_every_window_exports_the_same_series() -> None:
    registry, _ = build(states_fixture())
    s = scrape(registry)
    series = {}
    for (name, labels), _ in s.items():
        if name == "cx_contacts":
            d = dict(labels)
            series.setdefault(d["window"], set()).add((d["queue"], d["channel"]))
    assert series == {w: {("billing", "voice"), ("sales", "chat")} for w in ("15m", "1h", "24h")}


def test_events_total_for_every_topic_and_outcome() -> None:
    registry, processor = build(states_fixture())
    processor.outcomes.update(
        Counter(
            {("cx.interactions", "accepted"): 7, ("cx.surveys", "rejected"): 2, ("cx.surveys", "late"): 1}
        )
    )
    s = scrape(registry)
    for topic in TOPICS:
        for outcome in OUTCOMES:
            got = value(s, "cx_events_total", topic=topic, outcome=outcome)
            assert got == processor.outcomes.get((topic, outcome), 0), (topic, outcome)
    assert set(OUTCOMES) == {"accepted", "rejected", "duplicate", "late"}


def test_events_total_is_a_counter() -> None:
    registry, _ = build([])
    text = generate_latest(registry).decode()
    assert "# TYPE cx_events_total counter" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["cx_events"].type == "counter"
    assert families["cx_contacts"].type == "gauge"


def test_no_states_still_parses() -> None:
    registry, _ = build([])
    s = scrape(registry)
    assert not any(name == "cx_contacts" for name, _ in s)
    assert value(s, "cx_state_partitions") == 0
    assert len([k for k in s if k[0] == "cx_events_total"]) == len(TOPICS) * len(OUTCOMES)


def test_output_parses_and_has_contract_metric_names() -> None:
    registry, _ = build(states_fixture())
    text = generate_latest(registry).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            if sample.name.startswith("cx_") and "window" in sample.labels:
                assert set(sample.labels) >= {"window", "queue", "channel"}
    assert names >= CONTRACT_METRICS
    assert names >= {spec.name for spec in COUNT_METRICS}


def test_catalog_covers_contract_and_is_unique() -> None:
    names = [spec.name for spec in ALL_METRICS]
    assert len(names) == len(set(names))
    assert set(names) >= CONTRACT_METRICS
    for spec in COUNT_METRICS:
        assert isinstance(spec.source, int) and 0 <= spec.source < kpi.N_COUNTERS
    derived = kpi.derived_kpis(kpi.zero_counts())
    for spec in RATIO_METRICS:
        assert spec.source in derived


def test_label_values_with_special_characters() -> None:
    state = PartitionState(0)
    state.buckets[NOW_S - NOW_S % 60] = {dim_key('back\\office "2"', "web"): vec(contacts=1)}
    registry, _ = build([state])
    s = scrape(registry)
    assert value(s, "cx_contacts", window="15m", queue='back\\office "2"', channel="web") == 1


def test_configured_windows_are_the_labels() -> None:
    registry, _ = build(states_fixture(), windows="10m,2h", bucket_size="5m")
    s = scrape(registry)
    windows = {dict(labels)["window"] for name, labels in s if name == "cx_contacts"}
    assert windows == {"10m", "2h"}


def test_event_clock_windows_end_at_watermark() -> None:
    state = PartitionState(0)
    old = NOW_S - 30 * 86_400
    state.buckets[old - old % 60] = {dim_key("q", "web"): vec(contacts=2)}
    registry, processor = build([state], clock="event")
    processor.clock.observe(old * 1000 + 1000)
    s = scrape(registry)
    assert value(s, "cx_contacts", window="15m", queue="q", channel="web") == 2
    assert value(s, "cx_event_time_watermark_seconds") == old + 1
