"""Baseline (3): the survey and contact KPI job written the way Quix Streams' docs teach it.

Run as ``python -m bench.quix_app`` with its configuration in ``BENCH_*`` environment
variables (the benchmark driver sets them). One ``Application`` over the pre-filled
input topics (JSON values), re-keyed by queue x channel with ``group_by`` (Quix's
repartition topic), a tumbling one-minute window per queue x channel that counts
contacts started, survey responses and satisfied CSAT answers (``reduce`` into a dict
held in Quix's RocksDB state, changelog topic on), and the running window value
(``.current()``) at the end of the chain. Malformed values are skipped by the
consumer-error callback, as the docs recommend for poison messages, and JSON that is not
an object by a ``filter``.

``GET /count`` (a small HTTP thread) reports how many input events reached the end of
the chain, so the driver times it exactly like the other consumers. This is what a
competent Quix user would write, not a tuned one: Quix's per-message Python pipeline
is the thing compared.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from datetime import timedelta
from typing import Any

SEEN = {"events": 0, "errors": 0}


def serve_count(port: int) -> None:
    """``GET /count`` → ``{"count": N, "errors": E}`` on 127.0.0.1:``port``, in a daemon thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"count": SEEN["events"], "errors": SEEN["errors"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="count", daemon=True).start()


def queue_channel(value: dict[str, Any]) -> str:
    return f"{value.get('queue') or 'unknown'}|{value.get('channel') or 'unknown'}"


def initial(value: dict[str, Any]) -> dict[str, int]:
    return add({"contacts": 0, "responses": 0, "csat_responses": 0, "csat_satisfied": 0}, value)


def add(counts: dict[str, int], value: dict[str, Any]) -> dict[str, int]:
    if value.get("type") == "contact_started":
        counts["contacts"] += 1
    metric = value.get("metric")
    if metric is not None:
        counts["responses"] += 1
        if metric == "csat":
            counts["csat_responses"] += 1
            score = value.get("score")
            if isinstance(score, int) and score >= 4:
                counts["csat_satisfied"] += 1
    return counts


def is_event(value: Any) -> bool:
    """Filter: JSON that is not an object (``null``, a list, a number) is counted and dropped."""
    if isinstance(value, dict):
        return True
    SEEN["errors"] += 1
    SEEN["events"] += 1
    return False


def counted(_value: Any) -> None:
    SEEN["events"] += 1


def skip_bad_message(exc: BaseException, message: Any, logger: Any) -> bool:
    """Consumer-error callback: a value that is not JSON is counted and skipped."""
    SEEN["errors"] += 1
    SEEN["events"] += 1
    return True


def main() -> None:
    from quixstreams import Application

    env = os.environ
    serve_count(int(env["BENCH_PORT"]))
    app = Application(
        broker_address=env["BENCH_BOOTSTRAP"],
        consumer_group=env["BENCH_APP_ID"],
        auto_offset_reset="earliest",
        state_dir=env.get("BENCH_DATA_DIR", "/tmp/bench-quix-state"),
        use_changelog_topics=True,
        on_consumer_error=skip_bad_message,
        loglevel="WARNING",
        # tansu holds a group join for half the session timeout (librdkafka's default: 45 s).
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500},
    )
    frames = []
    for name in env["BENCH_TOPICS"].split(","):
        topic = app.topic(name, value_deserializer="json")
        frames.append(app.dataframe(topic))
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    sdf = sdf.filter(is_event)
    sdf = sdf.group_by(queue_channel, name="queue_channel")
    sdf = sdf.tumbling_window(timedelta(minutes=1)).reduce(reducer=add, initializer=initial).current()
    sdf = sdf.update(counted)
    app.run()


if __name__ == "__main__":
    main()
