"""``cxstream wallboard``: the live wallboard page server.

Serves a read-only page of big-number KPI tiles per queue (CSAT, NPS, CES easy and
high effort, repeat contacts, transfers, channel switches) with confidence markings,
sparklines and the firing alerts, read from Redis (docs/redis.md). Routes: GET / is the
page; GET /api/state the state as JSON (?window=15m for one window); GET /events
server-sent events with the state every --interval seconds and at once after each
message on the <prefix>:alerts channel; GET /healthz liveness. With
CXSTREAM_WALLBOARD_TOKEN set, the page, /api/state and /events need ?token=... or an
"Authorization: Bearer ..." header. See docs/wallboard.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from stream.config.queues import DEFAULT_TARGET, QueueTargets, load_queue_targets
from stream.config.retry import REDIS_BACKOFF
from stream.config.timeutil import now_ms
from stream.domain.kpi import DEFAULT_SERVICE_LEVEL_POLICY
from stream.query.partition_views import merge
from stream.wallboard.aggregate import Totals, attach_trends, build_state, parse_alerts, sum_views
from stream.wallboard.source import REDIS_ERRORS, RedisSource, describe
from stream.wallboard.sse import COMMENT_PING, StateHub, format_event, format_retry
from stream.wallboard.trends import TrendBuffer

if TYPE_CHECKING:
    from stream.config.settings import Settings

log = logging.getLogger("cxstream.wallboard")

STATIC_FILES: Final[dict[str, str]] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PUBLIC_PATHS: Final = frozenset({"/healthz", "/favicon.ico", *(f"/static/{n}" for n in STATIC_FILES)})
SSE_PING_S: Final = 15.0
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)


def backoff_delay(failures: int) -> float:
    """0.5 s doubling to 10 s, +-20% jitter, for the ``failures``-th consecutive failure."""
    return REDIS_BACKOFF.delay(failures)


@dataclass(slots=True)
class WallboardConfig:
    """Everything the server needs; :meth:`from_settings` maps the ``CXSTREAM_*`` settings."""

    redis_url: str
    prefix: str = "cx"
    min_samples: int = 20
    windows: tuple[str, ...] = ("15m", "1h", "24h")
    token: str | None = field(default=None, repr=False)
    interval_s: float = 2.0
    trend_interval_s: float = 10.0
    trend_size: int = 60
    stale_after_s: float = 60.0
    redis_timeout_s: float = 2.0
    #: Per-queue targets the queue figures are coloured against (CXSTREAM_QUEUES_FILE).
    targets: QueueTargets = field(default_factory=lambda: QueueTargets(DEFAULT_TARGET))
    service_level_policy: str = DEFAULT_SERVICE_LEVEL_POLICY

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WallboardConfig:
        token = settings.wallboard_token.get_secret_value() if settings.wallboard_token else None
        values: dict[str, Any] = {
            "redis_url": settings.redis_url.get_secret_value(),
            "prefix": settings.redis_prefix,
            "min_samples": settings.min_samples,
            "windows": tuple(label for label, _ in settings.window_list),
            "token": token or None,
            "targets": load_queue_targets(settings),
            "service_level_policy": settings.service_level_policy,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class Wallboard:
    """Polls Redis, keeps the trend history and publishes the state to the SSE hub."""

    def __init__(self, config: WallboardConfig, clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.clock = clock
        self.hub = StateHub()
        self.trends = TrendBuffer(config.trend_size, config.trend_interval_s)
        self.source = RedisSource(config.redis_url, config.prefix, timeout=config.redis_timeout_s)
        self.redis_ok = False
        self.last_success: int | None = None
        self.failures = 0
        self.refreshes = 0
        self.alert_messages = 0
        self.closing = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_good: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- reading Redis --------------------------------------------------------------------------
    async def refresh(self) -> dict[str, Any]:
        """Read Redis once and publish the new state (a stale copy of the last one on failure)."""
        now = self.clock()
        try:
            read = await self.source.read()
        except REDIS_ERRORS as exc:
            state = self._stale_state(now, describe(exc))
        else:
            if not self.redis_ok and self.failures:
                log.warning("Redis reachable again after %d failed reads", self.failures)
            self.redis_ok, self.failures, self.last_success = True, 0, now
            totals = sum_views(merge(None, read.views), now, int(self.config.stale_after_s * 1000))
            state = build_state(
                totals,
                parse_alerts(read.active, read.acks),
                now_ms=now,
                min_samples=self.config.min_samples,
                windows=self.config.windows,
                updated_at=now,
                interval_s=self.config.interval_s,
                targets=self.config.targets,
                policy=self.config.service_level_policy,
            )
            if self.trends.due(now):
                self.trends.sample_state(state["data"], now)
            attach_trends(state, self.trends)
            self._last_good = state
        self.refreshes += 1
        self.hub.publish(state)
        return state

    def _stale_state(self, now: int, error: str) -> dict[str, Any]:
        self.failures += 1
        if self.redis_ok or self.failures == 1:
            log.warning("cannot read Redis (%s): showing data as stale, retrying with backoff", error)
        self.redis_ok = False
        stale_since = self.last_success  # None: there never was data
        if self._last_good is not None:
            state = dict(self._last_good)
            state["server_time"] = now
            state["redis"] = {"ok": False, "error": error, "stale_since": stale_since}
            return state
        return build_state(
            Totals(),
            [],
            now_ms=now,
            min_samples=self.config.min_samples,
            windows=self.config.windows,
            redis_ok=False,
            redis_error=error,
            stale_since=stale_since,
            interval_s=self.config.interval_s,
        )

    def wake(self) -> None:
        """Refresh now instead of at the next interval (an alert transition arrived)."""
        self._wake.set()

    async def _poll_loop(self) -> None:
        while not self.closing.is_set():
            delay = self.config.interval_s if self.redis_ok else backoff_delay(self.failures)
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            if self.closing.is_set():
                break
            try:
                await self.refresh()
            except Exception:  # never let one bad snapshot stop the board
                log.exception("wallboard refresh failed")

    def _on_alert_message(self, data: str) -> None:
        self.alert_messages += 1
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            message = orjson.loads(data)
            log.info("alert %s: %s", message.get("state"), message.get("id"))
        self.wake()

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="wallboard-poll"),
            asyncio.create_task(
                self.source.listen(self._on_alert_message, stop=self.closing, backoff=backoff_delay),
                name="wallboard-alerts",
            ),
        ]

    async def stop(self) -> None:
        self.closing.set()
        self._wake.set()
        self.hub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.source.close()


# -- HTTP -----------------------------------------------------------------------------------------
BOARD_KEY: Final = web.AppKey("wallboard", Wallboard)
PAGES_KEY: Final = web.AppKey("wallboard_pages", dict)


def _static(name: str) -> bytes:
    try:
        return resources.files("stream.wallboard").joinpath("static", name).read_bytes()
    except FileNotFoundError:
        raise RuntimeError(
            f"wallboard page file static/{name} is not installed: the package data "
            "'wallboard/static/*' is missing from this cxstream build"
        ) from None


def _given_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token")


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time token check; always true when no token is configured."""
    if not expected:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


