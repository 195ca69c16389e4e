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
    assert await sink.write_views([(0, 1, "{}")], 5) is None
    before = sink.controls
    assert await sink.refresh_controls() is before
    assert await sink.claim_lease("w/1", 1000, None) is None
    assert set(sink.errors) == {"transition", "seed", "snapshot", "controls", "lease"}
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


async def test_views_keep_the_newest_view_of_each_partition(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    sink = RedisSink(redis_server.url, prefix)
    now = int(time.time() * 1000)
    try:
        assert await sink.write_views([(0, 10, "v0@10"), (1, 3, "v1@3")], now) == 2
        # The old owner of partition 0 was further along: a recovered view behind it waits ...
        assert await sink.write_views([(0, 7, "v0@7"), (1, 4, "v1@4")], now + 1) == 1
        assert await client.hgetall(f"{prefix}:kpi:partitions") == {"0": "v0@10", "1": "v1@4"}
        # ... a view that has caught up replaces it (same input, computed later) ...
        assert await sink.write_views([(0, 10, "v0@10 later")], now + 2) == 1
        assert await client.hget(f"{prefix}:kpi:partitions", "0") == "v0@10 later"
        # ... and a view nobody refreshed for the takeover age never blocks its partition.
        await client.hset(f"{prefix}:kpi:positions", "1", f"999:{now - 60_000}")
        assert await sink.write_views([(1, 5, "v1 after a reset")], now + 3) == 1
        assert await sink.read_views() == {"0": "v0@10 later", "1": "v1 after a reset"}
    finally:
        await sink.close()


async def test_lease_one_holder_new_epoch_per_new_holder_and_fencing(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    a, b = RedisSink(redis_server.url, prefix), RedisSink(redis_server.url, prefix)
    try:
        first = await a.claim_lease("a/1", 10_000, None)
        assert first is not None and first.held and first.holder == "a/1"
        other = await b.claim_lease("b/1", 10_000, None)
        assert other is not None and not other.held and other.holder == "a/1" and other.epoch == first.epoch
        again = await a.claim_lease("a/1", 10_000, first.epoch)
        assert again is not None and again.held and again.epoch == first.epoch  # a renewal
        assert 0 < await client.pttl(f"{prefix}:alerts:lease") <= 10_000

        a.epoch = first.epoch
        a.enqueue([transition(FIRING, "x")])
        assert await a.flush() == 1
        assert await a.write_evaluator_state('{"alerts": {}}') is True

        # a stops answering; its lease is released (or expires); b takes over with a new epoch.
        assert not await b.release_lease("b/1")  # only the holder can release
        assert await a.release_lease("a/1")
        taken = await b.claim_lease("b/1", 10_000, None)
        assert taken is not None and taken.held and taken.epoch == first.epoch + 1
        b.epoch = taken.epoch
        # Whatever a still sends is fenced out: the new evaluator decides.
        a.enqueue([transition(RESOLVED, "x"), transition(FIRING, "y")])
        assert await a.flush() == 0 and not a.buffer and a.fenced == 2
        assert await a.write_evaluator_state('{"stale": true}') is False
        b.enqueue([transition(RESOLVED, "x")])
        assert await b.flush() == 1
        assert [e["state"] for e in await log_entries(client, prefix)] == [FIRING, RESOLVED]
        assert await client.get(f"{prefix}:alerts:evaluator") == '{"alerts": {}}'
    finally:
        await a.close()
        await b.close()


async def test_lease_taken_back_after_an_outage_keeps_its_epoch(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    """Expired while Redis was unreachable, nobody else took it: buffered transitions stay valid."""
    a, b = RedisSink(redis_server.url, prefix), RedisSink(redis_server.url, prefix)
    try:
        first = await a.claim_lease("a/1", 200, None)
        assert first is not None and first.held
        await asyncio.sleep(0.35)
        assert not await client.exists(f"{prefix}:alerts:lease")
        back = await a.claim_lease("a/1", 200, first.epoch)
        assert back is not None and back.held and back.epoch == first.epoch
        await asyncio.sleep(0.35)
        taken = await b.claim_lease("b/1", 200, None)
        assert taken is not None and taken.held and taken.epoch == first.epoch + 1
        late = await a.claim_lease("a/1", 200, first.epoch)
        assert late is not None and not late.held and late.holder == "b/1"
    finally:
        await a.close()
        await b.close()


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


RULES = """
rules:
  - {name: r, metric: cx_csat_ratio, window: 15m, group_by: [queue], op: '<', threshold: 0.5, for: 10s,
     keep_firing_for: 30s, cooldown: 5m}
"""


def make_service(url: str, prefix: str, worker: str, states: list[Any], clock: Any) -> Any:
    from stream.alerting.rules import parse_rules
    from stream.alerting.service import AlertService
    from stream.query.windows import WindowReader

    windows = [("15m", 900), ("1h", 3600)]
    return AlertService(
        rules=parse_rules(RULES, windows),
        sink=RedisSink(url, prefix),
        states=lambda: states,
        reader=WindowReader(windows, 60),
        reference_now=lambda wall: wall,
        worker=worker,
        windows=["15m", "1h"],
        partitions=1,
        control_interval_s=0.5,
        clock=clock,
    )


def add_csat(state: Any, now_ms: int, responses: int, satisfied: int, queue: str = "billing") -> Any:
    """Count CSAT answers into ``state`` the way a committed batch does."""
    from stream.domain import kpi
    from stream.domain.state import dim_key

    counts = state.bucket_counts(now_ms // 1000 // 60 * 60, dim_key(queue, "voice"))
    counts[kpi.CSAT_RESPONSES] += responses
    counts[kpi.CSAT_SATISFIED] += satisfied
    state.take_changes()
    return state


async def test_handover_keeps_firing_pending_and_cooldown_without_a_second_fire(
    redis_server: RedisServer, client: aioredis.Redis, prefix: str
) -> None:
    now = [int(time.time() * 1000)]
    from stream.domain.state import PartitionState

    states = [add_csat(PartitionState(0), now[0], 40, 4)]  # CSAT 10%: the condition holds for billing
    a = make_service(redis_server.url, prefix, "a", states, lambda: now[0])
    b = make_service(redis_server.url, prefix, "b", states, lambda: now[0])
    try:
        await a.step(evaluate=True)
        await b.step(evaluate=True)
        assert a.leader and a.seeded and not b.leader
        assert a.evaluator.pending() == ['r{queue="billing"}']  # pending, `for` is 10s
        now[0] += 11_000
        await a.step(evaluate=True)
        assert list(await client.hkeys(f"{prefix}:alerts:active")) == ['r{queue="billing"}']
        add_csat(states[0], now[0], 30, 0, queue="sales")
        await a.step(evaluate=True)  # sales goes pending under a
        assert a.evaluator.pending() == ['r{queue="sales"}']

        # a dies without a word (no release): b takes the lease once it expires.
        await asyncio.sleep(a.lease_ttl_ms / 1000 + 0.1)
        now[0] += 2_000
        await b.step(evaluate=True)
        assert b.leader and b.seeded and b.epoch == a.epoch + 1
        assert b.evaluator.is_firing('r{queue="billing"}')  # adopted, not fired again
        assert b.evaluator.pending() == ['r{queue="sales"}']  # its `for` kept running
        now[0] += 9_000  # sales pending since 13 s before: fires now, billing stays firing
        await b.step(evaluate=True)
        entries = await log_entries(client, prefix)
        assert [(e["id"], e["state"], e["worker"]) for e in entries] == [
            ('r{queue="billing"}', FIRING, "a"),
            ('r{queue="sales"}', FIRING, "b"),
        ]
        # a wakes up, still believing it evaluates: fenced, it steps down at its next claim.
        a.sink.enqueue([transition(RESOLVED, 'r{queue="billing"}')])
        await a.step(evaluate=True)
        assert not a.leader and a.sink.fenced == 1 and not a.evaluator.firing()
        assert len(await log_entries(client, prefix)) == 2
    finally:
        await a.sink.close()
        await b.sink.close()


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
