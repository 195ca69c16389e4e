"""``python -m bench`` (``make bench``): throughput, latency and memory against baselines, one run.

Steps, all on the same pre-filled topics of one tansu broker:

1. pre-fill both input topics (4 partitions) with N realistic events;
2. raw aiokafka getmany + orjson.loads of every value (the physical limit);
3. a naive Faust agent doing ``table[key] += 1`` per event (bench/naive_faust.py);
4. the cxstream worker (fresh consumer group) until ``cx_events_total`` reaches N;
5. latency from produce to visible on /metrics at half the measured pipeline rate;
6. peak RSS (VmHWM) of that worker.

``--scaling`` adds 1 vs 2 workers in one consumer group; ``--soak SECONDS`` runs the
long steady-load run instead (bench/results/soak.json). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench import common, measure, profile_pipeline
from bench.common import RESULTS, TopicSet

#: Issue 15's targets: (result key, comparison, goal, what it means).
TARGETS: dict[str, tuple[str, str, float, str]] = {
    "pipeline_over_raw": ("ratios", ">=", 0.35, "pipeline / raw aiokafka consume + decode"),
    "pipeline_over_naive_faust": ("ratios", ">=", 20.0, "pipeline / naive Faust table design"),
    "pipeline_over_quix": ("ratios", ">=", 3.0, "pipeline / Quix Streams app, same KPI job"),
    "latency_p99_s": ("top", "<", 0.25, "produce -> visible on /metrics, at half the max rate"),
    "replay_eps": ("top", ">=", 250_000, "cxstream replay, events/s"),
    "rss_per_contact_bytes": ("top", "<=", 1024, "RSS per held contact (+ customer history, dedup ids)"),
    "idle_cpu_share": ("top", "<", 0.02, "share of one core at 100 events/s"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to pre-fill (default 200000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20k events, 20 latency samples")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the input topics")
    parser.add_argument("--skip-latency", action="store_true", help="no latency phase")
    parser.add_argument("--skip-naive", action="store_true", help="no naive Faust baseline")
    parser.add_argument("--skip-quix", action="store_true", help="no Quix Streams baseline")
    parser.add_argument("--skip-replay", action="store_true", help="no cxstream replay measurement")
    parser.add_argument("--skip-idle", action="store_true", help="no idle-worker CPU measurement")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions of every measurement; the median counts (default 3)",
    )
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=60_000,
        help="events the naive Faust and Quix baselines are timed over (default 60000; they are slow)",
    )
    parser.add_argument(
        "--raw-events", type=int, default=1_000_000, help="raw consume is timed over this many events"
    )
    parser.add_argument("--scaling", action="store_true", help="also 1 vs 2 workers in one group")
    parser.add_argument("--latency-samples", type=int, default=40, help="markers per repetition")
    parser.add_argument("--latency-rate", type=float, default=None, help="events/s (default: pipeline/2)")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="throughput sampling (s)")
    parser.add_argument("--py-spy", action="store_true", help="profile the worker while it consumes")
    parser.add_argument(
        "--worker-module",
        default="stream",
        help="run workers as `python -m MODULE` (default: `python -m stream worker`)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra CXSTREAM_* setting for the workers (repeatable)",
    )
    parser.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run the soak test for this long instead of the benchmark",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="soak: events/s (default: half of pipeline_eps in latest.json, else 5000)",
    )
    parser.add_argument("--sample-every", type=float, default=10.0, help="soak: sampling period (s)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/...)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = 20_000 if args.events == 200_000 else args.events
        args.latency_samples = min(args.latency_samples, 20)
        args.repeat = 1
        args.baseline_events = min(args.baseline_events, 20_000)
        args.raw_events = 200_000
        # 20k events are too few for a stable pipeline rate to take half of.
        args.latency_rate = args.latency_rate or 5000.0
    return args


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_redis(workdir: Path) -> tuple[Any, dict[str, str]]:
    """A throw-away Redis for the worker's alert/snapshot sink, as in production (None if missing)."""
    from stream.embedded import EmbeddedError, RedisServer

    try:
        server = RedisServer(log_dir=workdir / "redis").start()
    except (EmbeddedError, OSError) as exc:
        log(f"no Redis ({exc}); the worker buffers its alert transitions")
        return None, {}
    return server, {"CXSTREAM_REDIS_URL": server.url}


