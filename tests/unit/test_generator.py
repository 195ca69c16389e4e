"""Unit tests for the synthetic traffic generator (pure; the Kafka producer is faked).

The contract checker below is written from CONTRACT.md on purpose, independent of
``stream.domain.events``: the generator is the reference producer, so it must agree with
the written contract, not merely with our own validator.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from stream import generator
from stream.generator import (
    GeneratedEvent,
    GeneratorStats,
    TrafficProfile,
    TrafficSimulator,
    read_jsonl,
    write_jsonl,
)

START_MS = 1_795_000_000_000  # 2026-11-18, a fixed simulated start

CHANNELS = {"voice", "chat", "email", "sms", "social", "messaging", "web"}
TYPES = {"contact_started", "contact_transferred", "contact_ended"}
INTERACTION_FIELDS = {
    "event_id",
    "type",
    "contact_id",
    "customer_id",
    "channel",
    "queue",
    "agent_id",
    "team",
    "reason",
    "timestamp",
    "to_queue",
    "to_agent",
    "resolved",
    "handle_seconds",
}
SURVEY_FIELDS = {
    "event_id",
    "survey_id",
    "contact_id",
    "metric",
    "score",
    "scale",
    "customer_id",
    "channel",
    "queue",
    "agent_id",
    "team",
    "timestamp",
}
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
HORIZON_MS = 7 * 86_400_000

# Repeat contacts return within minutes here, so a 20k-event run reaches steady state.
FAST_REPEATS = replace(
    TrafficProfile(), contacts_per_second=1.0, repeat_delay_median_s=60.0, repeat_delay_sigma=0.8
)


# -- an independent contract checker ---------------------------------------------------
def timestamp_ms(value: Any) -> int:
    """Epoch ms of a contract timestamp; raises ValueError for anything else."""
    if type(value) is int:
        if value < 0:
            raise ValueError("negative epoch ms")
        return value
    if isinstance(value, str) and ISO_RE.match(value):
        return round(datetime.fromisoformat(value).timestamp() * 1000)
    raise ValueError(f"not a contract timestamp: {value!r}")


def contract_problems(topic_kind: str, value: Any, now_ms: float | None = None) -> list[str]:
    """Everything about one decoded message that CONTRACT.md does not allow.

    ``now_ms`` is the processing time, for the future-skew rule (5 minutes here).
    """
    if not isinstance(value, dict):
        return ["not a JSON object"]
    problems: list[str] = []

    def string(name: str, required: bool) -> None:
        if name not in value:
            if required:
                problems.append(f"missing {name}")
        elif not isinstance(value[name], str) or not value[name]:
            problems.append(f"{name} is not a non-empty string")

    for name in ("event_id", "contact_id"):
        string(name, True)
    if "timestamp" not in value:
        problems.append("missing timestamp")
    else:
        try:
            if now_ms is not None and timestamp_ms(value["timestamp"]) > now_ms + 300_000:
                problems.append("timestamp in the future")
        except ValueError as exc:
            problems.append(str(exc))
    if "channel" in value and value["channel"] not in CHANNELS:
        problems.append(f"unknown channel {value['channel']!r}")

    if topic_kind == "interactions":
        problems += [f"unexpected field {f}" for f in set(value) - INTERACTION_FIELDS]
        kind = value.get("type")
        if kind not in TYPES:
            return [*problems, f"unknown type {kind!r}"]
        started = kind == "contact_started"
        for name in ("customer_id", "channel", "queue"):
            string(name, started)
        for name in ("agent_id", "team", "reason", "to_queue", "to_agent"):
            string(name, False)
        if "resolved" in value and type(value["resolved"]) is not bool:
            problems.append("resolved is not a bool")
        if "handle_seconds" in value:
            handle = value["handle_seconds"]
            if type(handle) not in (int, float) or handle < 0:
                problems.append("handle_seconds is not a number >= 0")
    else:
        problems += [f"unexpected field {f}" for f in set(value) - SURVEY_FIELDS]
        for name in ("survey_id", "customer_id", "queue", "agent_id", "team"):
            string(name, False)
        metric, score = value.get("metric"), value.get("score")
        if metric not in ("csat", "nps", "ces"):
            return [*problems, f"unknown metric {metric!r}"]
        if "scale" in value and metric != "ces":
            problems.append("scale on a non-CES metric")
        scale = value.get("scale", "agree_1_7")
        low, high = {
            "csat": (1, 5),
            "nps": (0, 10),
            "ces": {"agree_1_7": (1, 7), "effort_1_5": (1, 5)}.get(scale, (1, 0)),
        }[metric]
        if metric == "ces" and scale not in ("agree_1_7", "effort_1_5"):
            problems.append(f"unknown scale {scale!r}")
        if type(score) is not int or not low <= score <= high:
            problems.append(f"score {score!r} outside {low}..{high}")
    return problems


def decoded(value: dict[str, Any] | bytes) -> Any:
    """The message as a consumer decodes it (``None`` when it is not valid JSON)."""
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def simulate(n: int, profile: TrafficProfile | None = None, seed: int = 42, **kw: Any) -> list:
    return list(TrafficSimulator(profile, seed, START_MS, **kw).events(n))


class Contacts:
    """Replays valid events the way the processor sees them, per the contract's KPIs."""

    def __init__(self, events: Iterable[GeneratedEvent], warm_up_ms: int = 0) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}
        last: dict[str, tuple[int, str, str | None]] = {}
        self.started = self.repeats = self.switches = self.same_reason = 0
        self.surveys: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for ev in events:
            v = ev.value
            assert isinstance(v, dict)
            ts = timestamp_ms(v["timestamp"])
            if ev.topic_kind == "surveys":
                self.surveys.append((v, self.contacts[v["contact_id"]]))
                continue
            if v["type"] == "contact_started":
                prev = last.get(v["customer_id"])
                repeat = prev is not None and ts - prev[0] < HORIZON_MS
                switch = repeat and prev is not None and prev[1] != v["channel"]
                last[v["customer_id"]] = (ts, v["channel"], v.get("reason"))
                self.contacts[v["contact_id"]] = {
                    "start": ts,
                    "repeat": repeat,
                    "switch": switch,
                    "transfers": 0,
                    "events": [("contact_started", ts)],
                }
                if ts >= START_MS + warm_up_ms:
                    self.started += 1
                    self.repeats += repeat
                    self.switches += switch
                    if repeat and prev is not None and prev[2] == v.get("reason"):
                        self.same_reason += 1
            else:
                contact = self.contacts[v["contact_id"]]
                contact["events"].append((v["type"], ts))
                if v["type"] == "contact_transferred":
                    contact["transfers"] += 1
                else:
                    contact["resolved"] = v.get("resolved")
                    contact["ended"] = ts

    @property
    def ended(self) -> list[dict[str, Any]]:
        return [c for c in self.contacts.values() if "ended" in c]


