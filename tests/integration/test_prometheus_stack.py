"""The shipped rules and dashboards on a real Prometheus and Alertmanager, scraping two real workers.

Debian's ``prometheus`` and ``prometheus-alertmanager`` run the shipped
``deploy/prometheus/prometheus.yml`` and ``deploy/alertmanager/alertmanager.yml`` with only
scrape targets, intervals and receivers swapped (asserted), and the shipped rule files,
unmodified. Two ``cxstream worker`` processes share four partitions on the real broker; a
webhook in the test is Alertmanager's receiver. The traffic is contacts, transfers,
repeats and channel switches, surveys, queue waits and agent states (``tests/queue_traffic``),
with duplicates and malformed messages, and a queue named ``vip "gold" desk``.

Through Prometheus' HTTP API the test checks:

1. every recording rule has series, and every KPI rule (global, per queue, per channel) and
   every queue operations rule equals an independent computation over the produced events:
   the two workers' series are recombined, nothing is counted twice;
2. every panel target of every shipped dashboard, with its variables substituted as Grafana
   substitutes them (each window, "All", every single queue -- the quote too), runs
   and returns data (``cxstream check-prometheus --strict``, the same code);
3. the operations panels' input counts are the input topics' messages, once;
4. a customer waiting 10 minutes fires the shipped ``CxLongestWaitHigh`` in Prometheus after its
   ``for``, reaches Alertmanager and the webhook with the documented labels and annotations;
5. SIGKILL of the worker holding that customer does not resolve it (``keep_firing_for``): the
   series is gone until the other worker has recovered the partition, the alert stays firing
   with the same ``activeAt`` and the webhook never hears "resolved".
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml
from aiokafka.partitioner import DefaultPartitioner

from stream.tools.check_prometheus import (
    PrometheusAPI,
    check_panels,
    interpolate,
    load_dashboards,
    panel_targets,
    run_check,
)
from tests.expected import CONTACT_AND_SURVEY_COUNTS, expected_kpis, in_window
from tests.harness import Topics, WorkerProcess, _get, produce_records, tool_missing, wait_until
from tests.prometheus_stack import (
    ALERTMANAGER_FILE,
    PROMETHEUS_DIR,
    AlertmanagerServer,
    PrometheusServer,
    WebhookReceiver,
    alertmanager_config,
    binary,
    differences,
    missing_binaries,
    prometheus_config,
)
from tests.queue_traffic import (
    QUEUES_FILE,
    TrueWait,
    build,
    expected_agents,
    expected_waiting,
    expected_waits,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400}
ZONE = ZoneInfo("UTC")
MIN = 60_000
VIP = 'vip "gold" desk'
KPI_QUEUES = ("billing", "support", VIP)
CHANNELS = ("voice", "chat", "email")
OVERFLOW = "overflow"
ROOT = Path(__file__).resolve().parents[2]


def partition_of(key: str) -> int:
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), partitions, partitions))


def key_on(partition: int, tag: str) -> str:
    return next(f"{tag}-{i}" for i in range(10_000) if partition_of(f"{tag}-{i}") == partition)


# -- traffic and its truth -----------------------------------------------------------------------


Record = tuple[str, str, dict[str, Any]]


def interaction(kind: str, contact: str, ts: int, **fields: Any) -> Record:
    """One interaction event, its id derived from the contact and the kind (re-sent: same id)."""
    body = {"event_id": f"{contact}-{kind}", "type": kind, "contact_id": contact, "timestamp": ts, **fields}
    return ("interactions", contact, body)


def kpi_traffic(t_end: int, seed: int = 11) -> list[Record]:
    """150 contacts of 60 customers over the last 50 minutes on three queues (one named with
    quotes) and three channels: starts, transfers, ends, surveys with and without dims."""
    rng = random.Random(seed)
    out: list[Record] = []
    for i in range(150):
        contact = f"kc{seed}-{i}"
        queue, channel = rng.choice(KPI_QUEUES), rng.choice(CHANNELS)
        start = t_end - rng.randrange(1, 50) * MIN - rng.randrange(0, MIN)
        dims = {"channel": channel, "queue": queue}
        out.append(interaction("contact_started", contact, start, customer_id=f"kcust{i % 60}", **dims))
        if rng.random() < 0.2:
            out.append(interaction("contact_transferred", contact, min(start + 30_000, t_end), to_queue="x"))
        if rng.random() > 0.85:
            continue
        end = min(start + rng.randrange(60, 300) * 1000, t_end)
        handle = (end - start) / 1000
        out.append(
            interaction("contact_ended", contact, end, handle_seconds=handle, resolved=rng.random() < 0.7)
        )
        for metric, chance, scores in (
            ("csat", 0.7, range(1, 6)),
            ("nps", 0.5, range(11)),
            ("ces", 0.6, range(1, 8)),
        ):
            if rng.random() < chance:
                survey: dict[str, Any] = {
                    "event_id": f"{contact}-{metric}",
                    "contact_id": contact,
                    "metric": metric,
                    "score": rng.choice(scores),
                    "timestamp": min(end + 10_000, t_end),
                }
                if rng.random() < 0.5:  # the others take the contact's queue and channel
                    survey.update(dims)
                out.append(("surveys", contact, survey))
    return out


def markers(t_end: int) -> list[Record]:
    """One contact start at ``t_end`` on every partition: both workers' event clocks read t_end."""
    return [
        interaction("contact_started", c, t_end, customer_id=f"cust-{c}", channel="voice", queue="billing")
        for c in (key_on(p, "mark") for p in range(PARTITIONS))
    ]