def extra_env(args: argparse.Namespace) -> dict[str, str]:
    out = dict(getattr(args, "redis_env", {}))
    if getattr(args, "partitions", 4) != 4:
        out["CXSTREAM_PARTITIONS"] = str(args.partitions)
    for item in args.worker_env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


class PySpy:
    """``py-spy record`` attached to a pid; collapsed stacks written on stop."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            raise SystemExit("--py-spy needs py-spy: .venv/bin/pip install -e '.[dev]'")
        self.proc = subprocess.Popen(
            [exe, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def median_run(runs: list[dict[str, Any]], key: str = "eps") -> dict[str, Any]:
    """The repetition with the median ``key`` (the lower middle one of an even count), plus every value."""
    ordered = sorted(runs, key=lambda r: r[key] if r.get(key) is not None else float("inf"))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["repetitions"] = [r.get(key) for r in runs]
    return chosen


def repeat(args: argparse.Namespace, what: str, fn: Any, key: str = "eps") -> dict[str, Any]:
    runs = []
    for i in range(args.repeat):
        result = fn()
        runs.append(result)
        value = result.get(key)
        log(f"  {what} {i + 1}/{args.repeat}: {fmt(value)}")
    return median_run(runs, key)


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from stream.embedded import TansuBroker

    n = args.events
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "events": n,
        "repeat": args.repeat,
        "machine": common.machine_info(),
        "worker_module": args.worker_module,
        "worker_env": extra_env(args),
    }
    broker = TansuBroker(log_dir=workdir / "tansu").start()
    redis, args.redis_env = start_redis(workdir)
    try:
        log(f"generating {n} events")
        data = common.make_dataset(n)
        topics = TopicSet(f"bench{os.getpid()}x{uuid.uuid4().hex[:6]}")
        asyncio.run(
            common.create_topics(broker.bootstrap, [*topics.inputs, topics.deadletter], args.partitions)
        )
        produce_eps = asyncio.run(common.produce_all(broker.bootstrap, data.records, topics))
        expected = profile_pipeline.expected_outcomes(data.records, partitions=args.partitions)
        results["data"] = {
            "topics": topics.inputs,
            "partitions": args.partitions,
            "by_topic": data.counts,
            "malformed": expected["dead_letters"],
            "duplicate_ratio": common.DUPLICATE_RATIO,
            "event_time_span_s": round((data.last_ms - data.first_ms) / 1000),
            "mean_value_bytes": round(sum(len(v) for _, _, v in data.records) / n, 1),
            "prefill_produce_eps": round(produce_eps),
            "expected": expected,
        }
        log(
            f"pre-filled {n} events at {produce_eps:,.0f}/s; (1) raw aiokafka over {args.raw_events:,} events"
        )
        results["raw"] = repeat(
            args, "raw", lambda: measure.measure_raw(broker.bootstrap, topics, n, min_events=args.raw_events)
        )

        baseline_n = min(n, args.baseline_events)
        if not args.skip_naive:
            log(f"(2) naive Faust agent, table update per event, {baseline_n:,} events")
            results["naive_faust"] = repeat(
                args,
                "naive Faust",
                lambda: measure.measure_naive_faust(
                    broker.url,
                    topics,
                    baseline_n,
                    workdir,
                    interval=args.poll_interval,
                    partitions=args.partitions,
                ),
            )
        if not args.skip_quix:
            log(f"(3) Quix Streams application, same KPI job, {baseline_n:,} events")
            results["quix"] = repeat(
                args,
                "Quix Streams",
                lambda: measure.measure_quix(
                    broker.bootstrap, topics, baseline_n, workdir, interval=args.poll_interval
                ),
            )

        if args.scaling:
            # Before the latency phase, which appends live traffic to these topics.
            results["scaling"] = run_scaling(args, broker, topics, n, workdir, expected)

        log(f"(4) cxstream worker, full pipeline, {n:,} events, a fresh consumer group each time")
        worker = None
        runs = []
        try:
            for i in range(args.repeat):
                if worker is not None:
                    worker.stop()
                worker, run = run_pipeline(
                    args, broker, topics, n, expected, workdir, last=i == args.repeat - 1
                )
                runs.append(run)
                log(
                    f"  pipeline {i + 1}/{args.repeat}: {run['eps']:,.0f} events/s, "
                    f"exact {run.get('exact')}, {fmt(run.get('rss_per_contact_bytes'))} B RSS per contact"
                )
            results["pipeline"] = median_run(runs)
            results["rss_per_contact"] = median_run(runs, "rss_per_contact_bytes")
            assert worker is not None
            if not args.skip_idle:
                log("(5) idle worker: 100 events/s for 30 s")
                results["idle"] = measure.measure_idle(broker.bootstrap, topics, worker, workdir)
                log(f"  idle CPU share {results['idle']['cpu_share']}")
            if not args.skip_latency:
                rate = args.latency_rate or results["pipeline"]["eps"] / 2
                log(f"(6) latency at {rate:,.0f} events/s, {args.repeat} x {args.latency_samples} markers")
                spy = PySpy(worker.pid, workdir / "worker-live.pyspy.txt") if args.py_spy else None
                try:
                    results["latency"] = repeat(
                        args,
                        "latency p99 (s)",
                        lambda: measure.measure_latency(
                            broker.bootstrap,
                            topics,
                            worker,
                            runs[-1]["app_id"],
                            rate,
                            workdir,
                            samples=args.latency_samples,
                        ),
                        key="p99_s",
                    )
                finally:
                    if spy is not None:
                        spy.stop()
            results["rss"] = {
                "peak_mb": measure._round(common.peak_rss_mb(worker.pid)),
                "current_mb": measure._round(common.rss_mb(worker.pid)),
                "state": measure.metrics_snapshot(worker, topics),
            }
            if not args.skip_latency:
                # The live traffic of the latency phase added contacts to a worker whose
                # buffers were already at their working size: the marginal cost of state.
                last = runs[-1]
                grown = (results["rss"]["state"]["contacts"] or 0) - (last["state"]["contacts"] or 0)
                results["rss_per_contact_live"] = {
                    "contacts_added": grown,
                    "rss_mb_before": last["rss_mb_after_backlog"],
                    "rss_mb_after": results["rss"]["current_mb"],
                    "rss_per_contact_bytes": measure.rss_per_contact(
                        last["rss_mb_after_backlog"], results["rss"]["current_mb"], grown
                    ),
                }
        finally:
            if worker is not None:
                worker.stop()
    finally:
        broker.stop()
        if redis is not None:
            redis.stop()
    if not args.skip_replay:
        log(f"(7) cxstream replay of the same {n:,} events")
        results["replay"] = measure.measure_replay(data.records, workdir, expected, repeat=args.repeat)
        log(
            f"  replay {results['replay']['eps']:,.0f} events/s (start-up excluded), "
            f"exact {results['replay'].get('exact')}"
        )
    results["load_average_after"] = list(os.getloadavg())
    summarize(results)
    return results


def run_pipeline(
    args: argparse.Namespace,
    broker: Any,
    topics: TopicSet,
    n: int,
    expected: dict[str, Any],
    workdir: Path,
    last: bool,
) -> tuple[common.Child, dict[str, Any]]:
    """One worker with a fresh consumer group through the pre-filled backlog; the worker stays up."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    worker = common.start_worker(
        broker.url, topics, app_id, workdir, name=app_id, module=args.worker_module, **extra_env(args)
    )
    worker.wait_http("/healthz")
    rss_start = common.rss_mb(worker.pid)
    spy = PySpy(worker.pid, workdir / "worker.pyspy.txt") if args.py_spy and last else None
    try:
        run = measure.measure_pipeline(
            [worker],
            n,
            bootstrap=broker.bootstrap,
            app_id=app_id,
            topics=topics,
            expected=expected,
            broker_pid=broker.pid,
        )
    except BaseException:
        worker.stop()
        raise
    finally:
        if spy is not None:
            spy.stop()
    run["app_id"] = app_id
    run["rss_mb_at_start"] = measure._round(rss_start)
    run["rss_mb_after_backlog"] = measure._round(common.rss_mb(worker.pid))
    run["peak_rss_mb_after_backlog"] = measure._round(common.peak_rss_mb(worker.pid))
    run["state"] = measure.metrics_snapshot(worker, topics)
    run["rss_per_contact_bytes"] = measure.rss_per_contact(
        rss_start, run["rss_mb_after_backlog"], run["state"]["contacts"]
    )
    run["scrape"] = measure.scrape_seconds(worker)
    for client, figures in run["scrape"].items():
        log(
            f"/metrics as {client}: {figures['median_s'] * 1000:.1f} ms median, "
            f"{(figures['cpu_s'] or 0) * 1000:.1f} ms worker CPU, {figures['bytes']} B {figures['encoding']} "
            f"{figures['content_type']}"
        )
    return worker, run


