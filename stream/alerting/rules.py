"""Alert rules: the YAML file format, its validation, and the compiled :class:`Rule`.

A rules file is a mapping with one key, ``rules``, holding a list of rules (the field
reference is docs/alerts.md). Validation is strict and runs when the worker starts, so a
typo stops the worker with a message naming the file, the rule and the field instead of
silently never alerting. Two steps: :class:`RuleFields` (pydantic, strict) checks what a
rule says on its own -- types, enums, names, durations -- and its first error is put in
the file's words; compiling checks what needs the worker's configuration (the windows, the
label names, each metric's range) and yields a :class:`Rule`. The shipped default file
(``stream/defaults/alert_rules.yml``) is the one exception: a default rule whose windows
are not configured in ``CXSTREAM_WINDOWS`` is skipped with a warning, so changing the
windows never needs a rules file just to start.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from stream.config.settings import Settings, SettingsError
from stream.config.timeutil import TODAY, parse_duration
from stream.domain import stats
from stream.domain.kpi import DEFAULT_SERVICE_LEVEL_POLICY
from stream.domain.metrics_catalog import QUEUE_LABELS, RATIO_METRICS

log = logging.getLogger(__name__)

#: Live queue gauges a rule may watch: no window, evaluated on the waiting contacts now.
LIVE_METRICS: Final[dict[str, str]] = {
    "cx_longest_wait_seconds": "longest_wait_seconds",
    "cx_contacts_waiting": "contacts_waiting",
}
#: The window label of a rule on a live metric.
NOW: Final = "now"
#: Rule metric name (a contract KPI gauge) -> key in stream.domain.kpi.derived_kpis (or a live key).
METRICS: Final[dict[str, str]] = {spec.name: str(spec.source) for spec in RATIO_METRICS} | LIVE_METRICS
#: Valid range of each KPI, to catch "25" meant as 25% for a 0..1 ratio.
_RANGES: Final[dict[str, tuple[float, float]]] = {
    "nps_score": (-100.0, 100.0),
    "csat_average": (1.0, 5.0),
    "handle_seconds_average": (0.0, float("inf")),
    "answer_wait_seconds_average": (0.0, float("inf")),
    "longest_wait_seconds": (0.0, float("inf")),
    "contacts_waiting": (0.0, float("inf")),
}
OPERATORS: Final = (">", ">=", "<", "<=")
USES: Final = ("point", "interval")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEVERITY = re.compile(r"^[a-z][a-z0-9_-]*$")
DEFAULT_SUMMARY: Final = (
    "{rule} {labels}: {metric} over {window} is {value:.4g} ({op} {threshold:.4g}, n={samples})"
)


class RuleError(SettingsError):
    """A rules file that cannot be used; the message names the file, rule and field.

    A :class:`SettingsError`, so ``cxstream worker`` exits with status 2 and the message.
    """


@dataclass(frozen=True, slots=True)
class Spike:
    """Compare the rule's window with a longer baseline window (the baseline excludes the window)."""

    baseline: str
    baseline_seconds: int
    factor: float | None
    delta: float | None
    min_baseline_samples: int

    def threshold(self, baseline_value: float) -> float:
        """The spike threshold for a baseline value: ``baseline * factor`` or ``baseline + delta``."""
        if self.factor is not None:
            return baseline_value * self.factor
        assert self.delta is not None
        return baseline_value + self.delta


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated alert rule (durations in seconds, windows as configured labels)."""

    name: str
    metric: str
    kpi: str
    window: str
    window_seconds: int
    group_by: tuple[str, ...]
    op: str
    threshold: float
    spike: Spike | None
    min_samples: int
    use: Literal["point", "interval"]
    confidence: float
    z: float
    for_s: float
    keep_firing_for_s: float
    hysteresis: float
    cooldown_s: float
    severity: str
    summary: str
    description: str = ""
    #: What cx_service_level_ratio divides by (CXSTREAM_SERVICE_LEVEL_POLICY).
    policy: str = DEFAULT_SERVICE_LEVEL_POLICY

    @property
    def live(self) -> bool:
        """A rule on a live queue gauge (no window)."""
        return self.window == NOW

    @property
    def above(self) -> bool:
        """True for ``>``/``>=`` (alert on high values), False for ``<``/``<=``."""
        return self.op.startswith(">")

    def windows_needed(self) -> tuple[str, ...]:
        return (self.window, self.spike.baseline) if self.spike else (self.window,)


def default_rules_path() -> Path:
    """The rules file shipped with the package."""
    return Path(str(resources.files("stream") / "defaults" / "alert_rules.yml"))


def load_rules_for(settings: Settings, label_names: Sequence[str] = ("queue", "channel")) -> list[Rule]:
    """Rules for a worker with these settings: ``CXSTREAM_ALERT_RULES`` or the shipped defaults."""
    path = settings.alert_rules
    return load_rules(
        path or default_rules_path(),
        settings.window_list,
        min_samples=settings.min_samples,
        label_names=label_names,
        strict=path is not None,
        policy=settings.service_level_policy,
    )


def load_rules(
    path: Path,
    windows: Sequence[tuple[str, int]],
    *,
    min_samples: int = 20,
    label_names: Sequence[str] = ("queue", "channel"),
    strict: bool = True,
    policy: str = DEFAULT_SERVICE_LEVEL_POLICY,
) -> list[Rule]:
    """Read and validate a rules file; raise :class:`RuleError` naming what is wrong.

    ``strict=False`` (the shipped defaults) skips, with a warning, rules whose windows
    are not among ``windows``; every other problem is still an error.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"alert rules file {path}: cannot read it: {exc.strerror or exc}") from None
    return parse_rules(
        text,
        windows,
        source=str(path),
        min_samples=min_samples,
        label_names=label_names,
        strict=strict,
        policy=policy,
    )