MALFORMED: list[tuple[str, bytes]] = [
    ("interactions", b"not json"),
    ("interactions", b'{"type": "contact_started"}'),
    ("interactions", b'{"event_id": "x1", "type": "contact_teleported", "contact_id": "c", "timestamp": 1}'),
    ("surveys", b'{"event_id": "x2", "contact_id": "c", "metric": "csat", "score": 11, "timestamp": 1}'),
    ("surveys", b"[1, 2, 3]"),
]


def effort_counts(
    interactions: list[dict[str, Any]], now: int, horizon_ms: int = 7 * 24 * 60 * MIN
) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """Repeat contacts and channel switches per window and (queue, channel), from the contract:
    a start within the horizon of the customer's previous start is a repeat, a switch when the
    channel differs. ``horizon_ms`` is the default CXSTREAM_REPEAT_HORIZON (7 days)."""
    starts: dict[str, dict[str, Any]] = {}
    for e in interactions:
        if e["type"] == "contact_started":
            starts.setdefault(e["contact_id"], e)
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in starts.values():
        by_customer[s["customer_id"]].append(s)
    out: dict[str, dict[tuple[str, str], dict[str, float]]] = {w: {} for w in WINDOWS}
    for history in by_customer.values():
        history.sort(key=lambda s: s["timestamp"])
        for i, s in enumerate(history):
            prev = history[i - 1] if i else None
            repeat = prev is not None and s["timestamp"] - prev["timestamp"] <= horizon_ms
            switch = repeat and prev is not None and prev["channel"] != s["channel"]
            for window, seconds in WINDOWS.items():
                if in_window(s["timestamp"], now, seconds):
                    c = out[window].setdefault((s["queue"], s["channel"]), {"repeat": 0.0, "switch": 0.0})
                    c["repeat"] += repeat
                    c["switch"] += switch
    return out


COUNTS = (*CONTACT_AND_SURVEY_COUNTS, "repeat", "switch")


def expected_rules(
    valid: list[tuple[str, dict[str, Any]]], truth: Any, now: int
) -> dict[str, dict[tuple[str, ...], float]]:
    """Recording rule name -> label values (window first) -> value, computed from the events."""
    per_dims = expected_kpis([(k, e) for k, e in valid if k != "agents"], now, WINDOWS)
    effort = effort_counts([e for k, e in valid if k == "interactions"], now)
    out: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    for level, key_of in (
        ("global", lambda q, c: ()),
        ("queue", lambda q, c: (q,)),
        ("channel", lambda q, c: (c,)),
    ):
        for window in WINDOWS:
            sums: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for (queue, channel), counts in per_dims[window].items():
                for name in COUNTS:
                    sums[key_of(queue, channel)][name] += counts.get(name, 0.0)
            for (queue, channel), counts in effort[window].items():
                sums[key_of(queue, channel)]["repeat"] += counts["repeat"]
                sums[key_of(queue, channel)]["switch"] += counts["switch"]
            for key, c in sums.items():
                labels = (window, *key)
                for kpi in ("csat", "nps", "ces"):
                    out[f"cx:{kpi}_responses:{level}"][labels] = c[f"cx_{kpi}_responses"]
                out[f"cx:contacts:{level}"][labels] = c["cx_contacts"]
                out[f"cx:contacts_ended:{level}"][labels] = c["cx_contacts_ended"]
                if c["cx_csat_responses"]:
                    out[f"cx:csat_ratio:{level}"][labels] = c["cx_csat_satisfied"] / c["cx_csat_responses"]
                if c["cx_nps_responses"]:
                    out[f"cx:nps_score:{level}"][labels] = (
                        100 * (c["cx_nps_promoters"] - c["cx_nps_detractors"]) / c["cx_nps_responses"]
                    )
                if c["cx_ces_responses"]:
                    out[f"cx:ces_easy_ratio:{level}"][labels] = c["cx_ces_easy"] / c["cx_ces_responses"]
                    out[f"cx:ces_high_effort_ratio:{level}"][labels] = (
                        c["cx_ces_high_effort"] / c["cx_ces_responses"]
                    )
                if c["cx_contacts"]:
                    out[f"cx:repeat_contact_ratio:{level}"][labels] = c["repeat"] / c["cx_contacts"]
                    out[f"cx:channel_switch_ratio:{level}"][labels] = c["switch"] / c["cx_contacts"]
                if c["cx_contacts_ended"]:
                    out[f"cx:transfer_ratio:{level}"][labels] = (
                        c["cx_transferred_contacts"] / c["cx_contacts_ended"]
                    )
                    for kpi in ("csat", "nps", "ces"):
                        out[f"cx:survey_response_ratio:{level}"][(*labels, kpi)] = (
                            c[f"cx_{kpi}_responses"] / c["cx_contacts_ended"]
                        )
    _queue_rules(out, truth)
    return dict(out)


