"""Fuzz the ingest endpoint on real parts: hostile requests among valid ones.

A real ``cxstream ingest`` process on the real broker gets oversized bodies (declared and
chunked), wrong content types, missing, wrong and replayed-onto-other-bodies signatures,
invalid JSON, deeply nested JSON, unknown formats, slow bodies that stall past the read
timeout, and, interleaved, valid signed payloads. Then:

* nothing unsigned or wrongly signed is answered 2xx (every one is 401);
* every event of every 200 is on the input topic, and nothing else is;
* the server is still up, healthy, and its resident memory grew by a bounded amount.

CI runs 1,000 requests; ``-m slow`` runs 10,000 (``make test-slow``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import Topics, WorkerProcess, wait_until, worker_env
from tests.integration.test_fuzz import read_topic
from tests.integration.test_ingest import start_ingest

pytestmark = pytest.mark.integration

BEARER = "fuzz-bearer-token"
INTERCOM_SECRET = "fuzz-intercom-secret"
MAX_BODY = 32_768


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def genesys_valid(n: int, now_ms: int) -> bytes:
    conv = f"fuzz-{n:06d}"
    return orjson.dumps(
        {
            "topicName": f"v2.detail.events.conversation.{conv}.acd.start",
            "eventBody": {
                "conversationId": conv,
                "sessionId": "s1",
                "queueId": "fuzz-queue",
                "mediaType": "CHAT",
                "ani": f"customer-{n % 97}",
                "eventTime": now_ms - 1000,
            },
        }
    )


def intercom_signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(INTERCOM_SECRET.encode(), body, hashlib.sha1).hexdigest()
    return {"X-Hub-Signature": f"sha1={digest}", "Content-Type": "application/json"}


def hostile(rng: random.Random, n: int) -> tuple[str, str, bytes, dict[str, str], set[int]]:
    """(kind, path, body, headers, allowed statuses) for one hostile request."""
    bearer = {"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"}
    valid = genesys_valid(10_000_000 + n, int(time.time() * 1000))
    kind = rng.choice(
        [
            "oversized",
            "wrong_type",
            "no_auth",
            "wrong_token",
            "bad_signature",
            "signature_of_other_body",
            "invalid_json",
            "deep",
            "unknown_format",
            "not_vendor",
            "form_to_json_format",
        ]
    )
    if kind == "oversized":
        return kind, "/ingest/genesys-cloud", b"[" + b"1," * MAX_BODY + b"1]", bearer, {413}
    if kind == "wrong_type":
        return kind, "/ingest/genesys-cloud", valid, {**bearer, "Content-Type": "text/xml"}, {415}
    if kind == "no_auth":
        return kind, "/ingest/genesys-cloud", valid, {"Content-Type": "application/json"}, {401}
    if kind == "wrong_token":
        return kind, "/ingest/genesys-cloud", valid, {**bearer, "Authorization": "Bearer nope"}, {401}
    if kind == "bad_signature":
        return (
            kind,
            "/ingest/intercom",
            valid,
            {**intercom_signed(valid), "X-Hub-Signature": "sha1=00"},
            {401},
        )
    if kind == "signature_of_other_body":
        return kind, "/ingest/intercom", valid + b" ", intercom_signed(valid), {401}
    if kind == "invalid_json":
        return kind, "/ingest/genesys-cloud", b'{"topicName": "v2.', bearer, {400}
    if kind == "deep":
        depth = rng.choice([100, 2000, 10_000])
        return kind, "/ingest/genesys-cloud", b"[" * depth + b"]" * depth, bearer, {400, 413}
    if kind == "unknown_format":
        return kind, "/ingest/../../etc/passwd", valid, bearer, {404}
    if kind == "not_vendor":
        return kind, "/ingest/genesys-cloud", b'{"hello": "world"}', bearer, {400}
    return kind, "/ingest/genesys-cloud", b"a=1&b=2", {**bearer, "Content-Type": FORM}, {415}


FORM = "application/x-www-form-urlencoded"


async def slow_body(port: int, stall_s: float) -> bytes:
    """Headers promising 1,000 bytes, 10 of them, then silence: the server must give up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /ingest/genesys-cloud HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + BEARER.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"topicNa'
    )
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(200), stall_s)
    finally:
        writer.close()


