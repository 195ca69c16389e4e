"""Shared helpers for the static checks of deploy/: paths, YAML, PromQL name extraction.

PromQL is parsed with ``promql_parser`` (Python bindings of a Rust PromQL parser),
so metric names are read from the syntax tree, not guessed by regular expressions:
function names, label names, grouping labels and durations can never be mistaken
for metrics.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from stream.domain.metrics_catalog import ALL_METRICS, INTERVAL_METRICS, RATIO_METRICS, RESPONSE_RATIO
from stream.tools.check_prometheus import BUILTIN_VARIABLES, interpolate, parse_label_values, variable_names
from tests.harness import tool_missing

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
K8S_DIR = DEPLOY / "k8s"

#: Metrics that dashboards may already query although the exporter does not emit them
#: yet: each is added by an open issue. The one allow-list; remove a name once
#: stream.domain.metrics_catalog declares it.
COMING_METRICS: frozenset[str] = frozenset()

#: Series Prometheus itself produces that our rules and dashboards may use.
PROMETHEUS_BUILTIN_METRICS = frozenset({"up"})

CATALOG_METRICS = frozenset(spec.name for spec in ALL_METRICS)
#: Per-worker ratio/score/average gauges: partial values that no sum or average can recombine.
RATIO_GAUGES = frozenset(
    {*(spec.name for spec in RATIO_METRICS), RESPONSE_RATIO.name, *(spec.name for spec in INTERVAL_METRICS)}
)

_AVERAGED_KPI = re.compile(r"(_ratio|_score|_average)(_lower|_upper)?$")

#: Values substituted for Grafana template variables before parsing a dashboard query.
#: Grafana's built-in intervals are substituted as ``cxstream check-prometheus`` does.
GRAFANA_VARIABLES = {"window": "15m", "queue": ".*", "channel": ".*", "instance": ".*", **BUILTIN_VARIABLES}


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@cache
def recording_rule_names() -> frozenset[str]:
    rules = load_yaml(PROMETHEUS_DIR / "rules" / "recording.yml")
    return frozenset(r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r)


def promtool() -> str:
    """Path of promtool; a missing promtool fails under CI and skips elsewhere."""
    path = shutil.which("promtool")
    if path:
        return path
    tool_missing("promtool not found: install Debian's 'prometheus' package (make system-deps)")


# --- PromQL -------------------------------------------------------------------


def substitute_grafana_variables(expr: str) -> str:
    """Replace $var, ${var} and [[var]] with sample values so the query parses."""

    for name in variable_names(expr):
        if name not in GRAFANA_VARIABLES:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
    return interpolate(expr, GRAFANA_VARIABLES)


def parse(expr: str) -> Any:
    try:
        return promql_parser.parse(expr)
    except Exception as exc:  # the binding raises a plain ValueError/RuntimeError
        raise AssertionError(f"PromQL does not parse: {expr!r}: {exc}") from exc


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    return []


def walk(node: Any) -> Iterator[Any]:
    yield node
    for child in _children(node):
        yield from walk(child)


def selector_name(node: Any) -> str:
    """Metric name of a vector selector, from its name or an exact __name__ matcher."""
    if node.name:
        return str(node.name)
    for matcher in node.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return str(matcher.value)
    raise AssertionError(f"selector without an exact metric name: {node}")


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects."""
    return {
        selector_name(node) for node in walk(parse(expr)) if isinstance(node, promql_parser.VectorSelector)
    }


def averaged_kpis(expr: str) -> set[str]:
    """Ratio/score/average metrics (or recorded KPIs) that appear under avg() or avg_over_time()."""
    found: set[str] = set()
    for node in walk(parse(expr)):
        is_avg = (isinstance(node, promql_parser.AggregateExpr) and str(node.op).lower() == "avg") or (
            isinstance(node, promql_parser.Call) and node.func.name == "avg_over_time"
        )
        if not is_avg:
            continue
        for name in (n for n in (walk(node)) if isinstance(n, promql_parser.VectorSelector)):
            metric = selector_name(name)
            if any(_AVERAGED_KPI.search(part) for part in metric.split(":")):
                found.add(metric)
    return found


def label_values_selector(definition: str) -> str | None:
    """The series selector of a Grafana ``label_values(selector, label)`` query."""
    parsed = parse_label_values(definition)
    return parsed[0] if parsed else None