def parse_rules(
    text: str,
    windows: Sequence[tuple[str, int]],
    *,
    source: str = "<rules>",
    min_samples: int = 20,
    label_names: Sequence[str] = ("queue", "channel"),
    strict: bool = True,
    policy: str = DEFAULT_SERVICE_LEVEL_POLICY,
) -> list[Rule]:
    """Validate the YAML text of a rules file (see :func:`load_rules`)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"alert rules file {source}: not valid YAML: {exc}") from None
    if document is None:
        document = {"rules": []}
    if not isinstance(document, dict) or set(document) - {"rules"}:
        raise RuleError(f"alert rules file {source}: expected a mapping with one key, 'rules' (a list)")
    items = document.get("rules") or []
    if not isinstance(items, list):
        raise RuleError(f"alert rules file {source}: 'rules' must be a list")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"alert rules file {source}: rule #{index + 1}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            where += f" {item['name']!r}"
        try:
            rule = _compile(item, windows, min_samples, tuple(label_names))
        except _SkipRule as skip:
            if strict:
                raise RuleError(f"{where}: {skip}") from None
            log.warning("%s skipped: %s", where, skip)
            continue
        except _FieldError as exc:
            raise RuleError(f"{where}: {exc}") from None
        if rule is None:
            continue
        if rule.name in seen:
            raise RuleError(f"{where}: field 'name': duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        rules.append(replace(rule, policy=policy))
    return rules


# -- the file's fields, typed (pydantic) ---------------------------------------------------------
class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")


class _SkipRule(ValueError):
    """A window the settings do not provide: an error in a user file, a skip in the defaults."""


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("cx_rule", message)


def _duration_text(value: Any) -> str | int | float:
    """A duration as written (``15m``, ``900s``, ``900``): checked for type here, parsed later."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _refuse(f"expected a duration like 15m, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    try:
        return parse_duration(_duration_text(value))
    except ValueError as exc:
        raise _refuse(str(exc)) from None


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise _refuse(f"{value!r} must be letters, digits and underscores")
    return value


def _severity(value: str) -> str:
    if not _SEVERITY.match(value):
        raise _refuse(f"{value!r} must be a lower-case word, e.g. page, warning, info")
    return value


def _metric(value: str) -> str:
    if value not in METRICS:
        raise _refuse(f"unknown metric {value!r} (valid: {', '.join(sorted(METRICS))})")
    return value


#: Window as written; resolved against CXSTREAM_WINDOWS when the rule is compiled.
WindowText = Annotated[str | int | float, PlainValidator(_duration_text)]
Seconds = Annotated[float, PlainValidator(_seconds)]
Whole = Annotated[int, Field(strict=True)]


class SpikeFields(BaseModel):
    """``spike:`` of a rule, as written."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    baseline: WindowText | None = None
    factor: float | None = None
    delta: float | None = None
    min_baseline_samples: Whole | None = None


class RuleFields(BaseModel):
    """One rule of a rules file, as written: types, enums and patterns (docs/alerts.md).

    What needs the worker's configuration (windows, labels, ranges per metric) is
    checked when the rule is compiled (:func:`_compile`).
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    name: Annotated[str, AfterValidator(_name)]
    description: str = ""
    enabled: bool = True
    metric: Annotated[str, AfterValidator(_metric)]
    #: Required, except on the live metrics (LIVE_METRICS), which have none.
    window: WindowText | None = None
    group_by: list[str] = []
    op: Literal[">", ">=", "<", "<="]
    threshold: float
    spike: SpikeFields | None = None
    min_samples: Whole | None = None
    use: Literal["point", "interval"] = "point"
    confidence: float = 0.95
    for_s: Seconds = Field(0.0, alias="for")
    keep_firing_for_s: Seconds = Field(0.0, alias="keep_firing_for")
    hysteresis: float = 0.0
    cooldown_s: Seconds = Field(0.0, alias="cooldown")
    severity: Annotated[str, AfterValidator(_severity)] = "warning"
    summary: str = DEFAULT_SUMMARY