def run_scaling(
    args: argparse.Namespace, broker: Any, topics: TopicSet, n: int, workdir: Path, expected: dict
) -> dict:
    """1 vs 2 workers in one consumer group over the same pre-filled topics."""
    out: dict[str, Any] = {}
    for count in (1, 2):
        for _attempt in range(2):
            app_id = f"scale{count}-{uuid.uuid4().hex[:8]}"
            log(f"scaling: {count} worker(s), group {app_id}")
            workers = measure.start_workers(
                broker.url, topics, app_id, workdir, count, args.worker_module, **extra_env(args)
            )
            try:
                result = measure.measure_pipeline(
                    workers,
                    n,
                    bootstrap=broker.bootstrap,
                    app_id=app_id,
                    topics=topics,
                    expected=expected,
                    broker_pid=broker.pid,
                    what=f"{count} workers",
                )
            finally:
                for w in workers:
                    w.stop()
            out[f"workers_{count}"] = result
            log(f"  {count} worker(s): {result['eps']:,.0f} events/s, partitions {result['partitions']}")
            if not result["rebalanced_during_run"]:
                break
    one, two = out["workers_1"]["eps"], out["workers_2"]["eps"]
    out["speedup"] = round(two / one, 3) if one else None
    return out


def summarize(results: dict[str, Any]) -> None:
    """The headline keys of latest.json and every target with PASS/FAIL."""

    def eps(name: str) -> float | None:
        value = results.get(name, {}).get("eps")
        return round(value) if value else None

    pipeline, raw, naive, quix = eps("pipeline"), eps("raw"), eps("naive_faust"), eps("quix")
    latency = results.get("latency", {})
    results["pipeline_eps"] = pipeline
    results["raw_eps"] = raw
    results["naive_faust_eps"] = naive
    results["quix_eps"] = quix
    results["replay_eps"] = eps("replay")
    results["latency_p50_s"] = latency.get("p50_s")
    results["latency_p99_s"] = latency.get("p99_s")
    results["latency_rate_reached"] = latency.get("rate_reached")
    # Headline: the marginal RSS per contact while live traffic grows the state (fixed
    # buffers excluded); the after-backlog figure, which includes them, is reported beside it.
    live = results.get("rss_per_contact_live", {}).get("rss_per_contact_bytes")
    backlog = results.get("rss_per_contact", {}).get("rss_per_contact_bytes")
    results["rss_per_contact_bytes"] = live if live is not None else backlog
    results["rss_per_contact_after_backlog_bytes"] = backlog
    results["idle_cpu_share"] = results.get("idle", {}).get("cpu_share")
    results["rss_mb"] = results.get("rss", {}).get("peak_mb")

    def ratio(a: float | None, b: float | None, digits: int) -> float | None:
        return round(a / b, digits) if a and b else None

    results["ratios"] = {
        "pipeline_over_raw": ratio(pipeline, raw, 4),
        "pipeline_over_naive_faust": ratio(pipeline, naive, 2),
        "pipeline_over_quix": ratio(pipeline, quix, 2),
    }
    targets: dict[str, Any] = {}
    for name, (where, op, goal, meaning) in TARGETS.items():
        value = results["ratios"][name] if where == "ratios" else results.get(name)
        met = None if value is None else {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op]
        if name == "latency_p99_s" and met and not results["latency_rate_reached"]:
            met = False  # not measured at the rate the target is defined at
        targets[name] = {"target": f"{op} {goal:g}", "value": value, "met": met, "meaning": meaning}
    scaling = results.get("scaling")
    if scaling:
        targets["scaling_speedup"] = {
            "target": ">= 1.7",
            "value": scaling.get("speedup"),
            "met": scaling.get("speedup") is not None and scaling["speedup"] >= 1.7,
            "meaning": "2 workers / 1 worker in one group",
        }
    results["targets"] = targets


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def print_table(results: dict[str, Any]) -> None:
    m = results["machine"]
    v = m["versions"]
    print()
    print(
        f"cxstream benchmark, {results['events']:,} events, {results['date']}, median of {results['repeat']}"
    )
    print(
        f"machine: {m['cpu_count']} x {m['cpu_model']}; python {v['python']}, "
        f"faust-streaming {v['faust-streaming']}, aiokafka {v['aiokafka']}, orjson {v['orjson']}; "
        f"load {m['load_average'][0]:.2f} before, {results['load_average_after'][0]:.2f} after"
    )
    rows = [
        ("raw aiokafka + orjson", "raw", "physical limit, one process"),
        ("naive Faust (table += 1)", "naive_faust", "per-event agent + changelog"),
        ("Quix Streams app", "quix", "group_by + tumbling window, changelog"),
        ("cxstream pipeline", "pipeline", "the worker, full pipeline"),
        ("cxstream replay", "replay", "in-process, start-up excluded"),
    ]
    print()
    print(f"{'consumer':28} {'events/s':>10} {'repetitions':>30}  note")
    print("-" * 100)
    for name, key, note in rows:
        part = results.get(key)
        if not part:
            continue
        reps = ", ".join(fmt(r) for r in part.get("repetitions", []) if r is not None)
        print(f"{name:28} {fmt(results.get(key + '_eps')):>10} {reps:>30}  {note}")
    lat = results.get("latency")
    print()
    if lat:
        print(
            f"latency at {fmt(lat['rate_achieved_eps'])} events/s (asked {fmt(lat['rate_target_eps'])}, "
            f"reached: {lat['rate_reached']}): p50 {lat['p50_s']} s, p99 {lat['p99_s']} s "
            f"(p99 of each repetition {lat['repetitions']}; state committed p99 {lat['committed_p99_s']} s)"
        )
    pipeline = results.get("pipeline", {})
    print(
        f"pipeline counts exact (cx_events_total == in-process pipeline): {pipeline.get('exact')}; "
        f"replay exact: {results.get('replay', {}).get('exact')}; worker {results.get('worker_module')}"
    )
    per_contact = results.get("rss_per_contact", {})
    if per_contact:
        print(
            f"RSS {per_contact.get('rss_mb_at_start')} MB at start, "
            f"{per_contact.get('rss_mb_after_backlog')} MB after the backlog, "
            f"{fmt(per_contact.get('state', {}).get('contacts'))} contacts held"
        )
    live = results.get("rss_per_contact_live")
    if live:
        print(
            f"RSS {live['rss_mb_before']} -> {live['rss_mb_after']} MB while live traffic added "
            f"{fmt(live['contacts_added'])} contacts: {fmt(live['rss_per_contact_bytes'])} B per contact "
            f"(after the backlog, buffers included: {fmt(results['rss_per_contact_after_backlog_bytes'])} B)"
        )
    idle = results.get("idle")
    if idle:
        print(f"idle: {idle['cpu_share']:.2%} of a core at {idle['rate_achieved_eps']} events/s")
    scaling = results.get("scaling")
    if scaling:
        print(
            f"scaling, {results['data']['partitions']} partitions: "
            f"1 worker {fmt(scaling['workers_1']['eps'])}/s, "
            f"2 workers {fmt(scaling['workers_2']['eps'])}/s, speedup x{scaling['speedup']}"
        )
    print()
    print("targets:")
    for name, t in results["targets"].items():
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[t["met"]]
        print(f"  {name:28} {t['target']:>10}  measured {fmt(t['value']):>10}  {mark}  ({t['meaning']})")
    print()


