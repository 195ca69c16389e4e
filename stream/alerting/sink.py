"""Everything the worker writes to (and reads from) Redis, without ever blocking or failing it.

* **Transitions** go into a bounded in-memory buffer and are written in order, one Lua
  script per transition, which atomically does ``HSET``/``HDEL`` on ``<p>:alerts:active``,
  ``XADD <p>:alerts:log MAXLEN ~ 10000`` and ``PUBLISH <p>:alerts`` (and drops the
  episode's ack on resolve). A failed write stays at the head of the buffer and is
  retried with exponential backoff (0.5 s doubling to 10 s, with jitter).

  Idempotence: a write can fail *after* Redis applied it (the reply is lost, or the
  server was frozen and runs the queued command when it wakes up). Every transition
  carries a unique ``tid``; a retry first looks for that ``tid`` among the newest
  entries of the log stream and, if found, does nothing. So a retried transition is
  written exactly once (as long as fewer than ``DEDUP_DEPTH`` other transitions were
  logged in between), and the first attempt skips the look-up.

  A transition with ``expect`` (cleanup of an alert nobody owns) applies only if the
  active hash still holds exactly that JSON: several workers can sweep at once. One
  that Redis answers with an error ``MAX_REJECTIONS`` times is dropped and counted.

* **KPI snapshots** (``<p>:kpi:<worker>``) are written in one ``MULTI`` (``DEL``,
  ``HSET``, ``EXPIRE``): never buffered, the next one replaces a lost one.
* **Controls** (acks, snoozes) are read every evaluation; on failure the last good
  copy is used.

Every Redis call has a timeout; errors are counted per operation, logged once per
outage, and never raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from stream.alerting.evaluator import FIRING, Ack, Controls, Transition

log = logging.getLogger(__name__)

LOG_MAXLEN = 10_000
SNAPSHOT_TTL_S = 30
DEDUP_DEPTH = 500
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 10.0
#: A transition Redis answers with an error this often is dropped (and counted).
MAX_REJECTIONS = 5

# KEYS: active, log, acks.
# ARGV: state, alert id, JSON, tid, log maxlen, channel, dedup depth, expected active JSON or ''.
_WRITE_TRANSITION = """
if ARGV[8] ~= '' and redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[8] then
  return 0
end
local depth = tonumber(ARGV[7])
if depth > 0 then
  local recent = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', depth)
  for _, entry in ipairs(recent) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'alert' and string.find(fields[i + 1], ARGV[4], 1, true) then
        return 0
      end
    end
  end
end
if ARGV[1] == 'firing' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'alert', ARGV[3])
redis.call('PUBLISH', ARGV[6], ARGV[3])
return 1
"""


class Keys:
    """Redis key names under a prefix (docs/redis.md)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.active = f"{prefix}:alerts:active"
        self.log = f"{prefix}:alerts:log"
        self.channel = f"{prefix}:alerts"
        self.acks = f"{prefix}:alerts:acks"
        self.snoozes = f"{prefix}:alerts:snoozes"

    def kpi(self, worker: str) -> str:
        return f"{self.prefix}:kpi:{worker}"


