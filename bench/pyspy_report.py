"""Summarise a ``py-spy record -f raw`` profile (collapsed stacks): where the worker spends time.

``python -m bench.pyspy_report FILE [--top 30] [--filter TEXT]``

Prints, as a share of all samples, the functions with the most *self* time (the
frame on top of the stack) and the most *inclusive* time (anywhere on the stack,
counted once per sample), plus a grouping by package (faust, mode, aiokafka,
cxstream, asyncio, ...) of the self time. py-spy's idle samples are excluded.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_GROUPS = (
    ("stream/", "cxstream"),
    ("faust/", "faust"),
    ("mode/", "mode"),
    ("aiokafka/", "aiokafka"),
    ("kafka/", "kafka-python"),
    ("asyncio/", "asyncio"),
    ("prometheus_client/", "prometheus_client"),
    ("aiohttp/", "aiohttp"),
    ("orjson", "orjson"),
    ("logging/", "logging"),
)


def group_of(frame: str) -> str:
    for needle, name in _GROUPS:
        if needle in frame:
            return name
    return "other"


_LOC = re.compile(r" \(([^)]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)`` (lines vary between samples)."""
    match = _LOC.search(frame)
    if not match:
        return frame
    path = match.group(1)
    parts = path.split("/")
    where = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{frame[: match.start()]} ({where})"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # py-spy prefixes the thread / process name; drop frames without a location.
        frames = [f for f in frames if "(" in f]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def report(path: Path, top: int = 30, needle: str | None = None) -> str:
    stacks = load(path)
    total = sum(c for _, c in stacks)
    idle_names = ("select (selectors.py", "_run_once (asyncio/base_events.py")
    busy = [(f, c) for f, c in stacks if not f[-1].startswith(idle_names[0])]
    busy_total = sum(c for _, c in busy)
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for frames, count in busy:
        names = [short(f) for f in frames]
        self_time[names[-1]] += count
        groups[group_of(frames[-1])] += count
        for name in set(names):
            inclusive[name] += count
    lines = [
        f"{path}: {total} samples, {busy_total} busy ({100 * busy_total / max(1, total):.1f} %); "
        "shares below are of busy samples"
    ]
    lines.append("\nself time by package:")
    for name, count in groups.most_common():
        lines.append(f"  {100 * count / busy_total:5.1f} %  {name}")
    lines.append(f"\ntop {top} functions by self time:")
    for name, count in self_time.most_common(top):
        if needle is None or needle in name:
            lines.append(f"  {100 * count / busy_total:5.1f} %  {name}")
    lines.append(f"\ntop {top} functions by inclusive time:")
    for name, count in inclusive.most_common(top):
        if needle is None or needle in name:
            lines.append(f"  {100 * count / busy_total:5.1f} %  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pyspy_report", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--filter", default=None)
    args = parser.parse_args()
    print(report(args.file, args.top, args.filter))


if __name__ == "__main__":
    main()
