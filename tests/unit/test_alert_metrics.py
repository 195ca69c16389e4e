"""Interval and alert metrics on /metrics, the KPI snapshot format, and start-up reconciliation.

Redis is not contacted here (the sink's client connects lazily and nothing is flushed);
the sink against a real Redis is tested in tests/integration/test_alert_sink.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.alerting.evaluator import FIRING, RESOLVED, Transition
from stream.alerting.rules import parse_rules
from stream.alerting.service import AlertCollector, AlertService, IntervalCollector
from stream.alerting.sink import RedisSink
from stream.config.settings import ENV_PREFIX, load_settings
from stream.domain import kpi
from stream.domain.metrics_catalog import ALERT_METRICS, ALL_METRICS, INTERVAL_METRICS, LOW_CONFIDENCE
from stream.domain.processor import Processor
from stream.domain.state import PartitionState, dim_key
from stream.domain.stats import nps_interval, wilson_interval
from stream.outputs.exporter import KpiCollector, build_registry
from stream.query.partition_views import decode_view, encode_view, merge
from stream.query.windows import WindowReader
from tests.harness import tool_missing

NOW = 1_795_341_600_000
NOW_S = NOW // 1000
RULES_YAML = """
rules:
  - name: spike
    metric: cx_ces_high_effort_ratio
    window: 15m
    group_by: [queue]
    op: ">"
    threshold: 0.3
    min_samples: 20
    severity: page
