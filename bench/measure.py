"""The measurements: raw consume, naive Faust, the cxstream pipeline, latency, scaling, soak.

Every throughput figure is timed the same way: from the first event the consumer
is seen to have processed to the last one, so process start-up, consumer-group
joins and (empty) table recovery are excluded. Child processes are sampled over
HTTP every ``interval`` seconds; the rate is the slope between two exact samples,
(count_b - count_a) / (t_b - t_a), taken from the first non-zero sample to the last
sample before the target, so the polling interval blurs neither end.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    ROOT,
    Child,
    TopicSet,
    cpu_seconds,
    event_outcomes,
    gauge,
    peak_rss_mb,
    rss_mb,
    start_worker,
)

# -- following a count ------------------------------------------------------------------


@dataclass
class Throughput:
    """A measured consumption rate and how it was obtained."""

    eps: float
    """Steady rate: slope between the first non-zero sample and the last sample below target."""
    eps_end_to_end: float
    """Target minus the first non-zero count, over the time to reach the target."""
    seconds: float
    """From the first non-zero sample to the first sample at the target."""
    samples: int
    startup_s: float = 0.0
    """From process start (or measurement start) to the first non-zero sample."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds used during ``seconds`` by the processes involved."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("eps", "eps_end_to_end", "seconds", "startup_s"):
            out[key] = round(out[key], 3)
        out["cpu_s"] = {k: round(v, 2) for k, v in self.cpu_s.items()}
        return out


def follow(
    read: Callable[[], float],
    target: int,
    *,
    interval: float = 0.2,
    timeout: float = 600.0,
    started_at: float | None = None,
    cpu_pids: dict[str, int] | None = None,
    alive: Callable[[], bool] = lambda: True,
    what: str = "consumer",
    on_first: Callable[[], None] | None = None,
) -> Throughput:
    """Poll ``read()`` (a processed-events count) until it reaches ``target``.

    ``on_first`` is called once, when the count first moves.
    """
    samples: list[tuple[float, float]] = []
    begin = time.perf_counter() if started_at is None else started_at
    deadline = time.perf_counter() + timeout
    cpu_start: dict[str, float] = {}
    while True:
        before = time.perf_counter()
        try:
            count = read()
        except OSError:
            count = samples[-1][1] if samples else 0.0
        at = (before + time.perf_counter()) / 2
        if count > 0 and not samples:
            if cpu_pids:
                cpu_start = {name: cpu_seconds(pid) or 0.0 for name, pid in cpu_pids.items()}
            if on_first is not None:
                on_first()
        if count > 0 or samples:
            samples.append((at, count))
        if count >= target:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: {count:.0f} of {target} events after {timeout:.0f}s")
        if not alive():
            raise RuntimeError(f"{what} died at {count:.0f} of {target} events")
        time.sleep(interval)
    cpu_used = {
        name: (cpu_seconds(pid) or 0.0) - cpu_start.get(name, 0.0) for name, pid in (cpu_pids or {}).items()
    }
    return rate_from_samples(samples, target, begin, cpu_used)


def rate_from_samples(
    samples: Sequence[tuple[float, float]], target: int, begin: float, cpu_used: dict[str, float]
) -> Throughput:
    """Steady rate between the first non-zero sample and the last one below ``target``."""
    t0, c0 = samples[0]
    done = [s for s in samples if s[1] >= target]
    t_done = done[0][0] if done else samples[-1][0]
    below = [s for s in samples if s[1] < target]
    t1, c1 = below[-1] if below else samples[0]
    end_to_end = (target - c0) / max(1e-9, t_done - t0)
    steady = (c1 - c0) / (t1 - t0) if t1 - t0 > 1.0 and c1 - c0 > 0.3 * target else end_to_end
    return Throughput(steady, end_to_end, t_done - t0, len(samples), t0 - begin, cpu_used)


# -- (1) raw aiokafka -----------------------------------------------------------------------


