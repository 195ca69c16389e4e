"""The wallboard in headless Chromium, fed by real Redis data, updating live.

``cxstream wallboard`` runs as a subprocess against a real Redis seeded the way the
workers write it (partition views of two workers per docs/redis.md, a firing alert). Chromium
(Debian's package, driven over the DevTools protocol) loads the page with an access
token and the test checks that

* every big tile and every queue cell shows the number computed from the summed counts,
  the low-confidence marking and the firing alert (banner + the alerting tile);
* new snapshot values and a newly published alert appear without a reload;
* the window selector switches to the 1h numbers;
* a Redis outage turns the board "stale" and it recovers when Redis is back;
* the page throws no JavaScript error.

Screenshots go to ``test-artifacts/`` (and to ``docs/images/`` with
``CXSTREAM_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from stream.domain import kpi
from stream.embedded import RedisServer
from stream.wallboard.aggregate import ALL_QUEUES, TILES
from tests.e2e.cdp import Browser
from tests.e2e.conftest import REPO
from tests.e2e.seed import (
    alert_payload,
    demo_views,
    expected_operations,
    expected_totals,
    fire_alert,
    js_round,
    resolve_alert,
    write_views,
)
from tests.e2e.support import WallboardProcess

pytestmark = pytest.mark.integration

TOKEN = "e2e-wallboard-token-42"
PREFIX = "cx"
DOCS_IMAGE = REPO / "docs" / "images" / "wallboard.png"

#: Everything the test reads from the page, in one round trip.
READ_BOARD = """(() => {
  const read = (node) => ({
    text: node.querySelector('.value').textContent,
    status: node.dataset.status,
    low: node.dataset.low === '1',
    alert: node.dataset.alert || null,
    lines: node.querySelectorAll('.spark polyline').length,
    classes: node.className,
  });
  const out = {hero: {}, heroQueue: null, cells: {}, alerts: [], window: null};
  document.querySelectorAll('#hero .tile').forEach((t) => {
    out.hero[t.dataset.kpi] = read(t);
    out.heroQueue = t.dataset.queue;
  });
  document.querySelectorAll('#queue-rows td[data-kpi]').forEach((td) => {
    out.cells[td.dataset.queue + '|' + td.dataset.kpi] = read(td);
  });
  document.querySelectorAll('#alerts .alert-row').forEach((a) => {
    out.alerts.push({id: a.dataset.alertId, text: a.textContent, classes: a.className});
  });
  out.ops = {};
  document.querySelectorAll('#ops .ops-tile').forEach((t) => {
    out.ops[t.dataset.ops] = {text: t.querySelector('.value').textContent, status: t.dataset.status,
                              queue: t.dataset.queue};
  });
  out.opsCells = {};
  document.querySelectorAll('#queue-rows td[data-ops]').forEach((td) => {
    out.opsCells[td.dataset.queue + '|' + td.dataset.ops] = {text: td.textContent, status: td.dataset.status,
                                                             alert: td.dataset.alert || null};
  });
  const heads = Array.from(document.querySelectorAll('#queue-head th'));
  out.firstHeads = heads.slice(0, 6).map((th) => th.textContent);
  const ops = document.getElementById('ops'), hero = document.getElementById('hero');
  out.opsAboveHero = !!(ops && hero
    && ops.getBoundingClientRect().bottom <= hero.getBoundingClientRect().top + 1);
  const active = document.querySelector('#windows button.active');
  out.window = active ? active.textContent : null;
  const stale = document.getElementById('stale');
  out.stale = stale.hidden ? null : stale.textContent;
  out.scope = document.getElementById('scope-queue').textContent;
  out.version = document.body.dataset.version || '';
  const queues = document.querySelector('.queues');
  out.overflow = queues.scrollHeight > queues.clientHeight + 1;
  return out;
})()"""


def now_ms() -> int:
    return int(time.time() * 1000)


def expected_texts(snapshots: Mapping[int, str], window: str) -> dict[str, str]:
    """What the page must print per ``queue|kpi``: the KPI of the summed counts, rounded like JS."""
    texts = {}
    for queue, counts in expected_totals(snapshots, window).items():
        values = kpi.derived_kpis(counts)
        for spec in TILES:
            value = values[spec.key]
            if value is None:
                text = "\u2014"
            elif spec.unit == "percent":
                text = f"{js_round(round(value, 6) * 100)}%"
            else:
                r = js_round(round(value, 6))
                text = ("+" if r > 0 else "\u2212" if r < 0 else "") + str(abs(r))
            texts[f"{queue}|{spec.key}"] = text
    return texts


def low_confidence(snapshots: Mapping[int, str], window: str, min_samples: int = 20) -> set[str]:
    return {
        f"{queue}|{spec.key}"
        for queue, counts in expected_totals(snapshots, window).items()
        for spec in TILES
        if counts[spec.denominator] < min_samples
    }


def ops_mismatches(
    board: Mapping[str, Any], snapshots: Mapping[int, str], window: str, seeded_at: float
) -> list[str]:
    """Where the queue figures on the page differ from the independent computation (the
    longest wait grows while the test runs: by at most the time since the views were
    written, ``seeded_at`` on the monotonic clock, plus a second of rounding)."""
    growth = max(5.0, time.monotonic() - seeded_at + 1.0)
    problems = []
    for queue, want in expected_operations(snapshots, window).items():
        cells = {key: board["opsCells"].get(f"{queue}|{key}", {}).get("text") for key in OPS_KEYS}
        if cells["waiting"] != str(want["waiting"]):
            problems.append(f"{queue} waiting {cells['waiting']} != {want['waiting']}")
        if cells["service_level"] != pct(want["service_level"]):
            problems.append(f"{queue} service level {cells['service_level']} != {pct(want['service_level'])}")
        if cells["abandon"] != pct(want["abandon"]):
            problems.append(f"{queue} abandon {cells['abandon']} != {pct(want['abandon'])}")
        if cells["agents"] != f"{want['free']} / {want['busy']}":
            problems.append(f"{queue} agents {cells['agents']} != {want['free']} / {want['busy']}")
        shown = wait_seconds(cells["longest_wait"])
        if want["longest"] is None or shown is None or not 0 <= shown - want["longest"] <= growth:
            problems.append(f"{queue} longest wait {cells['longest_wait']} vs {want['longest']} s")
    return problems


OPS_KEYS = ("waiting", "longest_wait", "service_level", "abandon", "agents")


def pct(value: float | None) -> str:
    return "\u2014" if value is None else f"{js_round(round(value, 6) * 100)}%"


def wait_seconds(text: str | None) -> float | None:
    """The page's wait text (``45 s``, ``2:31``) in seconds."""
    if not text or text == "\u2014":
        return None
    if text.endswith(" s"):
        return float(text[:-2])
    minutes, seconds = text.split(":")
    return int(minutes) * 60 + int(seconds)


