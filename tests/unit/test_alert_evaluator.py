"""The alert state machine on a fake clock: timelines of fire, hold, resolve, suppress."""

from __future__ import annotations

import itertools
import textwrap
from typing import Any

import pytest

from stream.alerting.evaluator import (
    FIRING,
    RESOLVED,
    Ack,
    Controls,
    Evaluator,
    Observation,
    alert_id,
    check,
    group_totals,
    observe,
)
from stream.alerting.rules import Rule, parse_rules
from stream.domain import kpi
from stream.domain.state import DIM_SEPARATOR, dim_key
from stream.domain.stats import wilson_interval

WINDOWS = [("15m", 900), ("1h", 3600), ("24h", 86400)]
T0 = 1_795_341_600_000
S = 1000  # ms per second
M = 60 * S


def rule(**fields: Any) -> Rule:
    base: dict[str, Any] = {
        "name": "spike",
        "metric": "cx_ces_high_effort_ratio",
        "window": "15m",
        "group_by": ["queue"],
        "op": ">",
        "threshold": 0.3,
        "min_samples": 20,
    }
    base.update(fields)
    import yaml

    (compiled,) = parse_rules(yaml.safe_dump({"rules": [base]}), WINDOWS)
    return compiled


def ces(answers: int, high: int) -> list[float]:
    counts = kpi.zero_counts()
    counts[kpi.CES_RESPONSES] = answers
    counts[kpi.CES_HIGH_EFFORT] = high
    counts[kpi.CES_EASY] = answers - high
    return counts


def totals(**per_window: dict[str, list[float]]) -> dict[str, dict[str, list[float]]]:
    """totals(w15m={"billing": counts}) -> {"15m": {dim_key("billing", "voice"): counts}}."""
    out: dict[str, dict[str, list[float]]] = {"15m": {}, "1h": {}, "24h": {}}
    for window, groups in per_window.items():
        out[window.removeprefix("w")] = {dim_key(q, "voice"): c for q, c in groups.items()}
    return out


def burst(queue: str = "billing", answers: int = 40, high: int = 20) -> dict:
    return totals(w15m={queue: ces(answers, high)})


QUIET = totals()


def evaluator(*rules: Rule) -> Evaluator:
    counter = itertools.count(1)
    return Evaluator(rules, worker="w1", new_tid=lambda: f"t{next(counter)}")


def run(
    ev: Evaluator, timeline: list[tuple[int, dict]], controls: Controls | None = None
) -> list[tuple[int, str, str]]:
    """Evaluate at each (ms offset, totals); return (offset, state, id) of every transition."""
    out = []
    for offset, data in timeline:
        for transition in ev.evaluate(data, T0 + offset, controls):
            out.append((offset, transition.state, transition.alert_id))
    return out


BILLING = 'spike{queue="billing"}'


# -- timelines --------------------------------------------------------------------------------
def test_burst_pending_then_fires_once_then_resolves() -> None:
    ev = evaluator(rule(**{"for": "2m"}))
    timeline = [(t * 10 * S, burst()) for t in range(0, 31)]  # 5 minutes of burst, every 10 s
    timeline += [(310 * S + t * 10 * S, QUIET) for t in range(0, 5)]
    transitions = run(ev, timeline)
    assert transitions == [(120 * S, FIRING, BILLING), (310 * S, RESOLVED, BILLING)]


def test_firing_payload_matches_the_documented_json() -> None:
    ev = evaluator(rule(**{"for": "1m"}, severity="page", summary="{queue}: {value:.0%} of {samples}"))
    ev.evaluate(burst(), T0)
    (fire,) = ev.evaluate(burst(), T0 + M)
    p = fire.payload
    assert p["id"] == BILLING and fire.alert_id == BILLING
    assert p["rule"] == "spike" and p["state"] == "firing"
    assert p["labels"] == {"queue": "billing"}
    assert p["severity"] == "page"
    assert p["value"] == 0.5 and p["threshold"] == 0.3 and p["samples"] == 40
    assert (p["low"], p["high"]) == pytest.approx(wilson_interval(20, 40))
    assert p["since"] == T0 and p["at"] == T0 + M  # since: when the condition started to hold
    assert p["summary"] == "billing: 50% of 40"
    assert p["worker"] == "w1" and p["tid"] == "t1"
    assert "baseline" not in p  # only spike rules have one
    (resolve,) = ev.evaluate(QUIET, T0 + 2 * M)
    r = resolve.payload
    assert r["state"] == "resolved" and r["since"] == T0 and r["at"] == T0 + 2 * M
    assert r["tid"] != p["tid"] and r["value"] is None and r["samples"] == 0
    assert ev.firing() == []