"""


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


def fixture_states() -> list[PartitionState]:
    state = PartitionState(0)
    recent = NOW_S - NOW_S % 60 - 5 * 60
    state.buckets[recent] = {
        dim_key("billing", "voice"): vec(
            ces_responses=40,
            ces_high_effort=20,
            ces_easy=15,
            csat_responses=8,
            csat_satisfied=6,
            csat_score_sum=32,
            nps_responses=10,
            nps_promoters=5,
            nps_passives=3,
            nps_detractors=2,
            contacts=30,
            repeat_checked_contacts=30,
            repeat_contacts=3,
        ),
        dim_key("sales", "chat"): vec(contacts=4, repeat_checked_contacts=4),
        "\x1evoice\x1fchat": vec(channel_switches=2),  # channel-transition counts: not a label set
    }
    return [state]


def make_service(states: list[PartitionState], **settings: Any) -> tuple[AlertService, Any]:
    s = load_settings(**settings)
    processor = Processor(s)
    reader = WindowReader(s.window_list, s.bucket_seconds)
    rules = parse_rules(RULES_YAML, s.window_list)
    sink = RedisSink("redis://127.0.0.1:1/0", "test", buffer_max=5)
    service = AlertService(
        rules=rules,
        sink=sink,
        states=lambda: states,
        reader=reader,
        reference_now=processor.reference_now_ms,
        worker="w1",
        windows=[label for label, _ in s.window_list],
        partitions=1,
        clock=lambda: NOW,
    )
    # The evaluator lease is tested against a real Redis (tests/integration/test_alert_sink.py):
    # here this worker is the evaluator, having taken over an empty Redis.
    service.leader = service.seeded = True
    registry = build_registry(
        KpiCollector(lambda: states, processor, reader, topics=("i", "s"), clock=lambda: NOW)
    )
    registry.register(
        IntervalCollector(
            lambda: states, reader, processor.reference_now_ms, lambda: ("queue", "channel"), 20, lambda: NOW
        )
    )
    registry.register(AlertCollector(service))
    return service, registry


def scrape(registry: Any) -> dict[tuple[str, frozenset], float]:
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def get(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


# -- interval metrics ---------------------------------------------------------------------------
def test_interval_bounds_beside_every_ratio() -> None:
    _, registry = make_service(fixture_states())
    s = scrape(registry)
    bv = {"window": "15m", "queue": "billing", "channel": "voice"}
    assert get(s, "cx_ces_high_effort_ratio_lower", **bv) == pytest.approx(wilson_interval(20, 40)[0])
    assert get(s, "cx_ces_high_effort_ratio_upper", **bv) == pytest.approx(wilson_interval(20, 40)[1])
    assert get(s, "cx_csat_ratio_lower", **bv) == pytest.approx(wilson_interval(6, 8)[0])
    assert get(s, "cx_nps_score_lower", **bv) == pytest.approx(nps_interval(5, 3, 2)[0])
    assert get(s, "cx_nps_score_upper", **bv) == pytest.approx(nps_interval(5, 3, 2)[1])
    # Every exported interval contains its ratio, in every window and series.
    for (name, labels), value in s.items():
        if name.endswith("_lower"):
            ratio = s.get((name.removesuffix("_lower"), labels))
            upper = s[(name.removesuffix("_lower") + "_upper", labels)]
            assert ratio is not None and value <= ratio <= upper, (name, labels)


def test_no_interval_where_the_ratio_is_not_exported() -> None:
    _, registry = make_service(fixture_states())
    s = scrape(registry)
    sc = {"window": "15m", "queue": "sales", "channel": "chat"}
    assert get(s, "cx_csat_ratio", **sc) is None
    assert get(s, "cx_csat_ratio_lower", **sc) is None
    assert get(s, "cx_low_confidence", metric="cx_csat_ratio", **sc) is None
    assert get(s, "cx_repeat_contact_ratio_lower", **sc) == 0.0  # 0 of 4 contacts


def test_low_confidence_flags() -> None:
    _, registry = make_service(fixture_states())
    s = scrape(registry)
    bv = {"window": "15m", "queue": "billing", "channel": "voice"}
    assert get(s, "cx_low_confidence", metric="cx_ces_high_effort_ratio", **bv) == 0  # 40 >= 20
    assert get(s, "cx_low_confidence", metric="cx_csat_ratio", **bv) == 1  # 8 < 20
    assert get(s, "cx_low_confidence", metric="cx_nps_score", **bv) == 1  # 10 < 20
    assert get(s, "cx_low_confidence", metric="cx_repeat_contact_ratio", **bv) == 0  # 30 contacts


def test_transition_keys_are_not_series() -> None:
    _, registry = make_service(fixture_states())
    for _, labels in scrape(registry):
        assert not any(v.startswith("\x1e") for _, v in labels)


# -- alert metrics ------------------------------------------------------------------------------
def test_alert_metrics_after_a_fire() -> None:
    service, registry = make_service(fixture_states())
    s = scrape(registry)
    assert get(s, "cx_alerts_total", rule="spike", state="firing") == 0  # present from the start
    assert get(s, "cx_alerts_firing", rule="spike", severity="page") == 0
    assert get(s, "cx_redis_errors_total", operation="transition") == 0
    (fire,) = service.evaluate()
    assert fire.alert_id == 'spike{queue="billing"}'
    s = scrape(registry)
    assert get(s, "cx_alerts_total", rule="spike", state="firing") == 1
    assert get(s, "cx_alerts_total", rule="spike", state="resolved") == 0
    assert get(s, "cx_alerts_firing", rule="spike", severity="page") == 1
    assert get(s, "cx_alerts_buffered") == 1
    assert get(s, "cx_alerts_dropped_total") == 0
    assert get(s, "cx_redis_up") == 1
    assert get(s, "cx_alert_last_evaluation_timestamp_seconds") == NOW / 1000
    assert service.evaluate() == []  # no repeat


def test_every_exported_metric_is_in_the_catalog() -> None:
    service, registry = make_service(fixture_states())
    service.evaluate()
    names = {spec.name for spec in ALL_METRICS}
    families = {f.name: f.type for f in text_string_to_metric_families(generate_latest(registry).decode())}
    for family, kind in families.items():
        name = family + "_total" if kind == "counter" else family
        assert name in names, name
    mine = {spec.name for spec in (*INTERVAL_METRICS, LOW_CONFIDENCE, *ALERT_METRICS)}
    exported = {f + "_total" if t == "counter" else f for f, t in families.items()}
    assert mine <= exported


def test_promtool_check_metrics_is_clean() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        tool_missing("promtool not installed (make system-deps)")
    service, registry = make_service(fixture_states())
    service.evaluate()
    text = generate_latest(registry)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout.decode() + result.stderr.decode()
    )


# -- partition views ---------------------------------------------------------------------------
def test_views_follow_docs_redis_md_and_round_trip() -> None:
    states = fixture_states()
    service, _ = make_service(states)
    states[0].offsets = {"cx.interactions": 41, "cx.surveys": 9}
    (view,) = service.local_views(NOW)
    assert (view.partition, view.partitions, view.worker, view.at, view.position) == (0, 1, "w1", NOW, 52)
    data = orjson.loads(encode_view(view, ("queue", "channel")))
    assert set(data) == {
        "v",
        "partition",
        "partitions",
        "worker",
        "at",
        "position",
        "labels",
        "counters",
        "windows",
        "ref",
        "waiting",
        "agents",
        "agent_queues",
    }
    assert data["labels"] == ["queue", "channel"] and data["counters"] == list(kpi.COUNTERS)
    rows = {tuple(labels): counts for labels, counts in data["windows"]["15m"]}
    assert set(rows) == {("billing", "voice"), ("sales", "chat")}  # no channel-transition keys
    billing = rows[("billing", "voice")]
    assert billing[kpi.CES_RESPONSES] == 40 and all(isinstance(c, int) for c in billing)
    again = decode_view(encode_view(view, ("queue", "channel")))
    assert again == view


def test_view_decoding_maps_counters_and_labels_by_name() -> None:
    text = orjson.dumps(
        {
            "v": 1,
            "partition": 2,
            "partitions": 4,
            "worker": "old",
            "at": 5,
            "position": 7,
            "labels": ["queue", "channel", "team"],
            "counters": ["ces_high_effort", "some_future_counter", "ces_responses"],
            "windows": {
                "15m": [[["billing", "voice", "t1"], [3, 99, 10]], [["billing", "voice", "t2"], [1, 0, 2]]]
            },
        }
    )
    view = decode_view(text, ("queue", "channel"))
    (counts,) = view.windows["15m"].values()  # the team label is summed over
    assert counts[kpi.CES_HIGH_EFFORT] == 4 and counts[kpi.CES_RESPONSES] == 12
    with_agent = decode_view(text, ("queue", "channel", "agent"))
    assert list(with_agent.windows["15m"]) == [dim_key("billing", "voice", "unknown")]


def test_the_newest_view_of_each_partition_wins() -> None:
    service, _ = make_service(fixture_states())
    (local,) = service.local_views(NOW)
    old_owner = decode_view(encode_view(local, ("queue", "channel")))
    behind = type(local)(0, 1, "w2", NOW + 5, local.position - 1, {})
    assert merge(1, [behind], [local]).views[0] is local  # more input applied
    later = type(local)(0, 1, "w2", NOW + 5, local.position, {})
    assert merge(1, [old_owner], [later]).views[0] is later  # same input, computed later
    assert merge(2, [local]).missing() == [1]
    assert merge(None, [local]).partitions == 1


def test_evaluation_waits_for_a_view_of_every_partition() -> None:
    service, _ = make_service(fixture_states())
    service.partitions = 2  # partition 1 belongs to a worker that has not written a view yet
    assert service.evaluate() == [] and service.held_evaluations == 1
    assert service.last_evaluation_ms == 0  # visible as a stale evaluation timestamp
    other = type(service.local_views(NOW)[0])(1, 2, "w2", NOW, 10, {})
    service.remote_views = [other]
    assert len(service.evaluate()) == 1


def test_a_standby_evaluates_nothing() -> None:
    service, registry = make_service(fixture_states())
    service.leader = False
    assert service.evaluate() == []
    s = scrape(registry)
    assert (
        get(s, "cx_alert_evaluator") == 0 and get(s, "cx_alerts_firing", rule="spike", severity="page") == 0
    )


# -- reconciliation with what Redis already shows active ---------------------------------------
def active_payload(alert_id: str, rule: str = "spike", worker: str = "w1", **extra: Any) -> dict:
    return {
        "id": alert_id,
        "rule": rule,
        "state": FIRING,
        "labels": {"queue": "billing"},
        "since": NOW - 60_000,
        "worker": worker,
        "tid": "before-restart",
        **extra,
    }


def test_restart_adopts_own_firing_alert_without_firing_again() -> None:
    service, _ = make_service(fixture_states())
    aid = 'spike{queue="billing"}'
    service.reconcile({aid: active_payload(aid)}, NOW)
    assert service.evaluate() == []  # still firing: no second fire
    assert service.evaluator.is_firing(aid)


def test_buffered_repeat_fire_is_dropped_on_seed() -> None:
    service, _ = make_service(fixture_states())
    aid = 'spike{queue="billing"}'
    (fire,) = service.evaluate()  # Redis was unreachable at start: fire buffered
    assert list(service.sink.buffer) == [fire]
    service.reconcile({aid: active_payload(aid)}, NOW)
    assert list(service.sink.buffer) == []


def test_alerts_another_worker_fired_are_adopted_and_removed_rules_resolved() -> None:
    """One evaluator for every worker: what a predecessor fired is this evaluator's now."""
    service, _ = make_service(fixture_states())
    other = active_payload('spike{queue="x"}', worker="w2", labels={"queue": "x"})
    gone = active_payload("old_rule", rule="old_rule")
    gone["labels"] = {}
    service.reconcile({'spike{queue="x"}': other, "old_rule": gone}, NOW)
    (cleanup,) = service.sink.buffer
    assert cleanup.alert_id == "old_rule" and cleanup.state == RESOLVED
    assert cleanup.payload["reason"] == "rule removed" and cleanup.payload["tid"] != "before-restart"
    assert service.evaluator.is_firing('spike{queue="x"}')
    transitions = {(t.alert_id, t.state) for t in service.evaluate()}
    assert ('spike{queue="x"}', RESOLVED) in transitions  # no data for queue x: condition clear


