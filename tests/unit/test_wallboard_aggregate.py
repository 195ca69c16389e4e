"""Wallboard logic without I/O: summing partition views, ratios, confidence, alerts, trends, SSE."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from stream.domain import kpi
from stream.domain.stats import wilson_interval
from stream.query.partition_views import GlobalView, ViewError, decode_view, decode_views, merge
from stream.wallboard.aggregate import (
    ALL_QUEUES,
    TILES,
    attach_trends,
    build_state,
    parse_alerts,
    queue_order,
    select_window,
    sum_views,
    tile,
    tile_status,
    window_order,
)
from stream.wallboard.server import backoff_delay, token_ok
from stream.wallboard.sse import StateHub, format_event, format_retry
from stream.wallboard.trends import TrendBuffer
from tests.e2e.seed import alert_payload, partition_view, vector

NOW = 1_795_457_633_636
SPEC = {t.key: t for t in TILES}


def view(
    partition: int, rows: dict[str, list[tuple[str, str, list[float]]]], at: int = NOW, worker: str = "w"
):
    """A decoded partition view (of ``partitions`` = 4) from ``(queue, channel, counts)`` rows."""
    return decode_view(partition_view(partition, 4, worker, at, rows))


def global_view(*views: Any) -> GlobalView:
    return merge(
        len(views),
        [type(v)(i, len(views), v.worker, v.at, v.position, v.windows) for i, v in enumerate(views)],
    )


def csat(responses: int, satisfied: int) -> list[float]:
    return vector(csat_responses=responses, csat_satisfied=satisfied, csat_score_sum=4 * responses)


# -- summing ---------------------------------------------------------------------------------------
def test_ratio_of_summed_counts_not_average_of_ratios() -> None:
    a = view(0, {"15m": [("billing", "voice", csat(10, 9))]})
    b = view(1, {"15m": [("billing", "chat", csat(100, 10))]})
    totals = sum_views(global_view(a, b), NOW, 60_000)
    billing = totals.counts["15m"]["billing"]
    assert billing[kpi.CSAT_RESPONSES] == 110
    assert billing[kpi.CSAT_SATISFIED] == 19
    value = tile(SPEC["csat_ratio"], billing, 20)["value"]
    assert value == pytest.approx(19 / 110, abs=1e-6)
    assert value != pytest.approx((0.9 + 0.1) / 2, abs=1e-3)  # the wrong way: averaging ratios


def test_all_queues_row_sums_every_queue_and_channel() -> None:
    a = view(
        0,
        {
            "15m": [
                ("billing", "voice", vector(repeat_checked_contacts=40, repeat_contacts=10)),
                ("sales", "voice", vector(repeat_checked_contacts=60, repeat_contacts=3)),
            ]
        },
    )
    b = view(1, {"15m": [("billing", "chat", vector(repeat_checked_contacts=100, repeat_contacts=50))]})
    per_queue = sum_views(global_view(a, b), NOW, 60_000).counts["15m"]
    assert per_queue["billing"][kpi.REPEAT_CHECKED_CONTACTS] == 140
    assert per_queue[ALL_QUEUES][kpi.REPEAT_CHECKED_CONTACTS] == 200
    assert per_queue[ALL_QUEUES][kpi.REPEAT_CONTACTS] == 63
    shown = tile(SPEC["repeat_contact_ratio"], per_queue[ALL_QUEUES], 20)
    assert shown["value"] == pytest.approx(63 / 200)
    assert shown["n"] == 200


def test_nps_from_summed_counts() -> None:
    a = view(0, {"1h": [("q", "voice", vector(nps_responses=10, nps_promoters=10, nps_detractors=0))]})
    b = view(1, {"1h": [("q", "chat", vector(nps_responses=30, nps_promoters=0, nps_detractors=30))]})
    counts = sum_views(global_view(a, b), NOW, 60_000).counts["1h"]["q"]
    assert tile(SPEC["nps_score"], counts, 20)["value"] == pytest.approx(100 * (10 - 30) / 40)


def test_stale_view_still_counts_and_is_listed() -> None:
    """The newest known state of a partition: leaving it out would undercount silently."""
    fresh = view(0, {"15m": [("q", "voice", csat(10, 5))]}, at=NOW - 5_000, worker="a")
    stale = view(1, {"15m": [("q", "voice", csat(1000, 1000))]}, at=NOW - 120_000, worker="b")
    totals = sum_views(global_view(fresh, stale), NOW, 60_000)
    assert totals.counts["15m"]["q"][kpi.CSAT_RESPONSES] == 1010
    assert [(w.worker, w.stale, w.partitions) for w in totals.workers] == [
        ("a", False, [0]),
        ("b", True, [1]),
    ]
    state = build_state(totals, [], now_ms=NOW, min_samples=20)
    assert [w["stale"] for w in state["workers"]] == [False, True]
    assert state["workers"][1]["age_s"] == 120.0
    assert state["partitions"] == {"total": 2, "missing": [], "stale": [1]}


def test_missing_partitions_are_listed() -> None:
    only = view(2, {"15m": [("q", "voice", csat(10, 9))]})
    state = build_state(sum_views(merge(4, [only]), NOW, 60_000), [], now_ms=NOW, min_samples=20)
    assert state["partitions"]["missing"] == [0, 1, 3]
    (row, queue) = state["data"]["15m"]["queues"]
    assert (row["queue"], queue["queue"]) == (ALL_QUEUES, "q")


def test_no_views_leave_empty_windows() -> None:
    state = build_state(
        sum_views(merge(None, []), NOW, 60_000), [], now_ms=NOW, min_samples=20, windows=["15m"]
    )
    (row,) = state["data"]["15m"]["queues"]
    assert row["queue"] == ALL_QUEUES
    assert row["tiles"]["csat_ratio"]["value"] is None
    assert row["tiles"]["csat_ratio"]["status"] == "empty"


def test_team_and_agent_rows_add_into_their_queue() -> None:
    text = orjson.dumps(
        {
            "v": 1,
            "partition": 0,
            "partitions": 1,
            "worker": "w",
            "at": NOW,
            "position": 3,
            "labels": ["queue", "channel", "team", "agent"],
            "counters": list(kpi.COUNTERS),
            "windows": {
                "15m": [[["q", "voice", "t1", "a1"], csat(3, 3)], [["q", "voice", "t2", "a2"], csat(5, 0)]]
            },
        }
    )
    totals = sum_views(merge(None, [decode_view(text)]), NOW, 60_000)
    assert totals.counts["15m"]["q"][kpi.CSAT_RESPONSES] == 8


def test_bad_views_are_skipped_not_fatal() -> None:
    good = partition_view(0, 2, "w", NOW, {"15m": [("q", "voice", csat(4, 4))]})
    views, unreadable = decode_views({"0": good, "1": "{not json", "2": '{"partition": 2}'})
    assert [v.partition for v in views] == [0] and sorted(unreadable) == ["1", "2"]
    with pytest.raises(ViewError):
        decode_view("[]")


# -- tiles -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "low"), [(0, True), (1, True), (19, True), (20, False), (500, False)])
def test_low_confidence_below_min_samples(n: int, low: bool) -> None:
    view = tile(SPEC["csat_ratio"], csat(n, n // 2), 20)
    assert view["low_confidence"] is low
    assert view["n"] == n
    if n == 0:
        assert view["value"] is None
        assert view["interval"] is None
        assert view["status"] == "empty"


def test_interval_is_wilson_and_contains_the_value() -> None:
    view = tile(SPEC["ces_high_effort_ratio"], vector(ces_responses=57, ces_high_effort=24), 20)
    low, high = wilson_interval(24, 57)
    assert view["interval"] == [pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6)]
    assert view["interval"][0] <= view["value"] <= view["interval"][1]


def test_status_thresholds_in_both_directions() -> None:
    csat_spec, effort = SPEC["csat_ratio"], SPEC["ces_high_effort_ratio"]
    assert tile_status(csat_spec, 0.85) == "good"
    assert tile_status(csat_spec, 0.75) == "warn"
    assert tile_status(csat_spec, 0.60) == "bad"
    assert tile_status(effort, 0.10) == "good"
    assert tile_status(effort, 0.20) == "warn"
    assert tile_status(effort, 0.40) == "bad"
    assert tile_status(effort, None) == "empty"


def test_tiles_cover_the_issue_kpis() -> None:
    assert {t.key for t in TILES} == {
        "csat_ratio",
        "nps_score",
        "ces_easy_ratio",
        "ces_high_effort_ratio",
        "repeat_contact_ratio",
        "transfer_ratio",
        "channel_switch_ratio",
    }
    assert all(t.key in kpi.derived_kpis(kpi.zero_counts()) for t in TILES)


# -- alerts and the state document ---------------------------------------------------------------
def _active(*alerts: dict) -> dict[str, str]:
    return {a["id"]: orjson.dumps(a).decode() for a in alerts}


def test_alerts_sorted_by_severity_then_newest_and_mapped_to_tiles() -> None:
    old_page = alert_payload(
        "ces_high_effort_spike", "billing", metric="cx_ces_high_effort_ratio", window="15m", value=0.4,
        threshold=0.25, severity="page", since=NOW - 600_000,
    )  # fmt: skip
    new_warning = alert_payload(
        "csat_low", "sales", metric="cx_csat_ratio", window="1h", value=0.6, threshold=0.7,
        severity="warning", since=NOW - 1_000,
    )  # fmt: skip
    new_page = alert_payload(
        "global", None, metric="cx_transfer_ratio", window="15m", value=0.4, threshold=0.3,
        severity="page", since=NOW - 5_000,
    )  # fmt: skip
    acks = {old_page["id"]: orjson.dumps({"by": "sam", "at": NOW}).decode()}
    alerts = parse_alerts({**_active(old_page, new_warning, new_page), "broken": "{"}, acks)
    assert [a["id"] for a in alerts] == [new_page["id"], old_page["id"], new_warning["id"]]
    assert alerts[0]["tile"] == {"queue": ALL_QUEUES, "kpi": "transfer_ratio"}
    assert alerts[1]["tile"] == {"queue": "billing", "kpi": "ces_high_effort_ratio"}
    assert alerts[1]["acked"] == {"by": "sam", "at": NOW}
    assert alerts[2]["acked"] is None

    snap = view(
        0,
        {
            "15m": [
                ("billing", "voice", vector(ces_responses=30, ces_high_effort=12)),
                ("sales", "voice", csat(40, 20)),
            ]
        },
    )
    state = build_state(
        sum_views(merge(None, [snap]), NOW, 60_000), alerts, now_ms=NOW, min_samples=20, windows=["15m", "1h"]
    )
    rows = {row["queue"]: row for row in state["data"]["15m"]["queues"]}
    assert list(rows) == [ALL_QUEUES, "billing", "sales"]
    assert rows["billing"]["tiles"]["ces_high_effort_ratio"]["alert"] == old_page["id"]
    assert rows["billing"]["tiles"]["csat_ratio"]["alert"] is None
    assert rows["sales"]["tiles"]["csat_ratio"]["alert"] == new_warning["id"]
    assert rows[ALL_QUEUES]["tiles"]["transfer_ratio"]["alert"] == new_page["id"]
    assert rows["billing"]["alerts"] == 1
    assert state["windows"] == ["15m", "1h"]
    assert state["data"]["1h"]["queues"][0]["queue"] == ALL_QUEUES  # configured window without data


def test_select_window_falls_back_to_the_default() -> None:
    snap = view(0, {"15m": [], "1h": [], "24h": []})
    state = build_state(sum_views(merge(None, [snap]), NOW, 60_000), [], now_ms=NOW, min_samples=20)
    assert state["windows"] == ["15m", "1h", "24h"]
    assert list(select_window(state, "1h")["data"]) == ["1h"]
    chosen = select_window(state, "5m")
    assert chosen["window"] == "15m"
    assert list(chosen["data"]) == ["15m"]


def test_orders() -> None:
    assert queue_order(["unknown", "sales", ALL_QUEUES, "Billing", "other", "apps"]) == [
        ALL_QUEUES,
        "apps",
        "Billing",
        "sales",
        "other",
        "unknown",
    ]
    assert window_order(["24h", "1h", "15m", "weird", "1h"]) == ["15m", "1h", "24h", "weird"]


# -- trends ----------------------------------------------------------------------------------------
def test_trend_ring_buffer_keeps_last_samples_with_gaps() -> None:
    trends = TrendBuffer(size=3, interval_s=5)
    key = ("15m", "q", "csat_ratio")
    assert trends.due(0)
    for i in range(5):
        trends.sample([(key, i / 10)], now_ms=i * 5000)
    assert trends[key] == [0.2, 0.3, 0.4]
    assert not trends.due(4 * 5000 + 4999)
    assert trends.due(5 * 5000)
    trends.sample([], now_ms=25_000)  # the queue vanished: a gap
    assert trends[key] == [0.3, 0.4, None]
    trends.sample([(key, None)], now_ms=30_000)
    trends.sample([], now_ms=35_000)
    assert key not in trends  # nothing but gaps: dropped


def test_trends_attach_to_state() -> None:
    snap = view(0, {"15m": [("q", "voice", csat(50, 40))]})
    state = build_state(sum_views(merge(None, [snap]), NOW, 60_000), [], now_ms=NOW, min_samples=20)
    trends = TrendBuffer(size=5)
    trends.sample_state(state["data"], NOW)
    trends.sample_state(state["data"], NOW + 10_000)
    attach_trends(state, trends)
    q = next(r for r in state["data"]["15m"]["queues"] if r["queue"] == "q")
    assert q["tiles"]["csat_ratio"]["trend"] == [0.8, 0.8]
    assert q["tiles"]["nps_score"]["trend"] == []  # never had a value


# -- SSE, auth, backoff ----------------------------------------------------------------------------
def test_sse_wire_format() -> None:
    assert format_event(b'{"a":1}', "state", 7) == b'event: state\nid: 7\ndata: {"a":1}\n\n'
    assert format_event(b"x\ny") == b"data: x\\ny\n\n"
    assert format_retry(2000) == b"retry: 2000\n\n"


async def test_hub_wakes_waiters_and_renders_per_window() -> None:
    hub = StateHub()
    assert not await hub.wait(0, 0.01)
    waiter = asyncio.create_task(hub.wait(0, 5))
    await asyncio.sleep(0)
    snap = view(0, {"15m": [], "1h": []})
    hub.publish(build_state(sum_views(merge(None, [snap]), NOW, 60_000), [], now_ms=NOW, min_samples=20))
    assert await waiter
    assert list(orjson.loads(hub.render("1h"))["data"]) == ["1h"]
    assert hub.render("1h") is hub.render("1h")  # cached per version
    hub.close()
    assert await hub.wait(hub.version, 5)


def test_token_check() -> None:
    assert token_ok(None, None)
    assert token_ok("s3cret", "s3cret")
    assert not token_ok("s3cret", None)
    assert not token_ok("s3cret", "s3cre")
    assert not token_ok("s3cret", "S3CRET")
    assert token_ok("päss", "päss")


def test_backoff_grows_to_a_cap() -> None:
    assert 0.4 <= backoff_delay(1) <= 0.6
    assert 0.8 <= backoff_delay(2) <= 1.2
    assert 8.0 <= backoff_delay(50) <= 12.0


# -- queue operations ------------------------------------------------------------------------------
def ops_view(partition: int, at: int, ref: int, waiting: list[tuple[str, str, int, int]], **rows: Any) -> Any:
    text = orjson.loads(partition_view(partition, 2, "w", at, rows.get("windows", {}), waiting=waiting))
    text["ref"] = ref
    return decode_view(orjson.dumps(text))


def test_waiting_adds_up_over_partitions_and_the_longest_wait_ages_to_now() -> None:
    a = ops_view(0, NOW, NOW, [("billing", "voice", 2, NOW - 30_000)])
    b = ops_view(
        1, NOW - 4_000, NOW - 4_000, [("billing", "chat", 1, NOW - 100_000), ("sales", "voice", 0, 0)]
    )
    live = merge(2, [a, b]).waiting_now(NOW + 1_000)
    from stream.domain.state import dim_key

    assert live[dim_key("billing", "voice")] == (2, 31.0)
    assert live[dim_key("billing", "chat")] == (1, 101.0)  # the view is 4 s old: aged by 5 s
    assert live[dim_key("sales", "voice")] == (0, None)
    totals = sum_views(merge(2, [a, b]), NOW + 1_000, 60_000)
    assert totals.waiting == {"billing": (3, 101.0), "sales": (0, None), ALL_QUEUES: (3, 101.0)}


def test_an_event_clock_view_ages_from_its_reference_time() -> None:
    old = ops_view(0, NOW, NOW - 3_600_000, [("q", "voice", 1, NOW - 3_600_000 - 10_000)])
    assert merge(1, [old]).waiting_now(NOW + 2_000)["q\x1fvoice"] == (1, 12.0)


def test_queue_operations_colour_against_the_queue_targets() -> None:
    from stream.config.queues import DEFAULT_TARGET, QueueTarget, QueueTargets
    from stream.wallboard.operations import queue_operations

    targets = QueueTargets(DEFAULT_TARGET, {"vip": QueueTarget(10.0, 3.0, 0.95, 30.0)})
    counts = vector(
        waits_ended=100, answered_contacts=90, answered_within_threshold=81, abandoned_contacts=10,
        short_abandoned_contacts=4, answer_wait_seconds=900,
    )  # fmt: skip
    waiting = {"vip": (2, 20.0), "billing": (2, 20.0)}
    agents = {"vip": {"available": 1, "busy": 3, "after_contact_work": 2}}
    vip = queue_operations("vip", counts, waiting, agents, targets, now_ms=NOW, min_samples=20)
    billing = queue_operations("billing", counts, waiting, agents, targets, now_ms=NOW, min_samples=20)
    assert vip["service_level"] == round(81 / 96, 6) and vip["abandon"] == round(6 / 96, 6)
    assert vip["answer_wait_s"] == 10.0 and vip["offered"] == 96
    assert vip["agents"] == {"available": 1, "busy": 5, "away": 0}
    # 84% is under vip's 95% target by more than 10 points; over billing's 80%
    assert vip["status"] == {"waiting": "warn", "service_level": "bad", "abandon": "warn"}
    assert billing["status"] == {"waiting": "good", "service_level": "good", "abandon": "warn"}
    assert queue_operations("x", vector(), {}, {}, targets, now_ms=NOW, min_samples=20)["status"] == {
        "waiting": "good",
        "service_level": "empty",
        "abandon": "empty",
    }


def test_a_queue_outside_its_business_hours_is_closed_not_red() -> None:
    from stream.config.queues import DEFAULT_TARGET, BusinessHours, QueueTarget, QueueTargets
    from stream.wallboard.operations import queue_operations

    hours = BusinessHours(open="08:00", close="09:00")  # type: ignore[arg-type]
    targets = QueueTargets(DEFAULT_TARGET, {"night": QueueTarget(20.0, 5.0, 0.8, 120.0, hours, "UTC")})
    ops = queue_operations("night", vector(), {"night": (4, 500.0)}, {}, targets, now_ms=NOW, min_samples=20)
    assert not ops["open"] and set(ops["status"].values()) == {"closed"}


def test_queues_with_only_live_data_get_a_row() -> None:
    a = ops_view(0, NOW, NOW, [("overflow", "voice", 3, NOW - 5_000)])
    state = build_state(
        sum_views(merge(1, [a]), NOW, 60_000), [], now_ms=NOW, min_samples=20, windows=("15m",)
    )
    rows = {row["queue"]: row for row in state["data"]["15m"]["queues"]}
    assert rows["overflow"]["ops"]["waiting"] == 3 and rows[ALL_QUEUES]["ops"]["waiting"] == 3


def test_alerts_on_queue_figures_mark_them() -> None:
    a = ops_view(0, NOW, NOW, [("billing", "voice", 3, NOW - 200_000)])
    alert = alert_payload(
        "longest_wait_high",
        "billing",
        metric="cx_longest_wait_seconds",
        window="now",
        value=200.0,
        threshold=120.0,
    )
    state = build_state(
        sum_views(merge(1, [a]), NOW, 60_000), parse_alerts({alert["id"]: orjson.dumps(alert).decode()}),
        now_ms=NOW, min_samples=20, windows=("15m",),
    )  # fmt: skip
    rows = {row["queue"]: row for row in state["data"]["15m"]["queues"]}
    assert rows["billing"]["ops"]["alerts"] == {"longest_wait": alert["id"]}
    assert rows[ALL_QUEUES]["ops"]["alerts"] == {}
