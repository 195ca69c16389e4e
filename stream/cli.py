"""The ``cxstream`` command line: worker, generate, demo and friends.

Settings come from ``CXSTREAM_*`` environment variables (``docs/settings.md``);
the few flags here override them for one run. Bad settings exit with status 2
and a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence

from stream import __version__
from stream.config.logs import setup_logging
from stream.config.settings import Settings, SettingsError, load_settings

log = logging.getLogger("cxstream")


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    overrides = {k: v for k, v in extra.items() if v is not None}
    for name in ("broker", "web_port", "log_level"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="Kafka bootstrap, e.g. kafka://127.0.0.1:9092 (CXSTREAM_BROKER)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="(CXSTREAM_LOG_LEVEL)"
    )


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the stream worker."""
    from stream.runtime.worker import run_worker

    settings = _settings(args)
    run_worker(settings)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Produce synthetic contact-center traffic, or write it to a JSONL file."""
    from stream import generator
    from stream.config.security import kafka_client_kwargs

    settings = _settings(args)
    profile = generator.TrafficProfile.demo(queues=True) if args.demo_profile else None
    if args.queues and profile is None:
        from stream.generator.queueing import QueueingProfile

        profile = generator.TrafficProfile(queueing=QueueingProfile())
    if args.out:
        count = args.count or 10_000
        # Simulated time runs at the profile's contact rate; start far enough back that
        # the recording ends about now (events in the future would be rejected).
        chosen = profile or generator.TrafficProfile()
        per_second = chosen.contacts_per_second * chosen.expected_rates().get("events_per_contact", 2.8)
        start_ms = int((time.time() - 1.25 * count / per_second) * 1000)
        written = generator.write_jsonl(
            args.out,
            count,
            profile,
            seed=args.seed,
            start_ms=start_ms,
            duplicate_ratio=args.duplicates,
            bad_ratio=args.bad,
            interactions_topic=settings.topic_interactions,
            surveys_topic=settings.topic_surveys,
            agents_topic=settings.topic_agents,
        )
        print(f"wrote {written} events to {args.out}")
        return 0

    def progress(stats: generator.GeneratorStats) -> None:
        log.info(
            "sent %d events (%.0f/s), %d send errors",
            sum(stats.by_topic.values()),
            stats.events_per_second,
            stats.send_errors,
        )

    stats = asyncio.run(
        generator.produce(
            settings.bootstrap_servers,
            interactions_topic=settings.topic_interactions,
            surveys_topic=settings.topic_surveys,
            agents_topic=settings.topic_agents,
            rate=args.rate,
            duration=args.duration,
            count=args.count,
            profile=profile,
            seed=args.seed,
            duplicate_ratio=args.duplicates,
            bad_ratio=args.bad,
            progress=progress,
            progress_interval=5.0,
            producer_options=kafka_client_kwargs(settings),
        )
    )
    print(f"done: {dict(stats.by_topic)} in {stats.elapsed_s:.1f}s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start broker, Redis, worker and generator locally and show live KPIs."""
    from stream.tools.demo import run_demo

    return run_demo(rate=args.rate, web_port=args.web_port, duration=args.duration)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings (secrets masked) after validation (also of the queues file,
    the platform mapping files and the bridge's sources)."""
    from stream.config.queues import load_queue_targets
    from stream.ingest.bridge import parse_sources
    from stream.platforms.registry import configured_platforms

    settings = _settings(args)
    load_queue_targets(settings)
    platforms = configured_platforms(settings)
    if settings.bridge_sources:
        parse_sources(settings, platforms)
    for name, value in settings.model_dump().items():
        print(f"CXSTREAM_{name.upper()}={value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="cxstream",
        description="Real-time contact-center CX KPIs (CSAT, NPS, CES, repeat contacts, "
        "transfers) from Kafka to Prometheus and Redis. Settings: CXSTREAM_* env vars.",
    )
    parser.add_argument("--version", action="version", version=f"cxstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = sub.add_parser("worker", help="run the stream worker (Faust) with /metrics")
    _add_common(worker)
    worker.add_argument("--web-port", type=int, help="port for /metrics (CXSTREAM_WEB_PORT)")
    worker.set_defaults(func=cmd_worker)

    gen = sub.add_parser("generate", help="produce synthetic contact-center traffic")
    _add_common(gen)
    gen.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    gen.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    gen.add_argument("--count", type=int, help="number of events to send (or write with --out)")
    gen.add_argument("--seed", type=int, help="random seed for reproducible traffic")
    gen.add_argument("--duplicates", type=float, default=0.0, help="share of duplicate events (0..1)")
    gen.add_argument("--bad", type=float, default=0.0, help="share of malformed messages (0..1)")
    gen.add_argument(
        "--demo-profile", action="store_true", help="short handle times, queues and agents: KPIs in a minute"
    )
    gen.add_argument(
        "--queues",
        action="store_true",
        help="simulate queues and staffed agents (contact_queued/answered/abandoned, agent_state); "
        "on with --demo-profile",
    )
    gen.add_argument("--out", help="write simulated-time events to this JSONL file instead")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="everything local: broker, Redis, worker, generator, live KPI summary")
    demo.add_argument("--rate", type=float, default=100.0, help="generator events/s (default 100)")
    demo.add_argument("--web-port", type=int, default=6066, help="worker /metrics port (default 6066)")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.set_defaults(func=cmd_demo)

    for name, module, help_text in (
        ("replay", "stream.tools.replay", "feed a recorded JSONL file through the pipeline (event time)"),
        ("alerts", "stream.alerting.cli", "list active alerts; ack an alert; snooze a rule"),
        ("wallboard", "stream.wallboard.server", "serve the live wallboard page"),
        (
            "translate",
            "stream.tools.translate",
            "map a platform's payloads (Amazon Connect, Twilio, ...) to events",
        ),
        (
            "ingest",
            "stream.ingest.server",
            "HTTP server for platform webhooks: POST /ingest/{format} -> Kafka",
        ),
        (
            "bridge",
            "stream.ingest.bridge",
            "translate platform payloads already on Kafka onto the input topics",
        ),
        (
            "check-prometheus",
            "stream.tools.check_prometheus",
            "run the shipped rules' and dashboards' queries against a Prometheus",
        ),
    ):
        command = importlib.import_module(module)
        parser_ = sub.add_parser(name, help=help_text, description=command.__doc__)
        command.add_arguments(parser_)
        parser_.set_defaults(func=command.run)

    config = sub.add_parser("config", help="validate and print the effective settings")
    _add_common(config)
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cxstream`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", None) or "info")
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"cxstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`cxstream replay f.jsonl | head`): not an error. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
