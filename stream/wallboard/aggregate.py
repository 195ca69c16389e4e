"""Pure wallboard logic: the global view in, the page's state document out.

No I/O. The workers publish one view per partition (``<prefix>:kpi:partitions``,
docs/redis.md); this module

* sums one view per partition per window and queue, plus an "all queues" row
  (:data:`ALL_QUEUES`) -- the same sum the alert evaluator uses, so the board and the
  alerts agree whatever the number of workers and during rebalances,
* computes every tile's ratio from those **summed counts** with
  :func:`stream.domain.kpi.derived_kpis` (never an average of per-worker ratios), its sample
  size, its low-confidence flag (sample size below ``min_samples``), its 95% interval,
  a colour status and whether an active alert points at it,
* builds the JSON document served by ``/api/state`` and pushed on ``/events``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from stream.config.queues import DEFAULT_TARGET, QueueTargets
from stream.config.timeutil import parse_duration
from stream.domain import kpi
from stream.domain.state import UNKNOWN, split_dim_key
from stream.domain.stats import kpi_interval
from stream.query.partition_views import GlobalView
from stream.wallboard.operations import (
    ALERT_FIGURES,
    ALL_QUEUES,
    LiveAgents,
    LiveWaiting,
    live_by_queue,
    queue_operations,
    queues_with_live_data,
)

ALL_QUEUES_LABEL: Final = "All queues"
#: Labels sorted after every real queue name.
_LAST_QUEUES: Final = ("other", "unknown")
#: Alert severities, most urgent first (unknown severities sort after these).
SEVERITY_ORDER: Final = ("critical", "page", "warning", "info")
STATE_VERSION: Final = 1

Status = Literal["good", "warn", "bad", "empty"]


@dataclass(frozen=True, slots=True)
class TileSpec:
    """One big-number tile: a key of :func:`stream.domain.kpi.derived_kpis` and how to show it.

    ``good`` / ``bad`` are display thresholds for the tile colour: for a KPI where higher
    is better the tile is ``good`` at or above ``good``, ``bad`` below ``bad`` and
    ``warn`` in between (mirrored when lower is better).
    """

    key: str
    label: str
    unit: Literal["percent", "score"]
    higher_is_better: bool
    good: float
    bad: float
    denominator: int
    sample_noun: str
    numerator: int | None = None


TILES: Final[tuple[TileSpec, ...]] = (
    TileSpec("csat_ratio", "CSAT", "percent", True, 0.80, 0.70, kpi.CSAT_RESPONSES, "responses"),
    TileSpec("nps_score", "NPS", "score", True, 30.0, 0.0, kpi.NPS_RESPONSES, "responses"),
    TileSpec("ces_easy_ratio", "CES easy", "percent", True, 0.70, 0.50, kpi.CES_RESPONSES, "responses"),
    TileSpec(
        "ces_high_effort_ratio", "High effort", "percent", False, 0.15, 0.25, kpi.CES_RESPONSES, "responses"
    ),
    TileSpec(
        "repeat_contact_ratio",
        "Repeat contacts",
        "percent",
        False,
        0.20,
        0.30,
        kpi.REPEAT_CHECKED_CONTACTS,
        "contacts",
    ),
    TileSpec("transfer_ratio", "Transfers", "percent", False, 0.15, 0.25, kpi.CONTACTS_ENDED, "ended"),
    TileSpec(
        "channel_switch_ratio",
        "Channel switches",
        "percent",
        False,
        0.05,
        0.10,
        kpi.REPEAT_CHECKED_CONTACTS,
        "contacts",
    ),
)
TILE_KEYS: Final = tuple(t.key for t in TILES)


# -- the global view ------------------------------------------------------------------------------
@dataclass(slots=True)
class WorkerInfo:
    """A worker that wrote partition views: when last, which partitions, whether stale."""

    worker: str
    at: int
    stale: bool
    partitions: list[int] = field(default_factory=list)

    def as_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "at": self.at,
            "age_s": round((now_ms - self.at) / 1000, 1),
            "stale": self.stale,
            "partitions": self.partitions,
        }


@dataclass(slots=True)
class Totals:
    """Summed counts: ``counts[window][queue]``, with :data:`ALL_QUEUES` summing every queue."""

    counts: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    workers: list[WorkerInfo] = field(default_factory=list)
    #: Coverage: ``{"total": n, "missing": [...], "stale": [...]}`` partition numbers.
    partitions: dict[str, Any] = field(default_factory=lambda: {"total": 0, "missing": [], "stale": []})
    #: Live, per queue (and :data:`ALL_QUEUES`): contacts waiting and the longest wait.
    waiting: LiveWaiting = field(default_factory=dict)
    #: Live, per queue (and :data:`ALL_QUEUES`): agents by newest state.
    agents: LiveAgents = field(default_factory=dict)


def sum_views(view: GlobalView, now_ms: int, stale_after_ms: int) -> Totals:
    """Sum one view per partition (the whole contact center) per window and queue.

    The same sum the alert evaluator makes (:mod:`stream.query.partition_views`), so the board
    and the alerts never disagree. A view older than ``stale_after_ms`` still counts (it is
    the newest known state of its partition; leaving it out would undercount silently)
    and is listed as stale, with its worker, so the page can say so.
    """
    totals = Totals()
    for worker, views in sorted(view.by_worker().items()):
        at = max(v.at for v in views)
        totals.workers.append(
            WorkerInfo(worker, at, now_ms - at > stale_after_ms, [v.partition for v in views])
        )
    for window, per_dim in view.totals().items():
        per_queue = totals.counts.setdefault(window, {ALL_QUEUES: kpi.zero_counts()})
        for dim, counts in per_dim.items():
            queue = split_dim_key(dim)[0] or UNKNOWN
            kpi.add_into(per_queue.setdefault(queue, kpi.zero_counts()), counts)
            kpi.add_into(per_queue[ALL_QUEUES], counts)
    totals.waiting, totals.agents = live_by_queue(view, now_ms)
    totals.partitions = {
        "total": view.partitions,
        "missing": view.missing(),
        "stale": view.stale(now_ms, stale_after_ms),
    }
    return totals


# -- tiles -----------------------------------------------------------------------------------------
def tile_status(spec: TileSpec, value: float | None) -> Status:
    """Colour of a tile from its display thresholds (``empty`` without a value)."""
    if value is None:
        return "empty"
    if spec.higher_is_better:
        return "good" if value >= spec.good else "bad" if value < spec.bad else "warn"
    return "good" if value <= spec.good else "bad" if value > spec.bad else "warn"


def _clean(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def tile(spec: TileSpec, counts: Sequence[float], min_samples: int) -> dict[str, Any]:
    """One tile's numbers from a (summed) counter vector.

    ``value`` is ``None`` with an empty denominator; ``low_confidence`` is set when the
    sample size ``n`` is below ``min_samples`` (including 0).
    """
    value = kpi.derived_kpis(counts)[spec.key]
    n = counts[spec.denominator]
    interval = kpi_interval(spec.key, counts) if n > 0 else None
    return {
        "key": spec.key,
        "value": _clean(value),
        "n": int(n) if float(n).is_integer() else n,
        "low_confidence": n < min_samples,
        "interval": [_clean(interval[0]), _clean(interval[1])] if interval else None,
        "status": tile_status(spec, value),
    }


def queue_view(queue: str, counts: Sequence[float], min_samples: int) -> dict[str, Any]:
    """A queue's row: its label, counts by name and one tile per KPI."""
    return {
        "queue": queue,
        "label": ALL_QUEUES_LABEL if queue == ALL_QUEUES else queue,
        "counts": {
            name: int(c) if float(c).is_integer() else c for name, c in zip(kpi.COUNTERS, counts, strict=True)
        },
        "tiles": {spec.key: tile(spec, counts, min_samples) for spec in TILES},
    }