# -- soak ------------------------------------------------------------------------------------


def default_soak_rate() -> float:
    try:
        latest = orjson.loads((RESULTS / "latest.json").read_bytes())
        return float(latest["pipeline_eps"]) / 2
    except (OSError, KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return 5000.0


def run_soak(args: argparse.Namespace, workdir: Path, out: Path) -> dict[str, Any]:
    """Steady load against one worker; sample RSS, lag and outcomes every few seconds."""
    from stream.embedded import TansuBroker

    rate = args.rate or default_soak_rate()
    # With production settings the state legitimately grows for a day (24 h windows,
    # 2 d contact TTL, 7 d repeat horizon), so a 30-minute run could not tell a leak
    # from state. Shorter windows and TTLs bound the state within ~16 minutes; RSS must
    # be flat after that, and anything growing then is a leak.
    env = {
        "CXSTREAM_WINDOWS": "5m,10m",
        "CXSTREAM_CONTACT_TTL": "10m",
        "CXSTREAM_DEDUP_HORIZON": "5m",
        "CXSTREAM_REPEAT_HORIZON": "5m",
        **extra_env(args),
    }
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": args.soak,
        "rate_eps": round(rate, 1),
        "worker_env": env,
        "worker_module": args.worker_module,
        "machine": common.machine_info(),
        "samples": [],
    }
    broker = TansuBroker(log_dir=workdir / "tansu").start()
    redis, args.redis_env = start_redis(workdir)
    env.update(args.redis_env)
    try:
        topics = TopicSet(f"soak{os.getpid()}x{uuid.uuid4().hex[:6]}")
        asyncio.run(common.create_topics(broker.bootstrap, [*topics.inputs, topics.deadletter], 4))
        worker = common.start_worker(
            broker.url,
            topics,
            f"soak-{uuid.uuid4().hex[:8]}",
            workdir,
            "soak",
            module=args.worker_module,
            **env,
        )
        load = None
        try:
            worker.wait_http("/healthz")
            deadline = time.monotonic() + 90
            while len(measure.healthz_partitions(worker)) < 4 and time.monotonic() < deadline:
                time.sleep(0.5)
            log(f"soak: {args.soak:.0f}s at {rate:,.0f} events/s, sample every {args.sample_every:.0f}s")
            load = measure.LoadGenerator(broker.bootstrap, topics, rate, workdir, "soak-load").start()
            started = time.monotonic()
            next_sample = started
            while True:
                now = time.monotonic()
                if now >= next_sample:
                    snap = measure.metrics_snapshot(worker, topics)
                    produced = load.stats().get("sent", 0)
                    done = sum(snap["outcomes"].values())
                    sample = {
                        "t_s": round(now - started, 1),
                        "rss_mb": measure._round(common.rss_mb(worker.pid)),
                        "peak_rss_mb": measure._round(common.peak_rss_mb(worker.pid)),
                        "produced": produced,
                        "processed": done,
                        "lag": produced - done,
                        "rejected": snap["outcomes"].get("rejected", 0),
                        "duplicate": snap["outcomes"].get("duplicate", 0),
                        "late": snap["outcomes"].get("late", 0),
                        "contacts": snap["contacts"],
                        "dedup_ids": snap["dedup_ids"],
                        "buckets": snap["buckets"],
                        "customers": snap["customers"],
                        "worker_cpu_s": measure._round(common.cpu_seconds(worker.pid), 2),
                        # tansu keeps every record in memory (no retention): its growth
                        # and CPU explain lag that the worker's own CPU does not.
                        "broker_rss_mb": measure._round(common.rss_mb(broker.pid)) if broker.pid else None,
                        "broker_cpu_s": measure._round(common.cpu_seconds(broker.pid), 2)
                        if broker.pid
                        else None,
                        "load_1m": round(os.getloadavg()[0], 2),
                    }
                    results["samples"].append(sample)
                    log(
                        f"t={sample['t_s']:>7}s rss {sample['rss_mb']} MB lag {sample['lag']} "
                        f"contacts {sample['contacts']} customers {sample['customers']} "
                        f"dedup {sample['dedup_ids']} broker rss {sample['broker_rss_mb']} MB"
                    )
                    _write(out, results)
                    next_sample += args.sample_every
                    if now - started >= args.soak:
                        break
                if not worker.alive():
                    raise RuntimeError(f"worker died during the soak:\n{worker.log_tail()}")
                time.sleep(min(1.0, max(0.0, next_sample - time.monotonic())))
        finally:
            if load is not None:
                results["generator"] = load.stop()
            worker.stop()
    finally:
        broker.stop()
        if redis is not None:
            redis.stop()
    results["summary"] = soak_summary(results["samples"])
    return results