async def _raw(bootstrap: str, topics: Sequence[str], target: int, min_events: int) -> tuple[Throughput, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = errors = passed = 0
        t0 = c0 = None
        cpu0 = time.process_time()
        while count < min_events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    try:
                        loads(record.value)
                    except decode_error:
                        errors += 1
            got = sum(len(r) for r in batches.values())
            if got and t0 is None:
                t0, c0 = time.perf_counter(), got
                cpu0 = time.process_time()
            count += got
            passed += got
            if passed >= target and count < min_events:
                # Read the same topics again until min_events: a pass of 200k events lasts
                # under a second, too short for a stable rate.
                passed = 0
                await consumer.seek_to_beginning(*tps)
        seconds = time.perf_counter() - (t0 or 0.0)
        eps = (count - (c0 or 0)) / max(1e-9, seconds)
        cpu = time.process_time() - cpu0
        return Throughput(eps, eps, seconds, count, 0.0, {"consumer": cpu}), errors
    finally:
        await consumer.stop()


def measure_raw(bootstrap: str, topics: TopicSet, target: int, min_events: int = 1_000_000) -> dict[str, Any]:
    """(1) The physical limit: aiokafka getmany + orjson.loads of every value, one process.

    The pre-filled topics are read as many times as it takes to consume ``min_events``
    (``samples`` in the result is the number of events timed).
    """
    result, errors = asyncio.run(_raw(bootstrap, topics.inputs, target, max(target, min_events)))
    return {**result.as_dict(), "decode_errors": errors}


# -- (2) naive Faust --------------------------------------------------------------------------


def measure_naive_faust(
    broker_url: str,
    topics: TopicSet,
    target: int,
    workdir: Path,
    interval: float = 0.2,
    partitions: int = 4,
) -> dict[str, Any]:
    """(2) A textbook Faust agent: per-event iteration and ``table[key] += 1``."""
    from bench.common import free_port, worker_env

    port = free_port()
    env = worker_env(broker_url, topics, "unused", workdir, port)
    env.update(
        BENCH_APP_ID=f"naive-{uuid.uuid4().hex[:8]}",
        BENCH_BROKER=broker_url,
        BENCH_TOPICS=",".join(topics.inputs),
        BENCH_PORT=str(port),
        BENCH_DATA_DIR=str(workdir / "naive-data"),
        BENCH_PARTITIONS=str(partitions),
    )
    child = Child([sys.executable, "-m", "bench.naive_faust"], env, workdir / "naive_faust.log", port=port)
    return time_counting_child(child, target, interval, "naive Faust")


def measure_quix(
    bootstrap: str,
    topics: TopicSet,
    target: int,
    workdir: Path,
    interval: float = 0.2,
) -> dict[str, Any]:
    """(2b) The same KPI job as a Quix Streams application (bench/quix_app.py)."""
    from bench.common import free_port

    port = free_port()
    app_id = f"quix-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env.update(
        BENCH_APP_ID=app_id,
        BENCH_BOOTSTRAP=bootstrap,
        BENCH_TOPICS=",".join([topics.interactions, topics.surveys]),
        BENCH_PORT=str(port),
        BENCH_DATA_DIR=str(workdir / f"{app_id}-state"),
    )
    child = Child([sys.executable, "-m", "bench.quix_app"], env, workdir / f"{app_id}.log", port=port)
    return time_counting_child(child, target, interval, "Quix Streams")


def time_counting_child(child: Child, target: int, interval: float, what: str) -> dict[str, Any]:
    """Start a baseline app whose ``GET /count`` says how many events it has processed; time it."""
    child.start()
    try:
        child.wait_http("/count")

        def read() -> float:
            return float(orjson.loads(child.get("/count"))["count"])

        result = follow(
            read,
            target,
            interval=interval,
            timeout=target / 500 + 180,
            started_at=child.started_at,
            cpu_pids={"app": child.pid},
            alive=child.alive,
            what=what,
        )
        return {**result.as_dict(), "peak_rss_mb": _round(peak_rss_mb(child.pid))}
    finally:
        child.stop()


# -- (3) the cxstream worker -------------------------------------------------------------------