def queue_order(queues: Iterable[str]) -> list[str]:
    """All-queues row first, then queues by name, ``other``/``unknown`` last: rows never jump."""
    return sorted(queues, key=lambda q: (q != ALL_QUEUES, q in _LAST_QUEUES, q.lower(), q))


def window_order(windows: Iterable[str]) -> list[str]:
    """Window labels shortest first (unparseable labels last, by name)."""

    def key(label: str) -> tuple[float, str]:
        try:
            return parse_duration(label), label
        except ValueError:
            return math.inf, label

    return sorted(set(windows), key=key)


# -- alerts ----------------------------------------------------------------------------------------
def parse_alerts(
    active: Mapping[str, str | bytes], acks: Mapping[str, str | bytes] | None = None
) -> list[dict[str, Any]]:
    """Firing alerts from ``<prefix>:alerts:active`` (and acks), most severe then newest first.

    Each alert is its stored JSON plus ``id`` (the hash field when absent), ``acked``
    (the ack JSON or ``None``) and ``tile``: ``{"queue", "kpi"}``, the tile it points at
    (``kpi`` is the rule's ``metric`` without ``cx_``, ``queue`` its ``queue`` label or
    :data:`ALL_QUEUES` when it has none).
    """
    alerts: list[dict[str, Any]] = []
    for alert_id, raw in active.items():
        try:
            alert = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(alert, dict):
            continue
        alert.setdefault("id", alert_id if isinstance(alert_id, str) else alert_id.decode())
        raw_labels = alert.get("labels")
        labels: dict[str, Any] = raw_labels if isinstance(raw_labels, dict) else {}
        metric = alert.get("metric")
        alert["tile"] = {
            "queue": str(labels["queue"]) if labels.get("queue") is not None else ALL_QUEUES,
            "kpi": metric.removeprefix("cx_") if isinstance(metric, str) else None,
        }
        ack_raw = (acks or {}).get(alert_id)
        acked = None
        if ack_raw is not None:
            try:
                acked = orjson.loads(ack_raw)
            except orjson.JSONDecodeError:
                acked = None
        alert["acked"] = acked if isinstance(acked, dict) else None
        alerts.append(alert)

    def order(alert: dict[str, Any]) -> tuple[int, float, str]:
        severity = str(alert.get("severity", "")).lower()
        rank = SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)
        since = alert.get("since")
        newest_first = (
            -float(since) if isinstance(since, int | float) and not isinstance(since, bool) else 0.0
        )
        return rank, newest_first, str(alert["id"])

    return sorted(alerts, key=order)