def test_condition_clearing_while_pending_fires_nothing() -> None:
    ev = evaluator(rule(**{"for": "2m"}))
    timeline = [(0, burst()), (60 * S, burst()), (90 * S, QUIET), (100 * S, burst()), (200 * S, burst())]
    assert run(ev, timeline) == []  # the for-clock restarted at 100 s
    assert run(ev, [(220 * S, burst())]) == [(220 * S, FIRING, BILLING)]


def test_for_zero_fires_on_first_evaluation() -> None:
    ev = evaluator(rule())
    assert run(ev, [(0, burst())]) == [(0, FIRING, BILLING)]


def test_no_repeats_while_firing() -> None:
    ev = evaluator(rule())
    timeline = [(t * S, burst(high=20 + t % 7)) for t in range(0, 600, 5)]
    assert run(ev, timeline) == [(0, FIRING, BILLING)]
    assert len(ev.firing()) == 1


# -- sample size and statistics --------------------------------------------------------------
def test_too_few_samples_fire_nothing() -> None:
    ev = evaluator(rule(min_samples=20))
    assert run(ev, [(t * S, burst(answers=19, high=19)) for t in range(0, 300, 10)]) == []
    assert run(ev, [(300 * S, burst(answers=20, high=19))]) == [(300 * S, FIRING, BILLING)]


def test_interval_condition_needs_the_whole_interval_above() -> None:
    point = evaluator(rule(threshold=0.5))
    interval = evaluator(rule(threshold=0.5, use="interval"))
    small = burst(answers=20, high=12)  # 60%, but the 95% interval reaches down to ~39%
    assert run(point, [(0, small)]) == [(0, FIRING, BILLING)]
    assert run(interval, [(0, small)]) == []
    large = burst(answers=400, high=240)  # 60% with a lower bound of ~55%
    assert wilson_interval(240, 400)[0] > 0.5
    assert run(interval, [(S, large)]) == [(S, FIRING, BILLING)]


def test_interval_condition_below_uses_the_upper_bound() -> None:
    r = rule(metric="cx_csat_ratio", op="<", threshold=0.7, use="interval")
    csat = kpi.zero_counts()
    csat[kpi.CSAT_RESPONSES], csat[kpi.CSAT_SATISFIED] = 30, 18  # 60%, upper bound ~75%
    ev = evaluator(r)
    assert run(ev, [(0, totals(w15m={"billing": csat}))]) == []
    csat = list(csat)
    csat[kpi.CSAT_RESPONSES], csat[kpi.CSAT_SATISFIED] = 300, 165  # 55%, upper bound ~60%
    assert run(ev, [(S, totals(w15m={"billing": csat}))]) == [(S, FIRING, BILLING)]


# -- hysteresis, keep_firing_for, cooldown: flapping suppressed ------------------------------
def flapping(values: list[int], step: int = 10) -> list[tuple[int, dict]]:
    """High-effort counts per 100 answers, one evaluation every ``step`` seconds."""
    return [(i * step * S, burst(answers=100, high=h)) for i, h in enumerate(values)]


FLAP = [35, 29, 32, 28, 31, 29, 33, 28, 34, 27]


def test_without_damping_a_hovering_value_flaps() -> None:
    ev = evaluator(rule(threshold=0.3))
    assert len(run(ev, flapping(FLAP))) == 10  # fire/resolve on every crossing


def test_hysteresis_holds_a_firing_alert_near_the_threshold() -> None:
    ev = evaluator(rule(threshold=0.3, hysteresis=0.05))
    assert run(ev, flapping([*FLAP, 24])) == [(0, FIRING, BILLING), (100 * S, RESOLVED, BILLING)]


def test_keep_firing_for_bridges_short_gaps() -> None:
    ev = evaluator(rule(threshold=0.3, keep_firing_for="30s"))
    timeline = flapping([35, 20, 20, 35, 20, 20, 20, 20])
    # Clear at 10 s, back at 30 s (within 30 s of the last true evaluation): the same episode.
    # Clear again from 40 s: resolved 30 s after the condition last held (30 s), at 60 s.
    assert run(ev, timeline) == [(0, FIRING, BILLING), (60 * S, RESOLVED, BILLING)]


def test_cooldown_blocks_a_new_episode_right_after_resolve() -> None:
    ev = evaluator(rule(threshold=0.3, cooldown="15m"))
    timeline = flapping(FLAP, step=60)
    assert run(ev, timeline) == [(0, FIRING, BILLING), (60 * S, RESOLVED, BILLING)]
    # 15 minutes after the resolve, a new episode may start.
    assert run(ev, [(959 * S, burst())]) == []
    assert run(ev, [(960 * S, burst())]) == [(960 * S, FIRING, BILLING)]