def _queue_rules(out: dict[str, dict[tuple[str, ...], float]], truth: Any) -> None:
    waits = expected_waits(truth, WINDOWS, ZONE)
    for level, key_of in (("global", lambda q: ()), ("queue", lambda q: (q,))):
        for window, per in waits.items():
            sums: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for (queue, _), c in per.items():
                for name, value in c.items():
                    sums[key_of(queue)][name] += value
            for key, c in sums.items():
                labels = (window, *key)
                offered = (
                    c["cx_answered_contacts"] + c["cx_abandoned_contacts"] - c["cx_short_abandoned_contacts"]
                )
                out[f"cx:offered_waits:{level}"][labels] = offered
                if offered:
                    out[f"cx:service_level_ratio:{level}"][labels] = (
                        c["cx_answered_within_threshold"] / offered
                    )
                    out[f"cx:abandon_ratio:{level}"][labels] = (
                        c["cx_abandoned_contacts"] - c["cx_short_abandoned_contacts"]
                    ) / offered
                if c["cx_answered_contacts"]:
                    out[f"cx:answer_wait_seconds_average:{level}"][labels] = (
                        c["cx_answer_wait_seconds"] / c["cx_answered_contacts"]
                    )
    waiting: dict[str, list[float]] = {}
    for (queue, _), (count, age) in expected_waiting(truth).items():
        w = waiting.setdefault(queue, [0.0, 0.0])
        w[0] += count
        w[1] = max(w[1], age)
    for queue, (count, age) in waiting.items():
        out["cx:contacts_waiting:queue"][(queue,)] = count
        out["cx:longest_wait_seconds:queue"][(queue,)] = age
    out["cx:contacts_waiting:global"][()] = sum(c for c, _ in waiting.values())
    _, seconds, _ = expected_agents(truth, WINDOWS, ZONE)
    for window in WINDOWS:
        for level, team_of in (("global", lambda t: ()), ("team", lambda t: (t,))):
            busy: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
            for (w, team, state), s in seconds.items():
                if w != window or state not in ("busy", "after_contact_work", "available"):
                    continue
                b = busy[team_of(team)]
                b[1] += s
                if state != "available":
                    b[0] += s
            for key, (occupied, staffed) in busy.items():
                if staffed:
                    out[f"cx:occupancy_ratio:{level}"][(window, *key)] = occupied / staffed


#: The label names each recording rule level keys its series by (after window).
LEVEL_LABELS = {"global": (), "queue": ("queue",), "channel": ("channel",), "team": ("team",)}


def rule_values(api: PrometheusAPI, record: str) -> dict[tuple[str, ...], float]:
    level = record.rsplit(":", 1)[1]
    names = (*(("window",) if record not in _NO_WINDOW else ()), *LEVEL_LABELS[level])
    if record.startswith("cx:survey_response_ratio"):
        names = (*names, "metric")
    return {tuple(r["metric"].get(n, "") for n in names): float(r["value"][1]) for r in api.query(record)}


_NO_WINDOW = {"cx:contacts_waiting:queue", "cx:longest_wait_seconds:queue", "cx:contacts_waiting:global"}


