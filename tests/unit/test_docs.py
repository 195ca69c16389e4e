"""The reference docs are generated from the code and must be committed up to date."""

from __future__ import annotations

from pathlib import Path

from stream.domain.metrics_catalog import ALL_METRICS
from stream.tools.docgen import metrics_markdown, platform_mappings_markdown, settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_settings_page_is_current() -> None:
    assert (ROOT / "docs/settings.md").read_text() == settings_markdown(), (
        "run `python -m stream.tools.docgen`"
    )


def test_metrics_page_is_current() -> None:
    assert (ROOT / "docs/metrics.md").read_text() == metrics_markdown(), "run `python -m stream.tools.docgen`"


def test_platform_mappings_page_is_current() -> None:
    assert (ROOT / "docs/platform-mappings.md").read_text() == platform_mappings_markdown(), (
        "run `python -m stream.tools.docgen`"
    )


def test_every_contract_metric_is_in_the_catalog() -> None:
    contract = (ROOT / "docs/contract.md").read_text()
    names = {spec.name for spec in ALL_METRICS}
    for name in (
        "cx_csat_responses cx_csat_satisfied cx_csat_ratio cx_csat_average cx_nps_responses "
        "cx_nps_promoters cx_nps_passives cx_nps_detractors cx_nps_score cx_ces_responses cx_ces_easy "
        "cx_ces_high_effort cx_ces_easy_ratio cx_ces_high_effort_ratio cx_contacts cx_repeat_contacts "
        "cx_repeat_contact_ratio cx_channel_switches cx_channel_switch_ratio cx_contacts_ended "
        "cx_transferred_contacts cx_transfer_ratio cx_survey_response_ratio cx_events_total"
    ).split():
        assert name in contract
        assert name in names


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme[: readme.index("```", readme.index("```") + 3)]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_documents_every_contract_kpi_with_promql() -> None:
    readme = (ROOT / "README.md").read_text()
    for spec in ALL_METRICS:
        if spec.contract:
            assert f"`{spec.name}" in readme, f"README does not document {spec.name}"
    assert readme.count("sum(") >= 10
