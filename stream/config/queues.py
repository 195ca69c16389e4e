"""Per-queue service targets: the YAML file named by ``CXSTREAM_QUEUES_FILE`` (contract v2).

A contact center sets its service level per queue (billing answers 80 % within 30 s, sales
within 15 s) and forgives a customer who hangs up within a few seconds differently per
queue. The file says so::

    queues:
      billing: {service_level_threshold: 30s, short_abandon: 10s, service_level_target: 0.8}
      sales:   {service_level_threshold: 15s, longest_wait_limit: 2m}
      support:
        business_hours: {days: [mon, tue, wed, thu, fri], open: "08:00", close: "18:00"}
        timezone: Europe/Berlin

Queues not in the file, and fields not given, take the global defaults
(``CXSTREAM_SERVICE_LEVEL_THRESHOLD``, ``CXSTREAM_SHORT_ABANDON``,
``CXSTREAM_SERVICE_LEVEL_TARGET``, ``CXSTREAM_LONGEST_WAIT_LIMIT``). The thresholds decide
how a wait is *counted* (at the end of the wait, per its queue); the target, the longest-wait
limit and the business hours are what the wallboard colours and labels against.

Validated with pydantic at start-up, like the alert rules: a bad file stops the worker with
the file, the queue and the field in the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stream.config.settings import Duration, Settings, SettingsError

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class QueuesFileError(SettingsError):
    """The queues file cannot be used; the message names the file, queue and field."""


class BusinessHours(BaseModel):
    """When a queue is staffed: ``open`` to ``close`` local time on ``days``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    open: time
    close: time

    @model_validator(mode="after")
    def _close_after_open(self) -> BusinessHours:
        if self.close <= self.open:
            raise ValueError("close must be after open (hours past midnight are not supported)")
        return self


Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class QueueFields(BaseModel):
    """One queue's entry in the file; every field optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_level_threshold: Duration | None = None
    short_abandon: Duration | None = None
    service_level_target: Ratio | None = None
    longest_wait_limit: Duration | None = None
    business_hours: BusinessHours | None = None
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("not an IANA time zone name (e.g. Europe/Berlin)") from None
        return value


class QueuesDocument(BaseModel):
    """The whole file: one mapping, ``queues``."""

    model_config = ConfigDict(extra="forbid")

    queues: dict[str, QueueFields] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueTarget:
    """One queue's effective targets (file entry over the global defaults)."""

    service_level_threshold_s: float
    short_abandon_s: float
    service_level_target: float
    longest_wait_limit_s: float
    business_hours: BusinessHours | None = None
    timezone: str = "UTC"

    def is_open(self, epoch_s: float) -> bool:
        """Within business hours at ``epoch_s`` (always, when the queue has none)."""
        hours = self.business_hours
        if hours is None:
            return True
        local = datetime.fromtimestamp(epoch_s, ZoneInfo(self.timezone))
        return WEEKDAYS[local.weekday()] in hours.days and hours.open <= local.time() < hours.close

    def summary(self) -> dict[str, Any]:
        """As the wallboard shows it (JSON-ready)."""
        return {
            "service_level_threshold_s": self.service_level_threshold_s,
            "short_abandon_s": self.short_abandon_s,
            "service_level_target": self.service_level_target,
            "longest_wait_limit_s": self.longest_wait_limit_s,
            "business_hours": None
            if self.business_hours is None
            else self.business_hours.model_dump(mode="json"),
            "timezone": self.timezone,
        }


#: The targets of the settings' defaults (tests/unit/test_queues_file.py keeps them equal), for
#: readers without settings.
DEFAULT_TARGET: Final = QueueTarget(
    service_level_threshold_s=20.0, short_abandon_s=5.0, service_level_target=0.8, longest_wait_limit_s=120.0
)


@dataclass(frozen=True, slots=True)
class QueueTargets:
    """Targets for every queue: the named ones from the file, every other the defaults."""

    default: QueueTarget
    queues: dict[str, QueueTarget] = field(default_factory=dict)

    def of(self, queue: str) -> QueueTarget:
        """The targets of ``queue``."""
        return self.queues.get(queue, self.default)


def defaults_of(settings: Settings) -> QueueTarget:
    """The targets of a queue the file does not name."""
    return QueueTarget(
        service_level_threshold_s=settings.service_level_threshold,
        short_abandon_s=settings.short_abandon,
        service_level_target=settings.service_level_target,
        longest_wait_limit_s=settings.longest_wait_limit,
        timezone=settings.timezone,
    )


def load_queue_targets(settings: Settings) -> QueueTargets:
    """``CXSTREAM_QUEUES_FILE`` over the defaults (no file: the defaults for every queue)."""
    default = defaults_of(settings)
    path = settings.queues_file
    if path is None:
        return QueueTargets(default)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise QueuesFileError(f"queues file {path}: cannot read it: {exc.strerror or exc}") from None
    return parse_queue_targets(text, default, source=str(path))


def parse_queue_targets(text: str, default: QueueTarget, *, source: str = "<queues>") -> QueueTargets:
    """Validate the YAML text of a queues file (see :func:`load_queue_targets`)."""
    where = f"queues file {source}"
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise QueuesFileError(f"{where}: not valid YAML: {exc}") from None
    if document is None:
        return QueueTargets(default)
    if not isinstance(document, dict):
        raise QueuesFileError(f"{where}: expected a mapping with one key, 'queues'")
    if isinstance(document.get("queues"), dict):
        for name in document["queues"]:
            if not isinstance(name, str) or not name:
                raise QueuesFileError(f"{where}: queue name {name!r} must be non-empty text")
    try:
        parsed = QueuesDocument.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        if len(loc) >= 2 and loc[0] == "queues":
            place = f"queue {loc[1]!r}" + (f": field {'.'.join(loc[2:])!r}" if len(loc) > 2 else "")
        else:
            place = f"field {'.'.join(loc) or 'queues'!r}"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (valid: " + ", ".join(QueueFields.model_fields) + ")"
            if len(loc) == 1:
                message = "unknown key (the file has one key, 'queues')"
        raise QueuesFileError(f"{where}: {place}: {message}") from None
    queues: dict[str, QueueTarget] = {}
    for name, fields in parsed.queues.items():
        queues[name] = QueueTarget(
            service_level_threshold_s=_or(fields.service_level_threshold, default.service_level_threshold_s),
            short_abandon_s=_or(fields.short_abandon, default.short_abandon_s),
            service_level_target=_or(fields.service_level_target, default.service_level_target),
            longest_wait_limit_s=_or(fields.longest_wait_limit, default.longest_wait_limit_s),
            business_hours=fields.business_hours,
            timezone=fields.timezone or default.timezone,
        )
    return QueueTargets(default, queues)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
