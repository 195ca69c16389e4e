"""Steady background load for the latency and soak runs, in its own process.

``python -m bench.loadgen --bootstrap HOST:PORT --prefix P --rate R --duration S --stats FILE``
produces live contact-centre traffic (wall-clock timestamps, 1 % duplicates,
0.2 % malformed) with :func:`stream.generator.produce` and rewrites ``FILE`` with
its running totals every second. A separate process keeps the generator's CPU
off the driver's event loop, which times the latency markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import orjson

from bench.common import BAD_RATIO, DUPLICATE_RATIO, TopicSet, bench_profile
from stream.generator import GeneratorStats, produce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    topics = TopicSet(args.prefix)

    def progress(stats: GeneratorStats) -> None:
        tmp = args.stats.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({**stats.as_dict(), "sent": stats.sent, "dropped": stats.dropped}))
        os.replace(tmp, args.stats)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await produce(
            args.bootstrap,
            interactions_topic=topics.interactions,
            surveys_topic=topics.surveys,
            rate=args.rate,
            duration=args.duration,
            profile=bench_profile(),
            seed=args.seed,
            duplicate_ratio=DUPLICATE_RATIO,
            bad_ratio=BAD_RATIO,
            progress=progress,
            stop_event=stop,
            progress_interval=1.0,
        )

    asyncio.run(run())


if __name__ == "__main__":
    main()
