"""Settings: defaults, CXSTREAM_* environment variables, and errors that name the variable."""

from __future__ import annotations

import os

import pytest

from stream.config.settings import ENV_PREFIX, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment without any CXSTREAM_ variable."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def _error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    return str(info.value)


# -- defaults ----------------------------------------------------------------------
def test_defaults() -> None:
    s = load_settings()
    assert ENV_PREFIX == "CXSTREAM_"
    assert s.broker == "kafka://127.0.0.1:9092"
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert s.web_port == 6066
    assert s.topic_interactions == "cx.interactions"
    assert s.topic_surveys == "cx.surveys"
    assert s.topic_deadletter == "cx.deadletter"
    assert s.window_list == [("15m", 900), ("1h", 3600), ("24h", 86_400)]
    assert s.bucket_seconds == 60
    assert s.clock == "wall"
    assert s.max_future_skew == 300
    assert s.join_grace == 120
    assert s.dedup_horizon == 3600
    assert s.contact_ttl == 2 * 86_400
    assert s.batch_within == pytest.approx(0.1)
    assert s.dedup_max_ids == 500_000


def test_secret_is_not_in_repr() -> None:
    s = load_settings(redis_url="redis://:hunter2@cache:6379/0")
    assert "hunter2" not in repr(s)
    assert s.redis_url.get_secret_value() == "redis://:hunter2@cache:6379/0"


# -- environment variables ---------------------------------------------------------------
def test_env_vars_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSTREAM_WEB_PORT", "9100")
    monkeypatch.setenv("CXSTREAM_BROKER", "kafka://k1:9092;k2:9093")
    monkeypatch.setenv("CXSTREAM_REDIS_URL", "rediss://cache:6380/2")
    monkeypatch.setenv("CXSTREAM_WINDOWS", "5m,1h")
    monkeypatch.setenv("CXSTREAM_BUCKET_SIZE", "5m")
    monkeypatch.setenv("CXSTREAM_CLOCK", "event")
    monkeypatch.setenv("CXSTREAM_TOPIC_SURVEYS", "other.surveys")
    monkeypatch.setenv("CXSTREAM_CREATE_TOPICS", "false")
    s = load_settings()
    assert s.web_port == 9100
    assert s.bootstrap_servers == "k1:9092,k2:9093"
    assert s.redis_url.get_secret_value() == "rediss://cache:6380/2"
    assert s.window_list == [("5m", 300), ("1h", 3600)]
    assert s.bucket_seconds == 300
    assert s.clock == "event"
    assert s.topic_surveys == "other.surveys"
    assert s.create_topics is False


def test_unprefixed_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_PORT", "1234")
    assert load_settings().web_port == 6066


def test_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSTREAM_WEB_PORT", "9100")
    assert load_settings(web_port=9200).web_port == 9200


# -- window labels -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ("24h", [("24h", 86_400)]),
        ("1440m", [("1440m", 86_400)]),
        ("24h,15m,1h", [("15m", 900), ("1h", 3600), ("24h", 86_400)]),
        (" 15m , 1h ,", [("15m", 900), ("1h", 3600)]),
        ("15m,900s", [("15m", 900)]),  # same length twice: first label wins
        ("3600", [("1h", 3600)]),  # bare seconds get a readable label
        ("7d", [("7d", 604_800)]),
    ],
)
def test_window_labels_kept_as_written(windows: str, expected: list[tuple[str, int]]) -> None:
    assert load_settings(windows=windows).window_list == expected


def test_window_from_env_keeps_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSTREAM_WINDOWS", "24h")
    assert load_settings().window_list == [("24h", 86_400)]


# -- bad values name their variable ------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CXSTREAM_WEB_PORT", "0"),
        ("CXSTREAM_WEB_PORT", "65536"),
        ("CXSTREAM_WEB_PORT", "http"),
        ("CXSTREAM_BROKER", "localhost"),
        ("CXSTREAM_BROKER", "kafka://host:port"),
        ("CXSTREAM_BROKER", "kafka://:9092"),
        ("CXSTREAM_REDIS_URL", "http://cache:6379"),
        ("CXSTREAM_WINDOWS", ","),
        ("CXSTREAM_WINDOWS", "15m,soon"),
        ("CXSTREAM_WINDOWS", "0m"),
        ("CXSTREAM_WINDOWS", "inf"),
        ("CXSTREAM_WINDOWS", "90s"),  # not a multiple of the 1m bucket
        ("CXSTREAM_BUCKET_SIZE", "500ms"),
        ("CXSTREAM_BUCKET_SIZE", "0"),
        ("CXSTREAM_BUCKET_SIZE", "7x"),
        ("CXSTREAM_BUCKET_SIZE", "nan"),
        ("CXSTREAM_BUCKET_SIZE", "7m"),  # 15m is not a multiple of 7m
        ("CXSTREAM_JOIN_GRACE", "-1"),
        ("CXSTREAM_JOIN_GRACE", "nan"),
        ("CXSTREAM_MAX_FUTURE_SKEW", "soon"),
        ("CXSTREAM_CLOCK", "local"),
        ("CXSTREAM_STORE", "redis://"),
        ("CXSTREAM_DEDUP_MAX_IDS", "10"),
        ("CXSTREAM_PARTITIONS", "0"),
        ("CXSTREAM_LOG_LEVEL", "verbose"),
    ],
)
def test_bad_value_names_env_var(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    message = _error(monkeypatch, name, value)
    assert name in message


def test_every_bad_variable_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSTREAM_WEB_PORT", "0")
    monkeypatch.setenv("CXSTREAM_BROKER", "nohost")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "CXSTREAM_WEB_PORT" in str(info.value)
    assert "CXSTREAM_BROKER" in str(info.value)


def test_settings_error_is_value_error() -> None:
    assert issubclass(SettingsError, ValueError)
    with pytest.raises(ValueError):
        load_settings(web_port=-1)


def test_bad_override_names_env_var() -> None:
    with pytest.raises(SettingsError, match="CXSTREAM_WINDOWS"):
        load_settings(windows="soon")


def test_redis_password_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _error(monkeypatch, "CXSTREAM_REDIS_URL", "http://:hunter2@cache:6379")
    assert "CXSTREAM_REDIS_URL" in message
    assert "hunter2" not in message


def test_model_level_error_does_not_echo_other_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSTREAM_REDIS_URL", "redis://:hunter2@cache:6379/0")
    message = _error(monkeypatch, "CXSTREAM_BUCKET_SIZE", "0")
    assert "CXSTREAM_BUCKET_SIZE" in message
    assert "hunter2" not in message


def test_zero_skew_is_allowed() -> None:
    assert load_settings(max_future_skew="0").max_future_skew == 0


def test_settings_class_reads_env_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSTREAM_APP_ID", "cx-test")
    assert Settings().app_id == "cx-test"


def test_durations_are_seconds_in_code_and_text_when_printed() -> None:
    s = load_settings(join_grace="90s", batch_within="250ms", contact_ttl="2d")
    assert (s.join_grace, s.batch_within, s.contact_ttl) == (90.0, 0.25, 172_800.0)
    dumped = s.model_dump()  # what `cxstream config` prints
    assert (dumped["join_grace"], dumped["batch_within"], dumped["contact_ttl"]) == ("90s", "250ms", "2d")
    assert load_settings(**{k: dumped[k] for k in ("join_grace", "batch_within")}).join_grace == 90.0


@pytest.mark.parametrize("value", ["soon", "-5s", "0m", "nan"])
def test_bad_duration_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="CXSTREAM_JOIN_GRACE"):
        load_settings(join_grace=value)
