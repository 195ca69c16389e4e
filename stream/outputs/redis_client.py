"""The one way cxstream connects to Redis: fail fast, never retry behind the caller's back.

Per-call socket timeouts and no hidden retries, so a dead or frozen Redis shows up in
seconds as an error the caller handles (buffering, backoff with
:data:`stream.config.retry.REDIS_BACKOFF`, a stale banner) instead of hanging a timer, a
request or the worker.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect(url: str, timeout: float | None = 2.0, health_check_interval: int = 0) -> aioredis.Redis:
    """An asyncio client with ``str`` replies; ``timeout`` None waits forever on reads
    (a pub/sub listener), while connecting still times out after 2 s."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=2.0 if timeout is None else timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        health_check_interval=health_check_interval,
    )
