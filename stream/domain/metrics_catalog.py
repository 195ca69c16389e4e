"""Every exported metric, declared once: name, kind, help text, and where its value comes from.

The exporter, the docs test and the dashboard validation all read this table, so
a metric cannot be exported without being documented, or documented without
being exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from stream.domain import kpi, stats


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric family."""

    name: str
    kind: Literal["count", "ratio", "counter", "gauge"]
    help: str
    #: For ``count``: index into the counter vector. For ``ratio``: key in kpi.derived_kpis.
    source: int | str | None = None
    contract: bool = True
    #: Label names when they are not the default of the kind (None: ask stream.tools.docgen).
    labels: tuple[str, ...] | None = None


WINDOW_LABELS: Final = ("window", "queue", "channel")

COUNT_METRICS: Final = (
    MetricSpec("cx_csat_responses", "count", "CSAT responses in the window.", kpi.CSAT_RESPONSES),
    MetricSpec("cx_csat_satisfied", "count", "CSAT responses scoring 4 or 5.", kpi.CSAT_SATISFIED),
    MetricSpec("cx_nps_responses", "count", "NPS responses in the window.", kpi.NPS_RESPONSES),
    MetricSpec("cx_nps_promoters", "count", "NPS responses scoring 9-10.", kpi.NPS_PROMOTERS),
    MetricSpec("cx_nps_passives", "count", "NPS responses scoring 7-8.", kpi.NPS_PASSIVES),
    MetricSpec("cx_nps_detractors", "count", "NPS responses scoring 0-6.", kpi.NPS_DETRACTORS),
    MetricSpec("cx_ces_responses", "count", "CES responses in the window.", kpi.CES_RESPONSES),
    MetricSpec("cx_ces_easy", "count", "CES responses saying it was easy.", kpi.CES_EASY),
    MetricSpec("cx_ces_high_effort", "count", "CES responses reporting high effort.", kpi.CES_HIGH_EFFORT),
    MetricSpec("cx_contacts", "count", "Contacts started in the window.", kpi.CONTACTS),
    MetricSpec(
        "cx_repeat_contacts",
        "count",
        "Contacts whose customer had another contact within the repeat horizon.",
        kpi.REPEAT_CONTACTS,
    ),
    MetricSpec(
        "cx_channel_switches",
        "count",
        "Repeat contacts on a different channel than the previous contact.",
        kpi.CHANNEL_SWITCHES,
    ),
    MetricSpec(
        "cx_repeat_checked_contacts",
        "count",
        "Contacts started, counted on the worker that holds the customer's history, where repeats "
        "and channel switches are classified: the denominator of cx_repeat_contact_ratio and "
        "cx_channel_switch_ratio. Summed over workers it equals cx_contacts.",
        kpi.REPEAT_CHECKED_CONTACTS,
        contract=False,
    ),
    MetricSpec("cx_contacts_ended", "count", "Contacts ended in the window.", kpi.CONTACTS_ENDED),
    MetricSpec(
        "cx_transferred_contacts",
        "count",
        "Ended contacts that had at least one transfer.",
        kpi.TRANSFERRED_CONTACTS,
    ),
    MetricSpec(
        "cx_same_reason_repeats",
        "count",
        "Repeat contacts with the same reason as the previous contact.",
        kpi.SAME_REASON_REPEATS,
        contract=False,
    ),
    MetricSpec(
        "cx_handle_time_seconds",
        "count",
        "Total handle time (sum of handle_seconds) of ended contacts in the window.",
        kpi.HANDLE_SECONDS_SUM,
        contract=False,
    ),
    MetricSpec(
        "cx_handled_contacts",
        "count",
        "Ended contacts that reported handle_seconds.",
        kpi.HANDLE_COUNT,
        contract=False,
    ),
    MetricSpec(
        "cx_resolution_reported",
        "count",
        "Ended contacts whose agent reported resolved true or false.",
        kpi.RESOLUTION_REPORTED,
        contract=False,
    ),
    MetricSpec(
        "cx_resolved_contacts",
        "count",
        "Ended contacts the agent reported as resolved.",
        kpi.RESOLVED,
        contract=False,
    ),
    # -- waits in queue (contract v2), counted at the wait's end --------------------------------
    MetricSpec("cx_waits_ended", "count", "Waits that ended (answered + abandoned).", kpi.WAITS_ENDED),
    MetricSpec("cx_answered_contacts", "count", "Waits that ended with an answer.", kpi.ANSWERED_CONTACTS),
    MetricSpec(
        "cx_answered_within_threshold",
        "count",
        "Answered waits no longer than the queue's service-level threshold (wait <= threshold).",
        kpi.ANSWERED_WITHIN_THRESHOLD,
    ),
    MetricSpec(
        "cx_abandoned_contacts",
        "count",
        "Waits that ended with the customer leaving (contact_abandoned, or contact_ended while waiting).",
        kpi.ABANDONED_CONTACTS,
    ),
    MetricSpec(
        "cx_short_abandoned_contacts",
        "count",
        "Abandoned waits shorter than the queue's short-abandon time (wait < short_abandon).",
        kpi.SHORT_ABANDONED_CONTACTS,
    ),
    MetricSpec(
        "cx_answer_wait_seconds",
        "count",
        "Sum of the waits of answered contacts, in seconds.",
        kpi.ANSWER_WAIT_SECONDS,
    ),
)