_FIELDS: Final = tuple(sorted(f.alias or n for n, f in RuleFields.model_fields.items()))
_SPIKE_FIELDS: Final = tuple(sorted(SpikeFields.model_fields))
#: pydantic's error type -> what the value should have been, in the file's words.
_KINDS: Final = {
    "float_type": "a number",
    "int_type": "a whole number",
    "string_type": "text",
    "bool_type": "true or false",
    "list_type": "a list",
}
_HINTS: Final = {
    "spike.baseline": " (a window longer than the rule's window)",
}


def _without_nulls(item: Mapping[str, Any]) -> dict[str, Any]:
    """``field: null`` means the field is absent (YAML writes an empty value as null)."""
    out = {str(k): v for k, v in item.items() if v is not None}
    if isinstance(out.get("spike"), Mapping):
        out["spike"] = {str(k): v for k, v in out["spike"].items() if v is not None}
    return out


def _first_problem(exc: ValidationError) -> _FieldError:
    """The error to report, in the file's words: unknown fields first, then in field order."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    error = errors[0]
    field = ".".join(str(part) for part in error["loc"] if isinstance(part, str)) or "rule"
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        valid = _SPIKE_FIELDS if field.startswith("spike.") else _FIELDS
        return _FieldError(field, f"unknown field (valid: {', '.join(valid)})")
    if kind == "missing":
        return _FieldError(field, "is required" + _HINTS.get(field, ""))
    if kind == "literal_error":
        choices = ", ".join(str(c) for c in (OPERATORS if field == "op" else USES))
        return _FieldError(field, f"{value!r} is not one of {choices}")
    if kind == "finite_number":
        return _FieldError(field, "must be a finite number")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return _FieldError(field, "expected a mapping with baseline and factor (or delta)")
    if kind in _KINDS:
        return _FieldError(field, f"expected {_KINDS[kind]}, got {value!r}")
    return _FieldError(field, str(error["msg"]))


def _fields(item: Any) -> RuleFields:
    if not isinstance(item, dict):
        raise _FieldError("rule", f"expected a mapping of fields, got {type(item).__name__}")
    try:
        return RuleFields.model_validate(_without_nulls(item))
    except ValidationError as exc:
        raise _first_problem(exc) from None


# -- compiling: what needs the worker's configuration ------------------------------------------
def _compile(
    item: Any, windows: Sequence[tuple[str, int]], default_min_samples: int, label_names: tuple[str, ...]
) -> Rule | None:
    fields = _fields(item)
    if not fields.enabled:
        return None
    metric = fields.metric
    kpi_key = METRICS[metric]
    live = metric in LIVE_METRICS
    if live:
        if fields.window is not None:
            raise _FieldError("window", f"{metric} is a live gauge (waiting now): leave window out")
        window, window_s = NOW, 0
    elif fields.window is None:
        raise _FieldError("window", "is required (one of CXSTREAM_WINDOWS)")
    else:
        window, window_s = _window("window", fields.window, windows)

    group_by: list[str] = []
    valid = QUEUE_LABELS if live else label_names
    for label in fields.group_by:
        if label not in valid:
            raise _FieldError("group_by", f"unknown label {label!r} (valid here: {', '.join(valid)})")
        if label in group_by:
            raise _FieldError("group_by", f"label {label!r} listed twice")
        group_by.append(label)
    # Canonical order, so the alert id never depends on how the file lists them.
    group = tuple(label for label in valid if label in group_by)

    threshold = fields.threshold
    low, high = _RANGES.get(kpi_key, (0.0, 1.0))
    if not low <= threshold <= high:
        hint = " (ratios are 0..1, not percent)" if high == 1.0 else ""
        raise _FieldError("threshold", f"{threshold:g} is outside {low:g}..{high:g} for {metric}{hint}")

    # On a live gauge the samples are the contacts waiting: one is enough by default.
    default = 1 if live else default_min_samples
    min_samples = default if fields.min_samples is None else fields.min_samples
    if min_samples < 1:
        raise _FieldError("min_samples", "must be a whole number >= 1")
    if live and fields.spike is not None:
        raise _FieldError("spike", f"{metric} is a live gauge: it has no baseline window")
    spike = _spike(fields.spike, kpi_key, window_s, windows, min_samples)

    if fields.use == "interval" and (live or stats.KPI_SAMPLES[kpi_key].method == "none"):
        kind = "a live gauge" if live else "an average"
        raise _FieldError("use", f"{metric} is {kind}: it has no interval, use 'point'")
    try:
        z = stats.z_for(fields.confidence)
    except ValueError as exc:
        raise _FieldError("confidence", str(exc)) from None
    if fields.hysteresis < 0:
        raise _FieldError("hysteresis", "must not be negative")
    rule = Rule(
        name=fields.name,
        metric=metric,
        kpi=kpi_key,
        window=window,
        window_seconds=window_s,
        group_by=group,
        op=fields.op,
        threshold=float(threshold),
        spike=spike,
        min_samples=min_samples,
        use=fields.use,
        confidence=fields.confidence,
        z=z,
        for_s=fields.for_s,
        keep_firing_for_s=fields.keep_firing_for_s,
        hysteresis=float(fields.hysteresis),
        cooldown_s=fields.cooldown_s,
        severity=fields.severity,
        summary=fields.summary,
        description=fields.description,
    )
    _check_summary(rule)
    return rule


def _window(field: str, value: str | int | float, windows: Sequence[tuple[str, int]]) -> tuple[str, int]:
    configured = ", ".join(label for label, _ in windows)
    if value == TODAY:
        for label, window_s in windows:
            if label == TODAY:
                return label, window_s
        raise _SkipRule(f"field {field!r}: 'today' is not one of CXSTREAM_WINDOWS ({configured})")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise _FieldError(field, str(exc)) from None
    for label, window_s in windows:
        if window_s == seconds and label != TODAY:
            return label, window_s
    raise _SkipRule(f"field {field!r}: {value!r} is not one of CXSTREAM_WINDOWS ({configured})")


def _spike(
    fields: SpikeFields | None,
    kpi_key: str,
    window_s: int,
    windows: Sequence[tuple[str, int]],
    min_samples: int,
) -> Spike | None:
    if fields is None:
        return None
    if fields.baseline is None:
        raise _FieldError("spike.baseline", "is required" + _HINTS["spike.baseline"])
    baseline, baseline_s = _window("spike.baseline", fields.baseline, windows)
    if baseline == TODAY:
        # Just after midnight `today` is shorter than any rule window: no baseline then.
        raise _FieldError("spike.baseline", "today cannot be a baseline (use a rolling window like 24h)")
    if baseline_s <= window_s:
        raise _FieldError("spike.baseline", f"{baseline} must be longer than the rule's window")
    factor, delta = fields.factor, fields.delta
    if (factor is None) == (delta is None):
        raise _FieldError(
            "spike", "give exactly one of factor (baseline x factor) or delta (baseline + delta)"
        )
    if factor is not None:
        if not factor > 0:
            raise _FieldError("spike.factor", "must be a positive number")
        if kpi_key == "nps_score":
            raise _FieldError("spike.factor", "NPS can be negative, so a factor is ambiguous: use delta")
    min_baseline = min_samples if fields.min_baseline_samples is None else fields.min_baseline_samples
    if min_baseline < 1:
        raise _FieldError("spike.min_baseline_samples", "must be a whole number >= 1")
    return Spike(baseline, baseline_s, factor, delta, min_baseline)


def summary_fields(rule: Rule) -> dict[str, Any]:
    """Sample values of every field a summary template may use, for validation."""
    fields: dict[str, Any] = {
        "rule": rule.name,
        "metric": rule.metric,
        "window": rule.window,
        "op": rule.op,
        "severity": rule.severity,
        "value": 0.5,
        "threshold": 0.5,
        "samples": 100,
        "labels": "{}",
    }
    if rule.kpi in stats.KPI_SAMPLES and stats.KPI_SAMPLES[rule.kpi].method != "none":
        fields.update(low=0.4, high=0.6)
    if rule.spike:
        fields.update(baseline=0.4, baseline_samples=1000, baseline_window=rule.spike.baseline)
    for label in rule.group_by:
        fields[label] = "example"
    return fields


def _check_summary(rule: Rule) -> None:
    fields = summary_fields(rule)
    for _, field_name, _, _ in string.Formatter().parse(rule.summary):
        if field_name is None:
            continue
        root = re.split(r"[.\[]", field_name, maxsplit=1)[0]
        if root == "" or root.isdigit():
            raise _FieldError("summary", "use named fields like {value}, not {} or {0}")
        if root not in fields:
            raise _FieldError(
                "summary", f"unknown field {{{root}}} (available here: {', '.join(sorted(fields))})"
            )
    try:
        rule.summary.format(**fields)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise _FieldError("summary", f"does not format: {exc}") from None