_UNAUTHORIZED_HTML = b"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Wallboard: access token needed</title></head>
<body style="background:#0b0f14;color:#f5f7fa;font:32px sans-serif;padding:2em">
<h1>Access token needed</h1><p>Open this wallboard as <code>/?token=&lt;token&gt;</code>
(the value of <code>CXSTREAM_WALLBOARD_TOKEN</code>).</p></body></html>"""


@web.middleware
async def _security(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    board = request.app[BOARD_KEY]
    if request.path not in PUBLIC_PATHS and not token_ok(board.config.token, _given_token(request)):
        headers = {"WWW-Authenticate": 'Bearer realm="cxstream wallboard"', "Cache-Control": "no-store"}
        if request.path == "/":
            response: web.StreamResponse = web.Response(
                status=401, body=_UNAUTHORIZED_HTML, content_type="text/html", headers=headers
            )
        else:
            response = web.json_response({"error": "unauthorized"}, status=401, headers=headers)
    else:
        response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Content-Security-Policy", CSP)
    return response


async def _index(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[PAGES_KEY]["index.html"],
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def _static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(
        body=request.app[PAGES_KEY][name],
        headers={"Content-Type": STATIC_FILES[name], "Cache-Control": "no-cache"},
    )


async def _favicon(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("static/favicon.svg")


async def _api_state(request: web.Request) -> web.Response:
    board = request.app[BOARD_KEY]
    window = request.query.get("window")
    body = board.hub.render(window) if window else orjson.dumps(board.hub.state or {})
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


async def _events(request: web.Request) -> web.StreamResponse:
    board = request.app[BOARD_KEY]
    hub = board.hub
    window = request.query.get("window") or None
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store, no-transform",
            "X-Accel-Buffering": "no",
        }
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    await response.prepare(request)
    hub.clients += 1
    seen = -1
    changed = True
    try:
        await response.write(format_retry(2000))
        while not hub.closed:
            if hub.version != seen:
                seen = hub.version
                await response.write(format_event(hub.render(window), "state", seen))
            elif not changed:
                await response.write(COMMENT_PING)
            changed = await hub.wait(seen, SSE_PING_S)
    except ConnectionError:  # the browser went away
        pass
    finally:
        hub.clients -= 1
    return response


async def _healthz(request: web.Request) -> web.Response:
    board = request.app[BOARD_KEY]
    return web.json_response(
        {
            "status": "ok",
            "redis": "up" if board.redis_ok else "down",
            "updated_at": board.last_success,
            "clients": board.hub.clients,
        },
        headers={"Cache-Control": "no-store"},
    )


def create_app(config: WallboardConfig, board: Wallboard | None = None) -> web.Application:
    """The aiohttp application; the Redis poller runs while the app is running."""
    app = web.Application(middlewares=[_security])
    pages = {"index.html": _static("index.html"), **{name: _static(name) for name in STATIC_FILES}}
    app[PAGES_KEY] = pages

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        wallboard = board or Wallboard(config)
        app[BOARD_KEY] = wallboard
        await wallboard.start()
        yield
        await wallboard.stop()

    async def on_shutdown(app: web.Application) -> None:
        # End the SSE streams first, so shutdown does not wait for them.
        if BOARD_KEY in app:
            app[BOARD_KEY].hub.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _static_file)
    app.router.add_get("/favicon.ico", _favicon)
    app.router.add_get("/api/state", _api_state)
    app.router.add_get("/events", _events)
    app.router.add_get("/healthz", _healthz)
    return app


class SafeAccessLogger(AbstractAccessLogger):
    """Access log without query strings or headers: a ``?token=`` never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug("%s %s %s %.3fs", request.method, request.path, response.status, time)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


