"""Platforms in on real parts: ``cxstream ingest`` -> broker -> ``cxstream worker`` -> /metrics.

The vendor fixtures of two platforms (Twilio TaskRouter, signed: form callbacks and an Event
Streams batch; Genesys Cloud, bearer token: EventBridge envelopes and bare notifications)
are posted to a real ingest server process, the way each vendor posts them, with one
payload re-delivered. A worker on the event clock (the fixtures are recorded history)
then shows the KPIs these six contacts must give, worked out by hand below. Bad
signatures produce nothing; a bad payload is answered 400 and dead-lettered once; the
server answers 503 while it has no broker and recovers when one appears.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from stream.embedded import free_port
from tests.harness import Topics, WorkerProcess, by_labels, wait_until, worker_env
from tests.integration.test_fuzz import read_topic

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
BEARER = "shared-ingest-token-for-tests"
PUBLIC_URL = "https://cx.example.test"


def twilio_headers(url: str, body: bytes, form: bool) -> dict[str, str]:
    """What Twilio sends: HMAC-SHA1 of the URL (+ sorted form fields), base64 (computed here
    from Twilio's description, independently of stream.platforms.signatures)."""
    message = url
    if form:
        message += "".join(k + v for k, v in sorted(parse_qsl(body.decode(), keep_blank_values=True)))
    digest = hmac.new(TWILIO_TOKEN.encode(), message.encode(), hashlib.sha1).digest()
    kind = "application/x-www-form-urlencoded" if form else "application/json"
    return {"X-Twilio-Signature": base64.b64encode(digest).decode(), "Content-Type": kind}


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def start_ingest(env: dict[str, str], tmp_path: Path, name: str = "ingest") -> WorkerProcess:
    process = WorkerProcess(env, tmp_path / f"{name}.log", command="ingest").start()
    wait_until(lambda: process.alive() and _health(process) is not None, 30)
    return process


def _health(process: WorkerProcess) -> int | None:
    try:
        return httpx.get(process.url + "/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return None


class Poster:
    """Posts vendor payloads the way each vendor does."""

    def __init__(self, ingest: WorkerProcess) -> None:
        self.base = ingest.url
        self.client = httpx.Client(timeout=30)
        self.statuses: list[int] = []

    def twilio(self, body: bytes) -> httpx.Response:
        form = not body.startswith((b"{", b"["))
        path = "/ingest/twilio-taskrouter"
        if not form:  # Event Streams webhook sinks sign the URL, which carries the body's hash
            path += "?bodySHA256=" + hashlib.sha256(body).hexdigest()
        headers = twilio_headers(PUBLIC_URL + path, body, form)
        return self._post(path, body, headers)

    def genesys(self, body: bytes) -> httpx.Response:
        headers = {"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"}
        return self._post("/ingest/genesys-cloud", body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        response = self.client.post(self.base + path, content=body, headers=headers)
        self.statuses.append(response.status_code)
        return response


def test_two_platforms_through_the_ingest_server_give_the_expected_kpis(
    broker: Any, redis_server: Any, topics: Topics, tmp_path: Path
) -> None:
    env = worker_env(
        broker.url,
        topics,
        tmp_path / "data",
        CXSTREAM_REDIS_URL=redis_server.url,
        CXSTREAM_CLOCK="event",
        CXSTREAM_DEDUP_HORIZON="1d",  # the fixtures span 1 h 40 min of event time
        CXSTREAM_INGEST_TOKEN=BEARER,
        CXSTREAM_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        CXSTREAM_INGEST_PUBLIC_URL=PUBLIC_URL,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    ingest = start_ingest(env, tmp_path)
    try:
        wait_until(lambda: _health(ingest) == 200, 30)
        post = Poster(ingest)
        produced = 0
        for name in ("answered.form", "abandoned.form", "transferred.jsonl"):
            for body in lines(FIXTURES / "twilio-taskrouter" / name):
                response = post.twilio(body)
                assert response.status_code == 200, response.text
                produced += response.json()["events"]
        for name in ("answered.jsonl", "abandoned.jsonl", "transferred.jsonl"):
            for body in lines(FIXTURES / "genesys-cloud" / name):
                response = post.genesys(body)
                assert response.status_code == 200, response.text
                produced += response.json()["events"]
        # a vendor re-delivers: accepted again, same event ids, counted once by the worker
        again = post.genesys(lines(FIXTURES / "genesys-cloud/answered.jsonl")[1])
        assert again.status_code == 200 and again.json()["events"] == 2
        produced += 2

        # refused: nothing of these reaches the broker
        body = lines(FIXTURES / "twilio-taskrouter/answered.form")[0]
        bad = twilio_headers(PUBLIC_URL + "/ingest/twilio-taskrouter", body + b"&x=1", True)
        assert post._post("/ingest/twilio-taskrouter", body, bad).status_code == 401
        headers = {"Authorization": "Bearer wrong", "Content-Type": "application/json"}
        assert post._post(
            "/ingest/genesys-cloud", lines(FIXTURES / "genesys-cloud/answered.jsonl")[0], headers
        )
        assert post.statuses[-1] == 401
        assert post._post("/ingest/zendesk", b"{}", {"Content-Type": "application/json"}).status_code == 401
        # a bad payload, authentic: 400 with the reason, one dead-letter copy
        rejected = post.genesys(b'{"topicName": "v2.detail.events.conversation.x.acd.start"}')
        assert rejected.status_code == 400 and rejected.json()["error"] == "unrecognized_payload"

        worker.wait_ready(0)
        expected = {  # 24h window, by (queue, channel): worked out from the fixtures by hand
            "cx_contacts": {
                ("Billing", "voice"): 2,  # T1, T3 (its second task dedups into the same contact)
                ("Support", "chat"): 1,  # T2 (Flex webchat)
                ("9f8e7d6c-0000-4000-8000-00000000q001", "voice"): 2,  # H, J
                ("9f8e7d6c-0000-4000-8000-00000000q002", "messaging"): 1,  # I (WhatsApp)
            },
            # waits count under the queue they waited in
            "cx_answered_contacts": {
                ("Billing", "voice"): 2,
                ("Support", "voice"): 1,
                ("9f8e7d6c-0000-4000-8000-00000000q001", "voice"): 2,
                ("9f8e7d6c-0000-4000-8000-00000000q002", "voice"): 1,
            },
            "cx_answered_within_threshold": {  # 17 s and 8 s; 17 s and 10 s; not 28.5 s or 29.5 s
                ("Billing", "voice"): 2,
                ("Support", "voice"): 0,
                ("9f8e7d6c-0000-4000-8000-00000000q001", "voice"): 2,
                ("9f8e7d6c-0000-4000-8000-00000000q002", "voice"): 0,
            },
            "cx_abandoned_contacts": {  # after 89 s and 92 s: not short
                ("Support", "chat"): 1,
                ("9f8e7d6c-0000-4000-8000-00000000q002", "messaging"): 1,
            },
        }

        def matches() -> bool:
            samples = worker.samples()
            for name, want in expected.items():
                got = {k: v for k, v in by_labels(samples, name, window="24h").items() if v or k in want}
                if got != {k: float(v) for k, v in want.items()}:
                    return False
            return True

        try:
            wait_until(matches, 90)
        except TimeoutError:
            samples = worker.samples()
            got = {name: by_labels(samples, name, window="24h") for name in expected}
            raise AssertionError(f"KPIs differ: {got}\n{worker.log_tail()}") from None
        samples = worker.samples()
        assert sum(by_labels(samples, "cx_transferred_contacts", window="24h").values()) == 2  # T3, J
        assert sum(by_labels(samples, "cx_contacts_ended", window="24h").values()) == 6
        outcomes = {(s[0]["topic"], s[0]["outcome"]): s[1] for s in samples["cx_events_total"]}
        accepted = sum(
            v for (_, outcome), v in outcomes.items() if outcome in ("accepted", "duplicate", "late")
        )
        assert accepted == produced  # everything answered 200 arrived, nothing refused did
        assert outcomes.get((topics.interactions, "duplicate"), 0) >= 2

        dead = asyncio.run(read_topic(broker.bootstrap, topics.deadletter, 1))
        assert len(dead) == 1
        headers = dict(dead[0].headers)
        assert headers["cx-reason"] == b"unrecognized_payload"
        assert headers["cx-source-topic"] == b"ingest/genesys-cloud"

        metrics = httpx.get(ingest.url + "/metrics").text
        assert 'cx_ingest_requests_total{format="twilio-taskrouter",status="401"} 1.0' in metrics
        assert "cx_ingest_broker_up 1.0" in metrics
    finally:
        ingest.stop()
        worker.stop()


def test_ingest_answers_503_without_a_broker_and_recovers(
    broker: Any, topics: Topics, tmp_path: Path
) -> None:
    """Started before its broker: 503 (nothing taken), then 200 once the broker is there."""
    from stream.embedded import TansuBroker

    port = free_port()
    env = worker_env(f"kafka://127.0.0.1:{port}", topics, tmp_path / "data", CXSTREAM_INGEST_TOKEN=BEARER)
    env["CXSTREAM_INGEST_SEND_TIMEOUT"] = "2s"
    ingest = start_ingest(env, tmp_path)
    late_broker = None
    try:
        assert _health(ingest) == 503
        body = lines(FIXTURES / "genesys-cloud/answered.jsonl")[1]
        response = Poster(ingest).genesys(body)
        assert response.status_code == 503 and response.headers["Retry-After"]
        late_broker = TansuBroker(log_dir=tmp_path / "tansu", port=port).start()
        wait_until(lambda: _health(ingest) == 200, 60)
        response = wait_until(lambda: (r := Poster(ingest).genesys(body)).status_code == 200 and r, 60)
        assert response.json()["events"] == 2
        assert ingest.alive()
    finally:
        ingest.stop()
        if late_broker is not None:
            late_broker.stop()


def test_bad_settings_fail_fast(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "CXSTREAM_INGEST_MAPPINGS": str(tmp_path / "missing.yml"),
        "CXSTREAM_INGEST_TOKEN": "t0ken",
    }
    out = subprocess.run([sys.executable, "-m", "stream", "ingest"], env=env, capture_output=True, timeout=60)
    assert out.returncode == 2 and b"missing.yml" in out.stderr and b"Traceback" not in out.stderr
