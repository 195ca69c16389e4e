"""The alert state machine: window totals + now in, fire/resolve transitions out.

Pure and deterministic (no I/O, the clock is an argument), so every timeline is
unit-testable. Per alert -- one (rule, group) pair, e.g. ``ces_high_effort_spike``
for ``queue="billing"`` -- the life cycle is::

    inactive --condition--> pending --held for `for`--> FIRING --clear for keep_firing_for--> inactive
       ^                       |                          (transition "firing")  (transition "resolved")
       |---condition clears----'                                                        |
       '------------------------------- cooldown ------------------------------------------'

* **Condition**: enough samples (``min_samples``), and the point estimate -- or with
  ``use: interval`` the whole confidence interval -- beyond the threshold. For a spike
  rule the threshold is the stricter of the floor and the baseline-derived value.
* **Hysteresis**: once firing, the threshold is relaxed by ``hysteresis`` (in the
  metric's units) before the condition counts as cleared, so a value hovering around
  the threshold does not flap.
* **keep_firing_for**: a firing alert resolves only after its condition has stayed
  clear this long; if it returns meanwhile, the episode simply continues.
* **cooldown**: after a resolve, the same alert cannot go pending again for this long.
* **Snooze** (per rule, from Redis): no new alert of the rule fires until the snooze
  ends (one that is still pending then fires at once); firing ones resolve normally.
* **Ack** (per alert, from Redis): carried into the resolve transition (``acked_by``);
  an ack older than the episode's start is ignored.

One transition per fire and per resolve: an alert never fires twice in one episode.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.alerting.rules import DEFAULT_SUMMARY, Rule, summary_fields
from stream.domain import kpi, stats
from stream.domain.kpi import Counts
from stream.domain.metrics_catalog import QUEUE_LABELS
from stream.domain.state import TRANSITION_MARK, split_dim_key
from stream.query.live import WaitingNow, add_waiting_now

WindowTotals = Mapping[str, Mapping[str, Counts]]
GroupKey = tuple[str, ...]

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Observation:
    """One group's KPI in a rule's window (and baseline), as the evaluator sees it."""

    value: float | None
    samples: float
    low: float | None = None
    high: float | None = None
    baseline: float | None = None
    baseline_samples: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the condition holds now, against which threshold, and why not."""

    holds: bool
    threshold: float | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    by: str
    at: int


@dataclass
class Controls:
    """Operator input read from Redis: acks per alert id, snoozed-until (ms) per rule."""

    acks: dict[str, Ack] = field(default_factory=dict)
    snoozes: dict[str, int] = field(default_factory=dict)

    def snoozed(self, rule: str, now_ms: int) -> bool:
        return self.snoozes.get(rule, 0) > now_ms


@dataclass(frozen=True, slots=True)
class Transition:
    """A fire or resolve, ready for Redis: ``payload`` is the documented alert JSON."""

    alert_id: str
    state: str
    payload: dict[str, Any]
    #: Apply only if ``<p>:alerts:active`` still holds exactly this JSON for the id
    #: (compare-and-delete, for cleaning up alerts another worker left behind).
    expect: str | None = None

    @property
    def rule(self) -> str:
        return str(self.payload["rule"])

    @property
    def tid(self) -> str:
        return str(self.payload["tid"])


@dataclass
class _Alert:
    rule: Rule
    labels: dict[str, str]
    phase: str  # "pending" or "firing"
    since: int
    last_true: int
    payload: dict[str, Any] | None = None


def alert_id(rule: str, labels: Mapping[str, str]) -> str:
    """``rule{label="value",...}``, escaped like Prometheus label values; ``rule`` with no labels."""
    if not labels:
        return rule
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{rule}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- observations from window totals ----------------------------------------------------------
def observe_live(rule: Rule, live: Mapping[str, WaitingNow]) -> dict[GroupKey, Observation]:
    """Live gauges by the rule's groups: samples = contacts waiting; the value the longest
    wait (None when nobody waits: the condition is clear) or the number waiting."""
    positions = [QUEUE_LABELS.index(label) for label in rule.group_by]
    groups: dict[GroupKey, WaitingNow] = {}
    for dim, (count, longest) in live.items():
        parts = split_dim_key(dim)
        add_waiting_now(groups, tuple(parts[i] if i < len(parts) else "" for i in positions), count, longest)
    return {
        key: Observation(value=float(count) if rule.kpi == "contacts_waiting" else longest, samples=count)
        for key, (count, longest) in groups.items()
    }