# -- spikes ------------------------------------------------------------------------------------
def spike_rule(**fields: Any) -> Rule:
    return rule(threshold=0.25, spike={"baseline": "24h", "factor": 1.5}, **fields)


def test_spike_over_baseline_fires() -> None:
    short = ces(30, 15)  # 50%
    long = ces(230, 35)  # includes the 15 minutes: the rest is 200 answers, 20 high (10%)
    ev = evaluator(spike_rule())
    (fire,) = ev.evaluate(totals(w15m={"billing": short}, w24h={"billing": long}), T0)
    assert fire.payload["baseline"] == pytest.approx(0.1)
    assert fire.payload["threshold"] == pytest.approx(0.25)  # max(floor, 1.5 x 10%)


def test_no_spike_when_the_queue_is_always_this_bad() -> None:
    short = ces(30, 12)  # 40%: above the floor ...
    long = ces(1030, 362)  # ... but the rest of the day is 35%, so 1.5x is 52.5%
    ev = evaluator(spike_rule())
    assert ev.evaluate(totals(w15m={"billing": short}, w24h={"billing": long}), T0) == []
    obs = observe(spike_rule(), totals(w15m={"billing": short}, w24h={"billing": long}))
    verdict = check(spike_rule(), obs[("billing",)], firing=False)
    assert not verdict.holds and verdict.threshold == pytest.approx(0.525)


def test_spike_baseline_excludes_the_window_itself() -> None:
    # Only the burst exists: the 24h window equals the 15m one, so the baseline is empty.
    data = totals(w15m={"billing": ces(30, 30)}, w24h={"billing": ces(30, 30)})
    (obs,) = observe(spike_rule(), data).values()
    assert obs.baseline is None and obs.baseline_samples == 0
    assert evaluator(spike_rule()).evaluate(data, T0) == []  # no baseline, no spike


def test_spike_needs_min_baseline_samples() -> None:
    r = rule(threshold=0.25, spike={"baseline": "24h", "factor": 1.5, "min_baseline_samples": 100})
    data = totals(w15m={"billing": ces(30, 30)}, w24h={"billing": ces(129, 30)})  # rest: 99
    assert evaluator(r).evaluate(data, T0) == []
    data = totals(w15m={"billing": ces(30, 30)}, w24h={"billing": ces(130, 30)})  # rest: 100
    assert len(evaluator(r).evaluate(data, T0)) == 1


def test_spike_with_delta_for_nps_drop() -> None:
    r = rule(metric="cx_nps_score", op="<", threshold=0, spike={"baseline": "24h", "delta": -20})
    now = kpi.zero_counts()
    now[kpi.NPS_RESPONSES], now[kpi.NPS_PROMOTERS], now[kpi.NPS_DETRACTORS] = 40, 8, 20  # NPS -30
    day = list(now)
    day[kpi.NPS_RESPONSES] += 200
    day[kpi.NPS_PROMOTERS] += 100  # rest of the day: +50 (100 promoters, 0 detractors of 200)
    (fire,) = evaluator(r).evaluate(totals(w15m={"billing": now}, w24h={"billing": day}), T0)
    assert fire.payload["value"] == -30 and fire.payload["baseline"] == 50
    assert fire.payload["threshold"] == 0  # min(floor 0, 50 - 20)


# -- grouping ------------------------------------------------------------------------------------
def test_only_the_bursting_queue_fires() -> None:
    ev = evaluator(rule())
    data = totals(w15m={"billing": ces(40, 20), "sales": ces(40, 2), "tiny": ces(5, 5)})
    assert run(ev, [(0, data)]) == [(0, FIRING, BILLING)]


def test_group_by_sums_channels_and_global_rule_sums_everything() -> None:
    per_dim = {
        dim_key("billing", "voice"): ces(10, 8),
        dim_key("billing", "chat"): ces(10, 8),
        dim_key("sales", "chat"): ces(30, 0),
    }
    data = {"15m": per_dim, "1h": {}, "24h": {}}
    by_queue = evaluator(rule(min_samples=20))
    assert run(by_queue, [(0, data)]) == [(0, FIRING, BILLING)]  # 16 of 20 across channels
    global_rule = rule(name="everywhere", group_by=[], min_samples=50)
    (fire,) = evaluator(global_rule).evaluate(data, T0)
    assert fire.alert_id == "everywhere" and fire.payload["labels"] == {}
    assert fire.payload["samples"] == 50 and fire.payload["value"] == pytest.approx(16 / 50)
    by_both = evaluator(rule(group_by=["queue", "channel"], min_samples=10))
    ids = {t.alert_id for t in by_both.evaluate(data, T0)}
    assert ids == {'spike{queue="billing",channel="voice"}', 'spike{queue="billing",channel="chat"}'}


