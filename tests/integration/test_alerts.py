"""Alerts end to end: a real broker, a real Redis, a real ``cxstream worker`` subprocess.

A high-effort CES burst on one queue must fire exactly one alert, visible in all three
Redis structures (active hash, log stream, pub/sub) within the rule's ``for`` plus one
evaluation interval; it must resolve once the burst is diluted; too few samples must
fire nothing; a snoozed rule must not fire; and a Redis outage in the middle of a
transition must lose nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from stream.embedded import RedisServer
from tests.harness import Samples, Topics, WorkerProcess, ces_answer, produce_records, wait_until

pytestmark = pytest.mark.integration

FOR_S = 3.0
INTERVAL_S = 1.0
RULES = f"""
rules:
  - name: effort_spike
    metric: cx_ces_high_effort_ratio
    window: 15m
    group_by: [queue]
    op: ">"
    threshold: 0.25
    spike: {{baseline: 1h, factor: 1.5}}
    min_samples: 20
    for: {FOR_S:g}s
    hysteresis: 0.02
    severity: page
    summary: "High-effort CES spike on {{queue}}: {{value:.0%}} of {{samples}} vs {{baseline:.0%}}"
"""
ALERT_ID = 'effort_spike{queue="billing"}'
_ids = itertools.count()


# -- helpers --------------------------------------------------------------------------------------
@pytest.fixture
def prefix() -> str:
    return f"cxtest{uuid.uuid4().hex[:10]}"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(RULES)
    return path


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    yield client
    client.close()


def start(start_worker: Any, rules_file: Path, prefix: str) -> WorkerProcess:
    worker: WorkerProcess = start_worker(
        CXSTREAM_ALERT_RULES=str(rules_file),
        CXSTREAM_ALERT_INTERVAL=f"{INTERVAL_S:g}s",
        CXSTREAM_SNAPSHOT_INTERVAL="1s",
        CXSTREAM_REDIS_PREFIX=prefix,
        CXSTREAM_WORKER_ID="alert-test-worker",
        CXSTREAM_MIN_SAMPLES="20",
    )
    worker.wait_ready(partitions=4, timeout=90)
    return worker


def ces(topics: Topics, queue: str, score: int, ts_ms: int) -> tuple[str, str, bytes]:
    """One CES answer (agree_1_7: <=3 is high effort, >=5 easy) with queue and channel given."""
    n = next(_ids)
    return ces_answer(topics, f"c-{queue}-{n}-{uuid.uuid4().hex[:6]}", queue, score, ts_ms)


def send(broker: Any, records: list[tuple[str, str, bytes]]) -> None:
    asyncio.run(produce_records(broker.bootstrap, records))


def baseline(topics: Topics) -> list[tuple[str, str, bytes]]:
    """Half an hour ago (outside 15m, inside the 1h baseline): billing 4 of 40 high effort."""
    then = int(time.time() * 1000) - 30 * 60_000
    return [ces(topics, "billing", 2 if i < 4 else 6, then) for i in range(40)]


def now_ms() -> int:
    return int(time.time() * 1000)


def ces_count(worker: WorkerProcess, queue: str, window: str = "15m") -> float:
    samples = worker.samples()
    return sum(
        v
        for labels, v in samples.get("cx_ces_responses", [])
        if labels.get("queue") == queue and labels.get("window") == window
    )


def metric(samples: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))


def active(r: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    return {k: orjson.loads(v) for k, v in r.hgetall(f"{prefix}:alerts:active").items()}


def log(r: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(f["alert"]) for _, f in r.xrange(f"{prefix}:alerts:log")]


class Subscriber:
    """Collects pub/sub messages of ``<prefix>:alerts`` (subscribed before anything happens)."""

    def __init__(self, r: redis.Redis, prefix: str) -> None:
        self.pubsub = r.pubsub()
        self.pubsub.subscribe(f"{prefix}:alerts")
        self.received: list[dict[str, Any]] = []
        self.poll(0.5)

    def poll(self, seconds: float = 0.2) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message is not None:
                self.received.append(orjson.loads(message["data"]))
        return self.received

    def close(self) -> None:
        self.pubsub.close()


def cli(
    redis_server: RedisServer, prefix: str, *args: str, rules: Path | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env.update(CXSTREAM_REDIS_URL=redis_server.url, CXSTREAM_REDIS_PREFIX=prefix)
    if rules is not None:
        env["CXSTREAM_ALERT_RULES"] = str(rules)
    return subprocess.run(
        [sys.executable, "-m", "stream", "alerts", *args], env=env, capture_output=True, text=True, timeout=60
    )


# -- tests ------------------------------------------------------------------------------------------
def test_burst_fires_once_everywhere_then_resolves(
    broker: Any,
    redis_server: RedisServer,
    r: redis.Redis,
    topics: Topics,
    start_worker: Any,
    rules_file: Path,
    prefix: str,
) -> None:
    worker = start(start_worker, rules_file, prefix)
    subscriber = Subscriber(r, prefix)
    try:
        send(broker, baseline(topics))
        wait_until(lambda: ces_count(worker, "billing", "1h") == 40, timeout=30, interval=0.2)

        # The burst: 30 high-effort answers on billing now; sales stays easy.
        t_sent = time.monotonic()
        ts = now_ms()
        send(
            broker,
            [ces(topics, "billing", 1, ts) for _ in range(30)]
            + [ces(topics, "sales", 7, ts) for _ in range(25)],
        )
        wait_until(lambda: ces_count(worker, "billing") == 30, timeout=30, interval=0.1)
        t_counted = time.monotonic()
        wait_until(lambda: ALERT_ID in active(r, prefix), timeout=FOR_S + INTERVAL_S + 15, interval=0.05)
        t_fired = time.monotonic()
        fire_latency = t_fired - t_counted
        print(
            f"\nfire latency: {fire_latency:.2f}s after the burst was counted, "
            f"{t_fired - t_sent:.2f}s after sending"
        )
        # Fires within `for` plus one evaluation interval (+1 s for a loaded CI machine).
        assert fire_latency <= FOR_S + INTERVAL_S + 1.0, fire_latency

        alert = active(r, prefix)[ALERT_ID]
        assert alert["rule"] == "effort_spike" and alert["state"] == "firing"
        assert alert["labels"] == {"queue": "billing"} and alert["severity"] == "page"
        assert alert["value"] == 1 and alert["samples"] == 30
        assert alert["baseline"] == pytest.approx(0.1) and alert["threshold"] == pytest.approx(0.25)
        assert alert["since"] <= alert["at"] and alert["summary"].startswith(
            "High-effort CES spike on billing: 100%"
        )

        # Several more evaluations: still exactly one alert, one log entry, one message.
        time.sleep(3 * INTERVAL_S)
        assert list(active(r, prefix)) == [ALERT_ID]
        assert [(e["id"], e["state"]) for e in log(r, prefix)] == [(ALERT_ID, "firing")]
        assert [(m["id"], m["state"]) for m in subscriber.poll()] == [(ALERT_ID, "firing")]
        samples = worker.samples()
        assert metric(samples, "cx_alerts_total", rule="effort_spike", state="firing") == 1
        assert metric(samples, "cx_alerts_firing", rule="effort_spike") == 1
        assert metric(samples, "cx_ces_high_effort_ratio_lower", window="15m", queue="billing") > 0.85
        assert (
            metric(
                samples, "cx_low_confidence", window="15m", queue="billing", metric="cx_ces_high_effort_ratio"
            )
            == 0
        )

        # One view per partition is there for the wallboard, the CLI and a successor evaluator.
        views = {int(p): orjson.loads(v) for p, v in r.hgetall(f"{prefix}:kpi:partitions").items()}
        assert sorted(views) == [0, 1, 2, 3]
        assert {v["worker"] for v in views.values()} == {"alert-test-worker"}
        high = views[0]["counters"].index("ces_high_effort")
        assert (
            sum(
                counts[high]
                for v in views.values()
                for (queue, _), counts in v["windows"]["15m"]
                if queue == "billing"
            )
            == 30
        )
        status = cli(redis_server, prefix, "status", rules=rules_file)
        assert status.returncode == 0, status.stderr
        assert "effort_spike  queue=billing" in status.stdout and "condition holds" in status.stdout
        assert "views of 4/4 partitions" in status.stdout
        assert metric(samples, "cx_alert_evaluator") == 1

        # An operator acknowledges it with the CLI.
        listed = cli(redis_server, prefix)
        assert listed.returncode == 0 and ALERT_ID in listed.stdout, listed.stderr
        acked = cli(redis_server, prefix, "ack", ALERT_ID, "--by", "ana")
        assert acked.returncode == 0, acked.stderr
        listed = orjson.loads(cli(redis_server, prefix, "--json").stdout)
        assert listed["alerts"][0]["acked"]["by"] == "ana"
        time.sleep(2 * INTERVAL_S)  # the worker re-reads acks every evaluation interval

        # The burst ends: 200 easy answers dilute it to 13%; resolved everywhere.
        send(broker, [ces(topics, "billing", 7, now_ms()) for _ in range(200)])
        wait_until(lambda: ces_count(worker, "billing") == 230, timeout=30, interval=0.1)
        t_diluted = time.monotonic()
        wait_until(lambda: not active(r, prefix), timeout=INTERVAL_S + 15, interval=0.05)
        print(f"resolve latency: {time.monotonic() - t_diluted:.2f}s after the dilution was counted")
        entries = log(r, prefix)
        assert [(e["id"], e["state"]) for e in entries] == [(ALERT_ID, "firing"), (ALERT_ID, "resolved")]
        assert entries[1]["acked_by"] == "ana" and entries[1]["since"] == entries[0]["since"]
        wait_until(lambda: len(subscriber.poll()) >= 2, timeout=5)
        assert [(m["id"], m["state"]) for m in subscriber.received] == [
            (ALERT_ID, "firing"),
            (ALERT_ID, "resolved"),
        ]
        assert r.hgetall(f"{prefix}:alerts:acks") == {}  # the ack belonged to that episode
        samples = worker.samples()
        assert metric(samples, "cx_alerts_total", rule="effort_spike", state="resolved") == 1
        assert metric(samples, "cx_redis_up") == 1
    except BaseException:
        print(worker.log_tail(80))
        raise
    finally:
        subscriber.close()


def test_too_few_samples_or_snoozed_fire_nothing(
    broker: Any,
    redis_server: RedisServer,
    r: redis.Redis,
    topics: Topics,
    start_worker: Any,
    rules_file: Path,
    prefix: str,
) -> None:
    worker = start(start_worker, rules_file, prefix)
    subscriber = Subscriber(r, prefix)
    try:
        send(broker, baseline(topics))
        # 10 high-effort answers: 100%, but below min_samples (20).
        send(broker, [ces(topics, "billing", 1, now_ms()) for _ in range(10)])
        wait_until(lambda: ces_count(worker, "billing") == 10, timeout=30, interval=0.1)
        time.sleep(FOR_S + 3 * INTERVAL_S)
        samples = worker.samples()
        assert (
            metric(
                samples, "cx_low_confidence", window="15m", queue="billing", metric="cx_ces_high_effort_ratio"
            )
            == 1
        )
        assert metric(samples, "cx_alerts_total", state="firing") == 0
        assert metric(samples, "cx_alert_last_evaluation_timestamp_seconds") > time.time() - 3
        assert active(r, prefix) == {} and log(r, prefix) == [] and subscriber.poll() == []

        # Snoozed: enough samples now, but the rule must not fire until unsnoozed.
        snoozed = cli(redis_server, prefix, "snooze", "effort_spike", "--for", "10m", rules=rules_file)
        assert snoozed.returncode == 0, snoozed.stderr
        time.sleep(2 * INTERVAL_S)  # the worker reads controls every evaluation interval
        send(broker, [ces(topics, "billing", 1, now_ms()) for _ in range(20)])
        wait_until(lambda: ces_count(worker, "billing") == 30, timeout=30, interval=0.1)
        time.sleep(FOR_S + 3 * INTERVAL_S)
        assert active(r, prefix) == {} and log(r, prefix) == [] and subscriber.poll() == []
        listed = cli(redis_server, prefix)
        assert "rule effort_spike snoozed until" in listed.stdout

        t_unsnoozed = time.monotonic()
        assert cli(redis_server, prefix, "unsnooze", "effort_spike").returncode == 0
        # Pending all along: fires as soon as the worker sees the snooze is gone.
        wait_until(lambda: ALERT_ID in active(r, prefix), timeout=15, interval=0.05)
        print(f"\nfire after unsnooze: {time.monotonic() - t_unsnoozed:.2f}s")
        assert time.monotonic() - t_unsnoozed <= 2 * INTERVAL_S + 1.0
        assert [e["state"] for e in log(r, prefix)] == ["firing"]
    except BaseException:
        print(worker.log_tail(80))
        raise
    finally:
        subscriber.close()


def test_redis_outage_during_transitions_loses_nothing(
    broker: Any,
    redis_server: RedisServer,
    r: redis.Redis,
    topics: Topics,
    start_worker: Any,
    rules_file: Path,
    prefix: str,
) -> None:
    worker = start(start_worker, rules_file, prefix)
    subscriber = Subscriber(r, prefix)
    send(broker, baseline(topics))
    wait_until(lambda: ces_count(worker, "billing", "1h") == 40, timeout=30, interval=0.2)
    try:
        # Outage 1: the fire happens while Redis is frozen.
        redis_server.pause()
        send(broker, [ces(topics, "billing", 1, now_ms()) for _ in range(30)])
        wait_until(
            lambda: metric(worker.samples(), "cx_alerts_total", rule="effort_spike", state="firing") == 1,
            timeout=FOR_S + 20,
            interval=0.2,
        )
        samples = worker.samples()  # /metrics keeps working while Redis is down
        assert metric(samples, "cx_alerts_buffered") >= 1
        assert metric(samples, "cx_redis_up") == 0
        time.sleep(2)
        redis_server.resume()
        t_resumed = time.monotonic()
        wait_until(lambda: ALERT_ID in active(r, prefix), timeout=30, interval=0.1)
        print(f"\nbuffered fire written {time.monotonic() - t_resumed:.2f}s after Redis came back")
        assert [e["state"] for e in log(r, prefix)] == ["firing"]

        # Outage 2: the resolve happens while Redis is frozen.
        redis_server.pause()
        send(broker, [ces(topics, "billing", 7, now_ms()) for _ in range(200)])
        wait_until(
            lambda: metric(worker.samples(), "cx_alerts_total", rule="effort_spike", state="resolved") == 1,
            timeout=30,
            interval=0.2,
        )
        time.sleep(2)
        redis_server.resume()
        t_resumed = time.monotonic()
        wait_until(lambda: not active(r, prefix), timeout=30, interval=0.1)
        print(f"buffered resolve written {time.monotonic() - t_resumed:.2f}s after Redis came back")
        time.sleep(2 * INTERVAL_S)
        entries = log(r, prefix)
        assert [(e["id"], e["state"]) for e in entries] == [(ALERT_ID, "firing"), (ALERT_ID, "resolved")]
        assert len({e["tid"] for e in entries}) == 2
        wait_until(lambda: len(subscriber.poll()) >= 2, timeout=10)
        assert [m["state"] for m in subscriber.poll(0.5)] == ["firing", "resolved"]
        samples = worker.samples()
        assert metric(samples, "cx_redis_errors_total") > 0
        assert metric(samples, "cx_alerts_buffered") == 0
        assert metric(samples, "cx_alerts_dropped_total") == 0
        assert metric(samples, "cx_redis_up") == 1
    except BaseException:
        print(worker.log_tail(80))
        raise
    finally:
        if redis_server.is_paused:
            redis_server.resume()
        subscriber.close()


def test_cli_without_redis_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env.update(CXSTREAM_REDIS_URL="redis://:s3cret@127.0.0.1:1/0")
    result = subprocess.run(
        [sys.executable, "-m", "stream", "alerts"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in result.stderr
    assert "s3cret" not in result.stderr


def test_cli_ack_and_snooze_validation(
    redis_server: RedisServer, r: redis.Redis, prefix: str, rules_file: Path
) -> None:
    result = cli(redis_server, prefix, "ack", "nope")
    assert result.returncode == 1 and "no active alert 'nope'" in result.stderr
    result = cli(redis_server, prefix, "snooze", "typo", "--for", "30m", rules=rules_file)
    assert (
        result.returncode == 2 and "unknown rule 'typo'" in result.stderr and "effort_spike" in result.stderr
    )
    result = cli(redis_server, prefix, "snooze", "effort_spike", "--for", "later", rules=rules_file)
    assert result.returncode == 2 and "--for" in result.stderr
    before = now_ms()
    result = cli(redis_server, prefix, "snooze", "effort_spike", "--for", "30m", rules=rules_file)
    assert result.returncode == 0, result.stderr
    until = int(r.hget(f"{prefix}:alerts:snoozes", "effort_spike") or 0)
    assert before + 30 * 60_000 <= until <= now_ms() + 30 * 60_000
    assert cli(redis_server, prefix, "unsnooze", "effort_spike").returncode == 0
    assert r.hgetall(f"{prefix}:alerts:snoozes") == {}
    assert "no transitions logged" in cli(redis_server, prefix, "log").stdout
    assert "no active alerts" in cli(redis_server, prefix).stdout


def test_restart_while_firing_does_not_fire_again(
    broker: Any,
    redis_server: RedisServer,
    r: redis.Redis,
    topics: Topics,
    start_worker: Any,
    rules_file: Path,
    prefix: str,
) -> None:
    worker = start(start_worker, rules_file, prefix)
    send(broker, baseline(topics))
    send(broker, [ces(topics, "billing", 1, now_ms()) for _ in range(30)])
    wait_until(lambda: ALERT_ID in active(r, prefix), timeout=FOR_S + 30, interval=0.1)
    since = active(r, prefix)[ALERT_ID]["since"]
    worker.stop()

    # Same worker id, state recovered from the changelog: the alert is taken over, not re-fired.
    restarted = start(start_worker, rules_file, prefix)
    wait_until(lambda: ces_count(restarted, "billing") == 30, timeout=60, interval=0.2)
    time.sleep(FOR_S + 3 * INTERVAL_S)
    assert [e["state"] for e in log(r, prefix)] == ["firing"]
    assert active(r, prefix)[ALERT_ID]["since"] == since
    assert metric(restarted.samples(), "cx_alerts_firing", rule="effort_spike") == 1

    # ... and it resolves normally once the burst is diluted.
    send(broker, [ces(topics, "billing", 7, now_ms()) for _ in range(200)])
    wait_until(lambda: not active(r, prefix), timeout=30, interval=0.1)
    entries = log(r, prefix)
    assert [e["state"] for e in entries] == ["firing", "resolved"]
    assert entries[1]["since"] == since


def test_worker_with_a_bad_rules_file_stops_at_start(start_worker: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(RULES.replace("threshold: 0.25", "threshold: 25"))
    worker: WorkerProcess = start_worker(CXSTREAM_ALERT_RULES=str(bad))
    assert worker.proc is not None
    assert worker.proc.wait(timeout=60) == 2
    assert (
        f"alert rules file {bad}: rule #1 'effort_spike': field 'threshold': 25 is outside 0..1"
        in worker.log_tail()
    )