def group_totals(
    per_dim: Mapping[str, Counts], group_by: Sequence[str], label_names: Sequence[str]
) -> dict[GroupKey, Counts]:
    """Sum counter vectors by the ``group_by`` labels (``()`` = one global group)."""
    positions = [label_names.index(label) for label in group_by]
    groups: dict[GroupKey, Counts] = {}
    for dim, counts in per_dim.items():
        if dim.startswith(TRANSITION_MARK):  # channel-transition counts, not a label set
            continue
        parts = split_dim_key(dim)
        key = tuple(parts[i] if i < len(parts) else "" for i in positions)
        total = groups.get(key)
        if total is None:
            total = groups[key] = kpi.zero_counts()
        kpi.add_into(total, counts)
    return groups


def observe(
    rule: Rule,
    totals: WindowTotals,
    label_names: Sequence[str] = ("queue", "channel"),
    live: Mapping[str, WaitingNow] | None = None,
) -> dict[GroupKey, Observation]:
    """The rule's observation for every group with data in its window.

    A spike rule's baseline is the baseline window *minus* the rule's window (counts
    subtracted), so a spike never raises its own baseline. A rule on a live gauge reads
    ``live`` instead: ``"queue\x1fchannel" -> (contacts waiting, longest wait s)``
    (:meth:`stream.query.partition_views.GlobalView.waiting_now`).
    """
    if rule.live:
        return observe_live(rule, live or {})
    short = group_totals(totals.get(rule.window, {}), rule.group_by, label_names)
    long: dict[GroupKey, Counts] = {}
    if rule.spike:
        long = group_totals(totals.get(rule.spike.baseline, {}), rule.group_by, label_names)
    result: dict[GroupKey, Observation] = {}
    for key, counts in short.items():
        value = kpi.derived_kpis(counts, rule.policy)[rule.kpi]
        samples = stats.sample_size(rule.kpi, counts, rule.policy)
        interval = stats.kpi_interval(rule.kpi, counts, rule.z, rule.policy)
        baseline: float | None = None
        baseline_samples = 0.0
        if rule.spike:
            rest = [max(0.0, a - b) for a, b in zip(long.get(key, kpi.zero_counts()), counts, strict=True)]
            baseline = kpi.derived_kpis(rest, rule.policy)[rule.kpi]
            baseline_samples = stats.sample_size(rule.kpi, rest, rule.policy)
        result[key] = Observation(
            value=value,
            samples=samples,
            low=interval[0] if interval else None,
            high=interval[1] if interval else None,
            baseline=baseline,
            baseline_samples=baseline_samples,
        )
    return result


def check(rule: Rule, obs: Observation | None, firing: bool) -> Verdict:
    """Does the rule's condition hold for this observation (relaxed by hysteresis if firing)?"""
    if obs is None or obs.value is None:
        return Verdict(False, None, "no data")
    threshold = rule.threshold
    if rule.spike:
        if obs.baseline is None or obs.baseline_samples < rule.spike.min_baseline_samples:
            return Verdict(False, None, "baseline has too few samples")
        spike = rule.spike.threshold(obs.baseline)
        threshold = max(threshold, spike) if rule.above else min(threshold, spike)
    if obs.samples < rule.min_samples:
        return Verdict(False, threshold, "too few samples")
    effective = threshold
    if firing and rule.hysteresis:
        effective = threshold - rule.hysteresis if rule.above else threshold + rule.hysteresis
    if rule.use == "interval":
        tested = obs.low if rule.above else obs.high
        if tested is None:  # pragma: no cover - rules refuse `interval` for averages
            return Verdict(False, threshold, "no interval")
    else:
        tested = obs.value
    holds = _compare(tested, rule.op, effective)
    return Verdict(holds, threshold, "" if holds else "below threshold" if rule.above else "above threshold")


def _compare(value: float, op: str, threshold: float) -> bool:
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    return value <= threshold


