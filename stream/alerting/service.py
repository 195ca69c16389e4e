"""The alerting pieces wired into a running worker: the one evaluator, views, Redis, /metrics.

Alerts are about the whole contact center, whatever the number of workers
(docs/alerts.md, "One evaluator for the whole contact center"):

* every ``CXSTREAM_SNAPSHOT_INTERVAL`` each worker publishes one view per partition it
  owns (:mod:`stream.query.partition_views`) to ``<p>:kpi:partitions``;
* one worker at a time is the **evaluator**: it holds a lease in Redis
  (``<p>:alerts:lease``, TTL two evaluation intervals, renewed twice per interval) with a
  fencing epoch. Every ``CXSTREAM_ALERT_INTERVAL`` it sums the newest view of every
  partition (its own partitions from its live state), evaluates the rules on that sum,
  writes the transitions (fenced by its epoch) and stores its pending / `for` / cooldown
  timers (``<p>:alerts:evaluator``) for a successor;
* every other worker is a standby: it tries to take the lease at the same cadence, so
  when the evaluator dies another one takes over within about two intervals, restores
  the timers and adopts the firing alerts of ``<p>:alerts:active`` without firing them
  again.

None of this can block or crash stream processing: it runs in one task on the worker's
event loop, every Redis call has a timeout, and while Redis is unreachable the
evaluator goes on with the views it last read and buffers its transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.alerting.evaluator import (
    FIRING,
    RESOLVED,
    TRANSITION_MARK,
    Evaluator,
    Transition,
)
from stream.alerting.rules import Rule
from stream.alerting.sink import LeaseClaim, RedisSink, decode_active
from stream.config.settings import Settings
from stream.config.timeutil import now_ms
from stream.domain import kpi, stats
from stream.domain.metrics_catalog import ALERT_METRICS, INTERVAL_METRICS, LOW_CONFIDENCE
from stream.domain.state import PartitionState, split_dim_key
from stream.query.partition_views import GlobalView, PartitionView, decode_views, encode_view, merge, view_of
from stream.query.windows import WindowReader

log = logging.getLogger(__name__)

REDIS_OPERATIONS = ("transition", "snapshot", "views", "controls", "seed", "lease", "sweep")
#: How often the active alerts in Redis are checked against the evaluator's own.
SWEEP_INTERVAL_S = 60.0
_HELP = {spec.name: spec.help for spec in (*ALERT_METRICS, *INTERVAL_METRICS, LOW_CONFIDENCE)}


class AlertService:
    """Partition views, the evaluator lease, rule evaluation and Redis writes of one worker."""

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
        partitions: int,
        label_names: Sequence[str] = ("queue", "channel"),
        control_interval_s: float = 5.0,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.rules = list(rules)
        self.sink = sink
        # Evaluation ticks can come a few ms early: tolerate up to 10% of an interval.
        self.evaluator = Evaluator(
            self.rules,
            label_names=label_names,
            worker=worker,
            timer_slack_ms=int(control_interval_s * 100),
        )
        self.worker = worker
        #: Unique per process: a restarted worker with the same id is a new lease holder.
        self.holder = f"{worker}/{uuid.uuid4().hex[:12]}"
        self.windows = list(windows)
        self.partitions = partitions
        self.label_names = tuple(label_names)
        self.control_interval_s = control_interval_s
        self.lease_ttl_ms = max(1000, int(2 * control_interval_s * 1000))
        self.sweep_interval_s = sweep_interval_s
        self._states = states
        self._reader = reader
        self._reference_now = reference_now
        self._clock = clock
        self._wake = asyncio.Event()
        #: True while this worker holds the evaluator lease (as far as it knows).
        self.leader = False
        #: The lease epoch this worker holds or last held (fencing token).
        self.epoch: int | None = None
        #: The evaluator restored its timers and the active alerts after taking the lease.
        self.seeded = False
        self.remote_views: list[PartitionView] = []
        self._saved_state: str | None = None
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.last_evaluation_ms = 0
        self.last_samples: dict[str, float] = {}
        self.evaluation_errors = 0
        self.held_evaluations = 0
        self.takeovers = 0
        self._missing_logged: tuple[int, ...] = ()

    # -- the global view -----------------------------------------------------------------------
    def local_views(self, wall_ms: int) -> list[PartitionView]:
        """A view of every partition this worker owns, from its live state."""
        now = self._reference_now(wall_ms)
        return [
            view_of(
                state,
                self._reader.read_partition(state, now),
                partitions=self.partitions,
                worker=self.worker,
                at=wall_ms,
                ref=now,
            )
            for state in self._states()
        ]

    def global_view(self, wall_ms: int) -> GlobalView:
        """The newest view of every partition: Redis's, or this worker's own where newer."""
        return merge(self.partitions, self.remote_views, self.local_views(wall_ms))

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, wall_ms: int | None = None) -> list[Transition]:
        """Evaluate every rule on the whole contact center now and buffer the transitions.

        Synchronous, no I/O. Does nothing unless this worker is the evaluator and has taken
        over its predecessor's state; held (returns ``[]``) while some partition has no
        view yet, so a partial sum can neither fire nor resolve anything.
        """
        wall = self._clock() if wall_ms is None else wall_ms
        if not (self.leader and self.seeded):
            return []
        view = self.global_view(wall)
        missing = tuple(view.missing())
        if missing:
            self.held_evaluations += 1
            if missing != self._missing_logged:
                log.info("alert evaluation waits for views of partitions %s", list(missing))
            self._missing_logged = missing
            return []
        self._missing_logged = ()
        transitions = self.evaluator.evaluate(view.totals(), wall, self.sink.controls, view.waiting_now(wall))
        self.last_evaluation_ms = wall
        self._record(transitions)
        self._saved_state = orjson.dumps(
            {"worker": self.worker, "epoch": self.epoch, "at": wall, **self.evaluator.export_state()}
        ).decode()
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

    # -- the lease -----------------------------------------------------------------------------
    def on_claim(self, claim: LeaseClaim | None) -> None:
        """Become the evaluator, stay it, or step down, from the answer to a lease claim."""
        if claim is None:
            return  # Redis unreachable: keep the role; fencing settles it when Redis is back
        if claim.held:
            if self.leader and claim.epoch == self.epoch:
                return
            if self.leader:
                self.step_down(f"the lease was taken again under epoch {claim.epoch}")
            self.leader, self.epoch, self.seeded = True, claim.epoch, False
            self.sink.epoch = claim.epoch
            self.takeovers += 1
            log.info("this worker (%s) is now the alert evaluator (epoch %d)", self.worker, claim.epoch)
        elif self.leader:
            self.step_down(f"the lease is held by {claim.holder}")

    def step_down(self, why: str) -> None:
        """Stop evaluating: forget alerts, timers and unwritten transitions (the new one decides)."""
        log.warning("this worker is no longer the alert evaluator: %s", why)
        if self.sink.buffer:
            self.sink.fenced += len(self.sink.buffer)
            self.sink.discard_buffer()
        self.leader, self.seeded, self.epoch = False, False, None
        self.sink.epoch = None
        self.evaluator.reset()
        self._saved_state = None

    async def seed(self) -> bool:
        """Take over: restore the predecessor's timers and adopt the alerts firing in Redis."""
        got = await self.sink.read_takeover()
        if got is None:
            return False
        raw_active, raw_state = got
        saved: Any = None
        if raw_state:
            try:
                saved = orjson.loads(raw_state)
            except orjson.JSONDecodeError:
                log.warning("unreadable evaluator state in Redis: starting without timers")
        now = self._clock()
        active = decode_active(raw_active)
        refused = set(self.evaluator.restore(saved, active, now))
        self._clean_up({aid: active[aid] for aid in refused}, now, raw_active)
        self.seeded = True
        pending = len(self.evaluator.pending())
        firing = len(self.evaluator.firing())
        log.info("alert evaluator took over: %d alerts firing, %d pending", firing, pending)
        return True

    def reconcile(
        self, active: Mapping[str, Mapping[str, Any]], now: int, raw: Mapping[str, str] | None = None
    ) -> None:
        """Match Redis's firing alerts with the evaluator's (periodic housekeeping).

        * one the evaluator already tracks, or has buffered: nothing to do (a buffered fire
          of an alert Redis already shows is a repeat and is dropped);
        * unknown to the evaluator but of a known rule: adopted as firing, so it resolves
          normally later;
        * its rule is gone from the rules file (or its grouping changed): resolved now, so
          it does not stay active forever.
        """
        buffered = {t.alert_id for t in self.sink.buffer}
        unknown: dict[str, Mapping[str, Any]] = {}
        for alert_id, payload in active.items():
            if self.sink.drop_buffered_fire(alert_id):
                log.info("alert %s was already firing in Redis: not fired again", alert_id)
                continue
            if alert_id in buffered or self.evaluator.is_firing(alert_id):
                continue
            if self.evaluator.adopt(payload, now):
                log.info("alert %s firing in Redis: taken over", alert_id)
                continue
            unknown[alert_id] = payload
        self._clean_up(unknown, now, raw)

    def _clean_up(
        self, alerts: Mapping[str, Mapping[str, Any]], now: int, raw: Mapping[str, str] | None
    ) -> None:
        cleanups = []
        for alert_id, payload in alerts.items():
            rule = payload.get("rule")
            reason = "rule removed" if rule not in self.evaluator.rules else "rule changed"
            resolved = dict(
                payload, state=RESOLVED, at=now, tid=_new_tid(), reason=reason, worker=self.worker
            )
            log.warning("resolving stale alert %s: %s", alert_id, reason)
            cleanups.append(Transition(alert_id, RESOLVED, resolved, expect=(raw or {}).get(alert_id)))
        self._record(cleanups)

    async def sweep(self) -> None:
        """Reconcile with ``<p>:alerts:active`` (alerts written by someone else, removed rules)."""
        raw = await self.sink.read_active_raw("sweep")
        if raw is not None:
            self.reconcile(decode_active(raw), self._clock(), raw)

    # -- the loop ------------------------------------------------------------------------------
    async def step(self, *, evaluate: bool) -> None:
        """One turn of the loop: lease, (if evaluator) views, controls, evaluation, writes."""
        sink = self.sink
        if sink.retry_delay() == 0:
            self.on_claim(await sink.claim_lease(self.holder, self.lease_ttl_ms, self.epoch))
        if not self.leader:
            return
        if not self.seeded and (sink.retry_delay() > 0 or not await self.seed()):
            return
        if evaluate:
            if sink.retry_delay() == 0:
                raw = await sink.read_views()
                if raw is not None:
                    self.remote_views, unreadable = decode_views(raw, self.label_names)
                    if unreadable:
                        log.warning("ignoring unreadable partition views %s", unreadable)
                await sink.refresh_controls()
            self.evaluate()
        await sink.flush()
        if self._saved_state is not None and not sink.buffer and sink.retry_delay() == 0:
            written = await sink.write_evaluator_state(self._saved_state)
            if written is not None:
                self._saved_state = None
            if written is False:
                self.step_down("a newer evaluator holds the lease (state write fenced)")

    async def run(self) -> None:
        """Task body: the lease every half interval, evaluation every interval, forever."""
        loop = asyncio.get_running_loop()
        half = self.control_interval_s / 2
        next_evaluation = loop.time()
        next_sweep = loop.time() + self.sweep_interval_s
        while True:
            try:
                due = loop.time() >= next_evaluation
                if due:
                    next_evaluation = max(next_evaluation + self.control_interval_s, loop.time() + half)
                await self.step(evaluate=due)
                if self.leader and self.seeded and loop.time() >= next_sweep and not self.sink.buffer:
                    next_sweep = loop.time() + self.sweep_interval_s
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.evaluation_errors += 1
                log.exception("alert loop step failed")
            delay = min(half, max(0.0, next_evaluation - loop.time()))
            if self.sink.buffer:
                delay = min(delay, max(0.05, self.sink.retry_delay()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, delay))
            self._wake.clear()

    # -- views ---------------------------------------------------------------------------------
    async def snapshot_tick(self) -> None:
        """Timer body: publish this worker's partition views; never raises into Faust."""
        try:
            if self.sink.retry_delay() > 0:
                return
            wall = self._clock()
            views = self.local_views(wall)
            await self.sink.write_views(
                [(v.partition, v.position, encode_view(v, self.label_names)) for v in views], wall
            )
        except Exception:
            log.exception("writing partition views failed")

    async def shutdown(self, timeout: float = 3.0) -> None:
        """Worker stopping: write buffered transitions and views, hand the lease on, close."""
        try:
            await asyncio.wait_for(self.snapshot_tick(), timeout)
            if self.sink.buffer and self.seeded:
                await asyncio.wait_for(self.sink.flush(force=True), timeout)
            if self.leader and not self.sink.buffer:
                if self._saved_state is not None:
                    await asyncio.wait_for(self.sink.write_evaluator_state(self._saved_state), timeout)
                await asyncio.wait_for(self.sink.release_lease(self.holder), timeout)
        except Exception:  # shutdown must go on
            log.debug("final alert flush failed", exc_info=True)
        if self.sink.buffer:
            log.warning("stopping with %d alert transitions not written to Redis", len(self.sink.buffer))
        await self.sink.close()


