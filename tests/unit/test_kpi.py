"""KPI math (stream.domain.kpi): classification boundaries and ratios from counts."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.domain import kpi
from stream.domain.kpi import (
    COUNTERS,
    N_COUNTERS,
    add_into,
    add_survey,
    ces_is_easy,
    ces_is_high_effort,
    csat_is_satisfied,
    derived_kpis,
    nps_category,
    sum_counts,
    survey_response_ratios,
    zero_counts,
)


def counts(**values: float) -> list[float]:
    vector = zero_counts()
    for name, value in values.items():
        vector[COUNTERS.index(name)] = value
    return vector


def one(metric: str, score: int, scale: str | None = None) -> list[float]:
    vector = zero_counts()
    add_survey(vector, metric, score, scale)
    return vector


# -- layout ------------------------------------------------------------------------------
def test_layout_is_append_only_prefix() -> None:
    """Stored vectors are positional: the contract counters keep their indexes."""
    assert COUNTERS[:15] == (
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
    )
    assert len(set(COUNTERS)) == N_COUNTERS
    for index, name in enumerate(COUNTERS):
        assert getattr(kpi, name.upper()) == index


def test_zero_counts_is_fresh() -> None:
    a, b = zero_counts(), zero_counts()
    a[0] = 1
    assert b[0] == 0
    assert len(a) == N_COUNTERS


# -- classification boundaries -------------------------------------------------------------
@pytest.mark.parametrize(("score", "satisfied"), [(1, False), (2, False), (3, False), (4, True), (5, True)])
def test_csat_top2box(score: int, satisfied: bool) -> None:
    assert csat_is_satisfied(score) is satisfied
    vector = one("csat", score)
    assert vector[kpi.CSAT_RESPONSES] == 1
    assert vector[kpi.CSAT_SATISFIED] == int(satisfied)
    assert vector[kpi.CSAT_SCORE_SUM] == score


@pytest.mark.parametrize(
    ("score", "category"),
    [(0, "d"), (5, "d"), (6, "d"), (7, "p"), (8, "p"), (9, "P"), (10, "P")],
)
def test_nps_categories(score: int, category: str) -> None:
    expected = {"d": kpi.NPS_DETRACTORS, "p": kpi.NPS_PASSIVES, "P": kpi.NPS_PROMOTERS}[category]
    assert nps_category(score) == expected
    vector = one("nps", score)
    assert vector[kpi.NPS_RESPONSES] == 1
    assert vector[expected] == 1
    assert vector[kpi.NPS_PROMOTERS] + vector[kpi.NPS_PASSIVES] + vector[kpi.NPS_DETRACTORS] == 1


@pytest.mark.parametrize(
    ("scale", "score", "easy", "high"),
    [
        ("agree_1_7", 1, False, True),
        ("agree_1_7", 3, False, True),
        ("agree_1_7", 4, False, False),  # neutral
        ("agree_1_7", 5, True, False),
        ("agree_1_7", 7, True, False),
        ("effort_1_5", 1, True, False),
        ("effort_1_5", 2, True, False),
        ("effort_1_5", 3, False, False),  # neutral
        ("effort_1_5", 4, False, True),
        ("effort_1_5", 5, False, True),
    ],
)
def test_ces_classification(scale: str, score: int, easy: bool, high: bool) -> None:
    assert ces_is_easy(score, scale) is easy
    assert ces_is_high_effort(score, scale) is high
    vector = one("ces", score, scale)
    assert vector[kpi.CES_RESPONSES] == 1
    assert vector[kpi.CES_EASY] == int(easy)
    assert vector[kpi.CES_HIGH_EFFORT] == int(high)


def test_ces_without_scale_is_agree_1_7() -> None:
    assert one("ces", 5, None) == one("ces", 5, "agree_1_7")
    assert one("ces", 2, None)[kpi.CES_HIGH_EFFORT] == 1  # on effort_1_5 it would be easy


def test_add_survey_touches_only_its_metric() -> None:
    vector = one("csat", 5)
    assert sum(vector) == 1 + 1 + 5
    assert vector[kpi.NPS_RESPONSES] == vector[kpi.CES_RESPONSES] == vector[kpi.CONTACTS] == 0


# -- derived ratios --------------------------------------------------------------------------
def test_all_none_when_empty() -> None:
    assert all(value is None for value in derived_kpis(zero_counts()).values())
    assert survey_response_ratios(zero_counts()) == {"csat": None, "nps": None, "ces": None}


def test_derived_keys_match_contract_names() -> None:
    keys = set(derived_kpis(zero_counts()))
    contract = {
        "csat_ratio",
        "csat_average",
        "nps_score",
        "ces_easy_ratio",
        "ces_high_effort_ratio",
        "repeat_contact_ratio",
        "channel_switch_ratio",
        "transfer_ratio",
    }
    assert contract <= keys


def test_derived_values() -> None:
    c = counts(
        csat_responses=4,
        csat_satisfied=3,
        csat_score_sum=17,
        nps_responses=10,
        nps_promoters=5,
        nps_passives=3,
        nps_detractors=2,
        ces_responses=8,
        ces_easy=6,
        ces_high_effort=1,
        contacts=20,
        repeat_checked_contacts=20,
        repeat_contacts=5,
        channel_switches=2,
        contacts_ended=16,
        transferred_contacts=4,
        handle_seconds_sum=900,
        handle_count=3,
        resolution_reported=10,
        resolved=7,
    )
    d = derived_kpis(c)
    assert d["csat_ratio"] == pytest.approx(0.75)
    assert d["csat_average"] == pytest.approx(4.25)
    assert d["nps_score"] == pytest.approx(30.0)
    assert d["ces_easy_ratio"] == pytest.approx(0.75)
    assert d["ces_high_effort_ratio"] == pytest.approx(0.125)
    assert d["repeat_contact_ratio"] == pytest.approx(0.25)
    assert d["channel_switch_ratio"] == pytest.approx(0.1)
    assert d["transfer_ratio"] == pytest.approx(0.25)
    assert d["handle_seconds_average"] == pytest.approx(300)
    assert d["resolved_ratio"] == pytest.approx(0.7)
    r = survey_response_ratios(c)
    assert r == {"csat": pytest.approx(0.25), "nps": pytest.approx(10 / 16), "ces": pytest.approx(0.5)}


@pytest.mark.parametrize(
    ("promoters", "passives", "detractors", "score"),
    [(1, 0, 0, 100.0), (0, 0, 1, -100.0), (0, 1, 0, 0.0), (1, 0, 1, 0.0), (3, 1, 0, 75.0), (1, 1, 2, -25.0)],
)
def test_nps_score(promoters: int, passives: int, detractors: int, score: float) -> None:
    c = counts(
        nps_responses=promoters + passives + detractors,
        nps_promoters=promoters,
        nps_passives=passives,
        nps_detractors=detractors,
    )
    assert derived_kpis(c)["nps_score"] == pytest.approx(score)


def test_each_ratio_none_only_for_its_own_empty_denominator() -> None:
    d = derived_kpis(counts(csat_responses=2, csat_satisfied=0, csat_score_sum=4))
    assert d["csat_ratio"] == 0.0  # zero is a value, not "absent"
    assert d["csat_average"] == 2.0
    assert d["nps_score"] is None
    assert d["ces_easy_ratio"] is None
    assert d["transfer_ratio"] is None
    d = derived_kpis(counts(repeat_checked_contacts=3))
    assert d["repeat_contact_ratio"] == 0.0
    assert d["channel_switch_ratio"] == 0.0
    assert d["transfer_ratio"] is None
    # cx_contacts is not the repeat ratio's denominator: it may be counted on another worker.
    assert derived_kpis(counts(contacts=3, repeat_contacts=1))["repeat_contact_ratio"] is None


def test_response_ratio_needs_ended_contacts() -> None:
    assert survey_response_ratios(counts(csat_responses=5)) == {"csat": None, "nps": None, "ces": None}
    assert survey_response_ratios(counts(contacts_ended=4)) == {"csat": 0.0, "nps": 0.0, "ces": 0.0}
    # More responses than ended contacts (surveys for contacts ended before the window) is > 1.
    assert survey_response_ratios(counts(contacts_ended=2, nps_responses=3))["nps"] == pytest.approx(1.5)


# -- summing -------------------------------------------------------------------------------
def test_sum_counts_with_older_shorter_vectors() -> None:
    full = counts(csat_responses=1, resolved=2, contacts=3)
    old = [1, 1, 4, 0, 0, 0, 0, 0, 0, 0, 5]  # an older layout, only up to "contacts"
    total = sum_counts([full, old, []])
    assert len(total) == N_COUNTERS
    assert total[kpi.CSAT_RESPONSES] == 2
    assert total[kpi.CSAT_SATISFIED] == 1
    assert total[kpi.CSAT_SCORE_SUM] == 4
    assert total[kpi.CONTACTS] == 8
    assert total[kpi.RESOLVED] == 2
    assert total[kpi.CONTACTS_ENDED] == 0


def test_sum_counts_does_not_mutate_inputs() -> None:
    a = counts(contacts=1)
    b = counts(contacts=2)
    total = sum_counts([a, b])
    assert total[kpi.CONTACTS] == 3
    assert a[kpi.CONTACTS] == 1 and b[kpi.CONTACTS] == 2
    assert sum_counts([]) == zero_counts()


def test_add_into_in_place() -> None:
    total = counts(contacts=1)
    add_into(total, [0.5] * N_COUNTERS)
    assert total[kpi.CONTACTS] == 1.5
    assert total[kpi.RESOLVED] == 0.5


@given(st.lists(st.lists(st.integers(0, 1000), max_size=N_COUNTERS), max_size=6))
def test_sum_counts_is_elementwise(parts: list[list[int]]) -> None:
    total = sum_counts(parts)
    for i in range(N_COUNTERS):
        assert total[i] == sum(part[i] for part in parts if i < len(part))


# -- independent oracle -----------------------------------------------------------------------
ANSWERS = st.lists(
    st.one_of(
        st.tuples(st.just("csat"), st.integers(1, 5), st.none()),
        st.tuples(st.just("nps"), st.integers(0, 10), st.none()),
        st.tuples(st.just("ces"), st.integers(1, 7), st.sampled_from([None, "agree_1_7"])),
        st.tuples(st.just("ces"), st.integers(1, 5), st.just("effort_1_5")),
    ),
    max_size=60,
)


def _oracle(answers: list[tuple[str, int, str | None]], ended: int) -> dict[str, Fraction | None]:
    """Contract definitions, computed straight from the raw scores."""
    csat = [s for m, s, _ in answers if m == "csat"]
    nps = [s for m, s, _ in answers if m == "nps"]
    ces = [(s, scale or "agree_1_7") for m, s, scale in answers if m == "ces"]

    def share(hits: int, n: int) -> Fraction | None:
        return Fraction(hits, n) if n else None

    easy = sum(1 for s, scale in ces if (s >= 5 if scale == "agree_1_7" else s <= 2))
    hard = sum(1 for s, scale in ces if (s <= 3 if scale == "agree_1_7" else s >= 4))
    promoters = sum(1 for s in nps if s in (9, 10))
    detractors = sum(1 for s in nps if 0 <= s <= 6)
    return {
        "csat_ratio": share(sum(1 for s in csat if s in (4, 5)), len(csat)),
        "csat_average": share(sum(csat), len(csat)),
        "nps_score": 100 * Fraction(promoters - detractors, len(nps)) if nps else None,
        "ces_easy_ratio": share(easy, len(ces)),
        "ces_high_effort_ratio": share(hard, len(ces)),
        "rate_csat": share(len(csat), ended),
        "rate_nps": share(len(nps), ended),
        "rate_ces": share(len(ces), ended),
    }


@given(ANSWERS, st.integers(0, 50), st.integers(1, 4))
def test_derived_kpis_match_independent_computation(
    answers: list[tuple[str, int, str | None]], ended: int, chunks: int
) -> None:
    # Count into several partial vectors (buckets/partitions) and sum them, as the exporter does.
    parts = [zero_counts() for _ in range(chunks)]
    for i, (metric, score, scale) in enumerate(answers):
        add_survey(parts[i % chunks], metric, score, scale)
    parts[0][kpi.CONTACTS_ENDED] = ended
    total = sum_counts(parts)
    derived = derived_kpis(total)
    rates = survey_response_ratios(total)
    expected = _oracle(answers, ended)
    for key in ("csat_ratio", "csat_average", "nps_score", "ces_easy_ratio", "ces_high_effort_ratio"):
        if expected[key] is None:
            assert derived[key] is None, key
        else:
            assert derived[key] == pytest.approx(float(expected[key]), abs=1e-9), key  # type: ignore[arg-type]
    for metric in ("csat", "nps", "ces"):
        want = expected[f"rate_{metric}"]
        assert rates[metric] == (None if want is None else pytest.approx(float(want)))
    if derived["nps_score"] is not None:
        assert -100.0 <= derived["nps_score"] <= 100.0
    for key in ("csat_ratio", "ces_easy_ratio", "ces_high_effort_ratio"):
        if derived[key] is not None:
            assert 0.0 <= derived[key] <= 1.0  # type: ignore[operator]
    if derived["ces_easy_ratio"] is not None:
        assert derived["ces_easy_ratio"] + derived["ces_high_effort_ratio"] <= 1.0 + 1e-12  # type: ignore[operator]