def rule_mismatches(api: PrometheusAPI, expected: dict[str, dict[tuple[str, ...], float]]) -> list[str]:
    problems = []
    for record, want in sorted(expected.items()):
        got = rule_values(api, record)
        # A count the workers export as 0 (a queue seen only in waits has 0 CSAT answers)
        # equals a count the truth never saw; ratios have no 0/0 sample on either side.
        counts = not record.split(":")[1].endswith(("_ratio", "_score", "_average"))
        for key in sorted(set(want) | set(got)):
            w, g = want.get(key, 0.0 if counts else None), got.get(key)
            if w is None or g is None or abs(w - g) > 1e-9 * max(1.0, abs(w)):
                problems.append(f"{record}{key}: Prometheus {g}, expected {w}")
    return problems


# -- the stack -----------------------------------------------------------------------------------


@pytest.fixture
def binaries() -> tuple[str, str]:
    reason = missing_binaries()
    if reason:
        tool_missing(reason)
    return binary("prometheus") or "", binary("prometheus-alertmanager", "alertmanager") or ""


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    try:
        yield server
    finally:
        server.stop()


def owned(worker: WorkerProcess) -> set[int]:
    return set(orjson.loads(_get(worker.url + "/healthz"))["partitions"])


def firing(api: PrometheusAPI, alertname: str, queue: str) -> dict[str, Any] | None:
    for alert in api.alerts():
        labels = alert["labels"]
        if (
            labels.get("alertname") == alertname
            and labels.get("queue") == queue
            and alert["state"] == "firing"
        ):
            return alert
    return None


