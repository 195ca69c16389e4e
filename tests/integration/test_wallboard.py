"""The wallboard server against a real Redis: numbers, token, live SSE, Redis outages, the CLI."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from stream.domain import kpi
from stream.embedded import RedisServer
from stream.wallboard.aggregate import ALL_QUEUES
from stream.wallboard.server import WallboardConfig
from tests.e2e.seed import (
    QUEUES,
    WORKERS,
    alert_payload,
    demo_views,
    expected_totals,
    fire_alert,
    resolve_alert,
    write_views,
)
from tests.e2e.support import WallboardProcess, serve

pytestmark = pytest.mark.integration

_prefixes = itertools.count()
TOKEN = "wb-t0ken-s3cret-Zq9"


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, on the shared Redis."""
    return f"wbtest{os.getpid()}x{next(_prefixes)}"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield conn
    conn.close()


def seed(client: redis.Redis, prefix: str, step: int = 0) -> dict[int, str]:
    views = demo_views(int(time.time() * 1000), step)
    write_views(client, prefix, views)
    return views


def spike(since_ms: int | None = None) -> dict[str, Any]:
    return alert_payload(
        "ces_high_effort_spike",
        "tech_support",
        metric="cx_ces_high_effort_ratio",
        window="15m",
        value=0.33,
        threshold=0.25,
        severity="page",
        since=since_ms,
    )


def config(url: str, prefix: str, **extra: Any) -> WallboardConfig:
    return WallboardConfig(redis_url=url, prefix=prefix, min_samples=20, **extra)


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with session.get(url, **kwargs) as response:
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def test_state_sums_partition_views(
    redis_server: RedisServer, client: redis.Redis, prefix: str, http: aiohttp.ClientSession
) -> None:
    snapshots = seed(client, prefix)
    alert = spike()
    fire_alert(client, prefix, alert)
    async with serve(config(redis_server.url, prefix)) as running:
        state = await get_json(http, running.url + "/api/state")
        assert state["redis"]["ok"] is True
        assert state["windows"] == ["15m", "1h", "24h"]
        assert state["default_window"] == "15m"
        assert sorted(w["worker"] for w in state["workers"]) == WORKERS
        assert state["partitions"] == {"total": 3, "missing": [], "stale": []}
        for window in ("15m", "1h", "24h"):
            expected = expected_totals(snapshots, window)
            rows = {row["queue"]: row for row in state["data"][window]["queues"]}
            assert list(rows) == [ALL_QUEUES, *sorted(QUEUES)]
            for queue, counts in expected.items():
                row = rows[queue]
                assert [row["counts"][name] for name in kpi.COUNTERS] == counts
                want = kpi.derived_kpis(counts)
                for key, t in row["tiles"].items():
                    assert t["value"] == pytest.approx(want[key], abs=1e-6), (window, queue, key)
                csat = row["tiles"]["csat_ratio"]
                assert csat["n"] == counts[kpi.CSAT_RESPONSES]
                assert csat["low_confidence"] is (counts[kpi.CSAT_RESPONSES] < 20)
                assert csat["interval"][0] <= csat["value"] <= csat["interval"][1]
        rows = {row["queue"]: row for row in state["data"]["15m"]["queues"]}
        assert rows["retention"]["tiles"]["csat_ratio"]["low_confidence"] is True  # a small queue
        assert rows["billing"]["tiles"]["csat_ratio"]["low_confidence"] is False
        assert rows["tech_support"]["tiles"]["ces_high_effort_ratio"]["alert"] == alert["id"]
        (active,) = state["alerts"]
        assert active["id"] == alert["id"]
        assert active["severity"] == "page"
        assert active["tile"] == {"queue": "tech_support", "kpi": "ces_high_effort_ratio"}

        one = await get_json(http, running.url + "/api/state", params={"window": "1h"})
        assert one["window"] == "1h"
        assert list(one["data"]) == ["1h"]

        health = await get_json(http, running.url + "/healthz")
        assert health["status"] == "ok"
        assert health["redis"] == "up"


