"""The benchmark's bookkeeping (bench/): medians, targets, the replay file. No timing here."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from bench import __main__ as bench_main
from bench import measure
from stream.tools.replay import read_records


def test_median_run_is_the_middle_repetition_and_keeps_every_value() -> None:
    runs = [{"eps": 30.0, "n": 1}, {"eps": 10.0, "n": 2}, {"eps": 20.0, "n": 3}]
    chosen = bench_main.median_run(runs)
    assert chosen["n"] == 3 and chosen["repetitions"] == [30.0, 10.0, 20.0]
    assert bench_main.median_run(runs[:2])["eps"] == 10.0  # even count: the lower middle one


def results(**overrides: object) -> dict:
    base: dict = {
        "pipeline": {"eps": 70_000.0},
        "raw": {"eps": 200_000.0},
        "naive_faust": {"eps": 5_000.0},
        "quix": {"eps": 10_000.0},
        "replay": {"eps": 100_000.0},
        "latency": {"p99_s": 0.2, "p50_s": 0.1, "rate_reached": True},
        "rss_per_contact": {"rss_per_contact_bytes": 900.0},
        "idle": {"cpu_share": 0.01},
    }
    base.update(overrides)
    return base


def test_targets_pass_and_fail_on_the_measured_values() -> None:
    out = results()
    bench_main.summarize(out)
    met = {name: t["met"] for name, t in out["targets"].items()}
    assert met == {
        "pipeline_over_raw": True,  # 0.35
        "pipeline_over_naive_faust": False,  # 14 < 20
        "pipeline_over_quix": True,  # 7
        "latency_p99_s": True,
        "replay_eps": False,
        "rss_per_contact_bytes": True,
        "idle_cpu_share": True,
    }
    for key in ("raw_eps", "naive_faust_eps", "quix_eps", "pipeline_eps", "latency_p99_s", "replay_eps"):
        assert out[key] is not None, key
    assert out["rss_per_contact_bytes"] == 900.0


def test_latency_below_target_fails_when_the_load_generator_fell_short() -> None:
    out = results(latency={"p99_s": 0.1, "p50_s": 0.05, "rate_reached": False})
    bench_main.summarize(out)
    assert out["targets"]["latency_p99_s"]["met"] is False


def test_missing_measurements_are_not_a_pass() -> None:
    out = results()
    del out["quix"], out["idle"]
    bench_main.summarize(out)
    assert out["targets"]["pipeline_over_quix"]["met"] is None
    assert out["targets"]["idle_cpu_share"]["met"] is None


def test_live_rss_per_contact_is_the_headline_when_measured() -> None:
    out = results(rss_per_contact_live={"rss_per_contact_bytes": 700.0})
    bench_main.summarize(out)
    assert out["rss_per_contact_bytes"] == 700.0
    assert out["rss_per_contact_after_backlog_bytes"] == 900.0


def test_rss_per_contact() -> None:
    assert measure.rss_per_contact(100.0, 101.0, 1024) == 1024.0
    assert measure.rss_per_contact(None, 101.0, 10) is None
    assert measure.rss_per_contact(100.0, 101.0, 0) is None


def test_replay_file_round_trips_through_cxstream_replay(tmp_path: Path) -> None:
    records = [
        ("interactions", b"c-1", b'{"event_id":"e1","type":"contact_started"}'),
        ("surveys", b"c-1", b"{not json"),
        ("surveys", b"c-2", b"null"),
    ]
    path = tmp_path / "r.jsonl"
    measure.write_replay_file(records, path)
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines[1]["value_b64"] == base64.b64encode(b"{not json").decode()
    assert list(read_records(path)) == [
        ("cx.interactions", b"c-1", records[0][2]),
        ("cx.surveys", b"c-1", b"{not json"),
        ("cx.surveys", b"c-2", b"null"),
    ]
