"""The whole contact center from per-partition views: what alerts, the wallboard and the CLI read.

A worker owns some partitions, and which ones changes with every rebalance. To see the
whole contact center whatever the number of workers, each worker publishes one *view*
per partition it owns -- that partition's window totals -- to the Redis hash
``<p>:kpi:partitions`` (field = partition number), tagged with the *position* it
reflects: how many input records the partition's state has applied (the sum over its
input topics of the next offset). Positions only grow for a partition, whichever worker
holds it, because a new owner resumes from the changelog of the old one.

Readers sum exactly one view per partition: the newest by ``(position, at)``. So

* every partition is counted exactly once, also during a rebalance: the old owner's last
  view stands until the new owner has recovered and writes a view at least as new;
* after a crash the survivor's recovered state may briefly be behind the dead worker's
  last view (its last batches were not committed); the newer view stands until the
  survivor has re-processed that input;
* a view records its window totals as of ``at``; a reader that needs fresher figures for
  the partitions it owns itself passes its own views in (:func:`merge`).

Pure: no Redis here. Encoding is JSON with counter and label names, so workers of other
versions (more or fewer counters, other label sets) still add up correctly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.domain import kpi
from stream.domain.kpi import Counts
from stream.domain.state import TRANSITION_MARK, UNKNOWN, PartitionState, dim_key, split_dim_key
from stream.query.live import Waiting, WaitingNow, add_oldest, add_waiting_now, agents_by, waiting_by_dim
from stream.query.windows import WindowTotals

VIEW_VERSION = 1


class ViewError(ValueError):
    """A stored view that cannot be read."""


@dataclass(frozen=True, slots=True)
class PartitionView:
    """One partition's window totals as of ``at``, and how much input they reflect."""

    partition: int
    #: Partitions of the input topics, as the writing worker is configured.
    partitions: int
    worker: str
    #: Wall clock (epoch ms) when the totals were computed.
    at: int
    #: Input records applied (sum over the partition's input topics of the next offset).
    position: int
    #: window label -> dimension key (queue, channel[, team][, agent]) -> counter vector.
    windows: dict[str, dict[str, Counts]] = field(default_factory=dict)
    #: Live, as of ``ref``: "queue\x1fchannel" -> [contacts waiting, oldest queued at (ms)].
    waiting: Waiting = field(default_factory=dict)
    #: Live: agents by newest state, "state\x1fteam" -> n and "state\x1fqueue" -> n.
    agents: dict[str, int] = field(default_factory=dict)
    agent_queues: dict[str, int] = field(default_factory=dict)
    #: The reference time (the windows' "now", ms) the view was computed at: wall clock, or
    #: the newest event time under CXSTREAM_CLOCK=event. 0: unknown (an older writer).
    ref: int = 0

    def order(self) -> tuple[int, int]:
        """Views of one partition compare by this: more input applied, then computed later."""
        return self.position, self.at

    def ages_from(self, now_ms: int) -> int:
        """What to add to ``ref`` for "now" at wall time ``now_ms`` (the view's age)."""
        return (self.ref or self.at) + max(0, now_ms - self.at)


def position_of(state: PartitionState) -> int:
    """How much input ``state`` reflects: the sum of its input topics' next offsets."""
    return sum(offset + 1 for offset in state.offsets.values())


def view_of(
    state: PartitionState,
    totals: WindowTotals,
    *,
    partitions: int,
    worker: str,
    at: int,
    ref: int | None = None,
) -> PartitionView:
    """The view of one partition from its window totals (``WindowReader.read_partition``) and
    its live queue state; ``ref``: the reference time the totals end at (default ``at``)."""
    windows = {
        window: {dim: counts for dim, counts in per_dim.items() if not dim.startswith(TRANSITION_MARK)}
        for window, per_dim in totals.items()
    }
    by_team, by_queue = agents_by([state])
    return PartitionView(
        state.partition,
        partitions,
        worker,
        at,
        position_of(state),
        windows,
        waiting_by_dim([state]),
        by_team,
        by_queue,
        at if ref is None else ref,
    )


