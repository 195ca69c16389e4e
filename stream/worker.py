"""Running the Faust worker from settings (``cxstream worker``)."""

from __future__ import annotations

import asyncio
import logging

from stream.settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Check topics, build the app and run the Faust worker until stopped."""
    from faust.worker import Worker

    from stream.app import create_app
    from stream.security import describe_kafka_security, install_log_redaction
    from stream.topics import ensure_topics

    install_log_redaction(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings))
    if settings.tansu_compat:
        from stream.tansu_compat import install_tansu_compat

        install_tansu_compat()
    cx = create_app(settings)
    log.info(
        "cxstream worker: broker %s (%s), metrics on http://%s:%d/metrics",
        settings.broker,
        describe_kafka_security(settings),
        cx.app.conf.web_host,
        settings.web_port,
    )
    worker = Worker(cx.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
