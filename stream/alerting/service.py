"""The alerting pieces wired into a running worker: timers, the Redis writer, /metrics.

``AlertService`` owns the evaluator and the sink. Three loops run in the worker's event
loop, none of which can block or crash stream processing:

* every ``CXSTREAM_ALERT_INTERVAL``: read the window totals of the partitions this
  worker owns, evaluate the rules (pure, synchronous), buffer the transitions;
* a writer task: on start-up read ``<p>:alerts:active`` once to take over the alerts
  this worker already had firing (so a restart never fires them again), then write
  buffered transitions as they come (with backoff while Redis is down) and refresh
  acks and snoozes;
* every ``CXSTREAM_SNAPSHOT_INTERVAL``: write the KPI snapshot hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream import kpi, stats
from stream.alerting.evaluator import (
    FIRING,
    RESOLVED,
    TRANSITION_MARK,
    Evaluator,
    Transition,
)
from stream.alerting.rules import Rule
from stream.alerting.sink import RedisSink, decode_active
from stream.metrics_catalog import ALERT_METRICS, INTERVAL_METRICS, LOW_CONFIDENCE
from stream.state import PartitionState, split_dim_key
from stream.timeutil import now_ms
from stream.windows import WindowReader, WindowTotals

if TYPE_CHECKING:
    from stream.app import CxStream

log = logging.getLogger(__name__)

REDIS_OPERATIONS = ("transition", "snapshot", "controls", "seed", "sweep")
#: How often active alerts are checked for ones nobody owns any more.
SWEEP_INTERVAL_S = 60.0
_HELP = {spec.name: spec.help for spec in (*ALERT_METRICS, *INTERVAL_METRICS, LOW_CONFIDENCE)}


def label_names_of(processor: Any) -> tuple[str, ...]:
    """Label names of the dimension keys (``queue``, ``channel`` [, ``team``, ``agent``])."""
    names = getattr(processor, "label_names", None)
    return tuple(names()) if callable(names) else ("queue", "channel")


class AlertService:
    """Rule evaluation, Redis writes and snapshots for one worker."""

    def __init__(
        self,
        *,
        rules: Sequence[Rule],
        sink: RedisSink,
        states: Callable[[], Iterable[PartitionState]],
        reader: WindowReader,
        reference_now: Callable[[int], int],
        worker: str,
        windows: Sequence[str],
        label_names: Sequence[str] = ("queue", "channel"),
        control_interval_s: float = 5.0,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        hold: Callable[[], bool] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.rules = list(rules)
        self.sink = sink
        # Faust's timer ticks can come a few ms early: tolerate up to 10% of an interval.
        self.evaluator = Evaluator(
            self.rules,
            label_names=label_names,
            worker=worker,
            timer_slack_ms=int(control_interval_s * 100),
        )
        self.worker = worker
        self.windows = list(windows)
        self.label_names = tuple(label_names)
        self.control_interval_s = control_interval_s
        self.sweep_interval_s = sweep_interval_s
        #: True while the partitions this worker owns are changing (rebalance, recovery):
        #: evaluation is skipped, so half-recovered state cannot resolve (or fire) alerts.
        self._hold = hold or (lambda: False)
        self._states = states
        self._reader = reader
        self._reference_now = reference_now
        self._clock = clock
        self._wake = asyncio.Event()
        self.seeded = False
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.last_evaluation_ms = 0
        self.evaluation_errors = 0
        self.held_evaluations = 0

    # -- evaluation ----------------------------------------------------------------------------
    def read_totals(self, wall_ms: int) -> WindowTotals:
        return self._reader.read(self._states(), self._reference_now(wall_ms))

    def evaluate(self, wall_ms: int | None = None) -> list[Transition]:
        """Evaluate every rule now and buffer the transitions (synchronous, no I/O).

        Skipped (returns ``[]``) while ownership is changing: see ``hold``.
        """
        wall = self._clock() if wall_ms is None else wall_ms
        if self._hold():
            self.held_evaluations += 1
            return []
        transitions = self.evaluator.evaluate(self.read_totals(wall), wall, self.sink.controls)
        self.last_evaluation_ms = wall
        self._record(transitions)
        return transitions

    def _record(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            self.transitions[(transition.rule, transition.state)] += 1
            if transition.state == FIRING:
                log.info("alert firing %s: %s", transition.alert_id, transition.payload.get("summary", ""))
            else:
                log.info(
                    "alert resolved %s (value now %s, %s samples)",
                    transition.alert_id,
                    transition.payload.get("value"),
                    transition.payload.get("samples"),
                )
        if transitions:
            self.sink.enqueue(transitions)
            self._wake.set()

    async def evaluate_tick(self) -> None:
        """Timer body: never raises into Faust."""
        try:
            self.evaluate()
        except Exception:
            self.evaluation_errors += 1
            log.exception("alert evaluation failed")

    # -- writer --------------------------------------------------------------------------------
    async def run_writer(self) -> None:
        """Task body: seed from Redis once, then write transitions and refresh controls forever."""
        next_controls = 0.0
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_interval_s
        while True:
            try:
                if not self.seeded and self.sink.retry_delay() == 0:
                    await self.seed()
                if self.seeded:
                    if loop.time() >= next_controls:
                        next_controls = loop.time() + self.control_interval_s
                        await self.sink.refresh_controls()
                    await self.sink.flush()
                    if loop.time() >= next_sweep and not self.sink.buffer:
                        next_sweep = loop.time() + self.sweep_interval_s
                        await self.sweep()
                        await self.sink.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert writer step failed")
            delay = self.control_interval_s if self.seeded else 1.0
            if self.sink.buffer or not self.seeded:
                delay = min(delay, max(0.05, self.sink.retry_delay()))
            delay = min(delay, max(0.05, next_controls - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    async def seed(self) -> bool:
        """Take over alerts this worker left firing in Redis; reconcile with the buffer."""
        raw = await self.sink.read_active_raw("seed")
        if raw is None:
            return False
        self.reconcile(decode_active(raw), self._clock(), raw)
        self.seeded = True
        return True

    def reconcile(
        self, active: Mapping[str, Mapping[str, Any]], now: int, raw: Mapping[str, str] | None = None
    ) -> None:
        """Merge Redis's firing alerts of this worker into the evaluator (restart, outage at start).

        * already buffered as a fire (fired again while Redis was unreachable): the buffered
          fire is a repeat and is dropped;
        * unknown to the evaluator: adopted as firing, so it resolves normally later;
        * its rule is gone from the rules file (or its grouping changed): resolved now, so
          it does not stay active forever.
        """
        buffered = {t.alert_id for t in self.sink.buffer}
        cleanups: list[Transition] = []
        for alert_id, payload in active.items():
            if payload.get("worker") not in (self.worker, None, ""):
                continue
            if self.sink.drop_buffered_fire(alert_id):
                log.info("alert %s was already firing in Redis: not fired again", alert_id)
                continue
            if alert_id in buffered or self.evaluator.is_firing(alert_id):
                continue
            if self.evaluator.adopt(payload, now):
                log.info("alert %s still firing from before: taken over", alert_id)
                continue
            reason = "rule removed" if payload.get("rule") not in self.evaluator.rules else "rule changed"
            cleanups.append(self._cleanup(alert_id, payload, now, reason, (raw or {}).get(alert_id)))
        self._record(cleanups)

    async def sweep(self) -> int:
        """Resolve active alerts nobody owns any more; returns how many were queued.

        An alert is orphaned when its worker has written no KPI snapshot for 30 s (the
        worker is gone, e.g. scaled down), or when it is this worker's own but the
        evaluator does not know it (its resolve was dropped from a full buffer). The
        resolve only applies if the entry is still unchanged in Redis, so several workers
        sweeping at once resolve it once.
        """
        raw = await self.sink.read_active_raw("sweep")
        if raw is None:
            return 0
        active = decode_active(raw)
        buffered = {t.alert_id for t in self.sink.buffer}
        others = {
            str(p.get("worker")) for p in active.values() if p.get("worker") not in (self.worker, None, "")
        }
        live = await self.sink.live_workers(others)
        if live is None:
            return 0
        now = self._clock()
        cleanups = []
        for alert_id, payload in active.items():
            owner = payload.get("worker")
            if alert_id in buffered:
                continue
            if owner in (self.worker, None, ""):
                if not self.evaluator.is_firing(alert_id):
                    cleanups.append(self._cleanup(alert_id, payload, now, "not firing", raw[alert_id]))
            elif owner not in live:
                cleanups.append(self._cleanup(alert_id, payload, now, f"worker {owner} gone", raw[alert_id]))
        self._record(cleanups)
        return len(cleanups)

    def _cleanup(
        self, alert_id: str, payload: Mapping[str, Any], now: int, reason: str, expect: str | None
    ) -> Transition:
        resolved = dict(payload, state=RESOLVED, at=now, tid=_new_tid(), reason=reason, worker=self.worker)
        log.warning("resolving stale alert %s: %s", alert_id, reason)
        return Transition(alert_id, RESOLVED, resolved, expect=expect)

    # -- snapshots -----------------------------------------------------------------------------
    async def snapshot_tick(self) -> None:
        """Timer body: write this worker's KPI snapshot; never raises into Faust."""
        try:
            wall = self._clock()
            fields = build_snapshot(
                self.read_totals(wall), self.windows, self.label_names, worker=self.worker, at=wall
            )
            await self.sink.write_snapshot(self.worker, fields)
        except Exception:
            log.exception("KPI snapshot failed")

    def wake(self) -> None:
        self._wake.set()

    async def shutdown(self, timeout: float = 3.0) -> None:
        """Worker stopping: one last attempt to write buffered transitions, then close."""
        try:
            if self.sink.buffer and self.seeded:
                await asyncio.wait_for(self.sink.flush(force=True), timeout)
        except Exception:  # shutdown must go on
            log.debug("final alert flush failed", exc_info=True)
        if self.sink.buffer:
            log.warning("stopping with %d alert transitions not written to Redis", len(self.sink.buffer))
        await self.sink.close()


