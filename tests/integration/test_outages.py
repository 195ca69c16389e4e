"""Dependency outages while traffic flows: the broker, then Redis.

* Broker: SIGSTOP the tansu broker (``broker.pause()``) while a producer keeps sending,
  then SIGCONT it. tansu keeps data only in memory, so a real restart would lose every
  topic; a freeze is the outage that keeps its storage (clients see timeouts, as with a
  hung or partitioned broker). The worker must reconnect by itself and the counts
  converge to exactly the independent computation (producer retries create duplicate
  messages at the broker; dedup by event_id must absorb them).
* Redis: SIGSTOP Redis for a while. Processing and /metrics must carry on during the
  outage (events produced meanwhile are counted before Redis returns), ``cx_redis_up``
  reports it, and the counts stay exact. Alert delivery after the outage is covered by
  tests/integration/test_alert_sink.py.

CI runs short outages (10-15 s); ``-m slow`` runs the issue's 30 s broker and 60 s Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.embedded import free_port
from stream.generator import TrafficProfile, TrafficSimulator
from tests.expected import CONTACT_AND_SURVEY_COUNTS, expected_kpis
from tests.harness import Topics, WorkerProcess, by_labels, wait_until

pytestmark = pytest.mark.integration

WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400}
CHECKED = list(CONTACT_AND_SURVEY_COUNTS)
SUMMARY = ["cx_contacts", "cx_contacts_ended", "cx_csat_responses", "cx_nps_responses", "cx_ces_responses"]
Event = tuple[str, str, dict[str, Any]]


def simulated(n: int, seed: int, start_ms: int) -> list[Event]:
    sim = TrafficSimulator(TrafficProfile.demo(), seed=seed, start_ms=start_ms, duplicate_ratio=0.03)
    events = [(e.topic_kind, e.key, e.value) for e in sim.events(n)]
    assert not any(isinstance(v, bytes) for _, _, v in events)
    return events  # type: ignore[return-value]


def mismatch(worker: WorkerProcess, events: list[Event]) -> str | None:
    samples = worker.samples()
    expected = expected_kpis([(k, v) for k, _, v in events], int(time.time() * 1000), WINDOWS)
    for window in ("1h", "24h"):
        for name in CHECKED:
            got = {k: v for k, v in by_labels(samples, name, window=window).items() if v}
            want = {d: c[name] for d, c in expected[window].items() if c.get(name)}
            if got != want:
                return f"{name}[{window}]: got {sum(got.values())} want {sum(want.values())}"
    return None


def totals(worker: WorkerProcess, window: str = "24h") -> dict[str, float]:
    samples = worker.samples()
    return {name: sum(by_labels(samples, name, window=window).values()) for name in SUMMARY}


def outcome_totals(worker: WorkerProcess, topics: Topics) -> dict[str, float]:
    """cx_events_total summed over the two input topics, by outcome."""
    out: dict[str, float] = {}
    for labels, value in worker.samples().get("cx_events_total", []):
        if labels.get("topic") in (topics.interactions, topics.surveys):
            out[labels["outcome"]] = out.get(labels["outcome"], 0) + value
    return out


def converge(worker: WorkerProcess, events: list[Event], timeout: float) -> None:
    def check() -> bool:
        problem = mismatch(worker, events)
        assert problem is None, problem
        return True

    try:
        wait_until(check, timeout=timeout, interval=1.0)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- worker log ---\n{worker.log_tail(40)}") from None


class RetryingProducer(threading.Thread):
    """Sends records in slices from a thread, re-sending whatever is not acknowledged.

    Like any at-least-once producer facing a frozen broker: a send that timed out may
    still have been written, so re-sending can duplicate it (dedup by event_id absorbs it).
    """

    def __init__(self, bootstrap: str, records: list[tuple[str, bytes, bytes]], slice_: int, pause_s: float):
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.records = records
        self.slice = slice_
        self.pause_s = pause_s
        self.failed_attempts = 0
        self.acked = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, request_timeout_ms=5000, retry_backoff_ms=500
        )
        await producer.start()
        try:
            for start in range(0, len(self.records), self.slice):
                pending = self.records[start : start + self.slice]
                while pending:
                    failed = []
                    futures = []
                    for record in pending:
                        try:
                            futures.append((record, await producer.send(record[0], record[2], key=record[1])))
                        except KafkaError:
                            failed.append(record)
                    for record, future in futures:
                        try:
                            await future
                            self.acked += 1
                        except KafkaError:
                            failed.append(record)
                    if failed:
                        self.failed_attempts += len(failed)
                        await asyncio.sleep(1.0)
                    pending = failed
                await asyncio.sleep(self.pause_s)
        finally:
            await producer.stop()


def payload(topics: Topics, events: list[Event]) -> list[tuple[str, bytes, bytes]]:
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}
    return [(topic_of[kind], key.encode(), orjson.dumps(value)) for kind, key, value in events]


def timed_scrape(worker: WorkerProcess) -> float:
    started = time.monotonic()
    worker.metrics_text()
    return time.monotonic() - started


# -- broker outage -----------------------------------------------------------------------------
def broker_outage(
    bootstrap: str,
    begin: Callable[[], None],
    end: Callable[[], None],
    topics: Topics,
    worker: WorkerProcess,
    outage_s: float,
    label: str,
) -> None:
    """Produce from a thread; ``begin()`` the outage mid-stream, ``end()`` it after ``outage_s``."""
    worker.wait_ready(partitions=4, timeout=120)
    events = simulated(6000, seed=41, start_ms=int(time.time() * 1000) - 40 * 60_000)
    producer = RetryingProducer(bootstrap, payload(topics, events), slice_=100, pause_s=0.25)
    producer.start()
    try:
        wait_until(lambda: outcome_totals(worker, topics).get("accepted", 0) > 500, timeout=60)
        before = totals(worker)
        begin()
        began = time.monotonic()
        scrapes = []
        while time.monotonic() - began < outage_s:
            assert worker.alive(), worker.log_tail(30)
            scrapes.append(timed_scrape(worker))  # /metrics is served from memory meanwhile
            time.sleep(1.0)
    finally:
        end()
    ended = time.monotonic()
    producer.join(timeout=300)
    assert not producer.is_alive() and producer.error is None, producer.error
    converge(worker, events, timeout=240)
    converged_s = time.monotonic() - ended
    time.sleep(3)
    assert mismatch(worker, events) is None  # and stays exact
    assert worker.alive()
    print(
        f"{label} {outage_s:.0f}s: before {before}; after {totals(worker)}; outcomes "
        f"{outcome_totals(worker, topics)}; producer re-sends {producer.failed_attempts}; "
        f"converged {converged_s:.1f}s after the outage; slowest scrape during it {max(scrapes):.2f}s"
    )
    assert max(scrapes) < 5.0


def paused(broker: Any, topics: Topics, start_worker: Callable[..., WorkerProcess], outage_s: float) -> None:
    """The broker process frozen (SIGSTOP): requests time out, storage is kept."""
    worker = start_worker()
    broker_outage(broker.bootstrap, broker.pause, broker.resume, topics, worker, outage_s, "broker paused")


def test_broker_paused_10s_while_producing_worker_reconnects_and_counts_converge(
    broker, topics: Topics, start_worker
) -> None:
    paused(broker, topics, start_worker, outage_s=10)


@pytest.mark.slow
def test_broker_paused_30s_while_producing_worker_reconnects_and_counts_converge(
    broker, topics: Topics, start_worker
) -> None:
    paused(broker, topics, start_worker, outage_s=30)


@pytest.fixture
def reachable_broker(tmp_path: Any) -> Iterator[Any]:
    """A tansu broker reached only through a proxy that can cut every connection and refuse
    new ones -- what clients see while a Kafka broker restarts -- with its storage intact."""
    from tests.integration.test_security import AdvertisingTansu, Proxy

    proxy_port = free_port()
    tansu = AdvertisingTansu(proxy_port, log_dir=tmp_path / "tansu").start()
    proxy = Proxy(tansu.port, port=proxy_port).start()
    yield proxy
    proxy.stop()
    tansu.stop()


def unreachable(
    proxy: Any, topics: Topics, start_worker: Callable[..., WorkerProcess], outage_s: float
) -> None:
    """Every broker connection reset, new ones refused, then the broker is back (same data)."""
    worker = start_worker(CXSTREAM_BROKER=f"kafka://127.0.0.1:{proxy.port}")
    bootstrap = f"127.0.0.1:{proxy.port}"
    broker_outage(bootstrap, proxy.cut, proxy.restore, topics, worker, outage_s, "broker unreachable")


def test_broker_unreachable_10s_connections_dropped_and_refused_counts_converge(
    reachable_broker, topics: Topics, start_worker
) -> None:
    unreachable(reachable_broker, topics, start_worker, outage_s=10)


@pytest.mark.slow
def test_broker_unreachable_30s_connections_dropped_and_refused_counts_converge(
    reachable_broker, topics: Topics, start_worker
) -> None:
    unreachable(reachable_broker, topics, start_worker, outage_s=30)


# -- Redis outage --------------------------------------------------------------------------------
def redis_outage(
    broker: Any,
    redis_server: Any,
    topics: Topics,
    start_worker: Callable[..., WorkerProcess],
    outage_s: float,
) -> None:
    worker = start_worker(CXSTREAM_SNAPSHOT_INTERVAL="1s", CXSTREAM_ALERT_INTERVAL="1s")
    worker.wait_ready(partitions=4, timeout=120)
    now = int(time.time() * 1000)
    before_events = simulated(2000, seed=51, start_ms=now - 40 * 60_000)
    during_events = simulated(2000, seed=52, start_ms=now - 35 * 60_000)
    after_events = simulated(1000, seed=53, start_ms=now - 30 * 60_000)

    def send(events: list[Event]) -> None:
        producer = RetryingProducer(broker.bootstrap, payload(topics, events), slice_=500, pause_s=0)
        producer.run()
        assert producer.error is None, producer.error

    send(before_events)
    converge(worker, before_events, timeout=120)
    wait_until(lambda: any(v == 1 for _, v in worker.samples().get("cx_redis_up", [])), timeout=30)

    redis_server.pause()
    paused_at = time.monotonic()
    try:
        # Processing continues without Redis: new traffic is counted while it is down.
        send(during_events)
        # (Redis stays down until they are: on a loaded machine the outage may run longer.)
        converge(worker, before_events + during_events, timeout=90)
        counted_s = time.monotonic() - paused_at
        wait_until(lambda: any(v == 0 for _, v in worker.samples().get("cx_redis_up", [])), timeout=outage_s)
        scrapes = []
        while time.monotonic() - paused_at < outage_s:
            assert worker.alive(), worker.log_tail(30)
            scrapes.append(timed_scrape(worker))
            time.sleep(1.0)
        during = totals(worker)
    finally:
        redis_server.resume()
    send(after_events)
    converge(worker, before_events + during_events + after_events, timeout=120)
    wait_until(lambda: any(v == 1 for _, v in worker.samples().get("cx_redis_up", [])), timeout=60)
    assert worker.alive()
    print(
        f"redis outage {outage_s:.0f}s: traffic sent during it counted after {counted_s:.1f}s; "
        f"totals during {during}; after {totals(worker)}; outcomes {outcome_totals(worker, topics)}; "
        f"slowest scrape during outage {max(scrapes):.2f}s"
    )
    assert max(scrapes) < 5.0


def test_redis_paused_15s_processing_and_metrics_continue(
    broker, redis_server, topics: Topics, start_worker
) -> None:
    redis_outage(broker, redis_server, topics, start_worker, outage_s=15)


@pytest.mark.slow
def test_redis_paused_60s_processing_and_metrics_continue(
    broker, redis_server, topics: Topics, start_worker
) -> None:
    redis_outage(broker, redis_server, topics, start_worker, outage_s=60)
