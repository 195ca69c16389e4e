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

  A transition with ``expect`` (cleanup of an alert left behind) applies only if the
  active hash still holds exactly that JSON. One that Redis answers with an error
  ``MAX_REJECTIONS`` times is dropped and counted.

  Fencing: every transition carries the evaluator's lease epoch (``<p>:alerts:epoch``);
  the script refuses it when a newer evaluator has taken the lease since, so a worker
  that lost the lease (paused, cut off from Redis) can never write after its successor.

* **The evaluator lease** (``<p>:alerts:lease``) is claimed and renewed by a script that
  hands out a new epoch to every new holder (see ``_CLAIM_LEASE``); the evaluator's timers
  (``<p>:alerts:evaluator``) are written fenced by the same epoch.
* **Partition views** (``<p>:kpi:partitions``, :mod:`stream.query.partition_views`) are written
  by a script that keeps, per partition, the view reflecting the most input: never
  buffered, the next one replaces a lost one.
* **Controls** (acks, snoozes) are read every evaluation; on failure the last good
  copy is used.

Every Redis call has a timeout; errors are counted per operation, logged once per
outage, and never raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from stream.alerting.evaluator import FIRING, Ack, Controls, Transition
from stream.config.retry import REDIS_BACKOFF
from stream.outputs.redis_client import connect
from stream.outputs.redis_keys import RedisKeys

log = logging.getLogger(__name__)

LOG_MAXLEN = 10_000
DEDUP_DEPTH = 500
#: A transition Redis answers with an error this often is dropped (and counted).
MAX_REJECTIONS = 5

# KEYS: active, log, acks, epoch.
# ARGV: state, alert id, JSON, tid, log maxlen, channel, dedup depth, expected active JSON or '',
#       fencing token (the evaluator's epoch) or ''.
# Returns 1 written, 0 already written / no longer as expected, -1 fenced (a newer evaluator).
_WRITE_TRANSITION = """
if ARGV[9] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[9] then
  return -1
end
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

# The evaluator lease. KEYS: lease, epoch. ARGV: holder, ttl ms, the epoch the holder last had or ''.
# Returns {1, epoch, holder} when ``holder`` holds the lease now, {0, epoch, other holder} if not.
# A free lease taken back by its last holder keeps the epoch when nobody else took it meanwhile
# (a Redis outage longer than the TTL), so transitions buffered under that epoch stay valid;
# every other new holder gets a new epoch, which fences out whatever the old one still sends.
_CLAIM_LEASE = """
local holder = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, epoch, holder}
end
if holder then
  return {0, epoch, holder}
end
if ARGV[3] == '' or tonumber(ARGV[3]) ~= epoch then
  epoch = redis.call('INCR', KEYS[2])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, epoch, ARGV[1]}
"""

# KEYS: lease. ARGV: holder. Deletes the lease only if ``holder`` holds it.
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: epoch, evaluator state. ARGV: fencing token, JSON. Only the current evaluator writes.
_WRITE_EVALUATOR_STATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# Partition views. KEYS: views, positions. ARGV: now ms, takeover ms, then (partition,
# position, JSON) triples. A view replaces the stored one unless that one reflects more input
# (a higher position) and is younger than the takeover age, so readers always find the newest
# view of each partition, whichever worker wrote it. Returns how many were written.
_WRITE_VIEWS = """
local now = tonumber(ARGV[1])
local takeover = tonumber(ARGV[2])
local written = 0
for i = 3, #ARGV, 3 do
  local stored = redis.call('HGET', KEYS[2], ARGV[i])
  local newer = true
  if stored then
    local position, at = string.match(stored, '^(%-?%d+):(%d+)$')
    if position and tonumber(position) > tonumber(ARGV[i + 1]) and tonumber(at) > now - takeover then
      newer = false
    end
  end
  if newer then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1] .. ':' .. ARGV[1])
    written = written + 1
  end
