"""``cxstream check-prometheus URL``: run the shipped rules' and dashboards' queries on a Prometheus.

The Grafana boards and the recording and alerting rules are what supervisors and on-call
leads look at; a static check (promtool on synthetic series, PromQL parsing) cannot see a
panel that names a label the exporter does not set, a join that matches nothing, or a queue
name that breaks Grafana's escaping. This command asks a running Prometheus -- yours, or
the one the integration test starts -- the same questions Grafana and the rule evaluator do:

1. **Rules.** Every rule of ``deploy/prometheus/rules/*.yml`` is loaded (``/api/v1/rules``),
   healthy (no evaluation error), and every recording rule has series.
2. **Panels.** For every dashboard of ``deploy/grafana/dashboards``, the template variables
   are resolved the way Grafana resolves them (``label_values(...)`` through
   ``/api/v1/series``), and every panel target is run as an instant query with the variables
   substituted -- each window in turn, "All" and every single queue and channel, each value
   escaped as Grafana escapes it (``--classic-escaping`` for Grafana without the
   ``prometheusSpecialCharsInLabelValues`` toggle, docs/dashboards.md).

A query error, an unhealthy or missing rule is a failure. An empty answer ("No data" in
Grafana) is a note by default -- a quiet queue has no CSAT in the last 15 minutes, a site
without agent events has no occupancy -- and a failure with ``--strict``, for a Prometheus
that has seen every event type (the integration test runs strict). Exit status 0 when
nothing failed, 1 otherwise, 2 when Prometheus cannot be reached.

Only the standard library is used (urllib, json): the command runs wherever the worker does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Where the shipped files are in a checkout (the defaults of --dashboards and --rules).
DEFAULT_DASHBOARDS = Path("deploy/grafana/dashboards")
DEFAULT_RULES = Path("deploy/prometheus/rules")

#: Grafana's built-in interval variables, as Grafana sets them for a 15 s scrape interval
#: (``$__rate_interval`` is at least four scrape intervals).
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$", re.S)
_REGEX_META = re.compile(r"[$^*{}\[\]'+?.()|]")


class PrometheusUnreachable(Exception):
    """The Prometheus HTTP API did not answer (connection refused, timeout, not Prometheus)."""


class QueryError(Exception):
    """Prometheus answered a query with an error (bad PromQL, execution error)."""


class PrometheusAPI:
    """The few endpoints of Prometheus' HTTP API v1 the check needs (GET, JSON)."""

    def __init__(self, url: str, timeout: float = 10.0, bearer_token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}

    def _get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422: the query's fault, with Prometheus' reason
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusUnreachable(f"{url}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise PrometheusUnreachable(f"{self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (vector samples; a scalar becomes one unlabelled sample)."""
        params = [("query", expr)] + ([("time", f"{at:.3f}")] if at is not None else [])
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def series_label_values(self, label: str, selector: str | None, lookback_s: float = 3600) -> list[str]:
        """Grafana's ``label_values(selector, label)``: the label's values over the last hour."""
        if selector is None:
            return sorted(self._get(f"/api/v1/label/{label}/values"))
        end = time.time()
        series = self._get(
            "/api/v1/series",
            [("match[]", selector), ("start", f"{end - lookback_s:.3f}"), ("end", f"{end:.3f}")],
        )
        return sorted({s[label] for s in series if label in s})

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/rules")["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])


# -- Grafana's variable escaping ----------------------------------------------------------------


def grafana_regex_escape(value: str, special_chars: bool = True) -> str:
    """A value of a multi-value or "include All" variable, as Grafana puts it into a query
    (``prometheusSpecialRegexEscape`` of Grafana's ``escaping.ts``): regex metacharacters
    escaped for a ``=~"..."`` matcher, backslashes doubled twice. Only with the
    ``prometheusSpecialCharsInLabelValues`` toggle (``special_chars``) are double quotes
    escaped too; without it a queue named ``vip "gold" desk`` ends the string early."""
    out = value.replace("\\", "\\\\\\\\")
    if special_chars:
        out = out.replace('"', '\\"')
    return _REGEX_META.sub(lambda m: "\\\\" + m.group(0), out)


def grafana_plain_escape(value: str, special_chars: bool = True) -> str:
    """A single-value variable without "All" (``prometheusRegularEscape``): for ``="..."``."""
    out = value.replace("\\", "\\\\")
    return out.replace('"', '\\"') if special_chars else out.replace("'", "\\\\'")


def variable_names(expr: str) -> list[str]:
    """The template variables ``expr`` uses, in order (built-ins such as ``$__rate_interval`` too)."""
    return [m.group(1) or m.group(2) or m.group(3) for m in _VARIABLE.finditer(expr)]


def interpolate(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` replaced by
    ``values`` (already escaped) or a built-in interval; unknown names stay as they are."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in values:
            return values[name]
        return BUILTIN_VARIABLES.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


# -- dashboards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelTarget:
    """One query of one panel."""

    dashboard: str
    panel_id: int
    title: str
    ref_id: str
    expr: str

    @property
    def where(self) -> str:
        return f"{self.dashboard} panel {self.panel_id} {self.title!r} {self.ref_id}"


@dataclass(frozen=True)
class Variable:
    """A dashboard's query variable (``label_values``), as Grafana resolves and substitutes it."""

    name: str
    selector: str | None
    label: str
    include_all: bool
    all_value: str
    multi: bool

    def escape(self, value: str, special_chars: bool) -> str:
        if self.multi or self.include_all:
            return grafana_regex_escape(value, special_chars)
        return grafana_plain_escape(value, special_chars)


def load_dashboards(directory: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` dashboard of ``directory``, by file name."""
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no dashboards (*.json) in {directory}")
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in paths}


def all_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Panels, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_targets(name: str, dashboard: Mapping[str, Any]) -> list[PanelTarget]:
    return [
        PanelTarget(name, panel["id"], panel.get("title", ""), target.get("refId", "A"), target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def parse_label_values(definition: str) -> tuple[str | None, str] | None:
    """(selector or None, label) of a Grafana ``label_values([selector, ]label)`` query, else None."""
    match = _LABEL_VALUES.match(definition)
    return None if match is None else (match.group("selector"), match.group("label"))


def query_variables(dashboard: Mapping[str, Any]) -> list[Variable]:
    """The dashboard's ``label_values`` variables, in their order (later ones may use earlier)."""
    found = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        definition = var.get("definition") or (query.get("query") if isinstance(query, dict) else query) or ""
        parsed = parse_label_values(definition)
        if parsed is None:
            raise ValueError(
                f"variable ${var['name']}: only label_values(...) is supported, got {definition!r}"
            )
        found.append(
            Variable(
                name=var["name"],
                selector=parsed[0],
                label=parsed[1],
                include_all=bool(var.get("includeAll")),
                all_value=var.get("allValue") or ".*",
                multi=bool(var.get("multi")),
            )
        )
    return found


def selections(
    api: PrometheusAPI, variables: Sequence[Variable], special_chars: bool = True
) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
    """The variable assignments to check a dashboard with, and each variable's values.

    Each window in turn with everything else "All"; then, on the first window, every single
    value of every other variable. A variable without values leaves the dashboard unchecked
    for it (Grafana would show "No data" everywhere): the values are returned for the report.
    """
    base: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    for var in variables:
        selector = interpolate(var.selector, base) if var.selector else None
        values[var.name] = api.series_label_values(var.label, selector)
        if var.include_all:
            base[var.name] = var.all_value
        elif values[var.name]:
            base[var.name] = var.escape(values[var.name][0], special_chars)
    out = [dict(base)]
    for var in variables:
        if var.include_all:
            continue
        for value in values[var.name][1:]:
            out.append({**base, var.name: var.escape(value, special_chars)})
    for var in variables:
        if not var.include_all:
            continue
        for value in values[var.name]:
            out.append({**base, var.name: var.escape(value, special_chars)})
    return out, values


# -- the check ----------------------------------------------------------------------------------


@dataclass
class Finding:
    """One checked query: ``ok`` (data), ``empty`` (no data), ``error`` (failed) or ``missing``."""

    kind: str  # rule | panel | variable
    where: str
    status: str
    expr: str = ""
    detail: str = ""
    series: int = 0


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def failures(self, strict: bool) -> list[Finding]:
        bad = {"error", "missing"} | ({"empty"} if strict else set())
        return [f for f in self.findings if f.status in bad]

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.findings)


def shipped_rule_names(rules_dir: Path) -> dict[str, str]:
    """``{rule name: 'record' | 'alert'}`` of the rule files in ``rules_dir``."""
    names: dict[str, str] = {}
    for path in sorted(rules_dir.glob("*.yml")):
        for group in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("groups", []):
            for rule in group.get("rules", []):
                kind = "record" if "record" in rule else "alert"
                names[rule[kind]] = kind
    return names


def check_rules(api: PrometheusAPI, expected: Mapping[str, str], at: float | None = None) -> list[Finding]:
    """Every expected rule loaded and healthy; every recording rule with series."""
    loaded: dict[str, dict[str, Any]] = {}
    for group in api.rule_groups():
        for rule in group["rules"]:
            loaded[rule["name"]] = rule
    findings = []
    for name, kind in expected.items():
        rule = loaded.get(name)
        if rule is None:
            findings.append(Finding("rule", name, "missing", detail="not loaded by this Prometheus"))
            continue
        if rule.get("health") not in ("ok", "unknown"):
            findings.append(Finding("rule", name, "error", rule["query"], rule.get("lastError", "")))
            continue
        if kind == "alert":
            findings.append(Finding("rule", name, "ok", rule["query"], f"state {rule.get('state')}"))
            continue
        try:
            result = api.query(f"count({{__name__={json.dumps(name)}}})", at)
        except QueryError as exc:
            findings.append(Finding("rule", name, "error", rule["query"], str(exc)))
            continue
        series = int(float(result[0]["value"][1])) if result else 0
        findings.append(Finding("rule", name, "ok" if series else "empty", rule["query"], series=series))
    return findings


def check_panels(
    api: PrometheusAPI,
    dashboards: Mapping[str, Mapping[str, Any]],
    special_chars: bool = True,
    at: float | None = None,
) -> list[Finding]:
    """Every panel target under every selection of :func:`selections`.

    A target is ``ok`` when it returned data under the "All" selection, and every other
    selection ran without error; a single-value selection may be empty (a queue without
    CSAT answers in the window) and is then reported in the detail, not failed.
    """
    findings = []
    for name, dashboard in dashboards.items():
        variables = query_variables(dashboard)
        try:
            chosen, values = selections(api, variables, special_chars)
        except QueryError as exc:
            findings.append(Finding("variable", name, "error", detail=str(exc)))
            continue
        for var in variables:
            if not values[var.name]:
                findings.append(
                    Finding("variable", f"{name} ${var.name}", "empty", var.selector or var.label)
                )
        for target in panel_targets(name, dashboard):
            findings.append(_check_target(api, target, chosen, at))
    return findings


def _check_target(
    api: PrometheusAPI, target: PanelTarget, chosen: Sequence[Mapping[str, str]], at: float | None
) -> Finding:
    empty_under = []
    first_series = 0
    for i, values in enumerate(chosen):
        expr = interpolate(target.expr, values)
        try:
            result = api.query(expr, at)
        except QueryError as exc:
            return Finding("panel", target.where, "error", expr, f"{exc} (variables {dict(values)})")
        if i == 0:
            first_series = len(result)
        elif not result:
            empty_under.append(dict(values))
    base = interpolate(target.expr, chosen[0])
    if not first_series:
        return Finding("panel", target.where, "empty", base, f"no data with {dict(chosen[0])}")
    detail = f"{len(chosen)} selections"
    if empty_under:
        detail += f"; no data for {len(empty_under)} single-value selections"
    return Finding("panel", target.where, "ok", base, detail, first_series)


def run_check(
    api: PrometheusAPI,
    dashboards_dir: Path,
    rules_dir: Path,
    special_chars: bool = True,
    at: float | None = None,
) -> Report:
    """The whole check: rules, then panels (see the module docstring)."""
    report = Report()
    report.findings += check_rules(api, shipped_rule_names(rules_dir), at)
    report.findings += check_panels(api, load_dashboards(dashboards_dir), special_chars, at)
    return report


# -- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream check-prometheus``."""
    parser.add_argument("url", help="Prometheus base URL, e.g. http://prometheus:9090")
    parser.add_argument(
        "--dashboards",
        type=Path,
        default=DEFAULT_DASHBOARDS,
        help=f"directory of the Grafana dashboards to check (default: {DEFAULT_DASHBOARDS})",
    )
    parser.add_argument(
        "--rules",
        type=Path,
        default=DEFAULT_RULES,
        help=f"directory of the rule files Prometheus should have loaded (default: {DEFAULT_RULES})",
    )
    parser.add_argument(
        "--strict", action="store_true", help="an empty panel or recording rule fails (every event type sent)"
    )
    parser.add_argument(
        "--classic-escaping",
        action="store_true",
        help="substitute variables as Grafana does without the prometheusSpecialCharsInLabelValues toggle",
    )
    parser.add_argument("--bearer-token-file", type=Path, help="send this token as 'Authorization: Bearer'")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--json", action="store_true", help="print every finding as JSON lines")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the passing queries too")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream check-prometheus``."""
    for option, path in (("--dashboards", args.dashboards), ("--rules", args.rules)):
        if not path.is_dir():
            print(
                f"cxstream check-prometheus: {option} {path} is not a directory "
                "(run it in a cxstream checkout, or point it at your copy of deploy/)",
                file=sys.stderr,
            )
            return 2
    token = args.bearer_token_file.read_text().strip() if args.bearer_token_file else None
    api = PrometheusAPI(args.url, timeout=args.timeout, bearer_token=token)
    try:
        report = run_check(api, args.dashboards, args.rules, special_chars=not args.classic_escaping)
    except PrometheusUnreachable as exc:
        print(f"cxstream check-prometheus: Prometheus not reachable: {exc}", file=sys.stderr)
        return 2
    failures = report.failures(args.strict)
    _print(report.findings, failures, args)
    return 1 if failures else 0


def _print(findings: Iterable[Finding], failures: Sequence[Finding], args: argparse.Namespace) -> None:
    findings = list(findings)
    if args.json:
        for finding in findings:
            print(json.dumps({**asdict(finding), "failed": finding in failures}))
        return
    for finding in findings:
        if finding.status == "ok" and not args.verbose:
            continue
        mark = "FAIL" if finding in failures else finding.status.upper()
        print(f"{mark:7} {finding.kind:8} {finding.where}")
        if finding.detail:
            print(f"        {finding.detail}")
        if finding.expr and finding.status != "ok":
            print(f"        {finding.expr}")
    total = len(findings)
    ok = sum(f.status == "ok" for f in findings)
    print(
        f"{total} checks: {ok} with data, {sum(f.status == 'empty' for f in findings)} empty, "
        f"{sum(f.status in ('error', 'missing') for f in findings)} errors or missing; "
        f"{len(failures)} failed{' (strict)' if args.strict else ''}"
    )
