"""Pure KPI math: how a survey or contact turns into counts, and counts into KPIs.

No Faust, no Redis, no I/O. State everywhere else stores only the counter
vectors defined here, because counts add across buckets, partitions, workers and
label sets while ratios do not ("ratios are computed from counts, never averaged
from other ratios").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

# Counter vector layout. Append only: stored vectors from older versions are
# padded with zeros, so new counters never invalidate recovered state.
COUNTERS: Final[tuple[str, ...]] = (
    "csat_responses",
    "csat_satisfied",
    "csat_score_sum",
    "nps_responses",
    "nps_promoters",
    "nps_passives",
    "nps_detractors",
    "ces_responses",
    "ces_easy",
    "ces_high_effort",
    "contacts",
    "repeat_contacts",
    "channel_switches",
    "contacts_ended",
    "transferred_contacts",
    "same_reason_repeats",
    "handle_seconds_sum",
    "handle_count",
    "resolution_reported",
    "resolved",
    # Contacts started, counted where repeats are classified (the customer's partition):
    # the denominator of the repeat and channel-switch ratios, so a worker divides counts
    # of one population (docs/architecture.md, "Joins").
    "repeat_checked_contacts",
    # Waits in queue (contract v2), counted at the event time of the wait's end.
    "waits_ended",
    "answered_contacts",
    "answered_within_threshold",
    "abandoned_contacts",
    "short_abandoned_contacts",
    "answer_wait_seconds",
)
N_COUNTERS: Final = len(COUNTERS)
(
    CSAT_RESPONSES,
    CSAT_SATISFIED,
    CSAT_SCORE_SUM,
    NPS_RESPONSES,
    NPS_PROMOTERS,
    NPS_PASSIVES,
    NPS_DETRACTORS,
    CES_RESPONSES,
    CES_EASY,
    CES_HIGH_EFFORT,
    CONTACTS,
    REPEAT_CONTACTS,
    CHANNEL_SWITCHES,
    CONTACTS_ENDED,
    TRANSFERRED_CONTACTS,
    SAME_REASON_REPEATS,
    HANDLE_SECONDS_SUM,
    HANDLE_COUNT,
    RESOLUTION_REPORTED,
    RESOLVED,
    REPEAT_CHECKED_CONTACTS,
    WAITS_ENDED,
    ANSWERED_CONTACTS,
    ANSWERED_WITHIN_THRESHOLD,
    ABANDONED_CONTACTS,
    SHORT_ABANDONED_CONTACTS,
    ANSWER_WAIT_SECONDS,
) = range(N_COUNTERS)

#: What ``cx_service_level_ratio`` divides by unless CXSTREAM_SERVICE_LEVEL_POLICY says otherwise
#: (the settings list the three policies).
DEFAULT_SERVICE_LEVEL_POLICY: Final = "answered_and_abandoned"

Counts = list[float]


def zero_counts() -> Counts:
    """A fresh counter vector."""
    return [0] * N_COUNTERS


def upgrade_counts(counts: list[float]) -> list[float]:
    """A stored vector in today's layout (in place): zero-padded, older meanings mapped.

    Vectors written before ``repeat_checked_contacts`` existed counted repeats against
    ``contacts``; they take ``contacts`` as their checked count, which is what the repeat
    ratio divided by then (exact on one worker). Newer vectors are returned unchanged.
    """
    stored = len(counts)
    if stored < N_COUNTERS:
        counts.extend([0] * (N_COUNTERS - stored))
        if stored <= REPEAT_CHECKED_CONTACTS:
            counts[REPEAT_CHECKED_CONTACTS] = counts[CONTACTS]
    return counts


def add_into(total: Counts, part: Sequence[float]) -> None:
    """Add ``part`` into ``total`` in place (``part`` may be shorter: older layout)."""
    for i, value in enumerate(part):
        if value:
            total[i] += value


def sum_counts(parts: Iterable[Sequence[float]]) -> Counts:
    """Element-wise sum of counter vectors."""
    total = zero_counts()
    for part in parts:
        add_into(total, part)
    return total


# -- classification of one survey answer ------------------------------------
def csat_is_satisfied(score: int) -> bool:
    """CSAT top-2-box: 4 or 5 on the 1..5 scale."""
    return score >= 4


def nps_category(score: int) -> int:
    """Counter index for an NPS answer: promoter 9-10, passive 7-8, detractor 0-6."""
    if score >= 9:
        return NPS_PROMOTERS
    if score >= 7:
        return NPS_PASSIVES
    return NPS_DETRACTORS


def ces_is_easy(score: int, scale: str) -> bool:
    """CES 'easy': agree_1_7 score >= 5 (agrees it was easy); effort_1_5 score <= 2."""
    return score >= 5 if scale == "agree_1_7" else score <= 2


def ces_is_high_effort(score: int, scale: str) -> bool:
    """CES 'high effort': agree_1_7 score <= 3; effort_1_5 score >= 4."""
    return score <= 3 if scale == "agree_1_7" else score >= 4


def add_survey(counts: Counts, metric: str, score: int, scale: str | None) -> None:
    """Count one survey answer into ``counts``."""
    if metric == "csat":
        counts[CSAT_RESPONSES] += 1
        counts[CSAT_SCORE_SUM] += score
        if score >= 4:
            counts[CSAT_SATISFIED] += 1
    elif metric == "nps":
        counts[NPS_RESPONSES] += 1
        counts[nps_category(score)] += 1
    else:
        counts[CES_RESPONSES] += 1
        effort_scale = scale or "agree_1_7"
        if ces_is_easy(score, effort_scale):
            counts[CES_EASY] += 1
        elif ces_is_high_effort(score, effort_scale):
            counts[CES_HIGH_EFFORT] += 1


# -- derived KPIs -------------------------------------------------------------
def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def offered_waits(c: Sequence[float]) -> float:
    """Answered + abandoned - short-abandoned: the waits a service level is fair to judge
    (a customer who hung up within seconds was not failed by the queue)."""
    return c[ANSWERED_CONTACTS] + c[ABANDONED_CONTACTS] - c[SHORT_ABANDONED_CONTACTS]


def long_abandons(c: Sequence[float]) -> float:
    """Abandons after the short-abandon time: the abandon ratio's numerator."""
    return c[ABANDONED_CONTACTS] - c[SHORT_ABANDONED_CONTACTS]