end
return written
"""

#: What :meth:`RedisSink._attempt` returns when Redis could not answer.
_FAILED: Final = object()

#: A stored view older than this is replaced even by one at a lower position (the topics were
#: reset, or the partition's new owner cannot catch up): a view never blocks its partition.
VIEW_TAKEOVER_MS = 30_000


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """The answer to a lease claim: who holds the evaluator lease, under which epoch."""

    held: bool
    epoch: int
    holder: str


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
        self.keys = RedisKeys(prefix)
        self.timeout = timeout
        self.log_maxlen = log_maxlen
        self.buffer: deque[Transition] = deque()
        self.buffer_max = buffer_max
        self.client = client or connect(url, timeout)
        self._script = self.client.register_script(_WRITE_TRANSITION)
        self._claim = self.client.register_script(_CLAIM_LEASE)
        self._release = self.client.register_script(_RELEASE_LEASE)
        self._write_state = self.client.register_script(_WRITE_EVALUATOR_STATE)
        self._write_views = self.client.register_script(_WRITE_VIEWS)
        #: Fencing token of this worker's evaluator lease; transitions carry it (None: unfenced).
        self.epoch: int | None = None
        #: Transitions refused because a newer evaluator holds the lease.
        self.fenced = 0
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
                result = await self._call(
                    self._script(
                        keys=[self.keys.active, self.keys.log, self.keys.acks, self.keys.epoch],
                        args=[
                            transition.state,
                            transition.alert_id,
                            orjson.dumps(transition.payload).decode(),
                            tid,
                            self.log_maxlen,
                            self.keys.channel,
                            depth,
                            transition.expect or "",
                            "" if self.epoch is None else str(self.epoch),
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
            self._succeeded()
            if result == -1:
                # A newer evaluator holds the lease: nothing this one still holds may be written.
                self.fenced += len(self.buffer)
                log.warning(
                    "alert evaluator lease moved on (epoch %s is old): %d buffered transitions "
                    "superseded, the new evaluator decides",
                    self.epoch,
                    len(self.buffer),
                )
                self.discard_buffer()
                break
            self.buffer.popleft()
            self._uncertain.discard(tid)
            self._rejected.pop(tid, None)
            self.written += 1
            written += 1
        return written

    def discard_buffer(self) -> None:
        """Forget every buffered transition (this worker is no longer the evaluator)."""
        self.buffer.clear()
        self._uncertain.clear()
        self._rejected.clear()

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
        raw = await self._attempt(operation, self.client.hgetall(self.keys.active))
        return None if raw is _FAILED else raw

    async def read_active(self, operation: str = "seed") -> dict[str, dict[str, Any]] | None:
        """``<p>:alerts:active`` decoded (unreadable entries skipped), or None on failure."""
        raw = await self.read_active_raw(operation)
        return None if raw is None else decode_active(raw)

    async def refresh_controls(self, now_ms: int | None = None) -> Controls:
        """Read acks and snoozes; on failure keep (and return) the last good copy."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.acks)
        pipe.hgetall(self.keys.snoozes)
        replies = await self._attempt("controls", pipe.execute())
        if replies is not _FAILED:
            self.controls = parse_controls(*replies)
        return self.controls

    # -- the evaluator lease ---------------------------------------------------------------------
    async def claim_lease(self, holder: str, ttl_ms: int, last_epoch: int | None) -> LeaseClaim | None:
        """Take or renew the evaluator lease for ``holder``; None when Redis cannot be reached."""
        reply = await self._attempt(
            "lease",
            self._claim(
                keys=[self.keys.lease, self.keys.epoch],
                args=[holder, ttl_ms, "" if last_epoch is None else str(last_epoch)],
            ),
        )
        if reply is _FAILED:
            return None
        held, epoch, current = reply
        return LeaseClaim(bool(held), int(epoch), str(current))

    async def release_lease(self, holder: str) -> bool:
        """Give the lease up (worker stopping) so another worker takes over at once."""
        released = await self._attempt("lease", self._release(keys=[self.keys.lease], args=[holder]))
        return released is not _FAILED and bool(released)

    async def write_evaluator_state(self, state: str) -> bool | None:
        """Store the evaluator's timers for a successor: True written, False fenced, None failed."""
        if self.epoch is None:
            return False
        result = await self._attempt(
            "lease",
            self._write_state(keys=[self.keys.epoch, self.keys.evaluator], args=[str(self.epoch), state]),
        )
        return None if result is _FAILED else bool(result == 1)

    async def read_takeover(self) -> tuple[dict[str, str], str | None] | None:
        """``<p>:alerts:active`` as stored and the previous evaluator's state, for a new evaluator."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.active)
        pipe.get(self.keys.evaluator)
        replies = await self._attempt("seed", pipe.execute())
        if replies is _FAILED:
            return None
        active, state = replies
        return active, state

    # -- partition views -----------------------------------------------------------------------
    async def write_views(self, views: Sequence[tuple[int, int, str]], now_ms: int) -> int | None:
        """Store (partition, position, JSON) views where newer than the stored ones; how many."""
        if not views:
            return 0
        args: list[Any] = [now_ms, VIEW_TAKEOVER_MS]
        for partition, position, text in views:
            args += [partition, position, text]
        written = await self._attempt(
            "snapshot", self._write_views(keys=[self.keys.views, self.keys.view_positions], args=args)
        )
        return None if written is _FAILED else int(written)

    async def read_views(self) -> dict[str, str] | None:
        """``<p>:kpi:partitions`` as stored (partition -> view JSON), or None on failure."""
        raw = await self._attempt("views", self.client.hgetall(self.keys.views))
        return None if raw is _FAILED else raw

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    # -- internals ---------------------------------------------------------------------------
    async def _attempt(self, operation: str, awaitable: Awaitable[Any]) -> Any:
        """Await one Redis call: its reply, or ``_FAILED`` once the failure is counted and
        every call backs off (the one shape of every read and write here)."""
        try:
            reply = await self._call(awaitable)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(operation, exc)
            return _FAILED
        self._succeeded()
        return reply

    async def _call(self, awaitable: Any) -> Any:
        # The client has its own socket timeouts; this bounds the whole call (connect + reply).
        return await asyncio.wait_for(awaitable, timeout=self.timeout * 2)

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.errors[operation] += 1
        self.up = False
        # Every failure backs off every call: a frozen Redis costs one timeout per backoff step,
        # not one per call, and the evaluator goes on with what it last read.
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
        self._retry_at = self._clock() + REDIS_BACKOFF.delay(self._failures)

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
