"""Alert rules files: the shipped defaults load, and every mistake names its rule and field."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from stream.alerting.rules import RuleError, default_rules_path, load_rules, load_rules_for, parse_rules
from stream.config.settings import ENV_PREFIX, SettingsError, load_settings

WINDOWS = [("15m", 900), ("1h", 3600), ("24h", 86400)]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def parse(text: str, **kwargs: object) -> list:
    return parse_rules(textwrap.dedent(text), kwargs.pop("windows", WINDOWS), source="test.yml", **kwargs)  # type: ignore[arg-type]


BASE = """
rules:
  - name: r
    metric: cx_ces_high_effort_ratio
    window: 15m
    op: ">"
    threshold: 0.3
"""


def rule_with(**fields: object) -> str:
    lines = [
        "rules:",
        "  - name: r",
        "    metric: cx_ces_high_effort_ratio",
        "    window: 15m",
        '    op: ">"',
        "    threshold: 0.3",
    ]
    text = "\n".join(lines) + "\n"
    import yaml

    doc = yaml.safe_load(text)
    for key, value in fields.items():
        if value is None:
            doc["rules"][0].pop(key, None)
        else:
            doc["rules"][0][key] = value
    return yaml.safe_dump(doc)


def error_of(text: str, **kwargs: object) -> str:
    with pytest.raises(RuleError) as info:
        parse(text, **kwargs)
    return str(info.value)


# -- the shipped defaults ----------------------------------------------------------------------
def test_default_rules_load_with_default_settings() -> None:
    rules = load_rules_for(load_settings())
    names = [r.name for r in rules]
    assert names == [
        "ces_high_effort_spike",
        "csat_low",
        "repeat_contacts_high",
        "service_level_low",
        "longest_wait_high",
    ]
    spike = rules[0]
    assert spike.metric == "cx_ces_high_effort_ratio"
    assert spike.kpi == "ces_high_effort_ratio"
    assert (spike.window, spike.group_by, spike.op, spike.threshold) == ("15m", ("queue",), ">", 0.25)
    assert spike.spike is not None
    assert (spike.spike.baseline, spike.spike.factor) == ("24h", 1.5)
    assert (spike.min_samples, spike.for_s, spike.cooldown_s) == (20, 120, 900)
    assert spike.severity == "page"
    assert rules[1].use == "interval" and not rules[1].above


def test_default_rules_file_is_packaged() -> None:
    path = default_rules_path()
    assert path.is_file() and path.parent.name == "defaults"


def test_default_rules_skip_unconfigured_windows_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rules = load_rules_for(load_settings(windows="5m,1h"))
    assert [r.name for r in rules] == ["csat_low", "repeat_contacts_high", "longest_wait_high"]
    assert "ces_high_effort_spike" in caplog.text and "skipped" in caplog.text


def test_user_file_with_unconfigured_window_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(BASE)
    with pytest.raises(RuleError, match=r"rule #1 'r': field 'window': '15m' is not one of CXSTREAM_WINDOWS"):
        load_rules_for(load_settings(windows="5m,1h", alert_rules=path))


def test_rule_error_is_a_settings_error() -> None:
    assert issubclass(RuleError, SettingsError)  # so `cxstream worker` prints it and exits 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "nope.yml", WINDOWS)


# -- a valid rule ------------------------------------------------------------------------------
def test_minimal_rule_gets_defaults() -> None:
    (rule,) = parse(BASE, min_samples=25)
    assert rule.group_by == ()
    assert rule.min_samples == 25  # CXSTREAM_MIN_SAMPLES
    assert rule.use == "point" and rule.confidence == 0.95
    assert (rule.for_s, rule.keep_firing_for_s, rule.cooldown_s, rule.hysteresis) == (0, 0, 0, 0)
    assert rule.severity == "warning"
    assert rule.spike is None
    assert rule.above


def test_full_rule() -> None:
    (rule,) = parse(
        rule_with(
            group_by=["channel", "queue"],
            spike={"baseline": "1h", "delta": 0.1, "min_baseline_samples": 50},
            min_samples=10,
            use="interval",
            confidence=0.9,
            **{"for": "2m", "keep_firing_for": 30, "cooldown": "1h"},
            hysteresis=0.05,
            severity="page",
            summary="{queue}/{channel}: {value:.0%} vs {baseline:.0%} [{low:.2f}, {high:.2f}] n={samples}",
        )
    )
    assert rule.group_by == ("queue", "channel")  # canonical order
    assert rule.spike is not None and rule.spike.delta == 0.1 and rule.spike.min_baseline_samples == 50
    assert rule.spike.threshold(0.2) == pytest.approx(0.3)
    assert (rule.for_s, rule.keep_firing_for_s, rule.cooldown_s) == (120, 30, 3600)
    assert rule.z == pytest.approx(1.6449, abs=1e-4)


def test_window_by_duration_value() -> None:
    (rule,) = parse(rule_with(window="900s"))
    assert rule.window == "15m"


def test_spike_min_baseline_samples_defaults_to_rule_min_samples() -> None:
    (rule,) = parse(rule_with(min_samples=7, spike={"baseline": "24h", "factor": 2}))
    assert rule.spike is not None and rule.spike.min_baseline_samples == 7


def test_disabled_rule_is_skipped() -> None:
    assert parse(rule_with(enabled=False)) == []


def test_disabled_rule_is_still_validated() -> None:
    assert "field 'op': '=>' is not one of" in error_of(rule_with(enabled=False, op="=>"))


def test_empty_file_means_no_rules() -> None:
    assert parse("") == []
    assert parse("rules: []") == []


def test_team_label_only_when_enabled() -> None:
    text = rule_with(group_by=["team"])
    assert "unknown label 'team'" in error_of(text)
    (rule,) = parse(text, label_names=("queue", "channel", "team"))
    assert rule.group_by == ("team",)


def test_every_contract_kpi_is_a_valid_metric() -> None:
    for metric in (
        "cx_csat_ratio",
        "cx_csat_average",
        "cx_nps_score",
        "cx_ces_easy_ratio",
        "cx_ces_high_effort_ratio",
        "cx_repeat_contact_ratio",
        "cx_channel_switch_ratio",
        "cx_transfer_ratio",
    ):
        threshold = 3 if metric == "cx_csat_average" else 0.5
        (rule,) = parse(rule_with(metric=metric, threshold=threshold))
        assert rule.metric == metric


# -- errors name the rule and the field ------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"metric": "cx_nope"}, "field 'metric': unknown metric 'cx_nope'"),
        ({"metric": None}, "field 'metric': is required"),
        ({"window": "10m"}, "field 'window': '10m' is not one of CXSTREAM_WINDOWS (15m, 1h, 24h)"),
        ({"window": "soon"}, "field 'window': not a duration"),
        ({"window": [15]}, "field 'window': expected a duration like 15m"),
        ({"op": "=="}, "field 'op': '==' is not one of >, >=, <, <="),
        (
            {"threshold": 25},
            "field 'threshold': 25 is outside 0..1 for cx_ces_high_effort_ratio (ratios are 0..1",
        ),
        ({"threshold": "high"}, "field 'threshold': expected a number, got 'high'"),
        ({"treshold": 0.2}, "field 'treshold': unknown field"),
        ({"group_by": ["agent"]}, "field 'group_by': unknown label 'agent'"),
        ({"group_by": ["queue", "queue"]}, "field 'group_by': label 'queue' listed twice"),
        ({"group_by": "queue"}, "field 'group_by': expected a list"),
        ({"min_samples": 0}, "field 'min_samples': must be a whole number >= 1"),
        ({"min_samples": 2.5}, "field 'min_samples': expected a whole number"),
        ({"use": "median"}, "field 'use': 'median' is not one of point, interval"),
        ({"confidence": 95}, "field 'confidence': confidence must be between 0 and 1"),
        ({"for": "a while"}, "field 'for': not a duration"),
        ({"cooldown": -5}, "field 'cooldown': duration must not be negative"),
        ({"hysteresis": -0.1}, "field 'hysteresis': must not be negative"),
        ({"severity": "PAGE!"}, "field 'severity'"),
        ({"spike": {"factor": 2}}, "field 'spike.baseline': is required"),
        ({"spike": {"baseline": "15m", "factor": 2}}, "field 'spike.baseline': 15m must be longer"),
        ({"spike": {"baseline": "24h"}}, "field 'spike': give exactly one of factor"),
        (
            {"spike": {"baseline": "24h", "factor": 2, "delta": 1}},
            "field 'spike': give exactly one of factor",
        ),
        ({"spike": {"baseline": "24h", "factor": -1}}, "field 'spike.factor': must be a positive number"),
        ({"spike": {"baseline": "24h", "factr": 2}}, "field 'spike.factr': unknown field"),
        ({"summary": "{queue} is bad"}, "field 'summary': unknown field {queue}"),
        ({"summary": "{baseline}"}, "field 'summary': unknown field {baseline}"),
        ({"summary": "{}"}, "field 'summary': use named fields"),
        ({"summary": "{value:%Y}"}, "field 'summary': does not format"),
        ({"name": "bad name"}, "field 'name': 'bad name' must be letters"),
    ],
)
def test_errors_name_rule_and_field(fields: dict, expected: str) -> None:
    message = error_of(rule_with(**fields))
    assert message.startswith("alert rules file test.yml: rule #1")
    assert expected in message


def test_use_interval_refused_for_averages() -> None:
    message = error_of(rule_with(metric="cx_csat_average", threshold=3, use="interval"))
    assert "cx_csat_average is an average" in message


def test_nps_spike_needs_delta() -> None:
    message = error_of(rule_with(metric="cx_nps_score", threshold=0, spike={"baseline": "24h", "factor": 2}))
    assert "use delta" in message
    (rule,) = parse(
        rule_with(metric="cx_nps_score", threshold=-20, op="<", spike={"baseline": "24h", "delta": -15})
    )
    assert rule.spike is not None and rule.spike.threshold(10) == -5


def test_duplicate_names() -> None:
    text = BASE + "  - name: r\n    metric: cx_csat_ratio\n    window: 1h\n    op: '<'\n    threshold: 0.5\n"
    assert "rule #2 'r': field 'name': duplicate rule name 'r'" in error_of(text)


def test_not_yaml_and_wrong_shapes() -> None:
    assert "not valid YAML" in error_of("rules: [")
    assert "expected a mapping with one key" in error_of("- name: r")
    assert "expected a mapping with one key" in error_of("rules: []\nextra: 1")
    assert "'rules' must be a list" in error_of("rules: {name: r}")
    assert "rule #1: field 'rule': expected a mapping" in error_of("rules: [just-a-string]")