class ChangelogFollower:
    """Tails the worker's state changelog in a thread: progress and marker times, for free.

    Every batch the worker applies ends with a commit marker (key ``m``, see
    stream/runtime/commitlog.py) carrying the last input offset applied per topic, so the
    sum of ``offset + 1`` over the markers of all changelog partitions is the number
    of input events reflected in the state, stamped when the marker reached the
    broker. Unlike polling /metrics (a 50-100 ms scrape on the worker's event loop
    at this state size) this costs the worker nothing. Contact records whose key
    starts with ``watch`` (latency markers) are timestamped as they arrive.
    """

    def __init__(
        self, bootstrap: str, topic: str, inputs: Sequence[str], watch: bytes = b"c:bench-lat-"
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.inputs = frozenset(inputs)
        self.watch = watch
        #: (arrival time, input events reflected, all messages reflected incl. internal topics)
        self.samples: list[tuple[float, float, float]] = []
        self.seen: dict[bytes, float] = {}
        self._per_partition: dict[int, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="changelog-follower", daemon=True)

    def start(self, timeout: float = 90.0) -> ChangelogFollower:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"changelog topic {self.topic} did not appear in {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"changelog follower failed: {self._error!r}")
        return self

    def processed(self) -> float:
        """Input events (both input topics) reflected in the state so far."""
        if self._error is not None:
            raise RuntimeError(f"changelog follower failed: {self._error!r}")
        return float(sum(i for i, _ in self._per_partition.values()))

    def processed_all(self) -> float:
        """Messages of every consumed topic (inputs and the customer repartition topic)."""
        return float(sum(a for _, a in self._per_partition.values()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the driver thread
            self._error = exc
            self._ready.set()

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            partitions = None
            while not partitions and not self._stop.is_set():
                cluster = await consumer._client.fetch_all_metadata()
                partitions = cluster.partitions_for_topic(self.topic)
                if not partitions:
                    await asyncio.sleep(0.2)
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions or ())]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._ready.set()
            loads = orjson.loads
            watch = self.watch
            inputs = self.inputs
            per_partition = self._per_partition
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=100, max_records=50_000)
                now = time.perf_counter()
                marked = False
                for tp, records in batches.items():
                    for record in records:
                        key = record.key
                        if key == b"m" and record.value:
                            offsets = loads(record.value)[2]["o"]
                            per_partition[tp.partition] = (
                                sum(o + 1 for t, o in offsets.items() if t in inputs),
                                sum(o + 1 for o in offsets.values()),
                            )
                            marked = True
                        elif key is not None and key.startswith(watch) and key not in self.seen:
                            self.seen[key] = now
                if marked:
                    self.samples.append((now, self.processed(), self.processed_all()))
        finally:
            await consumer.stop()


def changelog_topic(app_id: str) -> str:
    """Faust names a table's changelog ``<app id>-<table name>-changelog``; cxstream's table is ``state``."""
    return f"{app_id}-state-changelog"