def test_extra_dimension_labels_and_transition_keys() -> None:
    per_dim = {
        DIM_SEPARATOR.join(("billing", "voice", "team-a")): ces(15, 10),
        DIM_SEPARATOR.join(("billing", "voice", "team-b")): ces(15, 10),
        "\x1evoice" + DIM_SEPARATOR + "chat": ces(500, 500),  # a channel-transition count
    }
    groups = group_totals(per_dim, ("queue",), ("queue", "channel", "team"))
    assert list(groups) == [("billing",)]
    assert groups[("billing",)][kpi.CES_RESPONSES] == 30
    ev = Evaluator([rule()], label_names=("queue", "channel", "team"))
    (fire,) = ev.evaluate({"15m": per_dim}, T0)
    assert fire.alert_id == BILLING and fire.payload["samples"] == 30


def test_a_group_that_disappears_resolves() -> None:
    ev = evaluator(rule())
    assert run(ev, [(0, burst("billing")), (10 * S, burst("sales", high=0))]) == [
        (0, FIRING, BILLING),
        (10 * S, RESOLVED, BILLING),
    ]


def test_alert_id_escapes_label_values() -> None:
    assert alert_id("r", {}) == "r"
    assert alert_id("r", {"queue": 'a"b\\c\nd'}) == 'r{queue="a\\"b\\\\c\\nd"}'


# -- operator controls ------------------------------------------------------------------------
def test_snooze_defers_firing_until_it_ends() -> None:
    ev = evaluator(rule(**{"for": "1m"}))
    controls = Controls(snoozes={"spike": T0 + 5 * M})
    timeline = [(t * 30 * S, burst()) for t in range(0, 10)]  # 0 .. 4.5 minutes
    assert run(ev, timeline, controls) == []
    assert ev.pending() == [BILLING]
    assert run(ev, [(5 * M, burst())], controls) == [(5 * M, FIRING, BILLING)]  # snooze over


def test_snooze_of_another_rule_or_expired_is_ignored() -> None:
    ev = evaluator(rule())
    controls = Controls(snoozes={"other": T0 + M, "spike": T0 - 1})
    assert run(ev, [(0, burst())], controls) == [(0, FIRING, BILLING)]


def test_snoozed_firing_alert_still_resolves() -> None:
    ev = evaluator(rule())
    run(ev, [(0, burst())])
    controls = Controls(snoozes={"spike": T0 + 60 * M})
    assert run(ev, [(S, QUIET)], controls) == [(S, RESOLVED, BILLING)]


def test_ack_is_carried_into_the_resolve_of_its_episode() -> None:
    ev = evaluator(rule())
    run(ev, [(0, burst())])
    controls = Controls(acks={BILLING: Ack("ana", T0 + 5 * S)})
    (resolve,) = ev.evaluate(QUIET, T0 + 10 * S, controls)
    assert resolve.payload["acked_by"] == "ana" and resolve.payload["acked_at"] == T0 + 5 * S
    # A new episode does not inherit the old ack.
    ev.evaluate(burst(), T0 + 20 * S, controls)
    (resolve,) = ev.evaluate(QUIET, T0 + 30 * S, controls)
    assert "acked_by" not in resolve.payload


# -- restart ------------------------------------------------------------------------------------
def test_adopted_alert_is_not_fired_again_and_resolves() -> None:
    ev = evaluator(rule())
    payload = {
        "id": BILLING,
        "rule": "spike",
        "state": "firing",
        "labels": {"queue": "billing"},
        "since": T0 - 10 * M,
        "tid": "old",
    }
    assert ev.adopt(payload, T0)
    assert not ev.adopt(payload, T0)  # already firing
    assert run(ev, [(0, burst()), (10 * S, burst())]) == []
    (resolve,) = ev.evaluate(QUIET, T0 + 20 * S)
    assert resolve.state == RESOLVED and resolve.payload["since"] == T0 - 10 * M
    assert resolve.payload["tid"] != "old"


def test_adopt_refuses_unknown_rules_and_mismatched_ids() -> None:
    ev = evaluator(rule())
    assert not ev.adopt({"id": "gone", "rule": "gone", "labels": {}}, T0)
    assert not ev.adopt({"id": "spike", "rule": "spike", "labels": {"queue": "billing"}}, T0)