# -- determinism -----------------------------------------------------------------------
def test_same_seed_same_events_different_seed_different() -> None:
    a = simulate(3_000, seed=7, duplicate_ratio=0.05, bad_ratio=0.05)
    b = simulate(3_000, seed=7, duplicate_ratio=0.05, bad_ratio=0.05)
    c = simulate(3_000, seed=8, duplicate_ratio=0.05, bad_ratio=0.05)
    assert a == b
    assert a != c


def test_events_calls_continue_the_same_stream() -> None:
    sim = TrafficSimulator(None, 5, START_MS)
    pieces = list(sim.events(100)) + list(sim.events(250)) + list(sim.events(0))
    assert pieces == simulate(350, seed=5)


def test_seed_none_picks_and_exposes_a_seed() -> None:
    sim = TrafficSimulator(None, None, START_MS)
    assert isinstance(sim.seed, int)
    assert list(sim.events(200)) == simulate(200, seed=sim.seed)


# -- contract --------------------------------------------------------------------------
def test_every_valid_event_satisfies_the_contract() -> None:
    events = simulate(20_000, FAST_REPEATS, seed=1)
    problems = Counter(p for ev in events for p in contract_problems(ev.topic_kind, decoded(ev.value)))
    assert not problems, problems
    for ev in events:
        assert isinstance(ev.value, dict)
        assert ev.key == ev.value["contact_id"]
    ids = [ev.value["event_id"] for ev in events if isinstance(ev.value, dict)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", i) for i in ids)


def test_timestamps_mix_epoch_ms_and_iso_with_offsets() -> None:
    events = simulate(10_000)
    forms = Counter(
        "epoch"
        if type(ev.value["timestamp"]) is int
        else "utc"
        if ev.value["timestamp"].endswith("Z")
        else "offset"
        for ev in events
        if isinstance(ev.value, dict)
    )
    assert 0.45 < forms["epoch"] / len(events) < 0.55
    assert forms["utc"] > 0.2 * len(events)
    assert forms["offset"] > 0.1 * len(events)
    # An offset timestamp names the same instant as the simulated clock.
    stamps = [timestamp_ms(ev.value["timestamp"]) for ev in events if isinstance(ev.value, dict)]
    assert all(START_MS <= s < START_MS + 86_400_000 for s in stamps)


def test_valid_events_come_in_event_time_order() -> None:
    stamps = [timestamp_ms(ev.value["timestamp"]) for ev in simulate(20_000)]
    assert stamps == sorted(stamps)


def test_lifecycle_order_per_contact() -> None:
    contacts = Contacts(simulate(20_000, FAST_REPEATS, seed=2))
    assert len(contacts.ended) > 0.8 * len(contacts.contacts)
    for c in contacts.contacts.values():
        kinds = [k for k, _ in c["events"]]
        stamps = [t for _, t in c["events"]]
        assert kinds[0] == "contact_started"
        assert kinds.count("contact_started") == 1
        assert kinds.count("contact_ended") <= 1
        assert kinds.count("contact_transferred") <= 2
        if "contact_ended" in kinds:
            assert kinds[-1] == "contact_ended"
        assert stamps == sorted(stamps)
    for survey, contact in contacts.surveys:
        assert "ended" in contact, "survey before its contact ended"
        assert timestamp_ms(survey["timestamp"]) > contact["ended"]


def test_kinds_name_what_each_event_is() -> None:
    sim = TrafficSimulator(None, 3, START_MS, duplicate_ratio=0.05, bad_ratio=0.05)
    for ev, kind in sim.events_with_kind(5_000):
        if kind.startswith("bad:"):
            assert isinstance(ev.value, bytes)
        elif kind != "duplicate":
            assert isinstance(ev.value, dict)
            assert kind == ev.value.get("type", ev.value.get("metric"))


# -- traffic shape ---------------------------------------------------------------------
def test_expected_rates_of_the_default_profile_are_plausible() -> None:
    rates = TrafficProfile().expected_rates()
    assert 0.15 <= rates["repeat_contact"] <= 0.25
    assert 0.10 <= rates["transferred"] <= 0.20
    assert 0.70 <= rates["resolved"] <= 0.80
    assert rates["channel_switch"] == pytest.approx(0.4 * rates["repeat_contact"])
    assert rates["survey_csat"] == 0.25
    assert 2.5 < rates["events_per_contact"] < 3.0


def test_demo_profile_is_the_default_on_fast_forward() -> None:
    demo, default = TrafficProfile.demo(), TrafficProfile()
    assert demo.expected_rates() == default.expected_rates()
    assert demo.channels["voice"].handle_median_s == default.channels["voice"].handle_median_s / 10
    assert demo.repeat_delay_median_s < 600
    assert TrafficProfile.demo(contacts_per_second=9.0).contacts_per_second == 9.0


def test_repeats_switches_and_transfers_occur_at_the_configured_rates() -> None:
    expected = FAST_REPEATS.expected_rates()
    contacts = Contacts(simulate(20_000, FAST_REPEATS, seed=3), warm_up_ms=20 * 60_000)
    assert contacts.started > 4_000
    repeat = contacts.repeats / contacts.started
    assert repeat == pytest.approx(expected["repeat_contact"], abs=0.03)
    assert contacts.switches / contacts.repeats == pytest.approx(0.40, abs=0.06)
    assert contacts.same_reason / contacts.repeats > 0.6

    ended = contacts.ended
    transferred = sum(c["transfers"] > 0 for c in ended) / len(ended)
    assert transferred == pytest.approx(expected["transferred"], abs=0.03)
    assert any(c["transfers"] == 2 for c in ended)
    with_resolution = [c for c in ended if c["resolved"] is not None]
    resolved = sum(c["resolved"] for c in with_resolution) / len(with_resolution)
    assert resolved == pytest.approx(expected["resolved"], abs=0.04)

    responses = Counter(s["metric"] for s, _ in contacts.surveys)
    for metric in ("csat", "nps", "ces"):
        assert responses[metric] / len(ended) == pytest.approx(expected[f"survey_{metric}"], abs=0.03)


def test_default_profile_repeats_happen_hours_later() -> None:
    events = simulate(20_000, replace(TrafficProfile(), contacts_per_second=0.2), seed=4)
    assert Contacts(events).repeats > 0
    by_customer: dict[str, list[int]] = {}
    for ev in events:
        if ev.value.get("type") == "contact_started":
            by_customer.setdefault(ev.value["customer_id"], []).append(timestamp_ms(ev.value["timestamp"]))
    gaps = sorted(b - a for starts in by_customer.values() for a, b in itertools.pairwise(starts))
    assert 15 * 60_000 < gaps[len(gaps) // 2] < 6 * 3_600_000


def test_fresh_contacts_are_not_accidental_repeats() -> None:
    # A tiny customer base would make every draw a repeat; new customers join instead.
    profile = replace(FAST_REPEATS, customers=50)
    contacts = Contacts(simulate(20_000, profile, seed=5), warm_up_ms=20 * 60_000)
    repeat = contacts.repeats / contacts.started
    assert repeat == pytest.approx(profile.expected_rates()["repeat_contact"], abs=0.03)


def kpis(surveys: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, float]:
    csat = [s["score"] for s, _ in surveys if s["metric"] == "csat"]
    ces = [s for s, _ in surveys if s["metric"] == "ces"]
    easy = sum(
        s["score"] >= 5 if s.get("scale", "agree_1_7") == "agree_1_7" else s["score"] <= 2 for s in ces
    )
    return {"csat": sum(x >= 4 for x in csat) / len(csat), "ces_easy": easy / len(ces)}


def test_transferred_repeat_and_unresolved_contacts_score_worse() -> None:
    contacts = Contacts(simulate(40_000, FAST_REPEATS, seed=6))
    surveys = contacts.surveys
    overall = kpis(surveys)
    assert 0.65 < overall["csat"] < 0.9
    assert 0.55 < overall["ces_easy"] < 0.85
    for worse, better in [
        (lambda c: c["transfers"] > 0, lambda c: c["transfers"] == 0),
        (lambda c: c["repeat"], lambda c: not c["repeat"]),
        (lambda c: c.get("resolved") is False, lambda c: c.get("resolved") is True),
    ]:
        bad = kpis([s for s in surveys if worse(s[1])])
        good = kpis([s for s in surveys if better(s[1])])
        assert good["csat"] - bad["csat"] > 0.15
        assert good["ces_easy"] - bad["ces_easy"] > 0.15


def test_surveys_vary_like_real_producers() -> None:
    surveys = [ev.value for ev in simulate(20_000) if ev.topic_kind == "surveys"]
    ces = [s for s in surveys if s["metric"] == "ces"]
    scales = Counter(s.get("scale", "(default)") for s in ces)
    assert scales["agree_1_7"] > 0 and scales["(default)"] > 0
    assert 0.08 < scales["effort_1_5"] / len(ces) < 0.25
    with_queue = sum("queue" in s and "channel" in s for s in surveys)
    assert 0.25 < with_queue / len(surveys) < 0.55
    assert 0 < sum("survey_id" in s for s in surveys) < len(surveys)
    assert {s["metric"] for s in surveys} == {"csat", "nps", "ces"}


def test_traffic_spreads_over_queues_channels_and_agents() -> None:
    started = [ev.value for ev in simulate(20_000) if ev.value.get("type") == "contact_started"]
    channels = Counter(v["channel"] for v in started)
    queues = Counter(v["queue"] for v in started)
    assert set(channels) == CHANNELS
    assert channels.most_common(1)[0][0] == "voice"
    assert set(queues) == {"billing", "tech_support", "sales", "retention", "general"}
    assert len({v["agent_id"] for v in started}) > 100
    transfers = [ev.value for ev in simulate(20_000) if ev.value.get("type") == "contact_transferred"]
    assert all(v["to_queue"] in queues for v in transfers)


# -- faults ----------------------------------------------------------------------------
def test_duplicate_and_bad_ratios_are_honoured() -> None:
    sim = TrafficSimulator(None, 9, START_MS, duplicate_ratio=0.05, bad_ratio=0.03)
    seen: dict[str, GeneratedEvent] = {}
    duplicates = bad = total = 0
    bad_kinds: Counter[str] = Counter()
    for ev, kind in sim.events_with_kind(20_000):
        total += 1
        if isinstance(ev.value, bytes):
            bad += 1
            bad_kinds[kind] += 1
            message = decoded(ev.value)
            # The simulated clock stands for the processor's wall clock.
            assert contract_problems(ev.topic_kind, message, sim.now_ms), (kind, ev.value)
            continue
        event_id = ev.value["event_id"]
        if event_id in seen:
            duplicates += 1
            assert kind == "duplicate"
            assert ev == seen[event_id], "a duplicate must be re-sent verbatim"
        else:
            assert kind != "duplicate"
            assert not contract_problems(ev.topic_kind, ev.value)
            seen[event_id] = ev
    assert duplicates / total == pytest.approx(0.05, abs=0.008)
    assert bad / total == pytest.approx(0.03, abs=0.006)
    assert len(bad_kinds) >= 10, bad_kinds


def test_fault_ratios_are_validated() -> None:
    with pytest.raises(ValueError):
        TrafficSimulator(duplicate_ratio=-0.1)
    with pytest.raises(ValueError):
        TrafficSimulator(duplicate_ratio=0.6, bad_ratio=0.5)
    with pytest.raises(ValueError):
        TrafficSimulator(clock="wall")  # type: ignore[arg-type]


def test_real_clock_stamps_events_with_now() -> None:
    sim = TrafficSimulator(None, 1, START_MS, clock="real")
    now = time.time() * 1000
    for ev in sim.events(500):
        assert isinstance(ev.value, dict)
        assert abs(timestamp_ms(ev.value["timestamp"]) - now) < 10_000


# -- replay files ----------------------------------------------------------------------
def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    kw: dict[str, Any] = {"duplicate_ratio": 0.02, "bad_ratio": 0.02}
    written = write_jsonl(path, 5_000, None, 11, START_MS, surveys_topic="s.test", **kw)
    assert written == 5_000
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5_000
    assert all(set(orjson.loads(line)) >= {"topic", "key"} for line in lines)

    expected = simulate(5_000, seed=11, **kw)
    records = list(read_jsonl(path))
    assert len(records) == len(expected)
    topics = {"interactions": "cx.interactions", "surveys": "s.test"}
    for record, ev in zip(records, expected, strict=True):
        assert record.topic == topics[ev.topic_kind]
        assert record.key == ev.key
        assert record.value == ev.value
    assert any(isinstance(r.value, bytes) for r in records)
    assert not list(tmp_path.glob("*.tmp"))


def test_read_jsonl_rejects_a_broken_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"topic": "cx.surveys", "key": "c-1", "value": {}}\n\n{"topic": 1}\n')
    with pytest.raises(ValueError, match=":3:"):
        list(read_jsonl(path))


# -- produce, against a fake producer ---------------------------------------------------
class FakeProducer:
    """Stands in for AIOKafkaProducer: fails the first starts and some deliveries."""

    start_failures = 0
    fail_every = 0
    always_down = False
    delivered: list[tuple[str, bytes, bytes]] = []
    instances = 0

    def __init__(self, **config: Any) -> None:
        assert config["linger_ms"] == 5
        type(self).instances += 1
        self.sends = 0

    async def start(self) -> None:
        cls = type(self)
        if cls.always_down or cls.start_failures > 0:
            cls.start_failures -= 1
            raise KafkaConnectionError("broker down")

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sends += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Only first attempts fail, like a short outage: re-sends then succeed.
        if self.fail_every and self.sends <= 300 and self.sends % self.fail_every == 0:
            future.set_exception(KafkaTimeoutError())
        else:
            type(self).delivered.append((topic, key, value))
            future.set_result(None)
        return future

    async def stop(self) -> None:
        return None


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    class Fake(FakeProducer):
        delivered: list[tuple[str, bytes, bytes]] = []

    monkeypatch.setattr(generator.live, "AIOKafkaProducer", Fake)
    return Fake


async def test_produce_retries_until_the_broker_answers(fake_producer: type[FakeProducer]) -> None:
    fake_producer.start_failures = 1
    fake_producer.fail_every = 7
    progress: list[int] = []
    stats = await generator.produce(
        "broker:9092",
        rate=0,
        count=300,
        seed=1,
        bad_ratio=0.05,
        duplicate_ratio=0.05,
        progress=lambda s: progress.append(s.sent),
    )
    assert isinstance(stats, GeneratorStats)
    assert fake_producer.instances == 2
    assert stats.sent == 300 and stats.dropped == 0
    assert stats.send_errors > 0
    assert stats.by_topic["cx.interactions"] + stats.by_topic["cx.surveys"] == 300
    assert sum(stats.by_kind.values()) == 300 and stats.bad > 0 and stats.duplicates > 0
    assert progress and progress[-1] == 300
    assert len(fake_producer.delivered) == 300
    for topic, key, value in fake_producer.delivered:
        assert topic in ("cx.interactions", "cx.surveys")
        message = decoded(value)
        if isinstance(message, dict) and "contact_id" in message:
            assert key == message["contact_id"].encode()


async def test_produce_paces_at_the_target_rate(fake_producer: type[FakeProducer]) -> None:
    began = time.monotonic()
    stats = await generator.produce("broker:9092", rate=400, count=200, seed=2)
    elapsed = time.monotonic() - began
    assert stats.sent == 200
    assert 0.4 < elapsed < 2.0


async def test_produce_stops_while_the_broker_is_down(fake_producer: type[FakeProducer]) -> None:
    fake_producer.always_down = True
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    began = time.monotonic()
    stats = await generator.produce("broker:9092", stop_event=stop, seed=3)
    assert time.monotonic() - began < 2.0
    assert stats.sent == 0


async def test_produce_stops_after_duration(fake_producer: type[FakeProducer]) -> None:
    stats = await generator.produce("broker:9092", rate=200, duration=0.5, seed=4)
    assert 60 < stats.sent < 140


def test_replay_output_into_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """``cxstream replay day.jsonl | head``: the reader leaving early ends quietly."""
    import os
    import subprocess
    import sys

    path = tmp_path / "day.jsonl"
    write_jsonl(path, 3000, TrafficProfile.demo(), 5, START_MS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "replay", str(path), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"KPIs as of")
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()
