"""Agents (stream.domain.agents) through the processor: newest state wins, agent time, occupancy."""

from __future__ import annotations

import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.domain import agents
from stream.domain.agents import AgentChange, AgentRecord
from stream.domain.processor import InputMessage
from stream.outputs.exporter import KpiCollector, build_registry
from stream.query.windows import reader_for
from tests.unit.test_processor import MIN, WALL, _clean_env, make

__all__ = ["_clean_env"]
S = 1000
A_TOPIC = "cx.agents"


class AgentFeed:
    def __init__(self) -> None:
        self.offset = 0

    def state(self, agent: str, ts: int, state: str, **fields: object) -> InputMessage:
        self.offset += 1
        body = {
            "type": "agent_state",
            "event_id": f"a{self.offset}",
            "agent_id": agent,
            "timestamp": ts,
            "state": state,
        }
        body.update(fields)  # type: ignore[arg-type]
        return InputMessage(A_TOPIC, self.offset, agent.encode(), orjson.dumps(body))


def scrape(processor, state, now: int) -> dict[str, list[tuple[dict[str, str], float]]]:  # type: ignore[no-untyped-def]
    collector = KpiCollector(
        lambda: [state], processor, reader_for(processor.settings), topics=(A_TOPIC,), clock=lambda: now
    )
    text = generate_latest(build_registry(collector)).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_the_newest_event_time_wins_whatever_the_arrival_order() -> None:
    processor, state, _ = make()
    feed = AgentFeed()
    batch = [
        feed.state("ann", WALL - 5 * MIN, "busy", team="t1"),
        feed.state("ann", WALL - 9 * MIN, "available"),
    ]
    processor.process_batch(state, batch, WALL)
    assert [c.state for c in state.agents["ann"].changes] == ["available", "busy"]
    assert agents.agents_now(state.agents.values()) == {("busy", "t1"): 1}


def test_a_team_less_event_takes_the_last_known_team() -> None:
    record = AgentRecord(
        [AgentChange(0, "available", "t1"), AgentChange(10, "busy", None), AgentChange(20, "away", "t2")]
    )
    assert agents.teams(record) == ["t1", "t1", "t2"]
    assert agents.teams(AgentRecord([AgentChange(0, "busy", None)])) == [agents.UNKNOWN_TEAM]


def test_state_seconds_clip_to_the_window_and_credit_the_team_that_began_them() -> None:
    record = AgentRecord(
        [
            AgentChange(0, "available", "t1"),
            AgentChange(60 * S, "busy", "t2"),  # moved team with this event
            AgentChange(90 * S, "after_contact_work", None),
        ]
    )
    seconds = agents.state_seconds([record], start_ms=30 * S, now_ms=100 * S)
    assert seconds == {("t1", "available"): 30.0, ("t2", "busy"): 30.0, ("t2", "after_contact_work"): 10.0}
    assert agents.occupancy({"available": 30.0, "busy": 30.0, "after_contact_work": 10.0}) == 40 / 70
    assert agents.occupancy({"away": 5.0, "offline": 100.0}) is None


def test_trimming_keeps_the_state_at_the_window_start_and_its_team() -> None:
    record = AgentRecord(
        [AgentChange(0, "available", "t1"), AgentChange(10, "busy", None), AgentChange(50, "away", None)]
    )
    assert agents.trim(record, 40)
    assert record.changes[0] == AgentChange(10, "busy", "t1")
    assert agents.state_seconds([record], 40, 60) == {("t1", "busy"): 0.01, ("t1", "away"): 0.01}
    assert not agents.trim(record, 40)


def test_duplicates_and_bad_agent_events() -> None:
    processor, state, _ = make()
    feed = AgentFeed()
    first = feed.state("ann", WALL - MIN, "busy", event_id="x1")
    again = InputMessage(A_TOPIC, 99, b"ann", first.value)
    bad = feed.state("bob", WALL - MIN, "napping")
    dead = processor.process_batch(state, [first, bad, again], WALL)
    assert [d.reason for d in dead] == ["unknown_state"]
    assert len(state.agents["ann"].changes) == 1 and "bob" not in state.agents
    assert processor.outcomes[(A_TOPIC, "duplicate")] == 1


def test_exported_agent_gauges_and_occupancy() -> None:
    processor, state, _ = make(windows="15m,1h")
    feed = AgentFeed()
    batch = [
        feed.state("ann", WALL - 20 * MIN, "available", team="t1"),
        feed.state("ann", WALL - 10 * MIN, "busy"),
        feed.state("bob", WALL - 5 * MIN, "offline", team="t1"),
        feed.state("cy", WALL - 30 * MIN, "available", team="t2"),
    ]
    processor.process_batch(state, batch, WALL)
    now = WALL + 30 * S  # bucket of now starts at WALL: the 15m window starts at WALL - 14m
    got = scrape(processor, state, now)
    assert sorted((s["state"], s["team"], v) for s, v in got["cx_agents"]) == [
        ("available", "t2", 1.0),
        ("busy", "t1", 1.0),
        ("offline", "t1", 1.0),
    ]
    seconds = {(s["window"], s["team"], s["state"]): v for s, v in got["cx_agent_state_seconds"]}
    assert seconds[("15m", "t1", "available")] == 4 * 60  # WALL-14m .. WALL-10m
    assert seconds[("15m", "t1", "busy")] == 10 * 60 + 30
    assert seconds[("15m", "t1", "offline")] == 5 * 60 + 30
    assert seconds[("1h", "t2", "available")] == 30 * 60 + 30
    occupancy = {(s["window"], s["team"]): v for s, v in got["cx_occupancy_ratio"]}
    assert occupancy[("15m", "t1")] == (10 * 60 + 30) / (14 * 60 + 30)
    assert occupancy[("15m", "t2")] == 0.0


def test_old_offline_agents_are_forgotten_and_histories_trimmed() -> None:
    processor, state, _ = make(contact_ttl="1h", windows="1h")
    feed = AgentFeed()
    batch = [
        feed.state("ann", WALL - 50 * MIN, "available"),
        feed.state("ann", WALL - 40 * MIN, "busy"),
        feed.state("ann", WALL - 30 * MIN, "available"),
        feed.state("bob", WALL - 50 * MIN, "offline"),
    ]
    processor.process_batch(state, batch, WALL)
    processor.tick(state, WALL + 30 * MIN)  # keeps from WALL - 31 min (1h window + 1 bucket)
    assert "bob" not in state.agents  # offline for over an hour
    assert [c.state for c in state.agents["ann"].changes] == ["busy", "available"]


def test_an_old_agent_state_is_not_late_it_holds_until_the_next_one() -> None:
    processor, state, _ = make(windows="15m")
    feed = AgentFeed()
    processor.process_batch(state, [feed.state("ann", WALL - 3 * 3600 * S, "available", team="t1")], WALL)
    assert agents.agents_now(state.agents.values()) == {("available", "t1"): 1}
    seconds = agents.state_seconds(state.agents.values(), WALL - 14 * MIN, WALL)
    assert seconds == {("t1", "available"): 14 * 60.0}