# -- handover to another evaluator ------------------------------------------------------------
def handed_over(ev: Evaluator, now: int, written: set[str] | None = None) -> Evaluator:
    """A new evaluator that restores ``ev``'s exported state, with ``written`` fires in Redis."""
    active = {p["id"]: p for p in ev.firing() if written is None or p["id"] in written}
    successor = evaluator(*ev.rules.values())
    assert successor.restore(ev.export_state(), active, now) == []
    return successor


def test_pending_for_keeps_running_across_a_handover() -> None:
    ev = evaluator(rule(**{"for": "30s"}))
    assert run(ev, [(0, burst()), (20 * S, burst())]) == []
    successor = handed_over(ev, T0 + 21 * S)
    assert successor.pending() == [BILLING]
    # Fires 30 s after the *first* evaluation saw the condition, not 30 s after the handover.
    assert run(successor, [(30 * S, burst())]) == [(30 * S, FIRING, BILLING)]


def test_firing_alert_is_adopted_with_its_keep_firing_timer() -> None:
    ev = evaluator(rule(keep_firing_for="20s"))
    assert run(ev, [(0, burst())]) == [(0, FIRING, BILLING)]
    assert run(ev, [(10 * S, burst()), (15 * S, QUIET)]) == []  # clear since 15 s, last true at 10 s
    successor = handed_over(ev, T0 + 16 * S)
    assert successor.is_firing(BILLING)
    assert run(successor, [(25 * S, QUIET)]) == []  # not yet 20 s since last true
    assert run(successor, [(30 * S, QUIET)]) == [(30 * S, RESOLVED, BILLING)]


def test_a_fire_decided_but_never_written_fires_once_after_the_handover() -> None:
    ev = evaluator(rule())
    assert run(ev, [(0, burst())]) == [(0, FIRING, BILLING)]  # decided, then the worker died
    successor = handed_over(ev, T0 + 5 * S, written=set())
    assert not successor.is_firing(BILLING) and successor.pending() == [BILLING]
    assert run(successor, [(6 * S, burst()), (7 * S, burst())]) == [(6 * S, FIRING, BILLING)]


def test_cooldown_survives_a_handover() -> None:
    ev = evaluator(rule(cooldown="10m"))
    assert run(ev, [(0, burst()), (S, QUIET)]) == [(0, FIRING, BILLING), (S, RESOLVED, BILLING)]
    successor = handed_over(ev, T0 + 2 * S)
    assert run(successor, [(3 * S, burst()), (5 * M, burst())]) == []
    assert run(successor, [(11 * M, burst())]) == [(11 * M, FIRING, BILLING)]


def test_restore_ignores_garbage_and_other_rules() -> None:
    ev = evaluator(rule())
    saved = {
        "alerts": {
            'gone{queue="x"}': {
                "rule": "gone",
                "labels": {"queue": "x"},
                "phase": "pending",
                "since": T0,
                "last_true": T0,
            },
            BILLING: {"rule": "spike", "labels": "nope"},
        },
        "cooldowns": {BILLING: "soon"},
    }
    assert ev.restore(saved, {}, T0) == []
    assert ev.pending() == [] and ev.firing() == []
    assert ev.restore(None, {"x": {"id": "x", "rule": "gone", "labels": {}}}, T0) == ["x"]


# -- the check itself --------------------------------------------------------------------------
def test_check_reasons() -> None:
    r = rule()
    assert check(r, None, False).reason == "no data"
    assert check(r, Observation(value=0.9, samples=5), False).reason == "too few samples"
    assert check(r, Observation(value=0.9, samples=50), False).holds
    assert not check(r, Observation(value=0.3, samples=50), False).holds  # strictly greater
    assert check(rule(op=">="), Observation(value=0.3, samples=50), False).holds


def test_summary_falls_back_when_a_value_is_missing() -> None:
    text = textwrap.dedent("{queue}: {low:.0%}")
    ev = evaluator(rule(summary=text))
    (fire,) = ev.evaluate(burst(), T0)
    assert fire.payload["summary"].startswith("billing: ")


def test_timer_slack_absorbs_early_ticks() -> None:
    exact = evaluator(rule(**{"for": "3s"}))
    ticks = [0, 999, 1998, 2997, 3996]  # a timer running 1 ms short per second
    assert run(exact, [(t, burst()) for t in ticks]) == [(3996, FIRING, BILLING)]
    slack = Evaluator([rule(**{"for": "3s"})], timer_slack_ms=100)
    assert run(slack, [(t, burst()) for t in ticks]) == [(2997, FIRING, BILLING)]
