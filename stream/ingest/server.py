"""``cxstream ingest``: contact-center platforms post their webhooks here.

``POST /ingest/{format}`` (a format of ``cxstream translate --list`` or of your own mapping
file) takes one vendor payload and answers:

* **200** ``{"events": N}`` once the broker acknowledged all N contract events it maps to
  (N may be 0: an event type cxstream does not use). Nothing answered 200 is lost.
* **400** ``{"error": reason, "detail": ...}`` for a payload that maps to no valid events; a
  copy goes to the dead-letter topic with the reason.
* **401** for a missing or bad signature / token: nothing is produced.
* **404** unknown format, **408** body too slow, **413** body too large, **415** wrong
  content type.
* **503** (``Retry-After``) while the broker is unreachable or slow to acknowledge: the
  vendor retries, and the deterministic event ids make a retry that overlaps a late
  acknowledgement harmless.

``GET /healthz`` is 200 while the broker connection works, ``GET /metrics`` serves the
server's own counters (``cx_ingest_*``, docs/metrics.md). Memory is bounded by
``CXSTREAM_INGEST_MAX_BODY`` x ``CXSTREAM_INGEST_MAX_CONCURRENT``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.aiohttp import make_aiohttp_handler

from stream.config.security import install_log_redaction, kafka_client_kwargs
from stream.config.settings import Settings, load_settings
from stream.domain.metrics_catalog import INGEST_METRICS
from stream.domain.processor import DeadLetter
from stream.ingest.auth import refusal, require_credentials
from stream.ingest.delivery import BrokerUnavailable, Delivery
from stream.ingest.process import run_until_signalled
from stream.platforms.mapping import TranslationError
from stream.platforms.registry import Platform, configured_platforms

log = logging.getLogger(__name__)

#: Content types a vendor posts: JSON (EventBridge API destinations, Genesys, Zendesk,
#: Intercom, Twilio Event Streams) and forms (Twilio callbacks).
JSON_TYPES = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)
FORM_TYPE = "application/x-www-form-urlencoded"
RETRY_AFTER_S = 5
WARN_EVERY_S = 10.0


class IngestMetrics:
    """The ingest server's own counters, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        requests, events, broker_up = INGEST_METRICS
        self.requests = Counter(
            requests.name.removesuffix("_total"), requests.help, requests.labels or (), registry=self.registry
        )
        self.events = Counter(
            events.name.removesuffix("_total"), events.help, events.labels or (), registry=self.registry
        )
        self.broker_up = Gauge(broker_up.name, broker_up.help, registry=self.registry)


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


