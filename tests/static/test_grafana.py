"""Grafana provisioning and dashboards: valid JSON, and every query is sound PromQL on real metrics.

A query may only name a metric the exporter declares (stream.domain.metrics_catalog), a
recording rule of deploy/prometheus/rules/recording.yml, ``up``, or one of the
explicitly listed metrics that an open issue is adding (support.COMING_METRICS).
KPIs must be recombined as sums of counts: averaging (or summing) the per-worker
ratio gauges would weight a queue with 3 responses like one with 3000.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.tools.check_prometheus import all_panels
from tests.static.support import (
    CATALOG_METRICS,
    COMING_METRICS,
    GRAFANA_DIR,
    PROMETHEUS_BUILTIN_METRICS,
    RATIO_GAUGES,
    averaged_kpis,
    label_values_selector,
    load_yaml,
    metric_names,
    recording_rule_names,
    substitute_grafana_variables,
)

DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
KPI_DASHBOARDS = ("supervisor.json", "effort.json")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel['id']} {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        definition = var.get("definition") or (var.get("query") or {}).get("query", "")
        selector = label_values_selector(definition)
        yield f"variable ${var['name']}", selector if selector is not None else definition


def allowed_metrics() -> frozenset[str]:
    return CATALOG_METRICS | recording_rule_names() | PROMETHEUS_BUILTIN_METRICS | COMING_METRICS


def test_the_three_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} >= {"supervisor.json", "effort.json", "operations.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_json_with_unique_panel_ids(path: Path) -> None:
    dashboard = load(path)
    for key in ("uid", "title", "panels", "schemaVersion", "templating"):
        assert key in dashboard, f"{path.name}: missing {key}"
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids), f"{path.name}: panel ids must be integers"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"{path.name}: duplicate panel ids {duplicates}"
    for panel in all_panels(dashboard):
        grid = panel.get("gridPos", {})
        assert {"x", "y", "w", "h"} <= set(grid), f"{path.name}: panel {panel['id']} lacks gridPos"
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{path.name}: panel {panel['id']} overflows"
        if panel.get("type") != "row":
            assert panel.get("targets") or panel.get("type") == "text", f"panel {panel['id']} has no query"
        ref_ids = [t.get("refId") for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), f"{path.name}: panel {panel['id']} repeats a refId"


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = [load(p) for p in DASHBOARDS]
    uids = [d["uid"] for d in dashboards]
    titles = [d["title"] for d in dashboards]
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles


@pytest.mark.parametrize("name", KPI_DASHBOARDS)
def test_kpi_dashboards_have_window_queue_channel_variables(name: str) -> None:
    dashboard = load(DASHBOARD_DIR / name)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"window", "queue", "channel"} <= set(variables), sorted(variables)
    assert not variables["window"].get("multi"), "one window at a time: KPIs of two windows do not add"
    for name_ in ("queue", "channel"):
        assert variables[name_].get("includeAll") and variables[name_].get("allValue") == ".*"
    # Every KPI query is filtered by the chosen window.
    for where, expr in queries(dashboard):
        if where.startswith("panel") and any(m.startswith("cx_") for m in metric_names(_parseable(expr))):
            assert "$window" in expr or "${window}" in expr, f"{name} {where} ignores $window"


def _parseable(expr: str) -> str:
    return substitute_grafana_variables(expr)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_queries_parse_and_use_known_metrics_only(path: Path) -> None:
    dashboard = load(path)
    allowed = allowed_metrics()
    problems = []
    count = 0
    for where, expr in queries(dashboard):
        count += 1
        unknown = metric_names(_parseable(expr)) - allowed
        if unknown:
            problems.append(f"{where}: unknown metrics {sorted(unknown)} in {expr!r}")
    assert count, f"{path.name} has no queries"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_no_average_of_ratio_gauges(path: Path) -> None:
    problems = []
    for where, expr in queries(load(path)):
        parseable = _parseable(expr)
        averaged = averaged_kpis(parseable)
        if averaged:
            problems.append(f"{where}: avg() over {sorted(averaged)}")
        used_ratio_gauges = metric_names(parseable) & RATIO_GAUGES
        if used_ratio_gauges:
            problems.append(
                f"{where}: uses per-worker ratio gauges {sorted(used_ratio_gauges)}; "
                "divide sums of the count gauges (or use a cx:* recording rule) instead"
            )
    assert not problems, "\n".join(problems)


def test_coming_metrics_are_shown() -> None:
    """The metrics announced by open issues have their panels ready."""
    used: set[str] = set()
    for path in DASHBOARDS:
        for _, expr in queries(load(path)):
            used |= metric_names(_parseable(expr))
    assert used >= COMING_METRICS, sorted(COMING_METRICS - used)


def test_channel_matrix_groups_from_by_to_channel() -> None:
    dashboard = load(DASHBOARD_DIR / "effort.json")
    matrix = [
        p
        for p in all_panels(dashboard)
        if any("cx_channel_switch_transitions" in t.get("expr", "") for t in p.get("targets", []))
    ]
    assert matrix, "effort.json has a channel matrix panel"
    panel = matrix[0]
    assert "from_channel" in panel["targets"][0]["expr"] and "to_channel" in panel["targets"][0]["expr"]
    transformations = {t["id"]: t.get("options", {}) for t in panel.get("transformations", [])}
    assert transformations.get("groupingToMatrix", {}).get("rowField") == "from_channel"
    assert transformations["groupingToMatrix"].get("columnField") == "to_channel"


def test_operations_dashboard_covers_throughput_state_and_errors() -> None:
    used: set[str] = set()
    exprs = []
    for _, expr in queries(load(DASHBOARD_DIR / "operations.json")):
        used |= metric_names(_parseable(expr))
        exprs.append(expr)
    assert {"cx_events_total", "cx_alerts_total", "cx_redis_errors_total", "up"} <= used
    assert {m for m in CATALOG_METRICS if m.startswith("cx_state_")} <= used
    assert any("rate(cx_events_total" in e and "[1m]" in e and "outcome" in e for e in exprs)


def test_panels_use_the_provisioned_datasource() -> None:
    provisioned = load_yaml(GRAFANA_DIR / "provisioning/datasources/prometheus.yml")["datasources"]
    prometheus = [d for d in provisioned if d["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0]["url"] == "http://prometheus:9090"
    uid = prometheus[0]["uid"]
    for path in DASHBOARDS:
        dashboard = load(path)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        for panel in all_panels(dashboard):
            ds = panel.get("datasource")
            if ds is None or panel.get("type") == "row":
                continue
            assert ds.get("type") == "prometheus", f"{path.name} panel {panel['id']}"
            assert ds.get("uid") in (uid, "${datasource}"), f"{path.name} panel {panel['id']}: {ds}"
            if ds.get("uid") == "${datasource}":
                assert variables.get("datasource", {}).get("type") == "datasource"


def test_dashboard_provider_is_a_file_provider() -> None:
    providers = load_yaml(GRAFANA_DIR / "provisioning/dashboards/cxstream.yml")["providers"]
    assert providers and all(p["type"] == "file" and p["options"]["path"] for p in providers)


def test_support_extracts_metric_names_from_the_syntax_tree() -> None:
    """The extractor is exact: functions, labels and grouping never count as metrics."""
    expr = (
        'sum by (queue) (rate(cx_events_total{outcome="rejected"}[5m])) '
        "/ ignoring (outcome) group_left () (sum(cx:events:rate5m) > 0) "
        'and on (queue) label_replace(up, "x", "y", "", "") '
        'or avg_over_time({__name__="cx_csat_ratio"}[1h:5m]) + time()'
    )
    assert metric_names(expr) == {"cx_events_total", "cx:events:rate5m", "up", "cx_csat_ratio"}
    assert averaged_kpis(expr) == {"cx_csat_ratio"}
    assert averaged_kpis("avg by (queue) (cx:csat_ratio:queue)") == {"cx:csat_ratio:queue"}
    assert averaged_kpis("avg by (queue) (cx_nps_score) + avg(cx_contacts)") == {"cx_nps_score"}
    assert averaged_kpis("sum(cx_csat_satisfied) / sum(cx_csat_responses)") == set()
    with pytest.raises(KeyError):
        substitute_grafana_variables('cx_contacts{team="$team"}')
