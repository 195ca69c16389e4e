"""Alert rules on live queue gauges (cx_longest_wait_seconds, cx_contacts_waiting): no window,
evaluated on the contacts waiting now over every partition."""

from __future__ import annotations

import textwrap

import pytest

from stream.alerting.evaluator import FIRING, RESOLVED, Evaluator, observe
from stream.alerting.rules import RuleError, parse_rules
from stream.domain.state import dim_key

WINDOWS = [("15m", 900), ("1h", 3600)]
NOW = 1_795_457_633_636

LONGEST = """
rules:
  - name: longest_wait_high
    metric: cx_longest_wait_seconds
    group_by: [queue]
    op: ">"
    threshold: 120
    for: 30s
"""


def parse(text: str) -> list:
    return parse_rules(textwrap.dedent(text), WINDOWS, source="test.yml")


def test_a_live_rule_needs_no_window_and_defaults_to_one_sample() -> None:
    (rule,) = parse(LONGEST)
    assert rule.live and rule.window == "now" and rule.min_samples == 1 and rule.group_by == ("queue",)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "    window: 15m\n",
            "field 'window': cx_longest_wait_seconds is a live gauge (waiting now): leave window out",
        ),
        ("    spike: {baseline: 1h, factor: 2}\n", "field 'spike': cx_longest_wait_seconds is a live gauge"),
        ("    use: interval\n", "field 'use': cx_longest_wait_seconds is a live gauge: it has no interval"),
        ("    group_by: [team]\n", "unknown label 'team' (valid here: queue, channel)"),
    ],
)
def test_what_a_live_rule_cannot_have(extra: str, message: str) -> None:
    text = LONGEST.replace("    group_by: [queue]\n", "") + extra
    with pytest.raises(RuleError) as error:
        parse(text)
    assert message in str(error.value)


def test_a_windowed_rule_still_needs_its_window() -> None:
    with pytest.raises(RuleError, match="field 'window': is required"):
        parse("rules:\n  - {name: r, metric: cx_csat_ratio, op: '<', threshold: 0.7}\n")


def test_live_observations_group_the_waiting_by_queue() -> None:
    (rule,) = parse(LONGEST)
    live = {
        dim_key("billing", "voice"): (2, 150.0),
        dim_key("billing", "chat"): (1, 30.0),
        dim_key("sales", "voice"): (0, None),
    }
    observed = observe(rule, {}, ("queue", "channel"), live)
    assert observed[("billing",)].value == 150.0 and observed[("billing",)].samples == 3
    assert observed[("sales",)].value is None  # nobody waits: clear
    (count_rule,) = parse(
        LONGEST.replace("cx_longest_wait_seconds", "cx_contacts_waiting").replace("120", "2")
    )
    assert observe(count_rule, {}, ("queue", "channel"), live)[("billing",)].value == 3.0


def test_one_episode_while_a_customer_waits_too_long() -> None:
    (rule,) = parse(LONGEST)
    evaluator = Evaluator([rule])
    waits = {dim_key("billing", "voice"): (1, 125.0)}
    assert evaluator.evaluate({}, NOW, live=waits) == []  # pending: for 30s
    fired = evaluator.evaluate({}, NOW + 31_000, live={dim_key("billing", "voice"): (1, 156.0)})
    assert [(t.state, t.payload["labels"]) for t in fired] == [(FIRING, {"queue": "billing"})]
    assert (fired[0].payload["value"], fired[0].payload["samples"], fired[0].payload["window"]) == (
        156.0,
        1,
        "now",
    )
    assert evaluator.evaluate({}, NOW + 40_000, live={dim_key("billing", "voice"): (2, 165.0)}) == []
    # answered: nobody waits any more, the group is gone from the live view
    resolved = evaluator.evaluate({}, NOW + 50_000, live={})
    assert [t.state for t in resolved] == [RESOLVED]