def measure_pipeline(
    workers: Sequence[Child],
    target: int,
    *,
    bootstrap: str,
    app_id: str,
    topics: TopicSet,
    expected: dict[str, Any] | None = None,
    broker_pid: int | None = None,
    what: str = "cxstream worker",
    timeout: float | None = None,
) -> dict[str, Any]:
    """(3) Time the workers from their first committed batch until all ``target`` events are in.

    Progress comes from the changelog commit markers (:class:`ChangelogFollower`).
    Done means every input event *and* every contact start the workers re-keyed to
    the customer topic (``expected["forwarded"]``, from the in-process pipeline) is
    reflected: repeat detection is part of the pipeline. At the end,
    ``cx_events_total`` on /metrics (summed over workers) is compared with
    ``expected["outcomes"]``.
    """
    follower = ChangelogFollower(bootstrap, changelog_topic(app_id), topics.inputs).start()
    forwarded = int(expected["forwarded"]) if expected else 0
    pids = {f"worker{i}": w.pid for i, w in enumerate(workers)}
    if broker_pid:
        pids["broker"] = broker_pid
    pids["driver"] = os.getpid()
    begin = min(w.started_at for w in workers)
    assignments: dict[str, list[list[int]]] = {}

    def note_assignment() -> None:
        assignments["at_first_batch"] = [healthz_partitions(w) for w in workers]

    try:
        result = follow(
            follower.processed_all if forwarded else follower.processed,
            target + forwarded,
            interval=0.05,
            timeout=timeout or target / 500 + 180,
            started_at=begin,
            cpu_pids=pids,
            alive=lambda: all(w.alive() for w in workers),
            what=what,
            on_first=note_assignment,
        )
        samples = list(follower.samples)
        assignments["at_end"] = [healthz_partitions(w) for w in workers]
    finally:
        follower.stop()
    steady = rate_from_samples([(t, i) for t, i, _ in samples], target, begin, result.cpu_s)
    t0 = samples[0][0]
    done = [t for t, _, a in samples if a >= target + forwarded]
    seconds = (done[0] if done else samples[-1][0]) - t0
    exact = Throughput(
        steady.eps,
        (target - samples[0][1]) / max(1e-9, seconds),
        seconds,
        len(samples),
        steady.startup_s,
        result.cpu_s,
    )

    def outcomes() -> dict[str, dict[str, int]]:
        total: dict[str, dict[str, int]] = {"inputs": {}, "internal": {}}
        for worker in workers:
            body = worker.get("/metrics", timeout=30)
            for scope, internal in (("inputs", False), ("internal", True)):
                only = None if internal else topics.inputs
                for outcome, value in event_outcomes(body, only, internal=internal).items():
                    total[scope][outcome] = total[scope].get(outcome, 0) + int(value)
        return total

    deadline = time.monotonic() + 60
    final = outcomes()
    while sum(final["inputs"].values()) < target and time.monotonic() < deadline:
        time.sleep(1.0)
        final = outcomes()
    out = {**exact.as_dict(), "outcomes": {k: v for k, v in sorted(final["inputs"].items()) if v}}
    out["customer_topic_accepted"] = final["internal"].get("accepted", 0)
    out["all_reflected"] = sum(final["inputs"].values()) == target
    if expected:
        want: dict[str, int] = {}
        for kind in ("interactions", "surveys"):
            for outcome, n in expected["outcomes"].get(kind, {}).items():
                want[outcome] = want.get(outcome, 0) + n
        out["expected_outcomes"] = dict(sorted(want.items()))
        out["exact"] = out["outcomes"] == out["expected_outcomes"] and out["customer_topic_accepted"] == int(
            expected["outcomes"].get("customer_contacts", {}).get("accepted", 0)
        )
    out["rss_mb"] = [_round(rss_mb(w.pid)) for w in workers]
    out["partitions"] = assignments
    first = assignments.get("at_first_batch") or []
    # An empty list means /healthz did not answer in time (a busy event loop), not "no partitions".
    out["rebalanced_during_run"] = len(workers) > 1 and all(first) and first != assignments.get("at_end")
    return out


#: What Prometheus 2.x sends on a scrape (it prefers OpenMetrics, and takes gzip), and a
#: plain client (curl, a browser): the two ways /metrics is read.
SCRAPE_CLIENTS: dict[str, dict[str, str]] = {
    "prometheus": {
        "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "Accept-Encoding": "gzip",
    },
    "plain": {},
}


