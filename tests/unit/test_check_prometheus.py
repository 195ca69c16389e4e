"""The pure parts of ``cxstream check-prometheus``: Grafana's escaping, interpolation, selections.

The same code runs against a real Prometheus in tests/integration/test_prometheus_stack.py;
here its rules are pinned against hand-written cases, and the escaped queries are parsed
with a real PromQL parser (promql_parser) and matched with Python's regex engine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from stream.cli import main
from stream.tools.check_prometheus import (
    Finding,
    Report,
    Variable,
    grafana_plain_escape,
    grafana_regex_escape,
    interpolate,
    load_dashboards,
    panel_targets,
    query_variables,
    selections,
)

ROOT = Path(__file__).resolve().parents[2]
QUOTED = 'vip "gold" desk'


def promql_string(literal: str) -> str:
    """What PromQL makes of a double-quoted string's contents (Go escapes: \\\\ and \\")."""
    return json.loads(f'"{literal}"')


@pytest.mark.parametrize("value", [QUOTED, "billing", "a.b (24/7)", "back\\slash", "50%+", "it's"])
def test_regex_escape_with_the_toggle_parses_and_matches_only_the_value(value: str) -> None:
    escaped = grafana_regex_escape(value)
    expr = f'cx_contacts{{queue=~"{escaped}"}}'
    promql_parser.parse(expr)  # raises on a broken query
    pattern = promql_string(escaped)
    assert re.fullmatch(pattern, value)
    assert not re.fullmatch(pattern, value + "x")


def test_classic_escaping_breaks_on_a_double_quote() -> None:
    escaped = grafana_regex_escape(QUOTED, special_chars=False)
    assert escaped == QUOTED  # Grafana's classic rule leaves the quote alone
    with pytest.raises(ValueError):
        promql_parser.parse(f'cx_contacts{{queue=~"{escaped}"}}')
    assert grafana_regex_escape("a.b", special_chars=False) == "a\\\\.b"


def test_plain_escape_for_single_value_variables() -> None:
    assert grafana_plain_escape(QUOTED) == 'vip \\"gold\\" desk'
    assert promql_string(grafana_plain_escape(QUOTED)) == QUOTED
    assert grafana_plain_escape("it's", special_chars=False) == "it\\\\'s"


def test_interpolate_every_variable_syntax_and_the_builtins() -> None:
    values = {"window": "15m", "queue": ".*"}
    expr = 'sum(rate(x{window="$window", queue=~"${queue}", q2=~"${queue:regex}", w="[[window]]"}'
    expr += "[$__rate_interval]))"
    assert interpolate(expr, values) == 'sum(rate(x{window="15m", queue=~".*", q2=~".*", w="15m"}[1m]))'
    assert interpolate('x{a="$unknown"}', values) == 'x{a="$unknown"}'
    assert interpolate('x{a="$windowed"}', values) == 'x{a="$windowed"}'


class FakeAPI:
    """Label values by (label, selector): the only call selections() makes."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values
        self.asked: list[tuple[str, str | None]] = []

    def series_label_values(self, label: str, selector: str | None) -> list[str]:
        self.asked.append((label, selector))
        return self.values.get(label, [])


def test_selections_try_each_window_all_and_every_single_value() -> None:
    variables = [
        Variable("window", "cx_contacts", "window", False, ".*", False),
        Variable("queue", 'cx_contacts{window="$window"}', "queue", True, ".*", True),
    ]
    api = FakeAPI({"window": ["15m", "1h"], "queue": ["billing", QUOTED]})
    chosen, values = selections(api, variables)  # type: ignore[arg-type]
    assert chosen == [
        {"window": "15m", "queue": ".*"},
        {"window": "1h", "queue": ".*"},
        {"window": "15m", "queue": "billing"},
        {"window": "15m", "queue": 'vip \\"gold\\" desk'},
    ]
    assert api.asked[1] == ("queue", 'cx_contacts{window="15m"}')  # resolved in order, like Grafana
    assert values["queue"] == ["billing", QUOTED]


def test_shipped_dashboards_have_only_label_values_variables_and_targets() -> None:
    dashboards = load_dashboards(ROOT / "deploy/grafana/dashboards")
    assert set(dashboards) >= {"supervisor.json", "effort.json", "queues.json", "operations.json"}
    targets = [t for name, d in dashboards.items() for t in panel_targets(name, d)]
    assert len(targets) >= 60
    for name, dashboard in dashboards.items():
        names = [v.name for v in query_variables(dashboard)]
        assert names and len(names) == len(set(names)), name


def test_strict_makes_empty_a_failure() -> None:
    report = Report(
        [Finding("panel", "a", "ok"), Finding("panel", "b", "empty"), Finding("rule", "c", "missing")]
    )
    assert [f.where for f in report.failures(strict=False)] == ["c"]
    assert [f.where for f in report.failures(strict=True)] == ["b", "c"]


def test_cli_unreachable_prometheus_and_missing_directory(capsys: Any, tmp_path: Path) -> None:
    rules, dashboards = ROOT / "deploy/prometheus/rules", ROOT / "deploy/grafana/dashboards"
    args = ["check-prometheus", "http://127.0.0.1:9", "--rules", str(rules), "--dashboards", str(dashboards)]
    assert main([*args, "--timeout", "2"]) == 2
    assert "not reachable" in capsys.readouterr().err
    assert main(["check-prometheus", "http://127.0.0.1:9", "--dashboards", str(tmp_path / "none")]) == 2
    assert "--dashboards" in capsys.readouterr().err