# -- the state machine ------------------------------------------------------------------------
class Evaluator:
    """Tracks every (rule, group) alert of one worker and emits transitions."""

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        label_names: Sequence[str] = ("queue", "channel"),
        worker: str = "",
        new_tid: Callable[[], str] = lambda: uuid.uuid4().hex,
        timer_slack_ms: int = 0,
    ) -> None:
        """``timer_slack_ms``: how much earlier than exact a `for` / `keep_firing_for` may end,
        so evaluation-timer jitter (ticks a few ms short of the interval) does not cost a
        whole extra interval."""
        self.rules = {rule.name: rule for rule in rules}
        self.timer_slack_ms = timer_slack_ms
        self.label_names = tuple(label_names)
        self.worker = worker
        self._new_tid = new_tid
        self._alerts: dict[str, _Alert] = {}
        self._cooldown_until: dict[str, int] = {}

    # -- queries ------------------------------------------------------------------------------
    def firing(self) -> list[dict[str, Any]]:
        """Payloads of the alerts firing now."""
        return [a.payload for a in self._alerts.values() if a.phase == FIRING and a.payload is not None]

    def pending(self) -> list[str]:
        """Ids of the alerts whose condition holds but whose `for` has not elapsed."""
        return [alert_id for alert_id, a in self._alerts.items() if a.phase == "pending"]

    def is_firing(self, alert_id: str) -> bool:
        alert = self._alerts.get(alert_id)
        return alert is not None and alert.phase == FIRING

    # -- input ------------------------------------------------------------------------------
    def adopt(self, payload: Mapping[str, Any], now_ms: int) -> bool:
        """Take over an alert that Redis says is firing (after a restart): no second fire.

        Returns False (and ignores it) if its rule is unknown or it is already tracked as firing.
        """
        rule = self.rules.get(str(payload.get("rule", "")))
        raw_labels = payload.get("labels")
        if rule is None or not isinstance(raw_labels, dict):
            return False
        labels = {label: str(raw_labels.get(label, "")) for label in rule.group_by}
        key = alert_id(rule.name, labels)
        if key != payload.get("id") or self.is_firing(key):
            return False
        since = payload.get("since")
        since_ms = since if isinstance(since, int) else now_ms
        self._alerts[key] = _Alert(rule, labels, FIRING, since_ms, now_ms, dict(payload))
        return True

    def reset(self) -> None:
        """Forget every alert and timer (this worker stopped being the evaluator)."""
        self._alerts.clear()
        self._cooldown_until.clear()

    def export_state(self) -> dict[str, Any]:
        """Pending and firing alerts with their timers, and cooldowns: what a successor needs.

        Firing payloads are not included: ``<p>:alerts:active`` holds them.
        """
        return {
            "alerts": {
                aid: {
                    "rule": a.rule.name,
                    "labels": a.labels,
                    "phase": a.phase,
                    "since": a.since,
                    "last_true": a.last_true,
                }
                for aid, a in self._alerts.items()
            },
            "cooldowns": dict(self._cooldown_until),
        }

    def restore(
        self, saved: Mapping[str, Any] | None, active: Mapping[str, Mapping[str, Any]], now_ms: int
    ) -> list[str]:
        """Continue where the previous evaluator stopped (a handover, a restart).

        ``active``: the firing alerts in Redis, adopted as firing (never fired again);
        ``saved``: the previous evaluator's :meth:`export_state`, which restores pending
        alerts (their `for` keeps running), when firing alerts were last true (their
        `keep_firing_for` keeps running) and cooldowns. An alert the saved state calls
        firing that is not in ``active`` had its fire decided but never written: it goes
        back to pending from its original start, so it fires at the next evaluation if its
        condition still holds. Returns the ids of the active alerts it could not adopt.
        """
        self.reset()
        saved_alerts = saved.get("alerts", {}) if isinstance(saved, Mapping) else {}
        if not isinstance(saved_alerts, Mapping):
            saved_alerts = {}
        last_true: dict[str, int] = {}
        for aid, item in saved_alerts.items():
            try:
                rule = self.rules.get(str(item["rule"]))
                labels = {k: str(v) for k, v in dict(item["labels"]).items()}
                since, true_at = int(item["since"]), int(item["last_true"])
                phase = str(item["phase"])
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if rule is None or alert_id(rule.name, labels) != aid or set(labels) != set(rule.group_by):
                continue
            last_true[aid] = true_at
            if phase == "pending" or aid not in active:
                self._alerts[aid] = _Alert(rule, labels, "pending", since, true_at)
        refused = []
        for aid, payload in active.items():
            if not self.adopt(payload, now_ms):
                refused.append(aid)
            elif aid in last_true:
                self._alerts[aid].last_true = last_true[aid]
        cooldowns = saved.get("cooldowns", {}) if isinstance(saved, Mapping) else {}
        if isinstance(cooldowns, Mapping):
            for aid, until in cooldowns.items():
                if isinstance(until, int) and until > now_ms and aid not in self._alerts:
                    self._cooldown_until[str(aid)] = until
        return refused

    def evaluate(
        self,
        totals: WindowTotals,
        now_ms: int,
        controls: Controls | None = None,
        live: Mapping[str, WaitingNow] | None = None,
    ) -> list[Transition]:
        """One evaluation at ``now_ms`` over the window totals (and the live waiting, for
        rules on live gauges); returns the transitions made."""
        controls = controls or Controls()
        transitions: list[Transition] = []
        seen: set[str] = set()
        for rule in self.rules.values():
            observations = observe(rule, totals, self.label_names, live)
            for key, obs in observations.items():
                labels = dict(zip(rule.group_by, key, strict=True))
                aid = alert_id(rule.name, labels)
                seen.add(aid)
                transitions.extend(self._step(aid, rule, labels, obs, now_ms, controls))
        # Alerts whose group has no data in the window any more: their condition is clear.
        for aid in [a for a in self._alerts if a not in seen]:
            alert = self._alerts[aid]
            transitions.extend(self._step(aid, alert.rule, alert.labels, None, now_ms, controls))
        for aid in [a for a, until in self._cooldown_until.items() if until <= now_ms]:
            del self._cooldown_until[aid]
        return transitions

    def _step(
        self,
        aid: str,
        rule: Rule,
        labels: dict[str, str],
        obs: Observation | None,
        now: int,
        controls: Controls,
    ) -> list[Transition]:
        alert = self._alerts.get(aid)
        firing = alert is not None and alert.phase == FIRING
        verdict = check(rule, obs, firing)

        if alert is None:
            if not verdict.holds or self._cooldown_until.get(aid, 0) > now:
                return []
            alert = self._alerts[aid] = _Alert(rule, labels, "pending", now, now)

        if alert.phase == "pending":
            if not verdict.holds:
                del self._alerts[aid]
                return []
            alert.last_true = now
            held_ms = now - alert.since + self.timer_slack_ms
            if held_ms < rule.for_s * 1000 or controls.snoozed(rule.name, now):
                return []
            alert.phase = FIRING
            assert obs is not None
            alert.payload = self._payload(aid, rule, labels, FIRING, obs, verdict, alert.since, now)
            return [Transition(aid, FIRING, alert.payload)]

        # firing
        if verdict.holds:
            alert.last_true = now
            return []
        if now - alert.last_true + self.timer_slack_ms < rule.keep_firing_for_s * 1000:
            return []
        del self._alerts[aid]
        if rule.cooldown_s > 0:
            self._cooldown_until[aid] = now + int(rule.cooldown_s * 1000)
        payload = dict(alert.payload or {})
        payload.update(
            state=RESOLVED,
            at=now,
            tid=self._new_tid(),
            worker=self.worker,  # the evaluator that resolves it, maybe not the one that fired it
            value=_clean(obs.value) if obs else None,
            low=_clean(obs.low) if obs else None,
            high=_clean(obs.high) if obs else None,
            samples=_clean(obs.samples) if obs else 0,
        )
        ack = controls.acks.get(aid)
        if ack is not None and ack.at >= alert.since:
            payload["acked_by"] = ack.by
            payload["acked_at"] = ack.at
        return [Transition(aid, RESOLVED, payload)]

    def _payload(
        self,
        aid: str,
        rule: Rule,
        labels: dict[str, str],
        state: str,
        obs: Observation,
        verdict: Verdict,
        since: int,
        now: int,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": aid,
            "rule": rule.name,
            "state": state,
            "labels": labels,
            "severity": rule.severity,
            "metric": rule.metric,
            "window": rule.window,
            "value": _clean(obs.value),
            "low": _clean(obs.low),
            "high": _clean(obs.high),
            "threshold": _clean(verdict.threshold),
            "baseline": _clean(obs.baseline),
            "samples": _clean(obs.samples),
            "since": since,
            "at": now,
            "summary": render_summary(rule, labels, obs, verdict.threshold),
            "worker": self.worker,
            "tid": self._new_tid(),
        }
        if rule.spike is None:
            del payload["baseline"]
        return payload


def render_summary(rule: Rule, labels: Mapping[str, str], obs: Observation, threshold: float | None) -> str:
    """The rule's summary template filled in; falls back to the default template on error."""
    fields = summary_fields(rule)
    fields.update(labels)
    fields.update(
        value=obs.value,
        threshold=threshold,
        samples=_clean(obs.samples),
        labels=",".join(f"{k}={v}" for k, v in labels.items()) or "all",
    )
    if "low" in fields:
        fields.update(low=obs.low, high=obs.high)
    if "baseline" in fields:
        fields.update(baseline=obs.baseline, baseline_samples=_clean(obs.baseline_samples))
    for template in (rule.summary, DEFAULT_SUMMARY):
        try:
            return template.format(**fields)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            continue
    return f"{rule.name} {fields['labels']}"


def _clean(value: float | None) -> float | int | None:
    """JSON-friendly number: whole floats as int, NaN/inf as None."""
    if value is None or not math.isfinite(value):
        return None
    if float(value).is_integer() and abs(value) < 2**53:
        return int(value)
    return value
