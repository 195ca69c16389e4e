"""Prometheus config, recording and alerting rules, their promtool unit tests, Alertmanager config.

promtool comes from Debian's ``prometheus`` package (``make system-deps``). Without
it these checks are skipped locally, and fail when the CI environment variable is set.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.static.support import (
    CATALOG_METRICS,
    DEPLOY,
    GRAFANA_DIR,
    PROMETHEUS_BUILTIN_METRICS,
    PROMETHEUS_DIR,
    RATIO_GAUGES,
    averaged_kpis,
    load_yaml,
    metric_names,
    promtool,
    recording_rule_names,
    substitute_grafana_variables,
)

RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def run(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


# --- promtool ---------------------------------------------------------------------


def test_promtool_check_config() -> None:
    result = run(promtool(), "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = run(promtool(), "check", "rules", *(str(p) for p in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    assert RULE_TESTS, "deploy/prometheus/tests has promtool unit tests"
    result = run(promtool(), "test", "rules", *(str(p) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_pass_promtool(tmp_path: Path) -> None:
    """Grafana queries (variables filled in) parse with Prometheus' own parser too."""
    import json

    exprs = []
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        panels = [
            *dashboard["panels"],
            *(p for panel in dashboard["panels"] for p in panel.get("panels", [])),
        ]
        exprs += [substitute_grafana_variables(t["expr"]) for p in panels for t in p.get("targets", [])]
    groups = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"dashboard:query{i}:check", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump(groups), encoding="utf-8")
    result = run(promtool(), "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


# --- rules against the contract ----------------------------------------------------


def test_rule_expressions_only_use_catalog_metrics() -> None:
    allowed = CATALOG_METRICS | recording_rule_names() | PROMETHEUS_BUILTIN_METRICS
    problems = []
    for rule in rules():
        name = rule.get("record") or rule.get("alert")
        unknown = metric_names(rule["expr"]) - allowed
        if unknown:
            problems.append(f"{name}: unknown metrics {sorted(unknown)}")
        if averaged_kpis(rule["expr"]):
            problems.append(f"{name}: averages ratios {sorted(averaged_kpis(rule['expr']))}")
        if metric_names(rule["expr"]) & RATIO_GAUGES:
            problems.append(f"{name}: uses per-worker ratio gauges; divide sums of counts instead")
    assert not problems, "\n".join(problems)


def test_recording_rules_cover_every_kpi_globally_and_per_queue() -> None:
    names = recording_rule_names()
    kpis = [
        "csat_ratio",
        "nps_score",
        "ces_easy_ratio",
        "ces_high_effort_ratio",
        "repeat_contact_ratio",
        "channel_switch_ratio",
        "transfer_ratio",
        "survey_response_ratio",
    ]
    for kpi in kpis:
        for level in ("global", "queue"):
            assert f"cx:{kpi}:{level}" in names, f"missing recording rule cx:{kpi}:{level}"
    records = [r["record"] for r in rules() if "record" in r]
    assert len(records) == len(set(records)), "recording rule names are unique"
    assert all(r.startswith("cx:") and r.count(":") == 2 for r in records), "level:metric:operations naming"


def test_kpi_recording_rules_divide_sums_of_counts() -> None:
    divisions = [r for r in rules() if "record" in r and "/" in r["expr"]]
    assert len(divisions) >= 3 * 8, "every KPI at three levels"
    for rule in divisions:
        expr = " ".join(rule["expr"].split())
        assert expr.count("sum by") >= 2, f"{rule['record']}: numerator and denominator are sums"
        assert "> 0)" in expr, f"{rule['record']}: an empty denominator must yield no sample"


def test_alerts_have_severity_summary_description_and_sample_guards() -> None:
    found = {a["alert"]: a for a in alerts()}
    expected = {
        "CxCesHighEffortSpike",
        "CxCsatDrop",
        "CxRepeatContactsHigh",
        "CxWorkerDown",
        "CxRejectedEventsHigh",
    }
    assert expected <= set(found), sorted(expected - set(found))
    for name, alert in found.items():
        assert alert.get("labels", {}).get("severity") in ("info", "warning", "critical"), name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), name
        assert "for" in alert, f"{name} has a for: duration"
    # KPI alerts need a minimum sample size, so two bad surveys never page anyone.
    for name in ("CxCesHighEffortSpike", "CxCsatDrop", "CxRepeatContactsHigh"):
        assert ">= " in found[name]["expr"], f"{name}: minimum sample size"
    assert found["CxCesHighEffortSpike"]["for"] == "5m"
    assert found["CxCsatDrop"]["for"] == "10m"
    # A 5m rate under a 5m `for`: a break or a two-minute burst fires (not `for: 10m`, which
    # only a break longer than the rate's range could fire, 15 minutes late).
    assert found["CxRejectedEventsHigh"]["for"] == "5m"
    assert "rate(cx_events_total" in found["CxRejectedEventsHigh"]["expr"]
    # Alerts on the workers' series survive a worker crash (its series vanish until another
    # worker recovers its partitions); alerts on `up` resolve at once.
    for name, alert in found.items():
        on_up = "up" in metric_names(alert["expr"])
        assert ("keep_firing_for" in alert) != on_up, f"{name}: keep_firing_for iff not an alert on up"
    assert "up" in metric_names(found["CxWorkerDown"]["expr"])


def test_prometheus_config_loads_every_rule_file_and_every_file_is_unit_tested() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    loaded = {(PROMETHEUS_DIR / f).resolve() for f in config["rule_files"]}
    assert loaded == {p.resolve() for p in RULE_FILES}
    tested: set[Path] = set()
    for test_file in RULE_TESTS:
        spec = load_yaml(test_file)
        tested |= {(test_file.parent / f).resolve() for f in spec["rule_files"]}
        assert spec["tests"], f"{test_file.name} has tests"
    assert tested == loaded, "every rule file is exercised by a promtool unit test"


def test_rule_unit_tests_check_alerts_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in RULE_TESTS:
        for case in load_yaml(test_file)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alert_names = {a["alert"] for a in alerts()}
    assert firing == alert_names, f"alerts never seen firing: {sorted(alert_names - firing)}"
    assert silent == alert_names, f"alerts never checked silent: {sorted(alert_names - silent)}"


# --- Alertmanager --------------------------------------------------------------------


def test_alertmanager_routes_to_declared_receivers() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    receivers = {r["name"] for r in config["receivers"]}

    def walk(route: dict[str, Any]) -> None:
        if "receiver" in route:
            assert route["receiver"] in receivers, route["receiver"]
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    assert config["route"]["receiver"] in receivers


def test_amtool_check_config_when_available() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager)")
    result = run(amtool, "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
