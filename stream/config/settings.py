"""All configuration in one pydantic-settings class.

Every field is an environment variable with the ``CXSTREAM_`` prefix (e.g.
``CXSTREAM_WEB_PORT``). Invalid values fail at start-up with the variable's
name, so a typo never turns into a worker that runs with a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.config.timeutil import LONGEST_DAY_S, TODAY, format_duration, parse_duration

ENV_PREFIX = "CXSTREAM_"


def _to_seconds(value: object) -> float:
    """A duration setting as written (``500ms``, ``30s``, ``15m``, ``24h``, ``7d``) -> seconds.

    Zero only when written as ``0`` or ``0s`` (a typo like ``0m`` for ``10m`` is refused).
    """
    seconds = parse_duration(value)  # type: ignore[arg-type]  # its ValueError names the forms
    if seconds <= 0 and value not in ("0", "0s", 0, 0.0):
        raise ValueError("must be positive")
    return seconds


#: A duration setting: seconds (float) in code, written and printed as text (``2m``).
Duration = Annotated[float, BeforeValidator(_to_seconds), PlainSerializer(format_duration, return_type=str)]


class SettingsError(ValueError):
    """Raised with a readable message naming each bad environment variable."""


class Settings(BaseSettings):
    """cxstream settings; see docs/settings.md for the reference table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=False)

    # --- where things are -------------------------------------------------
    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap servers, e.g. kafka://host1:9092;host2:9092.",
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL for alert state, the evaluator lease and the partition views the "
        "wallboard reads (redis:// or rediss://).",
    )
    app_id: str = Field("cxstream", description="Faust app id: consumer group and topic prefix.")
    web_host: str = Field("0.0.0.0", description="Interface the worker's web server binds to.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port for /metrics and /healthz.")
    data_dir: Path = Field(Path(".cxstream-data"), description="Local state (RocksDB, logs).")
    store: str = Field("memory://", description="Faust table store: memory:// or rocksdb:// (needs extra).")

    # --- topics -----------------------------------------------------------
    topic_interactions: str = Field("cx.interactions", description="Interaction events topic.")
    topic_surveys: str = Field("cx.surveys", description="Survey responses topic.")
    topic_deadletter: str = Field("cx.deadletter", description="Rejected input, with reason.")
    partitions: int = Field(
        4, ge=1, le=1024, description="Partitions of the input topics (and of the state changelog)."
    )
    replication_factor: int = Field(1, ge=1, description="Replication for topics cxstream creates.")
    create_topics: bool = Field(True, description="Create missing input topics at start-up.")
    deadletter_max_bytes: int = Field(
        1_040_000,
        ge=1024,
        description="Dead-letter copies larger than this are truncated (header cx-truncated); "
        "keep it under the broker's message.max.bytes (1 MiB by default).",
    )

    # --- windows and state ------------------------------------------------
    windows: str = Field(
        "15m,1h,24h",
        description="Windows, comma-separated: rolling durations, and `today` (from local "
        "midnight in CXSTREAM_TIMEZONE until now; needs a bucket size dividing 15m).",
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of the `today` window's midnight, e.g. Europe/Berlin."
    )
    bucket_size: Duration = Field(
        "1m", validate_default=True, description="Event-time bucket size; divides every window."
    )
    clock: Literal["wall", "event"] = Field(
        "wall",
        description="Window end: wall clock (live) or the newest event time seen (replay).",
    )
    max_future_skew: Duration = Field(
        "5m", validate_default=True, description="Events further in the future are rejected."
    )
    dedup_horizon: Duration = Field(
        "1h", validate_default=True, description="How long an event_id is remembered."
    )
    dedup_max_ids: int = Field(
        500_000, ge=1000, description="Upper bound of remembered event_ids per partition."
    )
    join_grace: Duration = Field(
        "2m",
        validate_default=True,
        description="How long a survey or end waits for its contact_started before "
        "being counted under queue/channel 'unknown'.",
    )
    contact_ttl: Duration = Field(
        "2d", validate_default=True, description="Contact state is dropped this long after its start."
    )
    max_label_length: int = Field(64, ge=8, le=1024, description="Longest queue/channel/team label accepted.")

    # --- queues: waits, service level, agents (contract v2) ------------------
    topic_agents: str = Field("cx.agents", description="Agent state events topic (keyed by agent_id).")
    service_level_threshold: Duration = Field(
        "20s",
        validate_default=True,
        description="A wait answered within this time (wait <= threshold) counts towards the service "
        "level; per queue in CXSTREAM_QUEUES_FILE.",
    )
    short_abandon: Duration = Field(
        "5s",
        validate_default=True,
        description="An abandon after a shorter wait (wait < this) is a short abandon, left out of the "
        "service level and abandon ratio; per queue in CXSTREAM_QUEUES_FILE.",
    )
    service_level_policy: Literal["answered_and_abandoned", "answered_only", "all_waits"] = Field(
        "answered_and_abandoned",
        description="What cx_service_level_ratio divides by: answered + abandoned - short abandons "
        "(answered_and_abandoned), answered waits (answered_only), or every ended wait (all_waits).",
    )
    service_level_target: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Service level a queue aims at (0..1), for the wallboard's colours and the default "
        "alert rule; per queue in CXSTREAM_QUEUES_FILE.",
    )
    longest_wait_limit: Duration = Field(
        "2m",
        validate_default=True,
        description="Longest wait a queue tolerates, for the wallboard's colours and the default alert "
        "rule; per queue in CXSTREAM_QUEUES_FILE.",
    )
    queues_file: Path | None = Field(
        None,
        description="YAML file of per-queue targets (service_level_threshold, short_abandon, "
        "service_level_target, longest_wait_limit, business_hours, timezone); see docs/queues.md.",
    )

    # --- batching and Faust tuning ----------------------------------------
    batch_max: int = Field(2000, ge=1, description="Most events handled per agent batch.")
    batch_within: Duration = Field(
        "100ms", validate_default=True, description="Longest wait to fill a batch."
    )
    session_timeout: Duration = Field(
        "10s", validate_default=True, description="Kafka consumer group session timeout."
    )
    producer_buffer_max: int = Field(
        100_000, ge=100, description="Faust producer buffer size (Faust's default is 100)."
    )
    tansu_compat: bool = Field(
        False,
        description="Work around the tansu broker's ListOffsets(latest) answer during "
        "state recovery. Set automatically in embedded mode; never needed on Apache Kafka.",
    )
    tick_interval: Duration = Field(
        "5s", validate_default=True, description="How often idle partitions expire state."
    )
    fetch_max_wait: Duration = Field(
        "100ms",
        validate_default=True,
        description="Longest a consumer fetch waits for data while traffic is at or above "
        "CXSTREAM_FETCH_IDLE_RATE (Faust hard-codes 1.5s). Kafka answers as soon as data arrives, "
        "so it sets how often a consumer asks when there is none.",
    )
    fetch_max_wait_idle: Duration = Field(
        "500ms",
        validate_default=True,
        description="The fetch long-poll below CXSTREAM_FETCH_IDLE_RATE (and up to 256 KiB of data "
        "asked for before Kafka answers): a quiet worker asks twice a second instead of ten times, "
        "and its latency grows by at most the difference. Same as CXSTREAM_FETCH_MAX_WAIT: no pacing.",
    )
    fetch_idle_rate: float = Field(
        1000.0,
        ge=0,
        description="Input events/s below which the worker uses CXSTREAM_FETCH_MAX_WAIT_IDLE "
        "(measured over the last second of fetches); 0: always CXSTREAM_FETCH_MAX_WAIT.",
    )

    # --- high-effort signals (repeat contacts, channel switches) -----------
    repeat_horizon: Duration = Field(
        "7d",
        validate_default=True,
        description="A contact_started within this time of the customer's previous one is a repeat.",
    )
    label_team: bool = Field(False, description="Add a `team` label to KPI series (more series).")
    label_agent: bool = Field(
        False, description="Add an `agent` label to KPI series (many series: mind Prometheus cardinality)."
    )
    max_label_values: int = Field(
        500,
        ge=1,
        description="Distinct values per label (queue, team, agent) and partition before new ones are "
        "exported as 'other' (the first seen are kept, remembered with the partition's state); "
        "labels with an allow-list below are not capped.",
    )
    allowed_queues: str = Field(
        "",
        description="Comma-separated queues exported under their own name, every other as 'other' "
        "(empty: the first CXSTREAM_MAX_LABEL_VALUES of each partition).",
    )
    allowed_teams: str = Field("", description="Like CXSTREAM_ALLOWED_QUEUES, for the team label.")
    allowed_agents: str = Field("", description="Like CXSTREAM_ALLOWED_QUEUES, for the agent label.")

    # --- alerts, Redis partition views -----------------------------------------
    worker_id: str = Field(
        "", description="Name of this worker in partition views and alerts it evaluates; default host:port."
    )
    redis_prefix: str = Field("cx", description="Prefix of every Redis key cxstream writes.")
    alert_rules: Path | None = Field(
        None, description="YAML alert rules file; default: the rules shipped in stream/defaults/."
    )
    alert_interval: Duration = Field(
        "5s",
        validate_default=True,
        description="How often the evaluating worker evaluates the alert rules; its lease lasts twice "
        "this, so a standby takes over within about two intervals.",
    )
    snapshot_interval: Duration = Field(
        "2s",
        validate_default=True,
        description="How often each worker writes the views of its partitions to Redis.",
    )
    min_samples: int = Field(
        20, ge=1, description="Below this many responses a ratio is flagged low-confidence."
    )
    redis_buffer_max: int = Field(
        10_000, ge=10, description="Alert transitions kept while Redis is unreachable."
    )

    # --- wallboard ------------------------------------------------------
    wallboard_host: str = Field("0.0.0.0", description="Interface the wallboard binds to.")
    wallboard_port: int = Field(8080, ge=1, le=65535, description="Port of the wallboard page.")
    wallboard_token: SecretStr | None = Field(
        None, description="If set, the wallboard requires ?token=... or an Authorization: Bearer header."
    )

    # --- platform ingestion: `cxstream ingest` (HTTP) and `cxstream bridge` (Kafka) ----
    ingest_host: str = Field("0.0.0.0", description="Interface the ingest server binds to.")
    ingest_port: int = Field(
        8090, ge=1, le=65535, description="Port of the ingest server (POST /ingest/{format})."
    )
    ingest_token: SecretStr | None = Field(
        None,
        description="Shared bearer token (Authorization: Bearer ...) for formats the vendor does not sign "
        "(Amazon Connect, Genesys Cloud via EventBridge API destinations, your own mappings); also accepted "
        "for a signing vendor whose secret is not set.",
    )
    twilio_auth_token: SecretStr | None = Field(
        None, description="Twilio auth token: verifies X-Twilio-Signature on twilio-taskrouter requests."
    )
    zendesk_webhook_secret: SecretStr | None = Field(
        None, description="Zendesk webhook signing secret: verifies X-Zendesk-Webhook-Signature."
    )
    intercom_client_secret: SecretStr | None = Field(
        None, description="Intercom app client secret: verifies X-Hub-Signature."
    )
    ingest_public_url: str | None = Field(
        None,
        description="The ingest server's URL as the vendor calls it (https://cx.example.com), when a proxy "
        "sits in front: Twilio signs the URL it called.",
    )
    ingest_max_body: int = Field(
        1_048_576, ge=1024, le=16_777_216, description="Largest request body accepted (bytes); larger: 413."
    )
    ingest_read_timeout: Duration = Field(
        "10s", validate_default=True, description="A request whose body takes longer to arrive gets 408."
    )
    ingest_send_timeout: Duration = Field(
        "10s",
        validate_default=True,
        description="How long a request waits for the broker's acknowledgement before answering 503.",
    )
    ingest_max_concurrent: int = Field(
        256, ge=1, le=100_000, description="Requests handled at once; more wait (bounded memory)."
    )
    ingest_mappings: str = Field(
        "",
        description="Your own mapping files (YAML, comma-separated paths): formats to ingest and bridge.",
    )
    bridge_sources: str = Field(
        "",
        description="`cxstream bridge`: source topics and their format, comma-separated "
        "`topic=format` (e.g. connect-ctr=amazon-connect-ctr).",
    )
    bridge_group: str = Field("cxstream-bridge", description="Consumer group of `cxstream bridge`.")

    # --- security -------------------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for Kafka TLS.")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate for Kafka mTLS.")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client key for Kafka mTLS.")

    # --- logging ----------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        hosts = value.split("://", 1)[-1]
        for host in hosts.replace(",", ";").split(";"):
            name, _, port = host.strip().rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"expected kafka://host:port[;host:port], got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://, rediss:// or unix:// URL")
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if not value.startswith(("memory://", "rocksdb://", "rocksdict://")):
            raise ValueError("expected memory:// or rocksdb://")
        return value

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, value: str) -> str:
        parts = [p for p in (s.strip() for s in value.split(",")) if p]
        if not parts:
            raise ValueError("at least one window, e.g. 15m,1h,24h")
        for part in parts:
            if part.replace(" ", "") != TODAY and parse_duration(part) <= 0:
                raise ValueError(f"window {part!r} must be positive")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)"
            ) from None
        return value

    @model_validator(mode="after")
    def _check_windows_fit_buckets(self) -> Settings:
        bucket = self.bucket_seconds
        if bucket < 1 or bucket != int(bucket):
            raise ValueError("CXSTREAM_BUCKET_SIZE must be a whole number of seconds >= 1s")
        for label, seconds in self.window_list:
            if label == TODAY:
                if 900 % bucket:
                    raise ValueError(
                        "CXSTREAM_WINDOWS: today needs a CXSTREAM_BUCKET_SIZE that divides 15m, so every "
                        f"time zone's midnight is a bucket edge (got {format_duration(self.bucket_size)})"
                    )
            elif seconds % bucket:
                raise ValueError(
                    f"CXSTREAM_WINDOWS: window {label} is not a multiple of "
                    f"CXSTREAM_BUCKET_SIZE ({format_duration(self.bucket_size)})"
                )
        return self

    # --- derived values ---------------------------------------------------
    @property
    def window_list(self) -> list[tuple[str, int]]:
        """Windows as (label, seconds), shortest first; the label is written as configured.

        ``today`` has the longest a local day lasts (25 h) as its seconds: what state must
        be kept for it (its bounds come from the calendar, see
        :class:`stream.query.windows.WindowReader`).
        """
        seen: dict[int, str] = {}
        today = False
        for part in self.windows.split(","):
            label = part.strip().replace(" ", "")
            if label == TODAY:
                today = True
            elif label:
                seconds = int(parse_duration(label))
                seen.setdefault(seconds, label if not label.isdigit() else format_duration(seconds))
        windows = [(label, s) for s, label in seen.items()] + ([(TODAY, LONGEST_DAY_S)] if today else [])
        return sorted(windows, key=lambda w: (w[1], w[0] == TODAY))

    @property
    def zone(self) -> ZoneInfo:
        """``CXSTREAM_TIMEZONE`` as a tzinfo."""
        return ZoneInfo(self.timezone)

    @property
    def allowed_label_values(self) -> dict[str, frozenset[str]]:
        """label -> its allow-list, for the labels that have one."""
        lists = {"queue": self.allowed_queues, "team": self.allowed_teams, "agent": self.allowed_agents}
        return {
            label: frozenset(v.strip() for v in text.split(",") if v.strip())
            for label, text in lists.items()
            if text.strip()
        }

    @property
    def label_names(self) -> tuple[str, ...]:
        """Labels of every KPI series besides ``window``: queue, channel [, team][, agent]."""
        return (
            "queue",
            "channel",
            *(["team"] if self.label_team else []),
            *(["agent"] if self.label_agent else []),
        )

    @property
    def bucket_seconds(self) -> int:
        """Bucket size in whole seconds."""
        return int(self.bucket_size)

    @property
    def bootstrap_servers(self) -> str:
        """Broker list as aiokafka wants it: ``host:port,host:port``."""
        hosts = self.broker.split("://", 1)[-1]
        return ",".join(h.strip() for h in hosts.replace(",", ";").split(";") if h.strip())

    @property
    def effective_worker_id(self) -> str:
        """``CXSTREAM_WORKER_ID``, or ``hostname:web_port`` so two local workers differ."""
        import socket

        return self.worker_id or f"{socket.gethostname()}:{self.web_port}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus overrides, or raise SettingsError.

    The message lists every bad setting by its environment-variable name.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            name = f"{ENV_PREFIX}{field.upper()}" if error["loc"] else "settings"
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:
                # A model-level check gets the whole input, secrets included: show no input.
                lines.append(f"  {name}: {message}")
                continue
            shown = "'***'" if error["loc"][0] == "redis_url" else repr(error.get("input"))
            lines.append(f"  {name}: {message} (got {shown})")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from None