def test_shipped_rules_and_dashboards_on_real_prometheus_and_alertmanager(
    broker: Any,
    redis_server: Any,
    topics: Topics,
    start_worker: Any,
    tmp_path: Path,
    binaries: tuple[str, str],
    webhook: WebhookReceiver,
) -> None:
    prometheus_bin, alertmanager_bin = binaries
    queues = tmp_path / "queues.yml"
    queues.write_text(QUEUES_FILE)
    env = {
        "CXSTREAM_PARTITIONS": str(PARTITIONS),
        "CXSTREAM_CLOCK": "event",
        "CXSTREAM_WINDOWS": ",".join(WINDOWS),
        "CXSTREAM_QUEUES_FILE": str(queues),
        "CXSTREAM_SNAPSHOT_INTERVAL": "1s",
        "CXSTREAM_ALERT_INTERVAL": "1s",
        "CXSTREAM_REDIS_PREFIX": f"ps{uuid.uuid4().hex[:8]}",
    }
    workers = [start_worker(CXSTREAM_WORKER_ID=f"w{i}", **env) for i in range(2)]

    # The shipped configs, with only targets, intervals and receivers swapped.
    am_dir, prom_dir = tmp_path / "alertmanager", tmp_path / "prometheus"
    am_dir.mkdir()
    prom_dir.mkdir()
    alertmanager = AlertmanagerServer(am_dir)
    am_config, am_swapped = alertmanager_config(webhook.url)
    assert differences(yaml.safe_load(ALERTMANAGER_FILE.read_text()), am_config) == am_swapped
    prometheus = PrometheusServer(prom_dir)
    prom_config, prom_swapped = prometheus_config(
        [w.url.removeprefix("http://") for w in workers], alertmanager.address
    )
    assert (
        differences(yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text()), prom_config)
        == prom_swapped
    )
    with (
        running(alertmanager.start(am_config, alertmanager_bin)),
        running(prometheus.start(prom_config, prometheus_bin)),
    ):
        api = PrometheusAPI(prometheus.url)
        for w in workers:
            w.wait_ready(0)
        wait_until(lambda: [len(owned(w)) for w in workers] == [2, 2], timeout=60)
        holder = workers[1]
        wait_until(lambda: prometheus.targets_up("cxstream") == 2, timeout=30)

        # The traffic, with its truth.
        t_end = int(time.time() * 1000) // 1000 * 1000 - MIN
        queue_records, truth = build(seed=7, t0=t_end - 3 * 60 * MIN, t_end=t_end)
        overflow_key = key_on(sorted(owned(holder))[0], "overflow")
        overflow = interaction(
            "contact_queued", overflow_key, t_end - 10 * MIN, queue=OVERFLOW, channel="voice"
        )
        truth.waits.append(TrueWait(OVERFLOW, "voice", t_end - 10 * MIN))
        records = [*queue_records, *kpi_traffic(t_end), *markers(t_end), overflow]
        records += records[::20]  # re-sent: duplicates
        topic_of = {"interactions": topics.interactions, "surveys": topics.surveys, "agents": topics.agents}
        payload = [(topic_of[k], key, orjson.dumps(v)) for k, key, v in records]
        payload += [(topic_of[k], f"bad{i}", body) for i, (k, body) in enumerate(MALFORMED * 4)]
        asyncio.run(produce_records(broker.bootstrap, payload))
        valid = [(k, v) for k, _, v in records]

        def input_counted() -> float:
            result = api.query("sum(cx_events_total)")
            return float(result[0]["value"][1]) if result else 0.0

        wait_until(lambda: input_counted() == len(payload), timeout=120, interval=1)

        # 1. Every KPI and queue rule equals the independent computation: no double counting.
        expected = expected_rules(valid, truth, t_end)
        assert expected["cx:csat_ratio:queue"].get(("15m", VIP)) is not None
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not rule_mismatches(api, expected), timeout=30, interval=1)
        problems = rule_mismatches(api, expected)
        assert not problems, "\n".join(problems)

        # 2. Every rule healthy with series, every panel with data (Grafana's escaping).
        dashboards_dir = ROOT / "deploy/grafana/dashboards"
        report = run_check(api, dashboards_dir, PROMETHEUS_DIR / "rules")
        failures = report.failures(strict=True)
        assert not failures, "\n".join(f"{f.status} {f.where}: {f.detail} {f.expr}" for f in failures)
        assert report.count("ok") >= 55 + 9 + 60, report.count("ok")
        # Without Grafana's prometheusSpecialCharsInLabelValues toggle the quote in the queue
        # name ends the PromQL string: every $queue panel fails on that queue, nothing else.
        dashboards = load_dashboards(dashboards_dir)
        classic = check_panels(api, dashboards, special_chars=False)
        broken = [f for f in classic if f.status == "error"]
        assert broken and all("vip" in f.detail and "gold" in f.detail for f in broken)
        assert {f.where.split()[0] for f in broken} == {"supervisor.json", "effort.json", "queues.json"}

        # 3. Input counted once, on the input topics only: the operations panels' numbers.
        topics_seen = {r["metric"]["topic"] for r in api.query("cx_events_total")}
        assert topics_seen <= set(topic_of.values()), topics_seen
        rejected = float(api.query('sum(cx_events_total{outcome="rejected"})')[0]["value"][1])
        assert rejected == len(MALFORMED) * 4
        operations = panel_targets("operations.json", dashboards["operations.json"])
        panel = next(t for t in operations if t.title == "Rejected share (5m)")
        share = api.query(interpolate(panel.expr, {"instance": ".*"}))
        # rate() extrapolates each worker's counters a little differently: within 3 %.
        assert abs(float(share[0]["value"][1]) / (rejected / len(payload)) - 1) < 0.03

        # 4. The 10-minute wait fires CxLongestWaitHigh (for: 2m) through Alertmanager.
        alert = wait_until(lambda: firing(api, "CxLongestWaitHigh", OVERFLOW), timeout=180, interval=1)
        assert float(alert["value"]) >= 600

        def delivered() -> dict[str, Any] | None:
            for notification in webhook.notifications():
                for a in notification["alerts"]:
                    if a["labels"].get("queue") == OVERFLOW and a["status"] == "firing":
                        return a
            return None

        hook = wait_until(delivered, timeout=30, interval=0.5)
        labels = hook["labels"]
        assert labels["alertname"] == "CxLongestWaitHigh" and labels["severity"] == "critical"
        assert labels["category"] == "operations" and labels["stack"] == "cxstream"
        assert (
            OVERFLOW in hook["annotations"]["summary"] and "2 minutes" in hook["annotations"]["description"]
        )
        in_am = [a for a in alertmanager.alerts() if a["labels"].get("queue") == OVERFLOW]
        assert [a["status"]["state"] for a in in_am] == ["active"]

        # 5. SIGKILL of the worker holding the customer: the alert keeps firing.
        active_at = alert["activeAt"]
        holder.kill()
        survivor = workers[0]
        gap_seen = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            series = api.query(f'cx:longest_wait_seconds:queue{{queue="{OVERFLOW}"}}')
            gap_seen |= not series
            still = firing(api, "CxLongestWaitHigh", OVERFLOW)
            assert still is not None and still["activeAt"] == active_at, still
            if gap_seen and series and len(owned(survivor)) == PARTITIONS:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no recovery seen (gap {gap_seen}):\n{survivor.log_tail()}")
        resolved = [
            a for n in webhook.notifications() for a in n["alerts"]
            if a["labels"].get("queue") == OVERFLOW and a["status"] == "resolved"
        ]  # fmt: skip
        assert resolved == []