def connect(url: str, timeout: float = 2.0) -> aioredis.Redis:
    """An asyncio Redis client that fails fast: per-call timeouts, no hidden retries."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        health_check_interval=0,
    )


class RedisSink:
    """Buffered, retrying writer of alert transitions; snapshot writer; controls reader."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        buffer_max: int = 10_000,
        timeout: float = 2.0,
        log_maxlen: int = LOG_MAXLEN,
        clock: Callable[[], float] = time.monotonic,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.keys = Keys(prefix)
        self.timeout = timeout
        self.log_maxlen = log_maxlen
        self.buffer: deque[Transition] = deque()
        self.buffer_max = buffer_max
        self.client = client or connect(url, timeout)
        self._script = self.client.register_script(_WRITE_TRANSITION)
        self._clock = clock
        #: tids whose earlier attempt may have reached Redis: retry them with the dedup look-up.
        self._uncertain: set[str] = set()
        #: tids Redis answered with an error, and how often.
        self._rejected: Counter[str] = Counter()
        self._failures = 0
        self._retry_at = 0.0
        self._down_since: float | None = None
        self.controls = Controls()
        # metrics
        self.errors: Counter[str] = Counter()
        self.dropped = 0
        self.written = 0
        self.up = True

    # -- transitions ----------------------------------------------------------------------------
    def enqueue(self, transitions: Iterable[Transition]) -> None:
        """Buffer transitions for writing; the oldest are dropped (and counted) beyond the bound."""
        for transition in transitions:
            self.buffer.append(transition)
            while len(self.buffer) > self.buffer_max:
                dropped = self.buffer.popleft()
                self._uncertain.discard(dropped.tid)
                self.dropped += 1
                log.error(
                    "alert buffer full (%d): dropped %s %s", self.buffer_max, dropped.state, dropped.alert_id
                )

    def retry_delay(self) -> float:
        """Seconds until the next write attempt is due (0 when not backing off)."""
        return max(0.0, self._retry_at - self._clock())

    async def flush(self, *, force: bool = False) -> int:
        """Write buffered transitions in order until done or Redis fails; returns how many.

        While backing off nothing is attempted, unless ``force`` (last try at shutdown).
        """
        if not self.buffer or (self.retry_delay() > 0 and not force):
            return 0
        written = 0
        while self.buffer:
            transition = self.buffer[0]
            tid = transition.tid
            depth = DEDUP_DEPTH if tid in self._uncertain else 0
            try:
                await self._call(
                    self._script(
                        keys=[self.keys.active, self.keys.log, self.keys.acks],
                        args=[
                            transition.state,
                            transition.alert_id,
                            orjson.dumps(transition.payload).decode(),
                            tid,
                            self.log_maxlen,
                            self.keys.channel,
                            depth,
                            transition.expect or "",
                        ],
                    )
                )
            except (RedisError, OSError, TimeoutError) as exc:
                # Redis may have applied it anyway (lost reply, frozen server): dedup on retry.
                self._uncertain.add(tid)
                self._failed("transition", exc)
                if isinstance(exc, ResponseError):
                    # Redis answered with an error (e.g. WRONGTYPE on our keys): retrying may
                    # never help, and one bad transition must not block all the others.
                    self._rejected[tid] += 1
                    if self._rejected[tid] >= MAX_REJECTIONS:
                        self._give_up(transition, exc)
                        continue
                break
            self.buffer.popleft()
            self._uncertain.discard(tid)
            self._rejected.pop(tid, None)
            self.written += 1
            written += 1
            self._succeeded()
        return written

    def _give_up(self, transition: Transition, exc: BaseException) -> None:
        self.buffer.popleft()
        self._uncertain.discard(transition.tid)
        self._rejected.pop(transition.tid, None)
        self.dropped += 1
        log.error(
            "Redis keeps rejecting %s %s (%s): dropped after %d attempts",
            transition.state,
            transition.alert_id,
            exc,
            MAX_REJECTIONS,
        )

    def drop_buffered_fire(self, alert_id: str) -> bool:
        """Remove a buffered fire of ``alert_id`` that Redis already shows active (a repeat)."""
        for transition in self.buffer:
            if transition.alert_id == alert_id:
                if transition.state == FIRING:
                    self.buffer.remove(transition)
                    self._uncertain.discard(transition.tid)
                    return True
                return False
        return False

    # -- reads ------------------------------------------------------------------------------------
    async def read_active_raw(self, operation: str = "seed") -> dict[str, str] | None:
        """``<p>:alerts:active`` as stored (id -> JSON text), or None if Redis cannot be read."""
        try:
            raw: dict[str, str] = await self._call(self.client.hgetall(self.keys.active))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(operation, exc)
            return None
        self._succeeded()
        return raw

    async def read_active(self, operation: str = "seed") -> dict[str, dict[str, Any]] | None:
        """``<p>:alerts:active`` decoded (unreadable entries skipped), or None on failure."""
        raw = await self.read_active_raw(operation)
        return None if raw is None else decode_active(raw)

    async def live_workers(self, workers: Iterable[str]) -> set[str] | None:
        """The workers among ``workers`` whose KPI snapshot key exists (alive in the last 30 s)."""
        names = sorted(set(workers))
        if not names:
            return set()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.exists(self.keys.kpi(name))
                found = await self._call(pipe.execute())
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("sweep", exc)
            return None
        self._succeeded()
        return {name for name, exists in zip(names, found, strict=True) if exists}

    async def refresh_controls(self, now_ms: int | None = None) -> Controls:
        """Read acks and snoozes; on failure keep (and return) the last good copy."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.acks)
                pipe.hgetall(self.keys.snoozes)
                acks_raw, snoozes_raw = await self._call(pipe.execute())
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("controls", exc)
            return self.controls
        self._succeeded()
        self.controls = parse_controls(acks_raw, snoozes_raw)
        return self.controls

    # -- snapshots -----------------------------------------------------------------------------
    async def write_snapshot(self, worker: str, fields: dict[str, str]) -> bool:
        """Replace ``<p>:kpi:<worker>`` with ``fields`` atomically; expires after 30 s."""
        key = self.keys.kpi(worker)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, SNAPSHOT_TTL_S)
                await self._call(pipe.execute())
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("snapshot", exc)
            return False
        self._succeeded()
        return True

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    # -- internals ---------------------------------------------------------------------------
    async def _call(self, awaitable: Any) -> Any:
        # The client has its own socket timeouts; this bounds the whole call (connect + reply).
        return await asyncio.wait_for(awaitable, timeout=self.timeout * 2)

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.errors[operation] += 1
        self.up = False
        if operation in ("transition", "seed"):
            self.back_off()
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning(
                "Redis unavailable (%s: %s): alert transitions are buffered (%d waiting)",
                operation,
                exc.__class__.__name__ + (f": {exc}" if str(exc) else ""),
                len(self.buffer),
            )

    def back_off(self) -> None:
        """Delay the next write attempt: 0.5 s doubling to 10 s, +-20% jitter."""
        self._failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(self._failures - 1, 16))
        self._retry_at = self._clock() + delay * random.uniform(0.8, 1.2)

    def _succeeded(self) -> None:
        self.up = True
        self._failures = 0
        self._retry_at = 0.0
        if self._down_since is not None:
            log.warning("Redis reachable again after %.1fs", self._clock() - self._down_since)
            self._down_since = None


def decode_active(raw: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Decode the JSON values of ``<p>:alerts:active``; unreadable ones are skipped."""
    active: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        try:
            payload = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("ignoring unreadable alert %r in the active hash", key)
            continue
        if isinstance(payload, dict):
            active[key] = payload
    return active


def parse_controls(acks_raw: dict[str, str], snoozes_raw: dict[str, str]) -> Controls:
    """Acks (JSON ``{"by", "at"}``) and snoozes (epoch ms) as stored by ``cxstream alerts``."""
    acks: dict[str, Ack] = {}
    for alert_id, value in acks_raw.items():
        try:
            data = orjson.loads(value)
            acks[alert_id] = Ack(str(data.get("by", "")), int(data.get("at", 0)))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            log.warning("ignoring unreadable ack for %r", alert_id)
    snoozes: dict[str, int] = {}
    for rule, value in snoozes_raw.items():
        try:
            snoozes[rule] = int(float(value))
        except ValueError:
            log.warning("ignoring unreadable snooze for rule %r", rule)
    return Controls(acks, snoozes)