def shown_texts(board: Mapping[str, Any]) -> dict[str, str]:
    return {key: cell["text"] for key, cell in board["cells"].items()}


def seed(client: redis.Redis, step: int) -> dict[int, str]:
    views = demo_views(now_ms(), step)
    write_views(client, PREFIX, views)
    return views


def spike_alert() -> dict[str, Any]:
    return alert_payload(
        "ces_high_effort_spike",
        "tech_support",
        metric="cx_ces_high_effort_ratio",
        window="15m",
        value=0.33,
        threshold=0.25,
        severity="page",
        samples=52,
        since=now_ms() - 12 * 60_000,
        summary="High-effort CES spike on tech_support: 33% of 52 answers in 15m "
        "(95% CI 22%-46%) vs 18% baseline, threshold 25%",
    )


def csat_alert() -> dict[str, Any]:
    return alert_payload(
        "csat_low",
        "retention",
        metric="cx_csat_ratio",
        window="1h",
        value=0.64,
        threshold=0.70,
        severity="warning",
        samples=96,
        since=now_ms() - 47 * 60_000,
        summary="CSAT on retention is 64% over 1h (95% CI 55%-72%, n=96), below 70%",
    )


async def test_wallboard_in_chromium(
    chromium: str,
    redis_server: RedisServer,
    artifacts: Path,
    update_docs_screenshots: bool,
    tmp_path: Path,
) -> None:
    timings: dict[str, float] = {}
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    snapshots = seed(client, step=0)
    seeded_at = time.monotonic()
    spike = spike_alert()
    fire_alert(client, PREFIX, spike)

    board = WallboardProcess(
        {
            "CXSTREAM_REDIS_URL": redis_server.url,
            "CXSTREAM_REDIS_PREFIX": PREFIX,
            "CXSTREAM_WALLBOARD_TOKEN": TOKEN,
            "CXSTREAM_MIN_SAMPLES": "20",
        },
        tmp_path / "wallboard.log",
        args=("--interval", "0.25", "--trend-interval", "0.25"),
    ).start()
    browser = Browser(chromium, artifacts / "chromium.log")
    try:
        started = time.monotonic()
        await browser.start()
        timings["chromium start"] = time.monotonic() - started
        started = time.monotonic()
        await browser.navigate(f"{board.url}/?token={TOKEN}")

        # 1. First paint: every number is the KPI of the summed counts; alert and markings shown.
        await browser.wait_for(READ_BOARD, lambda b: bool(b["version"]) and len(b["cells"]) == 6 * len(TILES))
        timings["first data on page"] = time.monotonic() - started
        want = expected_texts(snapshots, "15m")
        shown = await browser.wait_for(READ_BOARD, lambda b: shown_texts(b) == want, timeout=10)
        assert shown["window"] == "15m"
        assert shown["scope"] == "All queues"
        assert shown["heroQueue"] == ALL_QUEUES
        assert {k: t["text"] for k, t in shown["hero"].items()} == {
            spec.key: want[f"{ALL_QUEUES}|{spec.key}"] for spec in TILES
        }
        assert [a["id"] for a in shown["alerts"]] == [spike["id"]]
        assert "High-effort CES spike on tech_support" in shown["alerts"][0]["text"]
        assert "since" in shown["alerts"][0]["text"]
        assert "sev-page" in shown["alerts"][0]["classes"]
        assert shown["cells"]["tech_support|ces_high_effort_ratio"]["alert"] == spike["id"]
        assert "has-alert" in shown["cells"]["tech_support|ces_high_effort_ratio"]["classes"]
        low = low_confidence(snapshots, "15m")
        assert "retention|csat_ratio" in low  # the demo's small queue
        assert {k for k, c in shown["cells"].items() if c["low"]} == low
        assert all("low-confidence" in shown["cells"][k]["classes"] for k in low)
        assert shown["stale"] is None
        assert not shown["overflow"], "queue rows do not fit on a 1920x1080 screen"
        # The queue leads: waiting, longest wait, service level, abandonment, agents, above the CX tiles.
        assert ops_mismatches(shown, snapshots, "15m", seeded_at) == []
        assert shown["opsAboveHero"] and list(shown["ops"]) == list(OPS_KEYS)
        assert shown["firstHeads"][1:] == ["Waiting", "Longest", "Service", "Abandon", "Agents"]
        assert {k: v["status"] for k, v in shown["opsCells"].items() if k.startswith("tech_support|")} == {
            "tech_support|waiting": "bad",  # 150 s >= the 2 min limit
            "tech_support|longest_wait": "bad",
            "tech_support|service_level": "bad",  # about 62% < 80% - 10 points
            "tech_support|abandon": "warn",
            "tech_support|agents": "empty",
        }
        assert shown["opsCells"]["billing|service_level"]["status"] == "good"
        assert shown["opsCells"]["general|longest_wait"]["status"] == "good"
        assert shown["opsCells"]["sales|longest_wait"]["status"] == "warn"  # 75 s: over half the limit

        # 2. Live: new numbers and a newly published alert appear without a reload.
        version = shown["version"]
        snapshots = seed(client, step=7)
        new_alert = csat_alert()
        published = time.monotonic()
        fire_alert(client, PREFIX, new_alert)
        want = expected_texts(snapshots, "15m")
        await browser.wait_for(
            READ_BOARD, lambda b: new_alert["id"] in [a["id"] for a in b["alerts"]], timeout=10
        )
        timings["published alert on page"] = time.monotonic() - published
        shown = await browser.wait_for(READ_BOARD, lambda b: shown_texts(b) == want, timeout=10)
        timings["new snapshot on page"] = time.monotonic() - published
        assert shown["version"] != version
        # Most severe first: the page above the warning.
        assert [a["id"] for a in shown["alerts"]] == [spike["id"], new_alert["id"]]
        assert shown["cells"]["retention|csat_ratio"]["alert"] == new_alert["id"]
        # An alert on a live queue gauge marks its queue figure; resolved, the mark goes.
        wait_alert = alert_payload(
            "longest_wait_high",
            "tech_support",
            metric="cx_longest_wait_seconds",
            window="now",
            value=151.0,
            threshold=120.0,
            samples=9,
            summary="A customer has waited 151s on tech_support (9 waiting), over 120s",
        )
        fire_alert(client, PREFIX, wait_alert)
        await browser.wait_for(
            READ_BOARD,
            lambda b: b["opsCells"]["tech_support|longest_wait"]["alert"] == wait_alert["id"],
            timeout=10,
        )
        resolve_alert(client, PREFIX, wait_alert)
        await browser.wait_for(
            READ_BOARD, lambda b: b["opsCells"]["tech_support|longest_wait"]["alert"] is None, timeout=10
        )

        # 3. A minute of traffic in fast-forward: the sparklines fill in.
        for step in range(8, 40):
            snapshots = seed(client, step)
            seeded_at = time.monotonic()
            await asyncio.sleep(0.25)
        want = expected_texts(snapshots, "15m")
        shown = await browser.wait_for(READ_BOARD, lambda b: shown_texts(b) == want, timeout=10)
        assert all(t["lines"] >= 1 for t in shown["hero"].values()), "every big tile has a trend line"
        assert ops_mismatches(shown, snapshots, "15m", seeded_at) == []
        await asyncio.sleep(0.3)  # let the last paint settle
        png = await browser.screenshot(artifacts / "wallboard.png")
        assert png.startswith(b"\x89PNG") and len(png) > 50_000
        if update_docs_screenshots:
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(artifacts / "wallboard.png", DOCS_IMAGE)

        # 4. The window selector switches the whole board to the 1h numbers.
        await browser.evaluate("document.querySelector('#windows button[data-window=\"1h\"]').click()")
        want_1h = expected_texts(snapshots, "1h")
        shown = await browser.wait_for(
            READ_BOARD, lambda b: b["window"] == "1h" and shown_texts(b) == want_1h, timeout=10
        )
        assert "window=1h" in await browser.evaluate("location.search")
        assert {k for k, c in shown["cells"].items() if c["low"]} == low_confidence(snapshots, "1h")

        # 5. Redis goes away: the last numbers stay, marked stale; then it comes back.
        redis_server.stop()
        stopped = time.monotonic()
        shown = await browser.wait_for(READ_BOARD, lambda b: b["stale"] is not None, timeout=15)
        timings["outage shown"] = time.monotonic() - stopped
        assert "Data stale since" in shown["stale"]
        await asyncio.sleep(0.2)
        assert not (await browser.evaluate(READ_BOARD))["overflow"], "stale banner pushed rows off screen"
        assert shown_texts(shown) == want_1h
        await browser.screenshot(artifacts / "wallboard-stale.png")
        redis_server.start()
        client.close()
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        snapshots = seed(client, step=40)
        fire_alert(client, PREFIX, spike)
        restarted = time.monotonic()
        await browser.wait_for(READ_BOARD, lambda b: b["stale"] is None, timeout=30)
        timings["recovered"] = time.monotonic() - restarted

        assert browser.page_errors() == []
    except BaseException:
        with contextlib.suppress(Exception):
            await browser.screenshot(artifacts / "wallboard-failure.png")
        print("wallboard log:\n" + board.log()[-5000:])
        print("chromium log:\n" + browser.log_tail())
        raise
    finally:
        await browser.close()
        status = board.stop()
        client.close()
    print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    assert status == 0, board.log()
    assert TOKEN not in board.log()