async def fuzz(port: int, total: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    results: Counter[tuple[str, int]] = Counter()
    unexpected: list[str] = []
    events = 0
    valid_ids: set[str] = set()
    slots = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

        async def one(i: int) -> None:
            nonlocal events
            async with slots:
                if rng.random() < 0.2:
                    body = genesys_valid(i, int(time.time() * 1000))
                    headers = {"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"}
                    response = await client.post("/ingest/genesys-cloud", content=body, headers=headers)
                    results["valid", response.status_code] += 1
                    if response.status_code != 200:
                        unexpected.append(f"valid -> {response.status_code} {response.text}")
                        return
                    events += response.json()["events"]
                    valid_ids.add(f"fuzz-{i:06d}")
                    return
                kind, path, body, headers, allowed = hostile(rng, i)
                content: Any = body
                if kind == "oversized" and i % 2:  # no Content-Length: chunked, cut off while read

                    async def chunks(data: bytes = body) -> Any:
                        for start in range(0, len(data), 8192):
                            yield data[start : start + 8192]

                    content = chunks()
                response = await client.post(path, content=content, headers=headers)
                results[kind, response.status_code] += 1
                if response.status_code not in allowed:
                    unexpected.append(f"{kind} -> {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(one(i) for i in range(total)))
        slow = await asyncio.gather(*(slow_body(port, 10.0) for _ in range(8)))
    return {"results": results, "unexpected": unexpected, "events": events, "ids": valid_ids, "slow": slow}


def run_fuzz(broker: Any, topics: Topics, tmp_path: Path, total: int) -> None:
    env = worker_env(broker.url, topics, tmp_path / "data", CXSTREAM_INGEST_TOKEN=BEARER)
    env.update(
        CXSTREAM_INTERCOM_CLIENT_SECRET=INTERCOM_SECRET,
        CXSTREAM_INGEST_MAX_BODY=str(MAX_BODY),
        CXSTREAM_INGEST_READ_TIMEOUT="1s",
        CXSTREAM_LOG_LEVEL="warning",
    )
    ingest: WorkerProcess = start_ingest(env, tmp_path)
    try:
        wait_until(lambda: httpx.get(ingest.url + "/healthz").status_code == 200, 30)
        assert ingest.proc is not None
        before = rss_kib(ingest.proc.pid)
        outcome = asyncio.run(fuzz(ingest.port, total, seed=total))
        assert not outcome["unexpected"], outcome["unexpected"][:20]
        assert all(b"408" in answer for answer in outcome["slow"]), outcome["slow"]
        refused = sum(
            n for (kind, status), n in outcome["results"].items() if kind != "valid" and status < 300
        )
        assert refused == 0
        assert ingest.alive() and httpx.get(ingest.url + "/healthz").status_code == 200
        grown_mib = (rss_kib(ingest.proc.pid) - before) / 1024
        assert grown_mib < 64, f"resident memory grew {grown_mib:.0f} MiB"

        records = asyncio.run(read_topic(broker.bootstrap, topics.interactions, outcome["events"]))
        assert len(records) == outcome["events"]  # every acknowledged event, nothing else
        conversations = {orjson.loads(r.value)["contact_id"] for r in records}
        assert conversations == outcome["ids"]
    finally:
        ingest.stop()


def test_fuzz_ingest(broker: Any, topics: Topics, tmp_path: Path) -> None:
    run_fuzz(broker, topics, tmp_path, 1_000)


@pytest.mark.slow
def test_fuzz_ingest_10k(broker: Any, topics: Topics, tmp_path: Path) -> None:
    run_fuzz(broker, topics, tmp_path, 10_000)


def test_signature_helpers_agree_with_the_test_encoding() -> None:
    from stream.platforms import signatures

    body = b'{"a": 1}'
    assert intercom_signed(body)["X-Hub-Signature"] == signatures.intercom_signature(INTERCOM_SECRET, body)
    zendesk = base64.b64encode(
        hmac.new(b"s", b"2026-01-01T00:00:00Z" + body, hashlib.sha256).digest()
    ).decode()
    assert signatures.zendesk_valid("s", "2026-01-01T00:00:00Z", body, zendesk)
    assert not signatures.zendesk_valid("s", "2026-01-01T00:00:01Z", body, zendesk)