def test_buffer_is_bounded_oldest_dropped() -> None:
    sink = RedisSink("redis://127.0.0.1:1/0", "t", buffer_max=3)
    transitions = [Transition(f"a{i}", FIRING, {"rule": "r", "tid": f"t{i}"}) for i in range(5)]
    sink.enqueue(transitions)
    assert [t.alert_id for t in sink.buffer] == ["a2", "a3", "a4"]
    assert sink.dropped == 2


def test_declared_labels_match_the_exposition() -> None:
    service, registry = make_service(fixture_states())
    service.evaluate()
    specs = {spec.name: spec for spec in ALL_METRICS}
    checked = 0
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name + "_total" if family.type == "counter" else family.name
        spec = specs[name]
        if spec.labels is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert set(sample.labels) == set(spec.labels), (name, sample.labels)
            checked += 1
    assert checked > 0


def test_own_alert_of_a_regrouped_rule_is_resolved_on_seed() -> None:
    service, _ = make_service([])
    aid = 'spike{queue="billing",channel="voice"}'  # the rule used to group by queue and channel
    payload = active_payload(aid, labels={"queue": "billing", "channel": "voice"})
    service.reconcile({aid: payload}, NOW, {aid: orjson.dumps(payload).decode()})
    (cleanup,) = service.sink.buffer
    assert cleanup.alert_id == aid and cleanup.payload["reason"] == "rule changed"
    assert cleanup.expect == orjson.dumps(payload).decode()
