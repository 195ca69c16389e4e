"""Confidence intervals for the KPIs, so a score is never shown without its uncertainty.

Pure functions, no I/O. Two interval methods, both chosen for good coverage at the
small samples a queue sees in a 15-minute window:

* **Wilson score interval** for proportions (CSAT top-2-box, CES easy / high effort,
  repeat contacts, channel switches, transfers). Unlike the textbook Wald interval
  ``p ± z·sqrt(p(1-p)/n)`` it never collapses to a zero width at ``p = 0`` or ``p = 1``
  and never leaves ``[0, 1]``.
* **Adjusted Wald for NPS** (Rocks 2016, *The American Statistician* 70(4)): add 3 to
  the sample size, 3/4 to promoters and 3/4 to detractors, then use the variance of a
  difference of two proportions from one multinomial sample,
  ``Var(P - D) = (P + D - (P - D)^2) / n``. Scaled to the NPS range -100..100.

``kpi_interval(key, counts)`` binds those methods to the counter vector of
:mod:`stream.domain.kpi`; the sample size of a ratio is always its denominator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, Literal

from stream.domain import kpi

#: z for a two-sided 95% interval.
Z95: Final = 1.959963984540054


def z_for(confidence: float) -> float:
    """Two-sided normal quantile for a confidence level in (0, 1), e.g. 0.95 -> 1.96."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (low, high) for ``successes`` out of ``n``.

    ``n <= 0`` gives ``(0.0, 1.0)``: nothing is known. The result always lies in
    ``[0, 1]`` and contains ``successes / n``.
    """
    if n <= 0:
        return 0.0, 1.0
    if successes < 0 or successes > n:
        raise ValueError(f"successes must be within 0..n, got {successes!r} of {n!r}")
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denominator
    # Rounding can push a bound past the estimate by an ulp at p = 0 or 1: clamp.
    low = min(max(0.0, center - half), p)
    high = max(min(1.0, center + half), p)
    return low, high


def nps_interval(promoters: float, passives: float, detractors: float, z: float = Z95) -> tuple[float, float]:
    """Adjusted-Wald interval (low, high) for the NPS on its -100..100 scale.

    With no responses the interval is the whole range. The interval is centred on the
    adjusted estimate (shrunk slightly towards 0), and widened by at most rounding so
    it always contains the plain NPS of the counts.
    """
    n = promoters + passives + detractors
    if min(promoters, passives, detractors) < 0:
        raise ValueError("NPS counts must not be negative")
    if n <= 0:
        return -100.0, 100.0
    n_adj = n + 3.0
    p_adj = (promoters + 0.75) / n_adj
    d_adj = (detractors + 0.75) / n_adj
    diff = p_adj - d_adj
    variance = max(0.0, (p_adj + d_adj - diff * diff) / n_adj)
    half = z * math.sqrt(variance)
    point = (promoters - detractors) / n
    low = min(max(-1.0, diff - half), point)
    high = max(min(1.0, diff + half), point)
    return 100.0 * low, 100.0 * high


# -- binding to the counter vector ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class KpiSample:
    """How one derived KPI (a key of :func:`stream.domain.kpi.derived_kpis`) is estimated.

    ``method``: ``wilson`` (a proportion ``numerator / denominator``), ``nps``, or
    ``none`` (an average: no interval from counts alone, but still a sample size).
    """

    key: str
    method: Literal["wilson", "nps", "none"]
    #: A counter index, or a function of the counts and the service-level policy.
    denominator: int | Callable[[Sequence[float], str], float]
    numerator: int | Callable[[Sequence[float], str], float] | None = None

    def n(self, counts: Sequence[float], policy: str = kpi.DEFAULT_SERVICE_LEVEL_POLICY) -> float:
        """The sample size (the denominator) in ``counts``."""
        d = self.denominator
        return counts[d] if isinstance(d, int) else d(counts, policy)

    def successes(self, counts: Sequence[float], policy: str = kpi.DEFAULT_SERVICE_LEVEL_POLICY) -> float:
        """The numerator of a proportion in ``counts``."""
        k = self.numerator
        assert k is not None
        return counts[k] if isinstance(k, int) else k(counts, policy)


def _offered(counts: Sequence[float], policy: str) -> float:
    return kpi.offered_waits(counts)


def _long_abandons(counts: Sequence[float], policy: str) -> float:
    return kpi.long_abandons(counts)


KPI_SAMPLES: Final[dict[str, KpiSample]] = {
    s.key: s
    for s in (
        KpiSample("csat_ratio", "wilson", kpi.CSAT_RESPONSES, kpi.CSAT_SATISFIED),
        KpiSample("csat_average", "none", kpi.CSAT_RESPONSES),
        KpiSample("nps_score", "nps", kpi.NPS_RESPONSES),
        KpiSample("ces_easy_ratio", "wilson", kpi.CES_RESPONSES, kpi.CES_EASY),
        KpiSample("ces_high_effort_ratio", "wilson", kpi.CES_RESPONSES, kpi.CES_HIGH_EFFORT),
        KpiSample("repeat_contact_ratio", "wilson", kpi.REPEAT_CHECKED_CONTACTS, kpi.REPEAT_CONTACTS),
        KpiSample("channel_switch_ratio", "wilson", kpi.REPEAT_CHECKED_CONTACTS, kpi.CHANNEL_SWITCHES),
        KpiSample("transfer_ratio", "wilson", kpi.CONTACTS_ENDED, kpi.TRANSFERRED_CONTACTS),
        KpiSample("handle_seconds_average", "none", kpi.HANDLE_COUNT),
        KpiSample("resolved_ratio", "wilson", kpi.RESOLUTION_REPORTED, kpi.RESOLVED),
        KpiSample(
            "service_level_ratio", "wilson", kpi.service_level_denominator, kpi.ANSWERED_WITHIN_THRESHOLD
        ),
        KpiSample("abandon_ratio", "wilson", _offered, _long_abandons),
        KpiSample("answer_wait_seconds_average", "none", kpi.ANSWERED_CONTACTS),
    )
}

#: KPIs that have a confidence interval (exported as ``cx_<key>_lower`` / ``_upper``).
INTERVAL_KPIS: Final[tuple[str, ...]] = tuple(k for k, s in KPI_SAMPLES.items() if s.method != "none")


def sample_size(key: str, counts: Sequence[float], policy: str = kpi.DEFAULT_SERVICE_LEVEL_POLICY) -> float:
    """The sample behind a KPI: its denominator (responses, contacts, ended contacts, waits)."""
    return KPI_SAMPLES[key].n(counts, policy)


def kpi_interval(
    key: str,
    counts: Sequence[float],
    z: float = Z95,
    policy: str = kpi.DEFAULT_SERVICE_LEVEL_POLICY,
) -> tuple[float, float] | None:
    """Interval of a KPI in its own units (ratios 0..1, NPS -100..100).

    ``None`` for averages, and for an empty denominator (where the KPI itself is not
    exported either). ``policy``: the service-level policy (its denominator).
    """
    spec = KPI_SAMPLES[key]
    n = spec.n(counts, policy)
    if n <= 0 or spec.method == "none":
        return None
    if spec.method == "nps":
        return nps_interval(
            counts[kpi.NPS_PROMOTERS], counts[kpi.NPS_PASSIVES], counts[kpi.NPS_DETRACTORS], z
        )
    # A numerator above its denominator cannot come from the processor; clamp, never raise.
    return wilson_interval(min(max(spec.successes(counts, policy), 0.0), n), n, z)