def _new_tid() -> str:
    return uuid.uuid4().hex


def build_snapshot(
    totals: WindowTotals,
    windows: Sequence[str],
    label_names: Sequence[str],
    *,
    worker: str,
    at: int,
) -> dict[str, str]:
    """The ``<p>:kpi:<worker>`` hash fields (docs/redis.md): ``_meta`` and one per window."""
    fields = {
        "_meta": orjson.dumps(
            {"worker": worker, "at": at, "counters": list(kpi.COUNTERS), "windows": list(windows)}
        ).decode()
    }
    for window in windows:
        rows = []
        for dim, counts in sorted(totals.get(window, {}).items()):
            if dim.startswith(TRANSITION_MARK):
                continue
            row: dict[str, Any] = dict(zip(label_names, split_dim_key(dim), strict=False))
            row["counts"] = [int(c) if float(c).is_integer() else c for c in counts]
            rows.append(row)
        fields[window] = orjson.dumps(rows).decode()
    return fields


# -- /metrics ----------------------------------------------------------------------------------
class IntervalCollector(Collector):
    """``cx_<kpi>_lower`` / ``_upper`` and ``cx_low_confidence`` beside every exported KPI."""

    def __init__(
        self,
        states: Callable[[], Iterable[PartitionState]],
        reader: WindowReader,
        reference_now: Callable[[int], int],
        label_names: Callable[[], Sequence[str]],
        min_samples: int,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._states = states
        self._reader = reader
        self._reference_now = reference_now
        self._label_names = label_names
        self.min_samples = min_samples
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        totals = self._reader.read(list(self._states()), self._reference_now(self._clock()))
        label_names = ("window", *self._label_names())
        bounds = {
            spec.name: GaugeMetricFamily(spec.name, spec.help, labels=label_names)
            for spec in INTERVAL_METRICS
        }
        low_confidence = GaugeMetricFamily(
            LOW_CONFIDENCE.name, LOW_CONFIDENCE.help, labels=(*label_names, "metric")
        )
        dims = sorted(d for d in self._reader.dimensions(totals) if not d.startswith(TRANSITION_MARK))
        empty = kpi.zero_counts()
        for window, per_dim in totals.items():
            for dim in dims:
                counts = per_dim.get(dim, empty)
                labels = [window, *split_dim_key(dim)]
                for key in stats.INTERVAL_KPIS:
                    interval = stats.kpi_interval(key, counts)
                    if interval is None:
                        continue
                    bounds[f"cx_{key}_lower"].add_metric(labels, interval[0])
                    bounds[f"cx_{key}_upper"].add_metric(labels, interval[1])
                    n = stats.sample_size(key, counts)
                    low_confidence.add_metric([*labels, f"cx_{key}"], 1.0 if n < self.min_samples else 0.0)
        yield from bounds.values()
        yield low_confidence


class AlertCollector(Collector):
    """Alert and Redis health metrics of one worker."""

    def __init__(self, service: AlertService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        sink = service.sink
        total = CounterMetricFamily("cx_alerts", _HELP["cx_alerts_total"], labels=("rule", "state"))
        for rule in service.rules:
            for state in (FIRING, RESOLVED):
                total.add_metric([rule.name, state], service.transitions.get((rule.name, state), 0))
        for (rule_name, state), count in sorted(service.transitions.items()):
            if rule_name not in service.evaluator.rules:  # cleanup of a removed rule
                total.add_metric([rule_name, state], count)
        yield total

        firing = GaugeMetricFamily("cx_alerts_firing", _HELP["cx_alerts_firing"], labels=("rule", "severity"))
        per_rule = Counter(str(p.get("rule")) for p in service.evaluator.firing())
        for rule in service.rules:
            firing.add_metric([rule.name, rule.severity], per_rule.get(rule.name, 0))
        yield firing

        yield GaugeMetricFamily("cx_alerts_buffered", _HELP["cx_alerts_buffered"], value=len(sink.buffer))
        yield CounterMetricFamily("cx_alerts_dropped", _HELP["cx_alerts_dropped_total"], value=sink.dropped)
        errors = CounterMetricFamily("cx_redis_errors", _HELP["cx_redis_errors_total"], labels=("operation",))
        for operation in REDIS_OPERATIONS:
            errors.add_metric([operation], sink.errors.get(operation, 0))
        yield errors
        yield GaugeMetricFamily("cx_redis_up", _HELP["cx_redis_up"], value=1.0 if sink.up else 0.0)
        yield GaugeMetricFamily(
            "cx_alert_last_evaluation_timestamp_seconds",
            _HELP["cx_alert_last_evaluation_timestamp_seconds"],
            value=service.last_evaluation_ms / 1000,
        )


def owner_changing(cx: CxStream) -> bool:
    """True while the worker owns no partitions, or Faust is rebalancing or recovering state."""
    app = cx.app
    return (
        not cx.table.states
        or bool(getattr(app, "rebalancing", False))
        or bool(getattr(app, "in_recovery", False))
    )


def install_service(cx: CxStream, rules: Sequence[Rule]) -> AlertService:
    """Create the service for ``cx`` and register its timers, task and collectors."""
    settings = cx.settings
    label_names = label_names_of(cx.processor)
    sink = RedisSink(
        settings.redis_url.get_secret_value(),
        settings.redis_prefix,
        buffer_max=settings.redis_buffer_max,
    )
    alert_interval = settings.seconds("alert_interval")
    service = AlertService(
        rules=rules,
        sink=sink,
        states=cx.states,
        reader=cx.reader,
        reference_now=cx.processor.reference_now_ms,
        worker=settings.effective_worker_id,
        windows=[label for label, _ in settings.window_list],
        label_names=label_names,
        control_interval_s=alert_interval,
        hold=lambda: owner_changing(cx),
    )
    cx.registry.register(
        IntervalCollector(
            cx.states,
            cx.reader,
            cx.processor.reference_now_ms,
            lambda: label_names_of(cx.processor),
            settings.min_samples,
        )
    )
    cx.registry.register(AlertCollector(service))
    app = cx.app

    @app.timer(interval=alert_interval, name="cx-alert-evaluate")
    async def evaluate_alerts() -> None:
        await service.evaluate_tick()

    @app.timer(interval=settings.seconds("snapshot_interval"), name="cx-kpi-snapshot")
    async def write_snapshot() -> None:
        await service.snapshot_tick()

    @app.task
    async def alert_writer() -> None:
        await service.run_writer()

    async def flush_alerts(sender: Any, *args: Any, **kwargs: Any) -> None:
        await service.shutdown()

    app.on_before_shutdown.connect(flush_alerts)  # type: ignore[arg-type]

    return service