async def test_page_and_assets_are_self_contained(
    redis_server: RedisServer, prefix: str, http: aiohttp.ClientSession
) -> None:
    async with serve(config(redis_server.url, prefix)) as running:
        async with http.get(running.url + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["Referrer-Policy"] == "no-referrer"
            page = await response.text()
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sorted(assets) == ["static/app.js", "static/favicon.svg", "static/style.css"]
        for asset in assets:
            async with http.get(f"{running.url}/{asset}") as response:
                assert response.status == 200, asset
                body = await response.text()
            # No CDN, no web fonts, no remote anything (the SVG namespace is not a fetch).
            remote = re.findall(r"https?://(?!www\.w3\.org/2000/svg)[^\s\"')]+", body)
            assert remote == [], (asset, remote)
            assert "@import" not in body
        async with http.get(running.url + "/static/../server.py") as response:
            assert response.status == 404


async def test_token_is_required_when_configured(
    redis_server: RedisServer, client: redis.Redis, prefix: str, http: aiohttp.ClientSession
) -> None:
    seed(client, prefix)
    async with serve(config(redis_server.url, prefix, token=TOKEN)) as running:
        base = running.url
        for path in ("/", "/api/state", "/events"):
            async with http.get(base + path) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(base + path, params={"token": TOKEN[:-1]}) as response:
                assert response.status == 401, path
            async with http.get(base + path, headers={"Authorization": "Bearer nope"}) as response:
                assert response.status == 401, path
        async with http.get(base + "/", params={"token": TOKEN}) as response:
            assert response.status == 200
        assert (await get_json(http, base + "/api/state", params={"token": TOKEN}))["redis"]["ok"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert (await get_json(http, base + "/api/state", headers=headers))["redis"]["ok"]
        # Liveness and the (data-free) page assets stay open for probes and the browser.
        assert (await get_json(http, base + "/healthz"))["status"] == "ok"
        async with http.get(base + "/static/app.js") as response:
            assert response.status == 200


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse an SSE stream into {"event", "id", "data"} dicts."""
    event: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(": ")
            event[name] = value


async def test_sse_pushes_at_once_when_an_alert_is_published(
    redis_server: RedisServer, client: redis.Redis, prefix: str, http: aiohttp.ClientSession
) -> None:
    seed(client, prefix)
    # A 60 s poll interval: only the pub/sub message can explain a prompt update.
    async with serve(config(redis_server.url, prefix, interval_s=60.0)) as running:
        async with http.get(running.url + "/events", params={"window": "15m"}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = read_events(response)
            first = await asyncio.wait_for(anext(events), 5)
            assert first["event"] == "state"
            state = orjson.loads(first["data"])
            assert state["window"] == "15m"
            assert list(state["data"]) == ["15m"]
            assert state["alerts"] == []
            await asyncio.sleep(0.5)  # let the subscriber settle

            alert = spike()
            published = time.monotonic()
            fire_alert(client, prefix, alert)
            update = orjson.loads((await asyncio.wait_for(anext(events), 5))["data"])
            latency = time.monotonic() - published
            assert [a["id"] for a in update["alerts"]] == [alert["id"]]
            assert latency < 3.0, latency
            rows = {row["queue"]: row for row in update["data"]["15m"]["queues"]}
            assert rows["tech_support"]["tiles"]["ces_high_effort_ratio"]["alert"] == alert["id"]
            assert rows["tech_support"]["alerts"] == 1

            resolve_alert(client, prefix, alert)
            cleared = orjson.loads((await asyncio.wait_for(anext(events), 5))["data"])
            assert cleared["alerts"] == []
        assert running.board.alert_messages == 2


async def test_redis_outage_shows_stale_data_and_recovers(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    own = RedisServer(log_dir=tmp_path / "redis").start()
    conn = redis.Redis.from_url(own.url, decode_responses=True)
    try:
        seed(conn, "cx")
        cfg = WallboardConfig(redis_url=own.url, prefix="cx", interval_s=0.2, redis_timeout_s=0.5)
        async with serve(cfg) as running:
            before = await get_json(http, running.url + "/api/state")
            assert before["redis"]["ok"]
            good_at = before["updated_at"]
            csat_before = before["data"]["15m"]["queues"][0]["tiles"]["csat_ratio"]["value"]

            own.stop()
            deadline = time.monotonic() + 10
            while True:
                state = await get_json(http, running.url + "/api/state")
                if not state["redis"]["ok"]:
                    break
                assert time.monotonic() < deadline, "outage never shown"
                await asyncio.sleep(0.1)
            assert state["redis"]["stale_since"] >= good_at
            assert state["redis"]["error"]
            # The last good numbers stay on the board, marked stale.
            assert state["data"]["15m"]["queues"][0]["tiles"]["csat_ratio"]["value"] == csat_before
            assert (await get_json(http, running.url + "/healthz"))["redis"] == "down"

            own.start()  # same port, empty data: the workers would write again within seconds
            seed(conn, "cx", step=3)
            deadline = time.monotonic() + 20
            while not (await get_json(http, running.url + "/api/state"))["redis"]["ok"]:
                assert time.monotonic() < deadline, "never recovered"
                await asyncio.sleep(0.2)
    finally:
        conn.close()
        own.stop()


def test_cli_serves_and_never_logs_the_token(redis_server: RedisServer, prefix: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    seed(client, prefix)
    fire_alert(client, prefix, spike())
    client.close()
    process = WallboardProcess(
        {
            "CXSTREAM_REDIS_URL": redis_server.url,
            "CXSTREAM_REDIS_PREFIX": prefix,
            "CXSTREAM_WALLBOARD_TOKEN": TOKEN,
        },
        tmp_path / "wallboard.log",
        args=("--log-level", "debug", "--interval", "0.5"),
    ).start()
    try:
        with urllib.request.urlopen(f"{process.url}/api/state?token={TOKEN}", timeout=5) as response:
            state = orjson.loads(response.read())
        assert [a["rule"] for a in state["alerts"]] == ["ces_high_effort_spike"]
        request = urllib.request.Request(f"{process.url}/?x=1", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert b"CX wallboard" in response.read()
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{process.url}/api/state?token=wrong", timeout=5)
        assert denied.value.code == 401
    finally:
        status = process.stop()
    log = process.log()
    assert status == 0, log
    assert "GET /api/state 200" in log  # the access log works...
    assert TOKEN not in log  # ...but never shows the token
    assert "token=" not in log
    assert "wallboard on http://127.0.0.1:" in log