# -- CLI ------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream wallboard``."""
    parser.add_argument("--host", help="interface to bind (default CXSTREAM_WALLBOARD_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default CXSTREAM_WALLBOARD_PORT, 8080)")
    parser.add_argument(
        "--redis-url",
        help="Redis URL (default CXSTREAM_REDIS_URL; prefer the variable when it holds a password)",
    )
    parser.add_argument("--prefix", help="Redis key prefix (default CXSTREAM_REDIS_PREFIX, cx)")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between Redis reads and pushes (default 2)"
    )
    parser.add_argument(
        "--trend-interval",
        type=float,
        default=10.0,
        help="seconds between sparkline samples (default 10; 60 samples are kept)",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=60.0,
        help="mark partition views older than this many seconds as stale (default 60)",
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="(CXSTREAM_LOG_LEVEL)"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream wallboard``: serve until Ctrl-C or SIGTERM."""
    from stream.config.settings import load_settings

    overrides: dict[str, Any] = {}
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    if getattr(args, "prefix", None):
        overrides["redis_prefix"] = args.prefix
    settings = load_settings(**overrides)
    if args.log_level is None:
        logging.getLogger().setLevel(settings.log_level.upper())
    for name, value in (("interval", args.interval), ("trend-interval", args.trend_interval)):
        if not value > 0:
            print(f"cxstream wallboard: --{name} must be positive")
            return 2
    config = WallboardConfig.from_settings(
        settings,
        interval_s=args.interval,
        trend_interval_s=args.trend_interval,
        stale_after_s=args.stale_after,
    )
    host = args.host or settings.wallboard_host
    port = args.port if args.port is not None else settings.wallboard_port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    log.info(
        "wallboard on http://%s:%d/ (bound to %s)%s; Redis prefix %r",
        shown,
        port,
        host,
        ": access token required (CXSTREAM_WALLBOARD_TOKEN)" if config.token else "",
        config.prefix,
    )
    try:
        web.run_app(
            create_app(config),
            host=host,
            port=port,
            print=None,
            access_log_class=SafeAccessLogger,
            access_log=logging.getLogger("cxstream.wallboard.access"),
            shutdown_timeout=3.0,
            handle_signals=True,
        )
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", host, port, exc)
        return 1
    return 0


__all__ = [
    "Wallboard",
    "WallboardConfig",
    "add_arguments",
    "backoff_delay",
    "create_app",
    "run",
    "token_ok",
]
