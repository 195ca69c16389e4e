"""CXSTREAM_QUEUES_FILE (stream.config.queues): per-queue targets over the defaults, bad files refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream.config.queues import (
    DEFAULT_TARGET,
    QueuesFileError,
    defaults_of,
    load_queue_targets,
    parse_queue_targets,
)
from stream.config.settings import ENV_PREFIX, load_settings

BERLIN_MONDAY_NOON = 1_795_777_200  # 2026-11-30T11:00:00Z = 12:00 in Berlin, a Monday
SUNDAY = 1_795_341_600  # 2026-11-22T10:00:00Z


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_named_queues_override_the_defaults_field_by_field(tmp_path: Path) -> None:
    path = tmp_path / "queues.yml"
    path.write_text(
        "queues:\n"
        "  billing: {service_level_threshold: 30s, short_abandon: 10s}\n"
        "  sales: {service_level_target: 0.9, longest_wait_limit: 1m}\n"
    )
    settings = load_settings(queues_file=path, service_level_threshold="25s")
    targets = load_queue_targets(settings)
    billing, sales, other = targets.of("billing"), targets.of("sales"), targets.of("anything")
    assert (billing.service_level_threshold_s, billing.short_abandon_s) == (30.0, 10.0)
    assert billing.service_level_target == 0.8  # the default
    assert (sales.service_level_threshold_s, sales.service_level_target, sales.longest_wait_limit_s) == (
        25.0,
        0.9,
        60.0,
    )
    assert other == targets.default and other.service_level_threshold_s == 25.0


def test_business_hours_in_the_queue_time_zone() -> None:
    targets = parse_queue_targets(
        "queues:\n  support:\n"
        "    business_hours: {open: '08:00', close: '18:00'}\n    timezone: Europe/Berlin\n",
        defaults_of(load_settings()),
    )
    support = targets.of("support")
    assert support.is_open(BERLIN_MONDAY_NOON)
    assert not support.is_open(BERLIN_MONDAY_NOON + 6 * 3600)  # 18:00 local: closed
    assert not support.is_open(SUNDAY)  # weekdays only by default
    assert targets.of("other").is_open(SUNDAY)  # no hours: always open


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "queues: {a: {service_level_threshold: soon}}",
            "queue 'a': field 'service_level_threshold': not a duration",
        ),
        (
            "queues: {a: {treshold: 20s}}",
            "queue 'a': field 'treshold': unknown field (valid: service_level_threshold",
        ),
        ("queue: {}", "unknown key (the file has one key, 'queues')"),
        ("queues: {a: {business_hours: {open: '18:00', close: '08:00'}}}", "close must be after open"),
        (
            "queues: {a: {business_hours: {days: [funday], open: '08:00', close: '18:00'}}}",
            "field 'business_hours.days.0'",
        ),
        ("queues: {a: {timezone: Mars/Olympus}}", "not an IANA time zone"),
        ("queues: {a: {service_level_target: 80}}", "field 'service_level_target'"),
        ("queues: [a, b]", "field 'queues'"),
        ("queues: {a: 1", "not valid YAML"),
        ("- a", "expected a mapping with one key, 'queues'"),
    ],
)
def test_a_bad_file_names_the_queue_and_field(text: str, message: str) -> None:
    with pytest.raises(QueuesFileError) as error:
        parse_queue_targets(text, defaults_of(load_settings()), source="q.yml")
    assert str(error.value).startswith("queues file q.yml: ") and message in str(error.value), str(
        error.value
    )


def test_a_missing_file_fails_fast(tmp_path: Path) -> None:
    settings = load_settings(queues_file=tmp_path / "nope.yml")
    with pytest.raises(QueuesFileError, match="cannot read it"):
        load_queue_targets(settings)


def test_the_default_target_matches_the_settings_defaults() -> None:
    assert defaults_of(load_settings()) == DEFAULT_TARGET


def test_the_worker_refuses_a_bad_queues_file_before_it_connects(tmp_path: Path) -> None:
    import subprocess
    import sys

    from stream.embedded import free_port

    bad = tmp_path / "queues.yml"
    bad.write_text("queues:\n  sales: {treshold: 20s}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(CXSTREAM_QUEUES_FILE=str(bad), CXSTREAM_BROKER=f"kafka://127.0.0.1:{free_port()}")
    result = subprocess.run(
        [sys.executable, "-m", "stream", "worker"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "queue 'sales': field 'treshold': unknown field" in result.stderr
    assert "not reachable" not in result.stderr  # it never tried the broker
