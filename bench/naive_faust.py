"""Baseline (2): the textbook Faust agent, one table update per event.

Run as ``python -m bench.naive_faust`` with its configuration in ``BENCH_*``
environment variables (the benchmark driver sets them). The agent iterates the
stream event by event, decodes the value with orjson and does
``counts[contact_id] += 1`` on a changelogged Faust table -- what a Faust tutorial
would write. ``GET /count`` reports how many events it has seen, so the driver
measures it exactly like the cxstream worker.
"""

from __future__ import annotations

import os
from typing import Any

import faust
import orjson


def build_app() -> faust.App:
    env = os.environ
    partitions = int(env.get("BENCH_PARTITIONS", "4"))
    app = faust.App(
        env["BENCH_APP_ID"],
        broker=env["BENCH_BROKER"],
        store="memory://",
        datadir=env.get("BENCH_DATA_DIR", "/tmp/bench-naive-faust"),
        autodiscover=False,
        web_enabled=True,
        web_port=int(env["BENCH_PORT"]),
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.2,
        table_standby_replicas=0,
        stream_buffer_maxsize=65536,
        producer_linger=0.005,
        broker_commit_interval=1.0,
        logging_config=None,
    )
    app.producer.buffer.max_messages = 100_000
    topics = app.topic(
        *env["BENCH_TOPICS"].split(","),
        partitions=partitions,
        key_type=str,
        key_serializer="raw",
        value_serializer="raw",
    )
    counts = app.Table("counts", default=int, partitions=partitions)
    seen = {"events": 0, "errors": 0}

    @app.agent(topics, name="naive-count")
    async def count(stream: faust.StreamT) -> None:
        async for key, value in stream.items():
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                seen["errors"] += 1
            counts[key] += 1
            seen["events"] += 1

    @app.page("/count")
    async def count_page(web: Any, request: Any) -> Any:
        return web.json({"count": seen["events"], "errors": seen["errors"], "keys": len(counts)})

    return app


def main() -> None:
    from faust.worker import Worker

    # Stock Faust, no tansu shim: every run starts with a fresh changelog, so recovery
    # has nothing to read and tansu's end-offset quirk cannot matter.
    app = build_app()
    Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