def scrape_seconds(worker: Child, n: int = 10) -> dict[str, Any]:
    """One /metrics scrape (it runs on the worker's event loop), as Prometheus and as a plain
    client: median and max wall time, the worker's CPU per scrape, bytes on the wire."""
    out: dict[str, Any] = {}
    for client, headers in SCRAPE_CLIENTS.items():
        times = []
        size = 0
        encoding = content_type = ""
        cpu_before = cpu_seconds(worker.pid)
        for _ in range(n):
            started = time.perf_counter()
            request = urllib.request.Request(worker.url + "/metrics", headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                size = len(response.read())
                encoding = response.headers.get("Content-Encoding", "identity")
                content_type = response.headers.get("Content-Type", "")
            times.append(time.perf_counter() - started)
        cpu_after = cpu_seconds(worker.pid)
        cpu = (cpu_after - cpu_before) / n if cpu_before is not None and cpu_after is not None else None
        out[client] = {
            "median_s": round(statistics.median(times), 5),
            "max_s": round(max(times), 5),
            "cpu_s": None if cpu is None else round(cpu, 5),
            "bytes": size,
            "encoding": encoding,
            "content_type": content_type.split(";")[0],
        }
    return out


# -- latency ------------------------------------------------------------------------------------

MARKER_QUEUE = "bench_latency"
#: The load generator "reached" a rate when it produced at least this share of it.
RATE_REACHED = 0.95
_CONTACTS = re.compile(rb"^cx_contacts\{([^}]*)\} (\S+)$", re.M)
_MARKER_LABELS = (b'queue="' + MARKER_QUEUE.encode() + b'"', b'window="24h"')


def marker_count(metrics: bytes) -> float:
    """``cx_contacts{queue="bench_latency", window="24h"}`` summed over channels (label order free)."""
    total = 0.0
    for labels, value in _CONTACTS.findall(metrics):
        if all(part in labels for part in _MARKER_LABELS):
            total += float(value)
    return total


async def _latency(
    bootstrap: str,
    topics: TopicSet,
    worker: Child,
    follower: ChangelogFollower,
    samples: int,
    gap: tuple[float, float],
    timeout: float,
) -> dict[str, list[float] | int]:
    """Send one marker contact at a time; time it to its changelog record and to /metrics."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    committed: list[float] = []
    visible: list[float] = []
    scrapes: list[float] = []
    acks: list[float] = []
    missed = 0
    rng = random.Random(1)
    run = uuid.uuid4().hex[:8]
    try:
        seen = marker_count(worker.get("/metrics", timeout=30))
        for i in range(samples):
            await asyncio.sleep(rng.uniform(*gap))
            contact = f"bench-lat-{run}-{i}"
            key = f"c:{contact}".encode()
            value = orjson.dumps(
                {
                    "event_id": uuid.uuid4().hex,
                    "type": "contact_started",
                    "contact_id": contact,
                    "timestamp": int(time.time() * 1000),
                    "customer_id": f"bench-{run}",
                    "channel": "voice",
                    "queue": MARKER_QUEUE,
                }
            )
            sent_at = time.perf_counter()
            await producer.send_and_wait(topics.interactions, value, key=contact.encode())
            acks.append(time.perf_counter() - sent_at)
            deadline = sent_at + timeout
            while key not in follower.seen and time.perf_counter() < deadline:
                await asyncio.sleep(0.002)
            if key not in follower.seen:
                missed += 1
                if missed >= 5 and not committed:
                    break  # the worker is not keeping up: more markers would only queue
                continue
            committed.append(follower.seen[key] - sent_at)
            # The state changed before its changelog record was sent, so the next scrape
            # must show it; the scrape's own duration is part of "visible on /metrics".
            while True:
                before = time.perf_counter()
                count = marker_count(worker.get("/metrics", timeout=30))
                now = time.perf_counter()
                if count > seen or now > deadline:
                    break
                await asyncio.sleep(0.01)
            scrapes.append(now - before)
            if count > seen:
                visible.append(now - sent_at)
                seen = count
            else:
                missed += 1
    finally:
        await producer.stop()
    return {"committed": committed, "visible": visible, "scrapes": scrapes, "acks": acks, "missed": missed}


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1])."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class LoadGenerator:
    """``bench.loadgen`` in a child process, producing at a steady rate."""

    def __init__(self, bootstrap: str, topics: TopicSet, rate: float, workdir: Path, name: str = "loadgen"):
        self.stats_path = workdir / f"{name}.json"
        self.stats_path.unlink(missing_ok=True)
        self.rate = rate
        self.child = Child(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--bootstrap",
                bootstrap,
                "--prefix",
                topics.prefix,
                "--rate",
                f"{rate:.1f}",
                "--stats",
                str(self.stats_path),
            ],
            env=dict(__import__("os").environ),
            log_path=workdir / f"{name}.log",
            port=0,
        )

    def start(self) -> LoadGenerator:
        self.child.start()
        return self

    def stats(self) -> dict[str, Any]:
        try:
            return dict(orjson.loads(self.stats_path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            return {"sent": 0}

    def stop(self) -> dict[str, Any]:
        self.child.stop(timeout=30)
        return self.stats()


def measure_latency(
    bootstrap: str,
    topics: TopicSet,
    worker: Child,
    app_id: str,
    rate: float,
    workdir: Path,
    *,
    samples: int = 60,
    warmup_s: float = 10.0,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """p50/p99 from produce to visible on /metrics while a steady load runs at ``rate``.

    Markers: one ``contact_started`` at a time (random 0.5-1 s gaps) for a fresh
    contact in queue ``bench_latency``. Two times per marker, from just before the
    send: ``committed``, when its contact record reached the changelog (the state
    already held it; resolution ~2 ms plus the worker's 5 ms producer linger), and
    ``visible``, when a /metrics scrape started after that returned it counted
    (adds one scrape, 50-100 ms here). ``visible`` is the headline figure.
    """
    follower = ChangelogFollower(bootstrap, changelog_topic(app_id), topics.inputs).start()
    base = processed_count(worker, topics)
    cpu0 = cpu_seconds(worker.pid) or 0.0
    wall0 = time.perf_counter()
    load = LoadGenerator(bootstrap, topics, rate, workdir).start()
    try:
        time.sleep(warmup_s)
        t0 = time.perf_counter()
        sent0 = load.stats().get("sent", 0)
        result = asyncio.run(_latency(bootstrap, topics, worker, follower, samples, (0.5, 1.0), timeout))
        elapsed = time.perf_counter() - t0
        sent1 = load.stats().get("sent", 0)
        lag = sent1 + samples - (processed_count(worker, topics) - base)
    finally:
        stats = load.stop()
        follower.stop()
    cpu = (cpu_seconds(worker.pid) or 0.0) - cpu0
    visible = result["visible"]
    committed = result["committed"]
    assert isinstance(visible, list) and isinstance(committed, list)
    scrapes = result["scrapes"]
    acks = result["acks"]
    assert isinstance(scrapes, list) and isinstance(acks, list)

    def q(values: list[float], p: float) -> float | None:
        return round(quantile(values, p), 4) if values else None

    return {
        "rate_target_eps": round(rate, 1),
        "rate_achieved_eps": round((sent1 - sent0) / elapsed, 1),
        # The target is defined at this rate: a generator that fell short does not count.
        "rate_reached": (sent1 - sent0) / elapsed >= RATE_REACHED * rate,
        "samples": len(visible),
        "missed": result["missed"],
        "p50_s": q(visible, 0.50),
        "p90_s": q(visible, 0.90),
        "p99_s": q(visible, 0.99),
        "max_s": round(max(visible), 4) if visible else None,
        "committed_p50_s": q(committed, 0.50),
        "committed_p99_s": q(committed, 0.99),
        "committed_max_s": round(max(committed), 4) if committed else None,
        "produce_ack_p50_s": q(acks, 0.50),
        "produce_ack_p99_s": q(acks, 0.99),
        "scrape_p50_s": q(scrapes, 0.50),
        "scrape_max_s": round(max(scrapes), 4) if scrapes else None,
        "lag_at_end": int(lag),
        "worker_cpu_share": round(cpu / max(1e-9, time.perf_counter() - wall0), 3),
        "generator": {k: stats.get(k) for k in ("sent", "send_errors", "dropped", "events_per_second")},
    }


def measure_idle(
    bootstrap: str,
    topics: TopicSet,
    worker: Child,
    workdir: Path,
    *,
    rate: float = 100.0,
    warmup_s: float = 10.0,
    seconds: float = 30.0,
) -> dict[str, Any]:
    """CPU share of one core the worker uses at a quiet contact centre's rate (100 events/s).

    Includes everything a live worker does besides events: fetch long-polls, its 5 s
    tick, the alert evaluator and the Redis snapshot (each a full KPI read), with the
    state the backlog left. Nothing scrapes /metrics meanwhile.
    """
    load = LoadGenerator(bootstrap, topics, rate, workdir, name="idle-loadgen").start()
    try:
        time.sleep(warmup_s)
        cpu0 = cpu_seconds(worker.pid) or 0.0
        sent0 = load.stats().get("sent", 0)
        t0 = time.perf_counter()
        time.sleep(seconds)
        elapsed = time.perf_counter() - t0
        cpu = (cpu_seconds(worker.pid) or 0.0) - cpu0
        sent1 = load.stats().get("sent", 0)
    finally:
        load.stop()
    return {
        "rate_target_eps": rate,
        "rate_achieved_eps": round((sent1 - sent0) / elapsed, 1),
        "seconds": round(elapsed, 2),
        "cpu_s": round(cpu, 3),
        "cpu_share": round(cpu / elapsed, 4),
    }


def rss_per_contact(
    rss_before_mb: float | None, rss_after_mb: float | None, contacts: float | None
) -> float | None:
    """Bytes of resident memory per contact held: (RSS after the backlog - RSS at start) / contacts.

    The contacts' customer histories, dedup ids and bucket state are all in the
    difference; what a worker holds before any event (code, Faust, aiokafka) is not.
    """
    if rss_before_mb is None or rss_after_mb is None or not contacts:
        return None
    return round((rss_after_mb - rss_before_mb) * 1024 * 1024 / contacts, 1)


def _replay_run(path: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "stream", "replay", str(path), "--format", "json", "--quiet"],
        env=env,
        capture_output=True,
        check=False,
        cwd=str(ROOT),
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cxstream replay {path} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    return seconds, orjson.loads(done.stdout)


def measure_replay(
    records: Sequence[tuple[str, bytes, bytes]],
    workdir: Path,
    expected: dict[str, Any] | None,
    repeat: int = 3,
) -> dict[str, Any]:
    """``cxstream replay FILE --format json`` over the benchmark's events, as a user runs it.

    ``eps`` excludes the command's start-up (imports, settings), measured by replaying
    the file's first 1,000 records the same number of times: (N - 1000) / (t_N - t_1000),
    medians of ``repeat`` runs each. ``eps_end_to_end`` is N / t_N.
    """
    full = workdir / "replay.jsonl"
    small = workdir / "replay-1000.jsonl"
    write_replay_file(records, full)
    write_replay_file(records[:1000], small)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env["CXSTREAM_LOG_LEVEL"] = "warning"
    full_s: list[float] = []
    small_s: list[float] = []
    summary: dict[str, Any] = {}
    for _ in range(repeat):
        seconds, summary = _replay_run(full, env)
        full_s.append(seconds)
        small_s.append(_replay_run(small, env)[0])
    t_full, t_small = statistics.median(full_s), statistics.median(small_s)
    n = len(records)
    outcomes: dict[str, int] = {}
    for name, count in summary.get("events", {}).items():
        topic, _, outcome = name.rpartition(":")
        if topic in ("cx.interactions", "cx.surveys"):
            outcomes[outcome] = outcomes.get(outcome, 0) + int(count)
    out: dict[str, Any] = {
        "events": n,
        "eps": round((n - 1000) / max(1e-9, t_full - t_small), 1),
        "eps_end_to_end": round(n / t_full, 1),
        "seconds": [round(x, 3) for x in full_s],
        "startup_seconds": [round(x, 3) for x in small_s],
        "outcomes": dict(sorted(outcomes.items())),
    }
    if expected:
        want: dict[str, int] = {}
        for kind in ("interactions", "surveys"):
            for outcome, count in expected["outcomes"].get(kind, {}).items():
                want[outcome] = want.get(outcome, 0) + count
        out["exact"] = out["outcomes"] == dict(sorted(want.items()))
    return out


def write_replay_file(records: Sequence[tuple[str, bytes, bytes]], path: Path) -> None:
    """The benchmark records as a ``cxstream replay`` file (default topic names)."""
    names = {"interactions": b"cx.interactions", "surveys": b"cx.surveys", "agents": b"cx.agents"}
    with path.open("wb") as fh:
        for kind, key, value in records:
            line = b'{"topic":"' + names[kind] + b'","key":' + orjson.dumps(key.decode())
            try:
                is_object = isinstance(orjson.loads(value), dict)
            except orjson.JSONDecodeError:
                is_object = False
            if is_object:
                line += b',"value":' + value + b"}\n"
            else:
                line += b',"value_b64":"' + base64.b64encode(value) + b'"}\n'
            fh.write(line)


def processed_count(worker: Child, topics: TopicSet) -> float:
    return sum(event_outcomes(worker.get("/metrics", timeout=30), topics.inputs).values())


def _round(value: float | None, digits: int = 1) -> float | None:
    return round(value, digits) if value is not None else None


def start_workers(
    broker_url: str,
    topics: TopicSet,
    app_id: str,
    workdir: Path,
    count: int,
    module: str = "stream",
    **extra: str,
) -> list[Child]:
    return [
        start_worker(broker_url, topics, app_id, workdir, name=f"{app_id}-w{i}", module=module, **extra)
        for i in range(count)
    ]


def healthz_partitions(worker: Child) -> list[int]:
    try:
        return list(orjson.loads(worker.get("/healthz"))["partitions"])
    except (OSError, KeyError, orjson.JSONDecodeError):
        return []


def metrics_snapshot(worker: Child, topics: TopicSet) -> dict[str, Any]:
    body = worker.get("/metrics", timeout=30)
    return {
        "outcomes": {k: int(v) for k, v in event_outcomes(body, topics.inputs).items()},
        "contacts": gauge(body, "cx_state_contacts"),
        "dedup_ids": gauge(body, "cx_state_dedup_ids"),
        "buckets": gauge(body, "cx_state_buckets"),
        "customers": gauge(body, "cx_state_customers"),
    }