class IngestServer:
    """The aiohttp application: one handler per request, one shared :class:`Delivery`."""

    def __init__(self, settings: Settings, platforms: dict[str, Platform], delivery: Delivery) -> None:
        self.settings = settings
        self.platforms = platforms
        self.delivery = delivery
        self.metrics = IngestMetrics()
        self.metrics.broker_up.set_function(lambda: 1.0 if self._broker_up() else 0.0)
        self._last_warning = -1e9
        self._slots = asyncio.Semaphore(settings.ingest_max_concurrent)
        self.app = web.Application(client_max_size=settings.ingest_max_body)
        self.app.router.add_post("/ingest/{format}", self.ingest)
        self.app.router.add_get("/ingest", self.formats)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/metrics", make_aiohttp_handler(self.metrics.registry))

    # -- small endpoints ------------------------------------------------------------
    async def formats(self, request: web.Request) -> web.Response:
        return _json(200, {"formats": {name: p.auth for name, p in self.platforms.items()}})

    def _broker_up(self) -> bool:
        return self.delivery.connected and self.delivery.healthy

    async def healthz(self, request: web.Request) -> web.Response:
        up = self._broker_up()
        return _json(200 if up else 503, {"broker": "up" if up else "down"})

    # -- the webhook ------------------------------------------------------------------
    def _answer(self, fmt: str, status: int, body: dict[str, Any], **headers: str) -> web.Response:
        self.metrics.requests.labels(fmt, str(status)).inc()
        return _json(status, body, **headers)

    def _url(self, request: web.Request) -> str:
        """The URL the vendor called (what Twilio signs)."""
        public = self.settings.ingest_public_url
        return public.rstrip("/") + request.path_qs if public else str(request.url)

    async def ingest(self, request: web.Request) -> web.Response:
        fmt = request.match_info["format"]
        platform = self.platforms.get(fmt)
        if platform is None:
            return self._answer(
                "unknown", 404, {"error": "unknown_format", "formats": sorted(self.platforms)}
            )
        form = request.content_type == FORM_TYPE
        if (
            not (form and platform.mapping.spec.body == "json_or_form")
            and request.content_type not in JSON_TYPES
        ):
            return self._answer(
                fmt, 415, {"error": "unsupported_media_type", "detail": f"{request.content_type} for {fmt}"}
            )
        if request.content_length is not None and request.content_length > self.settings.ingest_max_body:
            return self._answer(fmt, 413, {"error": "too_large", "limit": self.settings.ingest_max_body})
        async with self._slots:
            try:
                async with asyncio.timeout(self.settings.ingest_read_timeout):
                    body = await request.read()
            except TimeoutError:
                return self._answer(fmt, 408, {"error": "body_timeout"})
            except web.HTTPRequestEntityTooLarge:
                return self._answer(fmt, 413, {"error": "too_large", "limit": self.settings.ingest_max_body})
            why = refusal(
                platform, self.settings, url=self._url(request), headers=request.headers, body=body, form=form
            )
            if why is not None:
                return self._answer(fmt, 401, {"error": "unauthorized", "detail": why})
            return await self._deliver(fmt, platform, body, request.content_type)

    async def _deliver(self, fmt: str, platform: Platform, body: bytes, content_type: str) -> web.Response:
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        try:
            events = platform.mapping.translate_body(body, int(time.time() * 1000), content_type)
        except TranslationError as exc:
            try:
                await self.delivery.send(
                    [], [DeadLetter(f"ingest/{fmt}", -1, -1, None, body, exc.reason, exc.detail)]
                )
            except BrokerUnavailable:
                # The copy is not stored: let the vendor retry rather than lose it.
                return self._answer(fmt, 503, {"error": "broker_unavailable"}, **retry)
            log.debug("rejected a %s payload: %s: %s", fmt, exc.reason, exc.detail)
            return self._answer(fmt, 400, {"error": exc.reason, "detail": exc.detail})
        try:
            await self.delivery.send(events)
        except BrokerUnavailable as exc:
            if time.monotonic() - self._last_warning > WARN_EVERY_S:  # one line, not one per request
                self._last_warning = time.monotonic()
                log.warning("%s payload not taken (503, the vendor retries): %s", fmt, exc)
            return self._answer(fmt, 503, {"error": "broker_unavailable"}, **retry)
        for event in events:
            self.metrics.events.labels(fmt, event.topic).inc()
        return self._answer(fmt, 200, {"events": len(events)})


# -- the command ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream ingest``."""
    parser.add_argument("--port", type=int, help="port (CXSTREAM_INGEST_PORT, default 8090)")
    parser.add_argument("--broker", help="Kafka bootstrap (CXSTREAM_BROKER)")


async def serve(settings: Settings, platforms: dict[str, Platform], stop: asyncio.Event) -> None:
    """Run the server until ``stop`` is set."""
    delivery = Delivery(settings)
    await delivery.start()
    server = IngestServer(settings, platforms, delivery)
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.ingest_host, settings.ingest_port)
    await site.start()
    log.info(
        "ingest server on http://%s:%d/ingest/{format} (%s)",
        settings.ingest_host,
        settings.ingest_port,
        ", ".join(platforms),
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await delivery.stop()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream ingest``."""
    overrides: dict[str, object] = {}
    if args.port is not None:
        overrides["ingest_port"] = args.port
    if args.broker is not None:
        overrides["broker"] = args.broker
    settings = load_settings(**overrides)
    install_log_redaction(settings)
    require_credentials(settings)
    kafka_client_kwargs(settings)  # bad TLS / SASL settings stop here, not in the background
    platforms = configured_platforms(settings)  # a bad mapping file stops here, before binding

    run_until_signalled(lambda stop: serve(settings, platforms, stop))
    return 0
