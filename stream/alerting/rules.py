"""Alert rules: the YAML file format, its validation, and the compiled :class:`Rule`.

A rules file is a mapping with one key, ``rules``, holding a list of rules (the field
reference is docs/alerts.md). Validation is strict and runs when the worker starts, so
a typo stops the worker with a message naming the file, the rule and the field instead
of silently never alerting. The shipped default file (``stream/defaults/alert_rules.yml``)
is the one exception: a default rule whose windows are not configured in
``CXSTREAM_WINDOWS`` is skipped with a warning, so changing the windows never needs a
rules file just to start.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from stream import stats
from stream.metrics_catalog import RATIO_METRICS
from stream.settings import Settings, SettingsError
from stream.timeutil import parse_duration

log = logging.getLogger(__name__)

#: Rule metric name (a contract KPI gauge) -> key in stream.kpi.derived_kpis.
METRICS: Final[dict[str, str]] = {spec.name: str(spec.source) for spec in RATIO_METRICS}
#: Valid range of each KPI, to catch "25" meant as 25% for a 0..1 ratio.
_RANGES: Final[dict[str, tuple[float, float]]] = {
    "nps_score": (-100.0, 100.0),
    "csat_average": (1.0, 5.0),
    "handle_seconds_average": (0.0, float("inf")),
}
OPERATORS: Final = (">", ">=", "<", "<=")
USES: Final = ("point", "interval")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEVERITY = re.compile(r"^[a-z][a-z0-9_-]*$")
_FIELDS: Final = frozenset(
    {
        "name",
        "description",
        "enabled",
        "metric",
        "window",
        "group_by",
        "op",
        "threshold",
        "spike",
        "min_samples",
        "use",
        "confidence",
        "for",
        "keep_firing_for",
        "hysteresis",
        "cooldown",
        "severity",
        "summary",
    }
)
_SPIKE_FIELDS: Final = frozenset({"baseline", "factor", "delta", "min_baseline_samples"})
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
    )


def load_rules(
    path: Path,
    windows: Sequence[tuple[str, int]],
    *,
    min_samples: int = 20,
    label_names: Sequence[str] = ("queue", "channel"),
    strict: bool = True,
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
        text, windows, source=str(path), min_samples=min_samples, label_names=label_names, strict=strict
    )


def parse_rules(
    text: str,
    windows: Sequence[tuple[str, int]],
    *,
    source: str = "<rules>",
    min_samples: int = 20,
    label_names: Sequence[str] = ("queue", "channel"),
    strict: bool = True,
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
        rules.append(rule)
    return rules


# -- internals ------------------------------------------------------------------------------
class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")


class _SkipRule(ValueError):
    """A window the settings do not provide: an error in a user file, a skip in the defaults."""


def _compile(
    item: Any, windows: Sequence[tuple[str, int]], default_min_samples: int, label_names: tuple[str, ...]
) -> Rule | None:
    if not isinstance(item, dict):
        raise _FieldError("rule", f"expected a mapping of fields, got {type(item).__name__}")
    unknown = sorted(set(map(str, item)) - _FIELDS)
    if unknown:
        raise _FieldError(unknown[0], f"unknown field (valid: {', '.join(sorted(_FIELDS))})")

    name = _required(item, "name", str)
    if not _NAME.match(name):
        raise _FieldError("name", f"{name!r} must be letters, digits and underscores")
    if not _optional(item, "enabled", bool, True):
        return None
    metric = _required(item, "metric", str)
    if metric not in METRICS:
        raise _FieldError("metric", f"unknown metric {metric!r} (valid: {', '.join(sorted(METRICS))})")
    kpi_key = METRICS[metric]
    window, window_s = _window(item, "window", _required(item, "window", (str, int)), windows)

    group_by_raw = _optional(item, "group_by", list, [])
    group_by: list[str] = []
    for label in group_by_raw:
        if label not in label_names:
            raise _FieldError("group_by", f"unknown label {label!r} (valid here: {', '.join(label_names)})")
        if label in group_by:
            raise _FieldError("group_by", f"label {label!r} listed twice")
        group_by.append(label)
    # Canonical order, so the alert id never depends on how the file lists them.
    group = tuple(label for label in label_names if label in group_by)

    op = _required(item, "op", str)
    if op not in OPERATORS:
        raise _FieldError("op", f"{op!r} is not one of {', '.join(OPERATORS)}")
    threshold = _number(item, "threshold", required=True)
    low, high = _RANGES.get(kpi_key, (0.0, 1.0))
    if not low <= threshold <= high:
        hint = " (ratios are 0..1, not percent)" if high == 1.0 else ""
        raise _FieldError("threshold", f"{threshold:g} is outside {low:g}..{high:g} for {metric}{hint}")

    spike = _spike(item.get("spike"), kpi_key, window_s, windows, default_min_samples, item)
    min_samples = _optional(item, "min_samples", int, default_min_samples)
    if isinstance(min_samples, bool) or min_samples < 1:
        raise _FieldError("min_samples", "must be a whole number >= 1")
    if spike and "min_baseline_samples" not in (item.get("spike") or {}):
        spike = Spike(spike.baseline, spike.baseline_seconds, spike.factor, spike.delta, min_samples)

    use = _optional(item, "use", str, "point")
    if use not in USES:
        raise _FieldError("use", f"{use!r} is not one of {', '.join(USES)}")
    if use == "interval" and stats.KPI_SAMPLES[kpi_key].method == "none":
        raise _FieldError("use", f"{metric} is an average: it has no interval, use 'point'")
    confidence = _number(item, "confidence", default=0.95)
    try:
        z = stats.z_for(confidence)
    except ValueError as exc:
        raise _FieldError("confidence", str(exc)) from None

    hysteresis = _number(item, "hysteresis", default=0.0)
    if hysteresis < 0:
        raise _FieldError("hysteresis", "must not be negative")
    severity = _optional(item, "severity", str, "warning")
    if not _SEVERITY.match(severity):
        raise _FieldError("severity", f"{severity!r} must be a lower-case word, e.g. page, warning, info")
    summary = _optional(item, "summary", str, DEFAULT_SUMMARY)
    rule = Rule(
        name=name,
        metric=metric,
        kpi=kpi_key,
        window=window,
        window_seconds=window_s,
        group_by=group,
        op=op,
        threshold=float(threshold),
        spike=spike,
        min_samples=min_samples,
        use=use,  # type: ignore[arg-type]
        confidence=confidence,
        z=z,
        for_s=_duration(item, "for"),
        keep_firing_for_s=_duration(item, "keep_firing_for"),
        hysteresis=float(hysteresis),
        cooldown_s=_duration(item, "cooldown"),
        severity=severity,
        summary=summary,
        description=_optional(item, "description", str, ""),
    )
    _check_summary(rule)
    return rule


def _required(item: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    if field not in item or item[field] is None:
        raise _FieldError(field, "is required")
    return _typed(item[field], field, kind)


def _optional(item: Mapping[str, Any], field: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if item.get(field) is None:
        return default
    return _typed(item[field], field, kind)


def _typed(value: Any, field: str, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise _FieldError(field, f"expected {_kind_name(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise _FieldError(field, f"expected {_kind_name(kinds)}, got {value!r}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    if set(kinds) == {int, float}:
        return "a number"
    if set(kinds) == {str, int}:
        return "a duration like 15m"
    names = {str: "text", int: "a whole number", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _number(item: Mapping[str, Any], field: str, *, required: bool = False, default: float = 0.0) -> float:
    if required:
        value = _required(item, field, (int, float))
    else:
        value = _optional(item, field, (int, float), default)
    if value != value or value in (float("inf"), float("-inf")):
        raise _FieldError(field, "must be a finite number")
    return float(value)


def _duration(item: Mapping[str, Any], field: str) -> float:
    value = item.get(field)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _FieldError(field, f"expected a duration like 30s, 2m, 1h, got {value!r}")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _FieldError(field, str(exc)) from None


def _window(
    item: Mapping[str, Any], field: str, value: str | int, windows: Sequence[tuple[str, int]]
) -> tuple[str, int]:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise _FieldError(field, str(exc)) from None
    for label, window_s in windows:
        if window_s == seconds:
            return label, window_s
    configured = ", ".join(label for label, _ in windows)
    raise _SkipRule(f"field {field!r}: {value!r} is not one of CXSTREAM_WINDOWS ({configured})")


def _spike(
    raw: Any,
    kpi_key: str,
    window_s: int,
    windows: Sequence[tuple[str, int]],
    min_samples: int,
    item: Mapping[str, Any],
) -> Spike | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _FieldError("spike", "expected a mapping with baseline and factor (or delta)")
    unknown = sorted(set(map(str, raw)) - _SPIKE_FIELDS)
    if unknown:
        raise _FieldError(f"spike.{unknown[0]}", f"unknown field (valid: {', '.join(sorted(_SPIKE_FIELDS))})")
    if raw.get("baseline") is None:
        raise _FieldError("spike.baseline", "is required (a window longer than the rule's window)")
    baseline, baseline_s = _window(
        raw, "spike.baseline", _typed(raw["baseline"], "spike.baseline", (str, int)), windows
    )
    if baseline_s <= window_s:
        raise _FieldError("spike.baseline", f"{baseline} must be longer than the rule's window")
    factor = raw.get("factor")
    delta = raw.get("delta")
    if (factor is None) == (delta is None):
        raise _FieldError(
            "spike", "give exactly one of factor (baseline x factor) or delta (baseline + delta)"
        )
    if factor is not None:
        factor = float(_typed(factor, "spike.factor", (int, float)))
        if not 0 < factor < float("inf"):
            raise _FieldError("spike.factor", "must be a positive number")
        if kpi_key == "nps_score":
            raise _FieldError("spike.factor", "NPS can be negative, so a factor is ambiguous: use delta")
    if delta is not None:
        delta = float(_typed(delta, "spike.delta", (int, float)))
        if delta != delta or delta in (float("inf"), float("-inf")):
            raise _FieldError("spike.delta", "must be a finite number")
    min_baseline = raw.get("min_baseline_samples", min_samples)
    if isinstance(min_baseline, bool) or not isinstance(min_baseline, int) or min_baseline < 1:
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
    if stats.KPI_SAMPLES[rule.kpi].method != "none":
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
