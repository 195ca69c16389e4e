"""Real-process test harness: a worker subprocess against a real broker, scraped over HTTP.

Used by integration tests and benchmarks. Each test gets its own app id and
topic names on a shared broker, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream.embedded import free_port

_counter = itertools.count()
Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass
class Topics:
    """Unique topic names and app id for one test."""

    prefix: str

    @classmethod
    def unique(cls, name: str) -> Topics:
        return cls(f"{name}{os.getpid()}x{next(_counter)}")

    @property
    def interactions(self) -> str:
        return f"{self.prefix}.interactions"

    @property
    def surveys(self) -> str:
        return f"{self.prefix}.surveys"

    @property
    def agents(self) -> str:
        return f"{self.prefix}.agents"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def app_id(self) -> str:
        return f"app-{self.prefix}"


@dataclass
class WorkerProcess:
    """``cxstream worker`` (or another ``command``: ``ingest``, ``bridge``) as a child process
    with its own port and log file."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    command: str = "worker"

    def start(self) -> WorkerProcess:
        env = dict(self.env, CXSTREAM_WEB_PORT=str(self.port), CXSTREAM_INGEST_PORT=str(self.port))
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", self.command],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, partitions: int, timeout: float = 60.0) -> None:
        """Wait until /healthz lists ``partitions`` ready partitions (or any, if 0)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited early:\n{self.log_tail()}")
            try:
                body = orjson.loads(_get(self.url + "/healthz"))
                if len(body["partitions"]) >= partitions and (partitions or body["partitions"]):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        return _get(self.url + "/metrics").decode()

    def samples(self) -> Samples:
        return parse_samples(self.metrics_text())

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush or commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def parse_samples(text: str) -> Samples:
    """Exposition text -> {sample name: [(labels, value)]}."""
    result: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[sample.name].append((dict(sample.labels), sample.value))
    return result


def by_labels(samples: Samples, name: str, **match: str) -> dict[tuple[str, ...], float]:
    """Values of ``name`` whose labels include ``match``, keyed by (queue, channel[, metric])."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in samples.get(name, []):
        if all(labels.get(k) == v for k, v in match.items()):
            key = (labels.get("queue", ""), labels.get("channel", ""))
            if "metric" in labels:
                key = (*key, labels["metric"])
            out[key] = value
    return out


def worker_env(broker_url: str, topics: Topics, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a test worker: short session timeout for tansu, small batches."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env.update(
        CXSTREAM_BROKER=broker_url,
        CXSTREAM_APP_ID=topics.app_id,
        CXSTREAM_TOPIC_INTERACTIONS=topics.interactions,
        CXSTREAM_TOPIC_SURVEYS=topics.surveys,
        CXSTREAM_TOPIC_AGENTS=topics.agents,
        CXSTREAM_TOPIC_DEADLETTER=topics.deadletter,
        CXSTREAM_DATA_DIR=str(data_dir),
        CXSTREAM_SESSION_TIMEOUT="6s",
        CXSTREAM_TANSU_COMPAT="true",
        CXSTREAM_TICK_INTERVAL="1s",
        CXSTREAM_LOG_LEVEL="info",
    )
    env.update(extra)
    return env


async def produce_records(
    bootstrap: str, records: Iterable[tuple[str, str, bytes]], linger_ms: int = 5
) -> int:
    """Send (topic, key, value bytes) records and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    sent = 0
    try:
        futures = []
        for topic, key, value in records:
            futures.append(await producer.send(topic, value, key=key.encode()))
            sent += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def ces_answer(
    topics: Topics, contact: str, queue: str, score: int, ts_ms: int | None = None
) -> tuple[str, str, bytes]:
    """One CES answer on the surveys topic (agree_1_7: <=3 is high effort, >=5 easy), with its
    queue and channel given so it counts at once; ``ts_ms`` defaults to now."""
    value = {
        "event_id": f"e-{contact}",
        "contact_id": contact,
        "metric": "ces",
        "score": score,
        "scale": "agree_1_7",
        "queue": queue,
        "channel": "voice",
        "timestamp": int(time.time() * 1000) if ts_ms is None else ts_ms,
    }
    return topics.surveys, contact, orjson.dumps(value)


def write_recording(path: Path, records: Iterable[tuple[str, str, Any]]) -> Path:
    """A ``cxstream replay`` file from (topic, key, value) records."""
    path.write_bytes(
        b"".join(
            orjson.dumps({"topic": topic, "key": key, "value": value}) + b"\n"
            for topic, key, value in records
        )
    )
    return path


def replay_prometheus(path: Path, topics: Topics, **settings: str) -> Samples:
    """``cxstream replay FILE --format prometheus`` in a clean environment, parsed."""
    env = {
        "CXSTREAM_TOPIC_INTERACTIONS": topics.interactions,
        "CXSTREAM_TOPIC_SURVEYS": topics.surveys,
        "CXSTREAM_TOPIC_AGENTS": topics.agents,
        "PATH": "/usr/bin:/bin",
        **settings,
    }
    out = subprocess.run(
        [sys.executable, "-m", "stream", "replay", str(path), "--format", "prometheus", "--quiet"],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return parse_samples(out.stdout.decode())


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns a truthy value; return it or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, AssertionError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"condition not met in {timeout}s (last error: {last_error!r})")


def tool_missing(message: str) -> NoReturn:
    """A system tool a test needs is not installed: a failure under CI (``CI`` set: its machine
    installs them all with ``make system-deps``), a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} -- required when CI is set")
    pytest.skip(message)