# -- encoding -------------------------------------------------------------------------------------
def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def encode_view(view: PartitionView, label_names: Sequence[str]) -> str:
    """JSON for the ``<p>:kpi:partitions`` field (docs/redis.md)."""
    windows = {
        window: [
            [split_dim_key(dim), [int(c) if float(c).is_integer() else c for c in counts]]
            for dim, counts in sorted(per_dim.items())
        ]
        for window, per_dim in view.windows.items()
    }
    return orjson.dumps(
        {
            "v": VIEW_VERSION,
            "partition": view.partition,
            "partitions": view.partitions,
            "worker": view.worker,
            "at": view.at,
            "position": view.position,
            "labels": list(label_names),
            "counters": list(kpi.COUNTERS),
            "windows": windows,
            "ref": view.ref,
            "waiting": [
                [*split_dim_key(dim), n, oldest] for dim, (n, oldest) in sorted(view.waiting.items())
            ],
            "agents": [[*split_dim_key(key), n] for key, n in sorted(view.agents.items())],
            "agent_queues": [[*split_dim_key(key), n] for key, n in sorted(view.agent_queues.items())],
        }
    ).decode()


def decode_view(raw: str | bytes, label_names: Sequence[str] = ("queue", "channel")) -> PartitionView:
    """Read a stored view; dimension keys are rebuilt in the order of ``label_names``.

    Counters are mapped by name (unknown ones ignored, missing ones 0); a label the
    writer did not have reads ``unknown``, one the reader does not use is summed over.
    Raises :class:`ViewError` when the view is unreadable.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ViewError(f"unreadable view ({exc})") from None
    if not isinstance(data, dict):
        raise ViewError("view is not an object")
    try:
        partition, partitions = int(data["partition"]), int(data["partitions"])
        at, position = int(data["at"]), int(data["position"])
        labels = [str(name) for name in data["labels"]]
        counters = data["counters"]
        raw_windows = data["windows"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ViewError(f"view lacks {exc}") from None
    if not isinstance(raw_windows, dict) or not isinstance(counters, list):
        raise ViewError("view has no windows")
    index = {name: i for i, name in enumerate(kpi.COUNTERS)}
    positions = [index.get(name) if isinstance(name, str) else None for name in counters]
    wanted = [labels.index(name) if name in labels else None for name in label_names]
    windows: dict[str, dict[str, Counts]] = {}
    for window, rows in raw_windows.items():
        if not isinstance(rows, list):
            continue
        per_dim: dict[str, Counts] = {}
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], list)):
                continue
            values, stored = row
            if not isinstance(stored, list):
                continue
            dim = dim_key(*(str(values[i]) if i is not None and i < len(values) else UNKNOWN for i in wanted))
            counts = per_dim.get(dim)
            if counts is None:
                counts = per_dim[dim] = kpi.zero_counts()
            for pos, value in zip(positions, stored, strict=False):
                if pos is not None:
                    counts[pos] += _number(value)
        windows[str(window)] = per_dim
    waiting: Waiting = {}
    for row in _rows(data.get("waiting"), 4):
        add_oldest(waiting, dim_key(str(row[0]), str(row[1])), int(_number(row[2])), int(_number(row[3])))
    agents: dict[str, int] = {}
    agent_queues: dict[str, int] = {}
    for name, into in (("agents", agents), ("agent_queues", agent_queues)):
        for row in _rows(data.get(name), 3):
            key = dim_key(str(row[0]), str(row[1]))
            into[key] = into.get(key, 0) + int(_number(row[2]))
    ref = int(_number(data.get("ref")))
    return PartitionView(
        partition,
        partitions,
        str(data.get("worker", "")),
        at,
        position,
        windows,
        waiting,
        agents,
        agent_queues,
        ref,
    )


def _rows(value: object, width: int) -> list[list[Any]]:
    """The well-formed rows of a list-of-lists field (an older view has none)."""
    if not isinstance(value, list):
        return []
    return [row for row in value if isinstance(row, list) and len(row) == width]


# -- the global view ------------------------------------------------------------------------------
@dataclass
class GlobalView:
    """One view per partition: the whole contact center."""

    #: Partitions expected (the input topics' partition count).
    partitions: int
    views: dict[int, PartitionView] = field(default_factory=dict)

    def missing(self) -> list[int]:
        """Partitions without any view yet: their counts are unknown."""
        return [p for p in range(self.partitions) if p not in self.views]

    def totals(self) -> WindowTotals:
        """Window totals summed over one view per partition."""
        totals: WindowTotals = {}
        for view in self.views.values():
            for window, per_dim in view.windows.items():
                into = totals.setdefault(window, {})
                for dim, counts in per_dim.items():
                    total = into.get(dim)
                    if total is None:
                        into[dim] = list(counts)
                    else:
                        kpi.add_into(total, counts)
        return totals

    def waiting_now(self, now_ms: int) -> dict[str, WaitingNow]:
        """ "queue\x1fchannel" -> (contacts waiting, longest wait in seconds, None if nobody
        waits) over every partition, aged to wall time ``now_ms``."""
        out: dict[str, WaitingNow] = {}
        for view in self.views.values():
            now = view.ages_from(now_ms)
            for dim, (count, oldest) in view.waiting.items():
                add_waiting_now(out, dim, count, max(0.0, (now - oldest) / 1000) if count else None)
        return out

    def agents_now(self) -> tuple[dict[str, int], dict[str, int]]:
        """Agents by newest state over every partition: by "state\x1fteam", by "state\x1fqueue"."""
        by_team: dict[str, int] = {}
        by_queue: dict[str, int] = {}
        for view in self.views.values():
            for source, into in ((view.agents, by_team), (view.agent_queues, by_queue)):
                for key, n in source.items():
                    into[key] = into.get(key, 0) + n
        return by_team, by_queue

    def stale(self, now_ms: int, older_than_ms: int) -> list[int]:
        """Partitions whose view was computed more than ``older_than_ms`` ago."""
        return sorted(p for p, v in self.views.items() if now_ms - v.at > older_than_ms)

    def by_worker(self) -> dict[str, list[PartitionView]]:
        """Views grouped by the worker that wrote them."""
        workers: dict[str, list[PartitionView]] = {}
        for partition in sorted(self.views):
            view = self.views[partition]
            workers.setdefault(view.worker, []).append(view)
        return workers

    def describe(self, now_ms: int) -> dict[str, Any]:
        """Coverage for people: partitions seen, missing, and each view's writer and age."""
        return {
            "partitions": self.partitions,
            "missing": self.missing(),
            "views": [
                {
                    "partition": v.partition,
                    "worker": v.worker,
                    "position": v.position,
                    "age_s": round((now_ms - v.at) / 1000, 1),
                }
                for _, v in sorted(self.views.items())
            ],
        }


def merge(partitions: int | None, *sources: Iterable[PartitionView]) -> GlobalView:
    """The newest view of every partition among ``sources`` (Redis views, a worker's own).

    ``partitions``: how many the input topics have; ``None`` takes the largest count the
    views were written with (readers without the workers' settings, e.g. a wallboard).
    Views of partitions beyond that count (left from an older configuration) are ignored.
    """
    newest: dict[int, PartitionView] = {}
    for source in sources:
        for view in source:
            held = newest.get(view.partition)
            if held is None or view.order() > held.order():
                newest[view.partition] = view
    if partitions is None:
        partitions = max((v.partitions for v in newest.values()), default=0)
    return GlobalView(partitions, {p: v for p, v in newest.items() if p < partitions})


def decode_views(
    raw: Mapping[str, str], label_names: Sequence[str] = ("queue", "channel")
) -> tuple[list[PartitionView], list[str]]:
    """Decode every field of ``<p>:kpi:partitions``; returns the views and unreadable fields."""
    views: list[PartitionView] = []
    unreadable: list[str] = []
    for field_name, value in raw.items():
        try:
            views.append(decode_view(value, label_names))
        except ViewError:
            unreadable.append(field_name)
    return views, unreadable