RATIO_METRICS: Final = (
    MetricSpec("cx_csat_ratio", "ratio", "Share of CSAT responses scoring 4-5 (0..1).", "csat_ratio"),
    MetricSpec("cx_csat_average", "ratio", "Mean CSAT score (1..5).", "csat_average"),
    MetricSpec("cx_nps_score", "ratio", "Net Promoter Score: % promoters - % detractors.", "nps_score"),
    MetricSpec("cx_ces_easy_ratio", "ratio", "Share of CES responses saying easy.", "ces_easy_ratio"),
    MetricSpec(
        "cx_ces_high_effort_ratio",
        "ratio",
        "Share of CES responses reporting high effort.",
        "ces_high_effort_ratio",
    ),
    MetricSpec(
        "cx_repeat_contact_ratio",
        "ratio",
        "Repeat contacts / contacts checked for a repeat (cx_repeat_checked_contacts).",
        "repeat_contact_ratio",
    ),
    MetricSpec(
        "cx_channel_switch_ratio",
        "ratio",
        "Channel switches / contacts checked for a repeat (cx_repeat_checked_contacts).",
        "channel_switch_ratio",
    ),
    MetricSpec("cx_transfer_ratio", "ratio", "Transferred contacts / contacts ended.", "transfer_ratio"),
    MetricSpec(
        "cx_handle_seconds_average",
        "ratio",
        "Average handle time in seconds.",
        "handle_seconds_average",
        contract=False,
    ),
    MetricSpec(
        "cx_resolved_ratio",
        "ratio",
        "Resolved / contacts with a reported resolution.",
        "resolved_ratio",
        contract=False,
    ),
    MetricSpec(
        "cx_service_level_ratio",
        "ratio",
        "Answered within the threshold / the waits of CXSTREAM_SERVICE_LEVEL_POLICY (default: answered + "
        "abandoned - short abandons).",
        "service_level_ratio",
    ),
    MetricSpec(
        "cx_abandon_ratio",
        "ratio",
        "(Abandoned - short abandons) / (answered + abandoned - short abandons).",
        "abandon_ratio",
    ),
    MetricSpec(
        "cx_answer_wait_seconds_average",
        "ratio",
        "Average speed of answer: cx_answer_wait_seconds / cx_answered_contacts.",
        "answer_wait_seconds_average",
    ),
)