# -- the state document ----------------------------------------------------------------------------
TrendLookup = Mapping[tuple[str, str, str], Sequence[float | None]]


def build_state(
    totals: Totals,
    alerts: Sequence[Mapping[str, Any]],
    *,
    now_ms: int,
    min_samples: int,
    windows: Sequence[str] = (),
    trends: TrendLookup | None = None,
    redis_ok: bool = True,
    redis_error: str | None = None,
    updated_at: int | None = None,
    stale_since: int | None = None,
    interval_s: float = 2.0,
    targets: QueueTargets | None = None,
    policy: str = kpi.DEFAULT_SERVICE_LEVEL_POLICY,
) -> dict[str, Any]:
    """The wallboard state served by ``/api/state`` and ``/events`` (docs/wallboard.md).

    ``windows``: configured windows; windows found in the views are added. Each queue
    view's tiles get ``trend`` (from ``trends[(window, queue, kpi)]``) and ``alert`` (the
    id of the first firing alert for that queue and KPI, or ``None``), and ``ops``: its
    queue operations (:func:`stream.wallboard.operations.queue_operations`) against
    ``targets`` (the queues file; default targets when ``None``).
    """
    targets = targets or QueueTargets(DEFAULT_TARGET)
    live_queues = queues_with_live_data(totals.waiting, totals.agents)
    alert_at: dict[tuple[str, str], str] = {}
    alert_queues: dict[str, int] = {}
    for alert in alerts:
        target = alert.get("tile") or {}
        queue = str(target.get("queue", ALL_QUEUES))
        alert_queues[queue] = alert_queues.get(queue, 0) + 1
        if target.get("kpi"):
            alert_at.setdefault((queue, str(target["kpi"])), str(alert.get("id")))
    data: dict[str, Any] = {}
    all_windows = window_order([*windows, *totals.counts])
    for window in all_windows:
        per_queue = dict(totals.counts.get(window, {ALL_QUEUES: kpi.zero_counts()}))
        for queue in live_queues:
            per_queue.setdefault(queue, kpi.zero_counts())
        rows = []
        for queue in queue_order(per_queue):
            view = queue_view(queue, per_queue[queue], min_samples)
            view["ops"] = queue_operations(
                queue,
                per_queue[queue],
                totals.waiting,
                totals.agents,
                targets,
                now_ms=now_ms,
                min_samples=min_samples,
                policy=policy,
            )
            view["ops"]["alerts"] = {
                figure: alert_at[(queue, kpi_key)]
                for kpi_key, figure in ALERT_FIGURES.items()
                if (queue, kpi_key) in alert_at
            }
            view["alerts"] = alert_queues.get(queue, 0)
            for key, t in view["tiles"].items():
                t["alert"] = alert_at.get((queue, key))
                t["trend"] = list(trends.get((window, queue, key), ())) if trends else []
            rows.append(view)
        data[window] = {"queues": rows}
    return {
        "version": STATE_VERSION,
        "server_time": now_ms,
        "updated_at": updated_at,
        "interval_s": interval_s,
        "redis": {"ok": redis_ok, "error": redis_error, "stale_since": None if redis_ok else stale_since},
        "min_samples": min_samples,
        "windows": all_windows,
        "default_window": all_windows[0] if all_windows else None,
        "tiles": [
            {
                "key": t.key,
                "label": t.label,
                "unit": t.unit,
                "higher_is_better": t.higher_is_better,
                "good": t.good,
                "bad": t.bad,
                "sample_noun": t.sample_noun,
            }
            for t in TILES
        ],
        "workers": [w.as_json(now_ms) for w in totals.workers],
        "partitions": totals.partitions,
        "alerts": [dict(a) for a in alerts],
        "data": data,
    }


def attach_trends(state: Mapping[str, Any], trends: TrendLookup) -> None:
    """Set every tile's ``trend`` in ``state`` (in place) from ``trends[(window, queue, kpi)]``."""
    for window, body in state["data"].items():
        for view in body["queues"]:
            for key, t in view["tiles"].items():
                t["trend"] = list(trends.get((window, view["queue"], key), ()))


def select_window(state: Mapping[str, Any], window: str | None) -> dict[str, Any]:
    """A copy of ``state`` whose ``data`` holds one window: ``window``, else the default one.

    ``window`` names the chosen window in the copy; the page sends its own choice and
    falls back to what the server picked when it asked for a window that does not exist.
    """
    data = state.get("data", {})
    chosen = window if window in data else state.get("default_window")
    return {**state, "window": chosen, "data": {chosen: data[chosen]} if chosen in data else {}}
