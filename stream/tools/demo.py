"""``cxstream demo``: the whole product on one machine from pip alone.

Starts what is not configured (a tansu broker and an embedded Redis on free
local ports), the worker as a child process, and the traffic generator in this
process; then prints a KPI summary read from the worker's /metrics every few
seconds. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from stream.embedded import RedisServer, TansuBroker, free_port

SUMMARY_EVERY_S = 5.0


def fetch_metrics(url: str, timeout: float = 2.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Scrape /metrics into {metric name: [(labels, value)]}."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    result: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[sample.name].append((dict(sample.labels), sample.value))
    return result


def render_summary(metrics: dict[str, list[tuple[dict[str, str], float]]], window: str = "15m") -> str:
    """A per-queue table over ``window``, summing counts across channels: the queue first
    (waiting now, longest wait, service level, abandonment), then the CX KPIs."""
    names = [
        "cx_answered_contacts",
        "cx_answered_within_threshold",
        "cx_abandoned_contacts",
        "cx_short_abandoned_contacts",
        "cx_contacts",
        "cx_contacts_ended",
        "cx_transferred_contacts",
        "cx_repeat_contacts",
        "cx_csat_responses",
        "cx_csat_satisfied",
        "cx_nps_responses",
        "cx_nps_promoters",
        "cx_nps_detractors",
        "cx_ces_responses",
        "cx_ces_easy",
        "cx_ces_high_effort",
    ]
    per_queue: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name in names:
        for labels, value in metrics.get(name, []):
            if labels.get("window") == window:
                per_queue[labels["queue"]][name] += value
                per_queue["ALL"][name] += value
    for labels, value in metrics.get("cx_contacts_waiting", []):
        per_queue[labels["queue"]]["waiting"] += value
        per_queue["ALL"]["waiting"] += value
    for labels, value in metrics.get("cx_longest_wait_seconds", []):
        for key in (labels["queue"], "ALL"):
            per_queue[key]["longest"] = max(per_queue[key]["longest"], value)

    def pct(num: float, den: float) -> str:
        return f"{100 * num / den:5.1f}%" if den else "    - "

    lines = [
        f"window {window}   {'queue':<14}{'waiting':>8}{'longest':>8}{'SL':>7}{'aband':>7}"
        f"{'contacts':>9}{'ended':>7}{'transf':>8}{'repeat':>8}"
        f"{'CSAT':>8}{'NPS':>7}{'CES easy':>9}{'CES high':>9}{'resp n':>8}",
    ]
    for queue in sorted(per_queue, key=lambda q: (q == "ALL", q)):
        c = per_queue[queue]
        nps = (
            f"{100 * (c['cx_nps_promoters'] - c['cx_nps_detractors']) / c['cx_nps_responses']:6.0f} "
            if c["cx_nps_responses"]
            else "    -  "
        )
        responses = c["cx_csat_responses"] + c["cx_nps_responses"] + c["cx_ces_responses"]
        offered = c["cx_answered_contacts"] + c["cx_abandoned_contacts"] - c["cx_short_abandoned_contacts"]
        longest = f"{c['longest']:>7.0f}s" if c["longest"] else "      - "
        lines.append(
            f"{'':12}{queue:<14}{c['waiting']:>8.0f}{longest:>8}"
            f"{pct(c['cx_answered_within_threshold'], offered):>7}"
            f"{pct(c['cx_abandoned_contacts'] - c['cx_short_abandoned_contacts'], offered):>7}"
            f"{c['cx_contacts']:>9.0f}{c['cx_contacts_ended']:>7.0f}"
            f"{pct(c['cx_transferred_contacts'], c['cx_contacts_ended']):>8}"
            f"{pct(c['cx_repeat_contacts'], c['cx_contacts']):>8}"
            f"{pct(c['cx_csat_satisfied'], c['cx_csat_responses']):>8}{nps:>7}"
            f"{pct(c['cx_ces_easy'], c['cx_ces_responses']):>9}"
            f"{pct(c['cx_ces_high_effort'], c['cx_ces_responses']):>9}{responses:>8.0f}"
        )
    outcomes: dict[str, float] = defaultdict(float)
    for labels, value in metrics.get("cx_events_total", []):
        if not labels["topic"].endswith("-customer-contacts"):  # internal repartition topic
            outcomes[labels["outcome"]] += value
    lines.append("events: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(outcomes.items())))
    return "\n".join(lines)


def run_demo(*, rate: float = 100.0, web_port: int = 6066, duration: float | None = None) -> int:
    """Run the demo until Ctrl-C or ``duration``; return the exit status."""
    workdir = Path(tempfile.mkdtemp(prefix="cxstream-demo-"))
    started: list[object] = []
    env = dict(os.environ)
    broker_url = env.get("CXSTREAM_BROKER")
    redis_url = env.get("CXSTREAM_REDIS_URL")
    worker: subprocess.Popen[bytes] | None = None
    wallboard: subprocess.Popen[bytes] | None = None
    try:
        if not broker_url:
            broker = TansuBroker(log_dir=workdir).start()
            started.append(broker)
            broker_url = broker.url
            env["CXSTREAM_TANSU_COMPAT"] = "true"
            env.setdefault("CXSTREAM_SESSION_TIMEOUT", "6s")
            print(f"started embedded Kafka-compatible broker (tansu) at {broker.bootstrap}")
        if not redis_url:
            redis = RedisServer(log_dir=workdir).start()
            started.append(redis)
            redis_url = redis.url
            print(f"started embedded Redis at {redis_url}")
        env.update(
            CXSTREAM_BROKER=broker_url,
            CXSTREAM_REDIS_URL=redis_url,
            CXSTREAM_WEB_PORT=str(web_port),
            CXSTREAM_DATA_DIR=str(workdir / "data"),
        )
        worker_log = open(workdir / "worker.log", "wb")  # noqa: SIM115 (lives as long as the child)
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        metrics_url = f"http://127.0.0.1:{web_port}/metrics"
        wallboard_port = int(env.get("CXSTREAM_WALLBOARD_PORT") or free_port())
        wallboard_log = open(workdir / "wallboard.log", "wb")  # noqa: SIM115 (lives as long as the child)
        wallboard = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "wallboard",
                "--host",
                "127.0.0.1",
                "--port",
                str(wallboard_port),
            ],
            env=env,
            stdout=wallboard_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wallboard_url = f"http://127.0.0.1:{wallboard_port}/"
        print(f"worker starting (pid {worker.pid}); log: {workdir / 'worker.log'}")
        print(f"metrics:   {metrics_url}")
        token_hint = (
            "  (append ?token=<CXSTREAM_WALLBOARD_TOKEN>)" if env.get("CXSTREAM_WALLBOARD_TOKEN") else ""
        )
        print(f"wallboard: {wallboard_url}{token_hint}")
        if sys.stdout.isatty() and not env.get("CI"):
            import webbrowser

            webbrowser.open(wallboard_url)
        print(f"generator: {rate:.0f} events/s of synthetic contact-center traffic; Ctrl-C stops all")
        return asyncio.run(_generate_and_watch(env, rate, metrics_url, worker, duration))
    except KeyboardInterrupt:
        return 0
    finally:
        print("\nstopping...")
        for child in (wallboard, worker):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in (wallboard, worker):
            if child is not None:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()  # type: ignore[attr-defined]
        print("stopped.")


async def _generate_and_watch(
    env: dict[str, str],
    rate: float,
    metrics_url: str,
    worker: subprocess.Popen[bytes],
    duration: float | None,
) -> int:
    from stream import generator
    from stream.config.security import kafka_client_kwargs
    from stream.config.settings import load_settings

    settings = load_settings(broker=env["CXSTREAM_BROKER"])
    stop = asyncio.Event()
    produce = asyncio.create_task(
        generator.produce(
            settings.bootstrap_servers,
            rate=rate,
            profile=generator.TrafficProfile.demo(queues=True),
            duplicate_ratio=0.01,
            bad_ratio=0.005,
            stop_event=stop,
            producer_options=kafka_client_kwargs(settings),
        )
    )
    deadline = time.monotonic() + duration if duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(SUMMARY_EVERY_S)
            if worker.poll() is not None:
                print(f"worker exited with status {worker.returncode}; see its log")
                return 1
            try:
                metrics = await asyncio.to_thread(fetch_metrics, metrics_url)
            except OSError:
                print("waiting for the worker to join the group and serve /metrics ...")
                continue
            print("\n" + time.strftime("%H:%M:%S") + "\n" + render_summary(metrics))
        return 0
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(produce, 10)
