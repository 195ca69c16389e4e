"""Confidence intervals (stream.domain.stats): known values, and properties over every input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.domain import kpi, stats
from stream.domain.stats import Z95, kpi_interval, nps_interval, sample_size, wilson_interval, z_for

counts_n = st.integers(min_value=1, max_value=100_000)


@st.composite
def proportion(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(counts_n)
    return draw(st.integers(min_value=0, max_value=n)), n


@st.composite
def trinomial(draw: st.DrawFn) -> tuple[int, int, int]:
    return (
        draw(st.integers(0, 20_000)),
        draw(st.integers(0, 20_000)),
        draw(st.integers(0, 20_000)),
    )


# -- Wilson ------------------------------------------------------------------------------------
def test_wilson_known_values() -> None:
    # Reference values (Wilson 1927; e.g. R binom::binom.confint(method="wilson")).
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=5e-4)
    assert high == pytest.approx(0.3662, abs=5e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=5e-4)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=5e-4)
    assert high == 1.0
    low, high = wilson_interval(5, 10)
    assert (low + high) / 2 == pytest.approx(0.5)


def test_wilson_empty_sample_is_whole_range() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


@given(proportion())
def test_wilson_bounds_in_range_and_contain_point(sample: tuple[int, int]) -> None:
    successes, n = sample
    low, high = wilson_interval(successes, n)
    assert 0.0 <= low <= successes / n <= high <= 1.0
    assert high - low > 0  # never a zero-width interval, even at 0% or 100%


@given(proportion(), st.integers(min_value=2, max_value=50))
def test_wilson_shrinks_as_the_sample_grows(sample: tuple[int, int], k: int) -> None:
    successes, n = sample
    low1, high1 = wilson_interval(successes, n)
    low2, high2 = wilson_interval(successes * k, n * k)
    assert high2 - low2 < high1 - low1


@given(proportion())
def test_wilson_wider_at_higher_confidence(sample: tuple[int, int]) -> None:
    successes, n = sample
    low90, high90 = wilson_interval(successes, n, z_for(0.90))
    low99, high99 = wilson_interval(successes, n, z_for(0.99))
    assert low99 <= low90 and high90 <= high99


@given(proportion())
def test_wilson_is_symmetric(sample: tuple[int, int]) -> None:
    successes, n = sample
    low, high = wilson_interval(successes, n)
    mirror_low, mirror_high = wilson_interval(n - successes, n)
    assert low == pytest.approx(1 - mirror_high, abs=1e-12)
    assert high == pytest.approx(1 - mirror_low, abs=1e-12)


# -- NPS ----------------------------------------------------------------------------------------
def test_nps_known_value() -> None:
    # 50 promoters, 30 passives, 20 detractors: NPS 30. Adjusted Wald: n'=103,
    # p'=50.75/103, d'=20.75/103, centre 29.13, half-width 15.07 = 1.96*sqrt((p'+d'-(p'-d')^2)/n').
    low, high = nps_interval(50, 30, 20)
    p, d = 50.75 / 103, 20.75 / 103
    half = Z95 * math.sqrt((p + d - (p - d) ** 2) / 103)
    assert low == pytest.approx(100 * (p - d - half))
    assert high == pytest.approx(100 * (p - d + half))
    assert low < 30 < high
    assert low == pytest.approx(14.05, abs=0.01) and high == pytest.approx(44.20, abs=0.01)


def test_nps_empty_sample_is_whole_range() -> None:
    assert nps_interval(0, 0, 0) == (-100.0, 100.0)


def test_nps_all_promoters_reaches_100() -> None:
    low, high = nps_interval(1000, 0, 0)
    assert high == 100.0 and 99.0 < low < 100.0


@given(trinomial())
def test_nps_bounds_in_range_and_contain_point(sample: tuple[int, int, int]) -> None:
    promoters, passives, detractors = sample
    n = promoters + passives + detractors
    low, high = nps_interval(promoters, passives, detractors)
    assert -100.0 <= low <= high <= 100.0
    if n:
        point = 100.0 * (promoters - detractors) / n
        assert low <= point <= high
        assert high - low > 0


@given(trinomial(), st.integers(min_value=2, max_value=50))
@settings(max_examples=300)
def test_nps_shrinks_as_the_sample_grows(sample: tuple[int, int, int], k: int) -> None:
    promoters, passives, detractors = sample
    if promoters + passives + detractors == 0:
        return
    low1, high1 = nps_interval(promoters, passives, detractors)
    low2, high2 = nps_interval(promoters * k, passives * k, detractors * k)
    assert high2 - low2 <= high1 - low1 + 1e-9


@given(trinomial())
def test_nps_mirror(sample: tuple[int, int, int]) -> None:
    promoters, passives, detractors = sample
    low, high = nps_interval(promoters, passives, detractors)
    mirror_low, mirror_high = nps_interval(detractors, passives, promoters)
    assert low == pytest.approx(-mirror_high, abs=1e-9)
    assert high == pytest.approx(-mirror_low, abs=1e-9)


# -- confidence levels and KPI bindings --------------------------------------------------------
def test_z_for_levels() -> None:
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert z_for(0.90) == pytest.approx(1.644854, abs=1e-6)
    assert z_for(0.99) == pytest.approx(2.575829, abs=1e-6)
    for bad in (0.0, 1.0, -0.5, 95.0):
        with pytest.raises(ValueError):
            z_for(bad)


def vec(**values: float) -> list[float]:
    out = kpi.zero_counts()
    for name, value in values.items():
        out[kpi.COUNTERS.index(name)] = value
    return out


def test_kpi_interval_uses_the_ratio_denominator() -> None:
    counts = vec(ces_responses=40, ces_easy=10, ces_high_effort=20, contacts=0)
    assert kpi_interval("ces_high_effort_ratio", counts) == wilson_interval(20, 40)
    assert kpi_interval("ces_easy_ratio", counts) == wilson_interval(10, 40)
    assert sample_size("ces_high_effort_ratio", counts) == 40
    assert kpi_interval("repeat_contact_ratio", counts) is None  # empty denominator
    assert kpi_interval("csat_average", vec(csat_responses=3, csat_score_sum=12)) is None
    nps = vec(nps_responses=10, nps_promoters=5, nps_passives=3, nps_detractors=2)
    assert kpi_interval("nps_score", nps) == nps_interval(5, 3, 2)
    assert sample_size("nps_score", nps) == 10


def test_every_ratio_kpi_has_a_sample_definition() -> None:
    derived = kpi.derived_kpis(kpi.zero_counts())
    assert set(stats.KPI_SAMPLES) == set(derived)
    assert set(stats.INTERVAL_KPIS) >= {
        "csat_ratio",
        "ces_easy_ratio",
        "ces_high_effort_ratio",
        "nps_score",
        "repeat_contact_ratio",
        "transfer_ratio",
    }


@given(
    st.sampled_from(sorted(stats.INTERVAL_KPIS)),
    st.lists(st.integers(0, 500), min_size=kpi.N_COUNTERS, max_size=kpi.N_COUNTERS),
)
def test_kpi_interval_contains_the_exported_kpi(key: str, raw: list[int]) -> None:
    counts: list[float] = list(raw)
    # Make the vector consistent the way the processor keeps it (numerators <= denominators).
    counts[kpi.NPS_RESPONSES] = (
        counts[kpi.NPS_PROMOTERS] + counts[kpi.NPS_PASSIVES] + counts[kpi.NPS_DETRACTORS]
    )
    for part, whole in (
        (kpi.ANSWERED_WITHIN_THRESHOLD, kpi.ANSWERED_CONTACTS),
        (kpi.SHORT_ABANDONED_CONTACTS, kpi.ABANDONED_CONTACTS),
    ):
        counts[part] = min(counts[part], counts[whole])
    counts[kpi.WAITS_ENDED] = counts[kpi.ANSWERED_CONTACTS] + counts[kpi.ABANDONED_CONTACTS]
    spec = stats.KPI_SAMPLES[key]
    if isinstance(spec.numerator, int) and isinstance(spec.denominator, int):
        counts[spec.numerator] = min(counts[spec.numerator], counts[spec.denominator])
    value = kpi.derived_kpis(counts)[key]
    interval = kpi_interval(key, counts)
    if value is None:
        assert interval is None
        return
    assert interval is not None
    assert interval[0] <= value <= interval[1]