def _new_tid() -> str:
    return uuid.uuid4().hex


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
        policy: str = kpi.DEFAULT_SERVICE_LEVEL_POLICY,
    ) -> None:
        """``policy``: the service-level policy (the denominator of cx_service_level_ratio)."""
        self.policy = policy
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
                    interval = stats.kpi_interval(key, counts, policy=self.policy)
                    if interval is None:
                        continue
                    bounds[f"cx_{key}_lower"].add_metric(labels, interval[0])
                    bounds[f"cx_{key}_upper"].add_metric(labels, interval[1])
                    n = stats.sample_size(key, counts, self.policy)
                    low_confidence.add_metric([*labels, f"cx_{key}"], 1.0 if n < self.min_samples else 0.0)
        yield from bounds.values()
        yield low_confidence


class AlertCollector(Collector):
    """Alert, evaluator-lease and Redis health metrics of one worker."""

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

        yield GaugeMetricFamily(
            "cx_alert_evaluator", _HELP["cx_alert_evaluator"], value=1.0 if service.leader else 0.0
        )
        yield CounterMetricFamily(
            "cx_alert_evaluator_takeovers",
            _HELP["cx_alert_evaluator_takeovers_total"],
            value=service.takeovers,
        )
        yield CounterMetricFamily(
            "cx_alert_evaluations_held",
            _HELP["cx_alert_evaluations_held_total"],
            value=service.held_evaluations,
        )
        yield GaugeMetricFamily("cx_alerts_buffered", _HELP["cx_alerts_buffered"], value=len(sink.buffer))
        yield CounterMetricFamily("cx_alerts_dropped", _HELP["cx_alerts_dropped_total"], value=sink.dropped)
        yield CounterMetricFamily(
            "cx_alerts_superseded", _HELP["cx_alerts_superseded_total"], value=sink.fenced
        )
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


