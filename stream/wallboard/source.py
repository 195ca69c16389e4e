"""Read-only access to the Redis layout of docs/redis.md, for the wallboard.

Reads, never writes: the partition views ``<prefix>:kpi:partitions``,
``<prefix>:alerts:active`` and ``<prefix>:alerts:acks`` in one pipeline, and listens on
the ``<prefix>:alerts`` pub/sub channel. Every call has a timeout and there are no
hidden retries: the caller decides when to try again (with backoff), so a dead Redis
shows on the board within seconds instead of hanging a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from stream.outputs.redis_client import connect
from stream.outputs.redis_keys import RedisKeys
from stream.query.partition_views import PartitionView, decode_views

log = logging.getLogger(__name__)

#: What a lost, refused, frozen or confused Redis raises.
REDIS_ERRORS = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)


def describe(exc: BaseException) -> str:
    """A short error text for the page and the log (never includes the Redis URL)."""
    text = str(exc).strip()
    return exc.__class__.__name__ + (f": {text}" if text else "")


@dataclass(slots=True)
class RedisRead:
    """One consistent-enough read of everything the board shows."""

    views: list[PartitionView] = field(default_factory=list)
    active: dict[str, str] = field(default_factory=dict)
    acks: dict[str, str] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


class RedisSource:
    """Reads partition views and alerts; listens for alert transitions."""

    def __init__(self, url: str, prefix: str, *, timeout: float = 2.0) -> None:
        self.url = url
        self.keys = RedisKeys(prefix)
        self.timeout = timeout
        self.client = connect(url, timeout)
        self._warned: set[str] = set()

    async def read(self) -> RedisRead:
        """Partition views, active alerts and acks; raises one of :data:`REDIS_ERRORS` on failure."""
        return await asyncio.wait_for(self._read(), timeout=self.timeout * 3)

    async def _read(self) -> RedisRead:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.views)
            pipe.hgetall(self.keys.active)
            pipe.hgetall(self.keys.acks)
            raw_views, active, acks = await pipe.execute()
        views, unreadable = decode_views(raw_views or {})
        for name in unreadable:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("ignoring the unreadable view of partition %s in %s", name, self.keys.views)
        return RedisRead(views=views, active=active or {}, acks=acks or {}, unreadable=unreadable)

    async def listen(
        self,
        on_message: Callable[[str], Awaitable[None] | None],
        *,
        stop: asyncio.Event,
        backoff: Callable[[int], float],
    ) -> None:
        """Call ``on_message(data)`` for each message on ``<prefix>:alerts`` until ``stop``.

        Reconnects and re-subscribes after any error, waiting ``backoff(failures)`` seconds.
        """
        failures = 0
        while not stop.is_set():
            client = connect(self.url, None, health_check_interval=15)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(self.keys.channel), timeout=self.timeout * 2)
                if failures:
                    log.info("subscribed to %s again", self.keys.channel)
                failures = 0
                while not stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        result = on_message(str(message.get("data", "")))
                        if result is not None:
                            await result
            except REDIS_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("alert channel %s lost (%s); resubscribing", self.keys.channel, describe(exc))
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await asyncio.wait_for(pubsub.aclose(), timeout=1.0)
                with contextlib.suppress(*REDIS_ERRORS):
                    await asyncio.wait_for(client.aclose(), timeout=1.0)
            if failures and not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff(failures))

    async def close(self) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self.client.aclose()