RESPONSE_RATIO = MetricSpec(
    "cx_survey_response_ratio",
    "ratio",
    "Survey responses / contacts ended, per survey metric.",
)
SWITCH_TRANSITIONS = MetricSpec(
    "cx_channel_switch_transitions",
    "count",
    "Channel switches by previous channel -> new channel (labels window, from_channel, to_channel).",
    contract=False,
)
TRANSITION_LABELS: Final = ("window", "from_channel", "to_channel")
EVENTS_TOTAL = MetricSpec(
    "cx_events_total",
    "counter",
    "Input messages of the input topics by topic and outcome (accepted, rejected, duplicate, late).",
)
INTERNAL_RECORDS_TOTAL = MetricSpec(
    "cx_internal_records_total",
    "counter",
    "Records of cxstream's internal topics (contact starts re-keyed by customer) by topic and "
    "outcome (accepted, rejected, duplicate); not input, so not in cx_events_total.",
    contract=False,
    labels=("topic", "outcome"),
)
INTERNAL_OUTCOMES: Final = ("accepted", "rejected", "duplicate")
OPERATIONAL_METRICS: Final = (
    MetricSpec("cx_state_partitions", "gauge", "Partitions this worker owns.", contract=False),
    MetricSpec("cx_state_buckets", "gauge", "Event-time buckets held.", contract=False),
    MetricSpec("cx_state_contacts", "gauge", "Contact records held.", contract=False),
    MetricSpec("cx_state_customers", "gauge", "Customer contact histories held.", contract=False),
    MetricSpec("cx_state_dedup_ids", "gauge", "Event ids remembered for dedup.", contract=False),
    MetricSpec(
        "cx_event_time_watermark_seconds",
        "gauge",
        "Newest event time processed (epoch seconds).",
        contract=False,
    ),
)

OUTCOMES: Final = ("accepted", "rejected", "duplicate", "late")

# -- live queue state (contract v2): as of now, no window label --------------------------------
QUEUE_LABELS: Final = ("queue", "channel")
CONTACTS_WAITING = MetricSpec(
    "cx_contacts_waiting",
    "gauge",
    "Contacts queued and not yet answered or abandoned, now (0 for a queue x channel that had a wait "
    "in the longest window).",
    labels=QUEUE_LABELS,
)
LONGEST_WAIT = MetricSpec(
    "cx_longest_wait_seconds",
    "gauge",
    "Age of the oldest contact waiting now, in seconds (absent when none waits).",
    labels=QUEUE_LABELS,
)
UNMATCHED_WAIT_EVENTS = MetricSpec(
    "cx_unmatched_wait_events_total",
    "counter",
    "contact_answered / contact_abandoned events that ended no wait (no open contact_queued).",
    labels=(),
)
WAITS_EXPIRED = MetricSpec(
    "cx_waits_expired_total",
    "counter",
    "Waits still open when their contact expired (CXSTREAM_CONTACT_TTL after its newest event): "
    "dropped, never counted as answered or abandoned.",
    labels=(),
)
AGENTS_NOW = MetricSpec(
    "cx_agents",
    "gauge",
    "Agents whose newest agent_state is this state (offline included), by team.",
    labels=("state", "team"),
)
AGENT_STATE_SECONDS = MetricSpec(
    "cx_agent_state_seconds",
    "gauge",
    "Seconds agents spent in each state within the window (from a state's event time to the agent's "
    "next state or now), credited to the team of the event that began it.",
    labels=("window", "team", "state"),
)
OCCUPANCY = MetricSpec(
    "cx_occupancy_ratio",
    "ratio",
    "(busy + after_contact_work) / (busy + after_contact_work + available) agent seconds in the "
    "window; absent when no agent was staffed.",
    labels=("window", "team"),
)
QUEUE_METRICS: Final = (
    CONTACTS_WAITING,
    LONGEST_WAIT,
    UNMATCHED_WAIT_EVENTS,
    WAITS_EXPIRED,
    AGENTS_NOW,
    AGENT_STATE_SECONDS,
    OCCUPANCY,
)

# -- statistical honesty: intervals and low-confidence flags (docs/alerts.md) -----------------
_INTERVAL_METHOD: Final = {"wilson": "Wilson score interval", "nps": "adjusted-Wald interval"}

#: ``<ratio>_lower`` / ``<ratio>_upper``: 95% confidence bounds, same labels and units as the ratio.
INTERVAL_METRICS: Final = tuple(
    MetricSpec(
        f"{spec.name}_{bound}",
        "ratio",
        f"{bound.capitalize()} bound of the 95% confidence interval of {spec.name} "
        f"({_INTERVAL_METHOD[stats.KPI_SAMPLES[str(spec.source)].method]}).",
        spec.source,
        contract=False,
    )
    for spec in RATIO_METRICS
    if spec.source in stats.INTERVAL_KPIS
    for bound in ("lower", "upper")
)
LOW_CONFIDENCE = MetricSpec(
    "cx_low_confidence",
    "gauge",
    "1 when the ratio named by the metric label rests on fewer than CXSTREAM_MIN_SAMPLES samples, else 0.",
    contract=False,
    labels=("window", "queue", "channel", "metric"),
)