def build_service(
    settings: Settings,
    rules: Sequence[Rule],
    *,
    states: Callable[[], Iterable[PartitionState]],
    reader: WindowReader,
    reference_now: Callable[[int], int],
) -> AlertService:
    """The alert service of a worker, from settings and what it reads (no Faust, no app).

    The runtime (:mod:`stream.runtime.app`) runs :meth:`AlertService.run` as a task,
    :meth:`AlertService.snapshot_tick` on a timer and :meth:`AlertService.shutdown` at
    shutdown, and registers :func:`collectors` on its registry.
    """
    sink = RedisSink(
        settings.redis_url.get_secret_value(),
        settings.redis_prefix,
        buffer_max=settings.redis_buffer_max,
    )
    return AlertService(
        rules=rules,
        sink=sink,
        states=states,
        reader=reader,
        reference_now=reference_now,
        worker=settings.effective_worker_id,
        windows=[label for label, _ in settings.window_list],
        partitions=settings.partitions,
        label_names=settings.label_names,
        control_interval_s=settings.alert_interval,
    )


def collectors(
    service: AlertService,
    settings: Settings,
    *,
    states: Callable[[], Iterable[PartitionState]],
    reader: WindowReader,
    reference_now: Callable[[int], int],
) -> list[Collector]:
    """The /metrics collectors of the alerting side: intervals beside every KPI, alert health."""
    return [
        IntervalCollector(
            states,
            reader,
            reference_now,
            lambda: settings.label_names,
            settings.min_samples,
            policy=settings.service_level_policy,
        ),
        AlertCollector(service),
    ]
