"""``python -m bench.ingest_throughput``: webhook requests per second through ``cxstream ingest``.

Baseline measured in the same run: a bare aiohttp server (its own process, like the ingest
server) that reads the body and answers 200, i.e. what HTTP alone costs on this machine.
Then the real ``cxstream ingest`` on an embedded tansu broker, for bearer-token Genesys
payloads (2 events each: a contact start and a queue wait) and signed Twilio form
callbacks. The load comes from a separate process (aiohttp client, ``--concurrency``
requests in flight). Every ingest answer must be 200 (each one is acknowledged by the
broker first, ``acks=all``). Writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import orjson

from bench.common import machine_info
from stream.embedded import TansuBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token"
TWILIO = "bench-twilio-token"


def genesys(n: int, now_ms: int) -> bytes:
    conv = f"bench-{n:08d}"
    return orjson.dumps(
        {
            "topicName": f"v2.detail.events.conversation.{conv}.acd.start",
            "eventBody": {
                "conversationId": conv,
                "sessionId": "s1",
                "queueId": "q1",
                "mediaType": "VOICE",
                "ani": f"tel:+1415555{n % 10000:04d}",
                "eventTime": now_ms,
            },
        }
    )


def twilio(n: int, now_s: int, url: str) -> tuple[bytes, str]:
    task = f"WT{n:032d}"
    form = {
        "EventType": "task-queue.entered",
        "TaskSid": task,
        "TaskQueueName": "Billing",
        "TaskQueueSid": "WQ1",
        "TaskChannelUniqueName": "voice",
        "TaskAttributes": orjson.dumps({"from": f"+1415555{n % 10000:04d}"}).decode(),
        "Timestamp": str(now_s),
    }
    body = urlencode(form)
    message = url + "".join(k + v for k, v in sorted(form.items()))
    signature = base64.b64encode(hmac.new(TWILIO.encode(), message.encode(), hashlib.sha1).digest()).decode()
    return body.encode(), signature


async def load(url: str, kind: str, requests: int, concurrency: int) -> dict[str, float]:
    """The client side: ``requests`` posts, ``concurrency`` at a time; returns rate and statuses."""
    import aiohttp

    now_ms = int(time.time() * 1000)
    bodies: list[tuple[bytes, dict[str, str]]] = []
    for n in range(requests):
        if kind == "twilio":
            body, signature = twilio(n, now_ms // 1000, url)
            headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
        else:
            body = genesys(n, now_ms)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        bodies.append((body, headers))
    statuses: dict[str, int] = {}
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while not queue.empty():
                body, headers = queue.get_nowait()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests_per_s": requests / elapsed, "elapsed_s": elapsed, "statuses": statuses}


BASELINE = """
import sys
from aiohttp import web
async def handle(request):
    await request.read()
    return web.json_response({"events": 0})
app = web.Application(client_max_size=1048576)
app.router.add_post("/ingest/{format}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # answering at all is enough
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def run_client(url: str, kind: str, requests: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ingest_throughput",
            "--client",
            url,
            kind,
            str(requests),
            str(concurrency),
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=900,
    )
    if out.returncode:
        raise RuntimeError(f"load client failed:\n{out.stderr.decode()[-2000:]}")
    return orjson.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the median is kept)")
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        url, kind, requests, concurrency = args.client
        print(orjson.dumps(asyncio.run(load(url, kind, int(requests), int(concurrency)))).decode())
        return 0

    results: dict[str, list[dict[str, float]]] = {"baseline": [], "genesys": [], "twilio": []}
    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker(log_dir=Path(tmp) / "tansu").start()
        base_port, port = free_port(), free_port()
        baseline = subprocess.Popen([sys.executable, "-c", BASELINE, str(base_port)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
        env.update(
            CXSTREAM_BROKER=broker.url,
            CXSTREAM_INGEST_PORT=str(port),
            CXSTREAM_INGEST_TOKEN=TOKEN,
            CXSTREAM_TWILIO_AUTH_TOKEN=TWILIO,
            CXSTREAM_INGEST_PUBLIC_URL=f"http://127.0.0.1:{port}",
            CXSTREAM_TOPIC_INTERACTIONS="bench-ingest.interactions",
            CXSTREAM_LOG_LEVEL="warning",
        )
        ingest = subprocess.Popen([sys.executable, "-m", "stream", "ingest"], env=env)
        try:
            wait_http(f"http://127.0.0.1:{base_port}/ingest/x")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # 200 once the broker connection is up
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except OSError:
                    time.sleep(0.3)
            # warm-up (connections, the broker's first batches)
            run_client(f"http://127.0.0.1:{port}/ingest/genesys-cloud", "genesys", 500, args.concurrency)
            for _ in range(args.repeat):
                results["baseline"].append(
                    run_client(
                        f"http://127.0.0.1:{base_port}/ingest/genesys-cloud",
                        "genesys",
                        args.requests,
                        args.concurrency,
                    )
                )
                results["genesys"].append(
                    run_client(
                        f"http://127.0.0.1:{port}/ingest/genesys-cloud",
                        "genesys",
                        args.requests,
                        args.concurrency,
                    )
                )
                results["twilio"].append(
                    run_client(
                        f"http://127.0.0.1:{port}/ingest/twilio-taskrouter",
                        "twilio",
                        args.requests,
                        args.concurrency,
                    )
                )
        finally:
            ingest.terminate()
            baseline.terminate()
            ingest.wait(20)
            baseline.wait(20)
            broker.stop()

    def median(kind: str) -> float:
        rates = sorted(r["requests_per_s"] for r in results[kind])
        return rates[len(rates) // 2]

    for kind in ("genesys", "twilio"):
        for run in results[kind]:
            assert set(run["statuses"]) == {"200"}, f"{kind}: {run['statuses']}"
    summary = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "baseline_rps": median("baseline"),
        "genesys_rps": median("genesys"),
        "genesys_events_per_s": 2 * median("genesys"),
        "twilio_rps": median("twilio"),
        "twilio_events_per_s": 2 * median("twilio"),
        "runs": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest.json").write_text(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    print(f"bare aiohttp (reads, answers 200):   {summary['baseline_rps']:8.0f} requests/s")
    for kind in ("genesys", "twilio"):
        rps = summary[f"{kind}_rps"]
        print(
            f"cxstream ingest, {kind:8s} (2 events): {rps:8.0f} requests/s  "
            f"({rps / summary['baseline_rps']:.2f} x bare, {2 * rps:.0f} events/s acknowledged)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
