"""The Redis sink against a real Redis server: layout, ordering, outages, idempotent retries.

Outage tests use a private Redis server, so freezing or killing it never disturbs the
session's shared one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from stream.alerting.evaluator import FIRING, RESOLVED, Transition
from stream.alerting.sink import RedisSink
from stream.embedded import RedisServer

pytestmark = pytest.mark.integration

_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    return f"sinktest{time.time_ns()}x{next(_prefixes)}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir=tmp_path / "redis").start()
    yield server
    if server.is_paused:
        server.resume()
    server.stop()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield c
    await c.aclose()


_tids = itertools.count()


def transition(state: str, alert_id: str = 'r{queue="billing"}', **extra: Any) -> Transition:
    payload = {
        "id": alert_id,
        "rule": "r",
        "state": state,
        "labels": {"queue": "billing"},
        "value": 0.5,
        "since": 1,
        "at": 2,
        "tid": f"tid-{time.time_ns()}-{next(_tids)}",
        **extra,
    }
    return Transition(alert_id, state, payload)


async def log_entries(client: aioredis.Redis, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(fields["alert"]) for _, fields in await client.xrange(f"{prefix}:alerts:log")]


async def messages(pubsub: Any, expected: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            out.append(orjson.loads(message["data"]))
    return out


async def test_fire_and_resolve_reach_all_three_structures(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    sink = RedisSink(redis_server.url, prefix)
    pubsub = client.pubsub()
    await pubsub.subscribe(f"{prefix}:alerts")
    await messages(pubsub, 0, timeout=0.2)
    try:
        fire = transition(FIRING)
        sink.enqueue([fire])
        assert await sink.flush() == 1
        active = await client.hgetall(f"{prefix}:alerts:active")
        assert list(active) == [fire.alert_id]
        assert orjson.loads(active[fire.alert_id]) == fire.payload
        assert await log_entries(client, prefix) == [fire.payload]

        await client.hset(f"{prefix}:alerts:acks", fire.alert_id, orjson.dumps({"by": "x", "at": 3}))
        resolve = transition(RESOLVED)
        sink.enqueue([resolve])
        assert await sink.flush() == 1
        assert await client.hgetall(f"{prefix}:alerts:active") == {}
        assert await client.hgetall(f"{prefix}:alerts:acks") == {}  # the episode's ack goes with it
        assert [e["state"] for e in await log_entries(client, prefix)] == [FIRING, RESOLVED]
        assert [m["tid"] for m in await messages(pubsub, 2)] == [fire.tid, resolve.tid]
        assert sink.written == 2 and not sink.buffer and sum(sink.errors.values()) == 0
    finally:
        await pubsub.aclose()
        await sink.close()


async def test_log_stream_is_capped(redis_server: RedisServer, client: aioredis.Redis, prefix: str) -> None:
    sink = RedisSink(redis_server.url, prefix, log_maxlen=100)
    try:
        sink.enqueue([transition(FIRING, f"a{i}") for i in range(600)])
        assert await sink.flush() == 600
        length = await client.xlen(f"{prefix}:alerts:log")
        assert 100 <= length < 300  # MAXLEN ~ trims whole nodes
    finally:
        await sink.close()


async def test_unreachable_redis_buffers_and_never_raises(prefix: str) -> None:
    sink = RedisSink("redis://127.0.0.1:1/0", prefix, timeout=0.5)
    sink.enqueue([transition(FIRING)])
    assert await sink.flush() == 0
    assert len(sink.buffer) == 1 and sink.errors["transition"] == 1 and not sink.up
    assert sink.retry_delay() > 0
    assert await sink.flush() == 0  # backing off: no attempt
    assert sink.errors["transition"] == 1
    assert await sink.read_active() is None
    assert not await sink.write_snapshot("w", {"_meta": "{}"})
    before = sink.controls
    assert await sink.refresh_controls() is before
    assert set(sink.errors) == {"transition", "seed", "snapshot", "controls"}
    await sink.close()


async def test_outage_then_restart_writes_everything_in_order(
    private_redis: RedisServer, prefix: str
) -> None:
    sink = RedisSink(private_redis.url, prefix, timeout=0.5)
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        private_redis.kill()
        sent = [transition(FIRING, "a"), transition(FIRING, "b"), transition(RESOLVED, "a")]
        sink.enqueue(sent)
        assert await sink.flush() == 0
        private_redis.start()
        deadline = time.monotonic() + 15
        while sink.buffer and time.monotonic() < deadline:
            await sink.flush()
            await asyncio.sleep(0.1)
        assert not sink.buffer and sink.up
        assert [e["tid"] for e in await log_entries(client, prefix)] == [t.tid for t in sent]
        assert list(await client.hgetall(f"{prefix}:alerts:active")) == ["b"]
    finally:
        await client.aclose()
        await sink.close()


async def test_frozen_redis_retry_is_written_exactly_once(private_redis: RedisServer, prefix: str) -> None:
    """SIGSTOP: the script reaches Redis but no reply comes back; Redis runs it on SIGCONT.

    The retry must notice the transition is already there instead of logging it twice.
    """
    sink = RedisSink(private_redis.url, prefix, timeout=0.5)
    client = aioredis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        first = transition(FIRING, "a")
        sink.enqueue([first])
        assert await sink.flush() == 1  # the script is loaded: EVALSHA alone will apply it
        private_redis.pause()
        fire = transition(FIRING, "b")
        sink.enqueue([fire])
        assert await sink.flush() == 0
        assert sink.errors["transition"] == 1 and fire.tid in sink._uncertain
        private_redis.resume()
        # The frozen server runs the queued script as soon as it wakes up ...
        deadline = time.monotonic() + 10
        while len(await log_entries(client, prefix)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # ... and the retry finds its tid in the log instead of writing it again.
        deadline = time.monotonic() + 15
        while sink.buffer and time.monotonic() < deadline:
            await sink.flush()
            await asyncio.sleep(0.1)
        assert not sink.buffer
        entries = await log_entries(client, prefix)
        assert [e["tid"] for e in entries] == [first.tid, fire.tid]
        assert sorted(await client.hkeys(f"{prefix}:alerts:active")) == ["a", "b"]
    finally:
        await client.aclose()
        await sink.close()


async def test_snapshot_replaces_and_expires(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    sink = RedisSink(redis_server.url, prefix)
    try:
        assert await sink.write_snapshot("w1", {"_meta": "{}", "15m": "[]", "old": "x"})
        assert await sink.write_snapshot("w1", {"_meta": '{"at": 2}', "15m": "[1]"})
        key = f"{prefix}:kpi:w1"
        assert await client.hgetall(key) == {"_meta": '{"at": 2}', "15m": "[1]"}
        assert 0 < await client.ttl(key) <= 30
    finally:
        await sink.close()


async def test_controls_are_read_and_cached(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    sink = RedisSink(redis_server.url, prefix)
    try:
        await client.hset(f"{prefix}:alerts:acks", mapping={"a": '{"by": "ana", "at": 5}', "bad": "not json"})
        await client.hset(f"{prefix}:alerts:snoozes", mapping={"r": "1000", "junk": "soon"})
        controls = await sink.refresh_controls()
        assert controls.acks["a"].by == "ana" and controls.acks["a"].at == 5 and "bad" not in controls.acks
        assert controls.snoozes == {"r": 1000}
        assert controls.snoozed("r", 999) and not controls.snoozed("r", 1000)
    finally:
        await sink.close()


async def test_read_active_decodes_and_skips_garbage(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    sink = RedisSink(redis_server.url, prefix)
    try:
        await client.hset(f"{prefix}:alerts:active", mapping={"a": '{"id": "a"}', "b": "{broken"})
        assert await sink.read_active() == {"a": {"id": "a"}}
    finally:
        await sink.close()


async def test_expected_value_guards_a_cleanup(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    sink = RedisSink(redis_server.url, prefix)
    try:
        await client.hset(f"{prefix}:alerts:active", "a", '{"id": "a", "v": 2}')
        stale = Transition("a", RESOLVED, transition(RESOLVED, "a").payload, expect='{"id": "a", "v": 1}')
        sink.enqueue([stale])
        await sink.flush()
        assert await client.hexists(f"{prefix}:alerts:active", "a")  # changed meanwhile: not touched
        assert await log_entries(client, prefix) == []
        current = Transition("a", RESOLVED, transition(RESOLVED, "a").payload, expect='{"id": "a", "v": 2}')
        sink.enqueue([current])
        await sink.flush()
        assert not await client.hexists(f"{prefix}:alerts:active", "a")
        assert len(await log_entries(client, prefix)) == 1
    finally:
        await sink.close()


def make_service(url: str, prefix: str, worker: str) -> Any:
    from stream.alerting.rules import parse_rules
    from stream.alerting.service import AlertService
    from stream.windows import WindowReader

    windows = [("15m", 900), ("1h", 3600)]
    rules = parse_rules(
        "rules:\n  - {name: r, metric: cx_csat_ratio, window: 15m, group_by: [queue],\n"
        "     op: '<', threshold: 0.5}\n",
        windows,
    )
    return AlertService(
        rules=rules,
        sink=RedisSink(url, prefix),
        states=lambda: [],
        reader=WindowReader(windows, 60),
        reference_now=lambda wall: wall,
        worker=worker,
        windows=["15m", "1h"],
    )


async def test_sweep_resolves_alerts_of_gone_workers_once(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    def alert(alert_id: str, worker: str) -> str:
        payload = {
            "id": alert_id,
            "rule": "r",
            "state": FIRING,
            "labels": {"queue": alert_id},
            "worker": worker,
        }
        return orjson.dumps(payload).decode()

    await client.hset(
        f"{prefix}:alerts:active",
        mapping={
            "ghost": alert("ghost", "w-gone"),
            "alive": alert("alive", "w-alive"),
            "mine": alert("mine", "w1"),
        },
    )
    await client.hset(f"{prefix}:kpi:w-alive", "_meta", "{}")
    await client.hset(f"{prefix}:kpi:w1", "_meta", "{}")
    first, second = make_service(redis_server.url, prefix, "w1"), make_service(redis_server.url, prefix, "w2")
    try:
        # Both sweep before either writes: the compare-and-delete lets only one resolve win.
        assert await first.sweep() == 2  # w-gone's alert, and its own "mine" that it is not firing
        assert await second.sweep() == 1  # w-gone's only: w1 is alive and owns "mine"
        await first.sink.flush()
        await second.sink.flush()
        assert sorted(await client.hkeys(f"{prefix}:alerts:active")) == ["alive"]
        entries = await log_entries(client, prefix)
        assert sorted((e["id"], e["state"], e["reason"]) for e in entries) == [
            ("ghost", RESOLVED, "worker w-gone gone"),
            ("mine", RESOLVED, "not firing"),
        ]
    finally:
        await first.sink.close()
        await second.sink.close()


async def test_a_transition_redis_keeps_rejecting_does_not_block_the_rest(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    now = [0.0]
    sink = RedisSink(redis_server.url, prefix, clock=lambda: now[0])
    try:
        await client.set(f"{prefix}:alerts:log", "not a stream")  # every XADD fails: WRONGTYPE
        first, second = transition(FIRING, "a"), transition(FIRING, "b")
        sink.enqueue([first, second])
        for _ in range(5):
            await sink.flush()
            now[0] += 60  # past any backoff
        assert [t.alert_id for t in sink.buffer] == ["b"] and sink.dropped == 1
        assert sink.errors["transition"] == 6  # five for "a", then "b" is tried and fails once
        await client.delete(f"{prefix}:alerts:log")
        assert await sink.flush() == 1
        assert [e["tid"] for e in await log_entries(client, prefix)] == [second.tid]
    finally:
        await sink.close()
