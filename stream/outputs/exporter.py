"""Prometheus exposition: a custom collector that reads the state at scrape time.

Nothing on the hot path touches a prometheus_client metric; the collector sums
the buckets this worker owns when Prometheus asks (every 15 s or so), so the
cost is per scrape, not per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.config.timeutil import now_ms
from stream.domain import agents
from stream.domain.kpi import CHANNEL_SWITCHES, WAITS_ENDED, derived_kpis, survey_response_ratios, zero_counts
from stream.domain.metrics_catalog import (
    AGENT_STATE_SECONDS,
    AGENTS_NOW,
    CONTACTS_WAITING,
    COUNT_METRICS,
    EVENTS_TOTAL,
    INTERNAL_OUTCOMES,
    INTERNAL_RECORDS_TOTAL,
    LONGEST_WAIT,
    OCCUPANCY,
    OUTCOMES,
    QUEUE_LABELS,
    RATIO_METRICS,
    RESPONSE_RATIO,
    SWITCH_TRANSITIONS,
    TRANSITION_LABELS,
    UNMATCHED_WAIT_EVENTS,
    WAITS_EXPIRED,
)
from stream.domain.processor import EXPIRED, UNMATCHED, Processor
from stream.domain.state import TRANSITION_MARK, PartitionState, dim_key, split_dim_key
from stream.query.live import waiting_by_dim
from stream.query.windows import WindowReader, WindowTotals


class KpiCollector(Collector):
    """Collects every contract KPI for the partitions this worker owns."""

    def __init__(
        self,
        states: Callable[[], Iterable[PartitionState]],
        processor: Processor,
        reader: WindowReader,
        topics: Iterable[str],
        clock: Callable[[], int] = now_ms,
        internal_topics: Iterable[str] = (),
    ) -> None:
        """``topics``: the input topics (``cx_events_total``); ``internal_topics``: topics
        cxstream writes and reads itself (``cx_internal_records_total``), kept apart so
        the input rate is not overstated by a third."""
        self._states = states
        self._processor = processor
        self._reader = reader
        self._topics = tuple(topics)
        self._internal_topics = tuple(internal_topics)
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """Build all metric families from one consistent read of the state."""
        states = list(self._states())
        now = self._processor.reference_now_ms(self._clock())
        totals = self._reader.read(states, now)
        all_dims = self._reader.dimensions(totals)
        dims = sorted(d for d in all_dims if not d.startswith(TRANSITION_MARK))
        transitions = sorted(d for d in all_dims if d.startswith(TRANSITION_MARK))
        label_names = ("window", *self._processor.label_names())

        counts_f = {s.name: GaugeMetricFamily(s.name, s.help, labels=label_names) for s in COUNT_METRICS}
        ratio_f = {s.name: GaugeMetricFamily(s.name, s.help, labels=label_names) for s in RATIO_METRICS}
        response_f = GaugeMetricFamily(
            RESPONSE_RATIO.name, RESPONSE_RATIO.help, labels=(*label_names, "metric")
        )
        transitions_f = GaugeMetricFamily(
            SWITCH_TRANSITIONS.name, SWITCH_TRANSITIONS.help, labels=TRANSITION_LABELS
        )
        empty = zero_counts()
        policy = self._processor.service_level_policy
        for window, per_dim in totals.items():
            for dim in transitions:
                counts = per_dim.get(dim, empty)
                transitions_f.add_metric([window, *split_dim_key(dim[1:])], counts[CHANNEL_SWITCHES])
            for dim in dims:
                counts = per_dim.get(dim, empty)
                labels = [window, *split_dim_key(dim)]
                for spec in COUNT_METRICS:
                    counts_f[spec.name].add_metric(labels, counts[spec.source])  # type: ignore[index]
                derived = derived_kpis(counts, policy)
                for spec in RATIO_METRICS:
                    value = derived[spec.source]  # type: ignore[index]
                    if value is not None:
                        ratio_f[spec.name].add_metric(labels, value)
                for metric, value in survey_response_ratios(counts).items():
                    if value is not None:
                        response_f.add_metric([*labels, metric], value)
        yield from counts_f.values()
        yield from ratio_f.values()
        yield response_f
        yield transitions_f
        yield from self._queue_now(states, totals, now)
        yield from self._agents(states, now)

        events = CounterMetricFamily(
            EVENTS_TOTAL.name.removesuffix("_total"), EVENTS_TOTAL.help, labels=("topic", "outcome")
        )
        outcomes = self._processor.outcomes
        for topic in self._topics:
            for outcome in OUTCOMES:
                events.add_metric([topic, outcome], outcomes.get((topic, outcome), 0))
        yield events

        internal = CounterMetricFamily(
            INTERNAL_RECORDS_TOTAL.name.removesuffix("_total"),
            INTERNAL_RECORDS_TOTAL.help,
            labels=("topic", "outcome"),
        )
        for topic in self._internal_topics:
            for outcome in INTERNAL_OUTCOMES:
                internal.add_metric([topic, outcome], outcomes.get((topic, outcome), 0))
        yield internal

        yield _gauge("cx_state_partitions", "Partitions this worker owns.", len(states))
        yield _gauge("cx_state_buckets", "Event-time buckets held.", sum(len(s.buckets) for s in states))
        yield _gauge("cx_state_contacts", "Contact records held.", sum(len(s.contacts) for s in states))
        yield _gauge(
            "cx_state_customers", "Customer contact histories held.", sum(len(s.customers) for s in states)
        )
        yield _gauge(
            "cx_state_dedup_ids",
            "Event ids remembered for dedup.",
            sum(len(s.dedup) for s in states),
        )
        yield _gauge(
            "cx_event_time_watermark_seconds",
            "Newest event time processed (epoch seconds).",
            self._processor.watermark_ms / 1000,
        )

    def _queue_now(self, states: list[PartitionState], totals: WindowTotals, now: int) -> Iterator[Metric]:
        """The live queue gauges: who waits now, and since when (the states' waiting index)."""
        waiting = waiting_by_dim(states)  # "queue\x1fchannel" -> [count, oldest queued ms]
        # A queue x channel with waits in the longest window reads 0 when nobody waits.
        for per_dim in totals.values():
            for dim, counts in per_dim.items():
                if counts[WAITS_ENDED] and not dim.startswith(TRANSITION_MARK):
                    waiting.setdefault(dim_key(*split_dim_key(dim)[:2]), [0, 0])
        contacts = GaugeMetricFamily(CONTACTS_WAITING.name, CONTACTS_WAITING.help, labels=QUEUE_LABELS)
        longest = GaugeMetricFamily(LONGEST_WAIT.name, LONGEST_WAIT.help, labels=QUEUE_LABELS)
        for dim in sorted(waiting):
            count, oldest = waiting[dim]
            labels = split_dim_key(dim)
            contacts.add_metric(labels, count)
            if count:
                longest.add_metric(labels, max(0, now - oldest) / 1000)
        yield contacts
        yield longest
        anomalies = self._processor.wait_anomalies
        for spec, key in ((UNMATCHED_WAIT_EVENTS, UNMATCHED), (WAITS_EXPIRED, EXPIRED)):
            yield CounterMetricFamily(
                spec.name.removesuffix("_total"), spec.help, value=anomalies.get(key, 0)
            )

    def _agents(self, states: list[PartitionState], now: int) -> Iterator[Metric]:
        """Agents by state now, and agent time per window (stream.domain.agents)."""
        records = [record for state in states for record in state.agents.values()]
        now_f = GaugeMetricFamily(AGENTS_NOW.name, AGENTS_NOW.help, labels=AGENTS_NOW.labels)
        for (state_name, team), count in sorted(agents.agents_now(records).items()):
            now_f.add_metric([state_name, team], count)
        yield now_f
        seconds_f = GaugeMetricFamily(
            AGENT_STATE_SECONDS.name, AGENT_STATE_SECONDS.help, labels=AGENT_STATE_SECONDS.labels
        )
        occupancy_f = GaugeMetricFamily(OCCUPANCY.name, OCCUPANCY.help, labels=OCCUPANCY.labels)
        if records:
            for window, seconds in self._reader.windows:
                first, _ = self._reader.window_bounds(now, seconds, window)
                per_team: dict[str, dict[str, float]] = {}
                for (team, state_name), value in agents.state_seconds(records, first * 1000, now).items():
                    per_team.setdefault(team, {})[state_name] = value
                for team in sorted(per_team):
                    for state_name in agents.AGENT_STATES:
                        seconds_f.add_metric([window, team, state_name], per_team[team].get(state_name, 0.0))
                    ratio = agents.occupancy(per_team[team])
                    if ratio is not None:
                        occupancy_f.add_metric([window, team], ratio)
        yield seconds_f
        yield occupancy_f


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def build_registry(collector: KpiCollector) -> CollectorRegistry:
    """A private registry holding only cxstream's collector (no process/GC noise)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