def service_level_denominator(c: Sequence[float], policy: str = DEFAULT_SERVICE_LEVEL_POLICY) -> float:
    """The waits ``cx_service_level_ratio`` divides by under ``policy`` (the contract's three)."""
    if policy == "answered_only":
        return c[ANSWERED_CONTACTS]
    if policy == "all_waits":
        return c[WAITS_ENDED]
    return offered_waits(c)


def derived_kpis(c: Sequence[float], policy: str = DEFAULT_SERVICE_LEVEL_POLICY) -> dict[str, float | None]:
    """Ratios and averages from one counter vector; ``None`` where the denominator is 0.

    Keys are the contract's metric names without the ``cx_`` prefix. ``policy``: the
    service-level policy (CXSTREAM_SERVICE_LEVEL_POLICY).
    """
    nps_n = c[NPS_RESPONSES]
    ended = c[CONTACTS_ENDED]
    offered = offered_waits(c)
    return {
        "csat_ratio": _ratio(c[CSAT_SATISFIED], c[CSAT_RESPONSES]),
        "csat_average": _ratio(c[CSAT_SCORE_SUM], c[CSAT_RESPONSES]),
        "nps_score": (100.0 * (c[NPS_PROMOTERS] - c[NPS_DETRACTORS]) / nps_n if nps_n else None),
        "ces_easy_ratio": _ratio(c[CES_EASY], c[CES_RESPONSES]),
        "ces_high_effort_ratio": _ratio(c[CES_HIGH_EFFORT], c[CES_RESPONSES]),
        # Both over the contacts checked where repeats are classified, never over
        # cx_contacts: on several workers those are counted on another worker.
        "repeat_contact_ratio": _ratio(c[REPEAT_CONTACTS], c[REPEAT_CHECKED_CONTACTS]),
        "channel_switch_ratio": _ratio(c[CHANNEL_SWITCHES], c[REPEAT_CHECKED_CONTACTS]),
        "transfer_ratio": _ratio(c[TRANSFERRED_CONTACTS], ended),
        "handle_seconds_average": _ratio(c[HANDLE_SECONDS_SUM], c[HANDLE_COUNT]),
        "resolved_ratio": _ratio(c[RESOLVED], c[RESOLUTION_REPORTED]),
        "service_level_ratio": _ratio(c[ANSWERED_WITHIN_THRESHOLD], service_level_denominator(c, policy)),
        "abandon_ratio": _ratio(long_abandons(c), offered),
        "answer_wait_seconds_average": _ratio(c[ANSWER_WAIT_SECONDS], c[ANSWERED_CONTACTS]),
    }


def survey_response_ratios(c: Sequence[float]) -> dict[str, float | None]:
    """Survey responses per contact ended, per metric (``None`` with no ended contacts)."""
    ended = c[CONTACTS_ENDED]
    return {
        "csat": _ratio(c[CSAT_RESPONSES], ended),
        "nps": _ratio(c[NPS_RESPONSES], ended),
        "ces": _ratio(c[CES_RESPONSES], ended),
    }