def soak_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS growth over the last third (after the TTLs have filled the state) and lag bounds."""
    if len(samples) < 4:
        return {}
    half = samples[2 * len(samples) // 3 :]
    t = [s["t_s"] for s in half]
    r = [s["rss_mb"] or 0.0 for s in half]
    mean_t, mean_r = sum(t) / len(t), sum(r) / len(r)
    var = sum((x - mean_t) ** 2 for x in t)
    slope = sum((x - mean_t) * (y - mean_r) for x, y in zip(t, r, strict=True)) / var if var else 0.0
    return {
        "rss_mb_first": samples[0]["rss_mb"],
        "rss_mb_last_third_start": half[0]["rss_mb"],
        "rss_mb_last": samples[-1]["rss_mb"],
        "rss_mb_max": max(s["rss_mb"] or 0 for s in samples),
        "rss_slope_last_third_mb_per_hour": round(slope * 3600, 1),
        "contacts_mid": half[0]["contacts"],
        "contacts_last": samples[-1]["contacts"],
        "dedup_ids_mid": half[0]["dedup_ids"],
        "dedup_ids_last": samples[-1]["dedup_ids"],
        "customers_mid": half[0].get("customers"),
        "customers_last": samples[-1].get("customers"),
        "lag_max": max(s["lag"] for s in samples),
        "lag_last": samples[-1]["lag"],
        "rejected_last": samples[-1]["rejected"],
    }


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cxstream-bench-"))
    log(f"work directory {workdir}; load average {os.getloadavg()[0]:.2f}")
    ok = False
    try:
        if args.soak:
            out = args.out or RESULTS / "soak.json"
            results = run_soak(args, workdir, out)
            _write(out, results)
            print(orjson.dumps(results["summary"], option=orjson.OPT_INDENT_2).decode())
        else:
            out = args.out or RESULTS / "latest.json"
            results = run_benchmark(args, workdir)
            _write(out, results)
            print_table(results)
        log(f"wrote {out}")
        ok = True
    finally:
        if ok and not args.keep and not args.py_spy:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