# -- alert evaluator and Redis sink (stream.alerting) -----------------------------------------
ALERT_METRICS: Final = (
    MetricSpec(
        "cx_alerts_total",
        "counter",
        "Alert transitions made by the evaluator, by rule and state (firing, resolved).",
        contract=False,
        labels=("rule", "state"),
    ),
    MetricSpec(
        "cx_alerts_firing",
        "gauge",
        "Alerts firing now, by rule and severity (on the evaluating worker; 0 on standbys).",
        contract=False,
        labels=("rule", "severity"),
    ),
    MetricSpec(
        "cx_alert_evaluator",
        "gauge",
        "1 on the worker that holds the alert evaluator lease (evaluates every rule for the whole "
        "contact center), 0 on standbys.",
        contract=False,
        labels=(),
    ),
    MetricSpec(
        "cx_alert_evaluator_takeovers_total",
        "counter",
        "Times this worker took the alert evaluator lease (start-up, or a handover from another worker).",
        contract=False,
        labels=(),
    ),
    MetricSpec(
        "cx_alert_evaluations_held_total",
        "counter",
        "Evaluations skipped because some partition had no view yet (its counts unknown).",
        contract=False,
        labels=(),
    ),
    MetricSpec(
        "cx_alerts_superseded_total",
        "counter",
        "Unwritten transitions discarded because a newer evaluator took the lease (it decides them).",
        contract=False,
        labels=(),
    ),
    MetricSpec(
        "cx_alerts_buffered",
        "gauge",
        "Alert transitions waiting to be written to Redis.",
        contract=False,
        labels=(),
    ),
    MetricSpec(
        "cx_alerts_dropped_total",
        "counter",
        "Alert transitions dropped: the Redis buffer was full (oldest first), or Redis rejected one 5 times.",
        contract=False,
        labels=(),
    ),
    MetricSpec(
        "cx_redis_errors_total",
        "counter",
        "Failed Redis operations by operation (transition, snapshot, views, controls, seed, lease, sweep).",
        contract=False,
        labels=("operation",),
    ),
    MetricSpec(
        "cx_redis_up", "gauge", "1 if the last Redis operation succeeded, else 0.", contract=False, labels=()
    ),
    MetricSpec(
        "cx_alert_last_evaluation_timestamp_seconds",
        "gauge",
        "When the alert rules were last evaluated (epoch seconds).",
        contract=False,
        labels=(),
    ),
)

#: Served by ``cxstream ingest`` on its own /metrics (stream/ingest/server.py), not by workers.
INGEST_METRICS: Final = (
    MetricSpec(
        "cx_ingest_requests_total",
        "counter",
        "Requests to POST /ingest/{format} by format and HTTP status (200 taken, 400 bad payload, "
        "401 refused, 413/415/408 refused unread, 503 broker unavailable).",
        contract=False,
        labels=("format", "status"),
    ),
    MetricSpec(
        "cx_ingest_events_total",
        "counter",
        "Contract events the broker acknowledged, by format and input topic kind "
        "(interactions, surveys, agents).",
        contract=False,
        labels=("format", "topic"),
    ),
    MetricSpec(
        "cx_ingest_broker_up",
        "gauge",
        "1 while the ingest server's broker connection works (its last send succeeded), else 0.",
        contract=False,
        labels=(),
    ),
)

ALL_METRICS: Final = (
    *COUNT_METRICS,
    *RATIO_METRICS,
    RESPONSE_RATIO,
    SWITCH_TRANSITIONS,
    EVENTS_TOTAL,
    INTERNAL_RECORDS_TOTAL,
    *QUEUE_METRICS,
    *OPERATIONAL_METRICS,
    *INTERVAL_METRICS,
    LOW_CONFIDENCE,
    *ALERT_METRICS,
)
