"""Write wallboard test data into Redis exactly as docs/redis.md lays it out.

Used by the wallboard integration and end-to-end tests: partition views in
``<prefix>:kpi:partitions`` (one JSON field per partition) and firing alerts
(``<prefix>:alerts:active`` + ``<prefix>:alerts:log`` + a ``PUBLISH`` on ``<prefix>:alerts``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from stream.domain import kpi

WINDOWS = ("15m", "1h", "24h")
WINDOW_SCALE = {"15m": 1, "1h": 4, "24h": 70}


def vector(**named: float) -> list[float]:
    """A counter vector (COUNTERS order) from counter names."""
    counts = kpi.zero_counts()
    for name, value in named.items():
        counts[kpi.COUNTERS.index(name)] = value
    return counts


def partition_view(
    partition: int,
    partitions: int,
    worker: str,
    at_ms: int,
    windows: Mapping[str, Sequence[tuple[str, str, Sequence[float]]]],
    position: int = 1,
    waiting: Sequence[tuple[str, str, int, int]] = (),
    agents: Sequence[tuple[str, str, int]] = (),
    agent_queues: Sequence[tuple[str, str, int]] = (),
) -> str:
    """The JSON of one ``<prefix>:kpi:partitions`` field: rows are ``(queue, channel, counts)``;
    ``waiting`` rows ``(queue, channel, contacts, oldest queued ms)``, ``agents`` rows
    ``(state, team, n)``, ``agent_queues`` rows ``(state, queue, n)``."""
    return orjson.dumps(
        {
            "v": 1,
            "partition": partition,
            "partitions": partitions,
            "worker": worker,
            "at": at_ms,
            "position": position,
            "labels": ["queue", "channel"],
            "counters": list(kpi.COUNTERS),
            "windows": {
                window: [[[q, ch], [int(c) for c in counts]] for q, ch, counts in rows]
                for window, rows in windows.items()
            },
            "ref": at_ms,
            "waiting": [list(row) for row in waiting],
            "agents": [list(row) for row in agents],
            "agent_queues": [list(row) for row in agent_queues],
        }
    ).decode()


def write_views(client: Any, prefix: str, views: Mapping[int, str]) -> None:
    """HSET partition views the way workers do (views hash plus their positions)."""
    pipe = client.pipeline(transaction=True)
    for partition, text in views.items():
        data = orjson.loads(text)
        pipe.hset(f"{prefix}:kpi:partitions", str(partition), text)
        pipe.hset(f"{prefix}:kpi:positions", str(partition), f"{data['position']}:{data['at']}")
    pipe.execute()


def alert_payload(
    rule: str,
    queue: str | None,
    *,
    metric: str,
    window: str,
    value: float,
    threshold: float,
    severity: str = "page",
    since: int | None = None,
    samples: int = 57,
    summary: str | None = None,
    state: str = "firing",
) -> dict[str, Any]:
    """An alert as the evaluator writes it (docs/redis.md, "Alert id and JSON")."""
    labels = {"queue": queue} if queue else {}
    alert_id = rule + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    now = int(time.time() * 1000)
    return {
        "id": alert_id,
        "rule": rule,
        "state": state,
        "labels": labels,
        "severity": severity,
        "metric": metric,
        "window": window,
        "value": value,
        "threshold": threshold,
        "samples": samples,
        "since": since if since is not None else now,
        "at": now,
        "summary": summary or f"{rule} on {queue or 'all queues'}: {value:.0%} (threshold {threshold:.0%})",
    }


def fire_alert(client: Any, prefix: str, payload: Mapping[str, Any]) -> None:
    """HSET the active alert, log the transition and publish it (like the worker's Lua script)."""
    data = orjson.dumps(dict(payload)).decode()
    client.hset(f"{prefix}:alerts:active", payload["id"], data)
    client.xadd(f"{prefix}:alerts:log", {"alert": data}, maxlen=10_000, approximate=True)
    client.publish(f"{prefix}:alerts", data)


def resolve_alert(client: Any, prefix: str, payload: Mapping[str, Any]) -> None:
    data = orjson.dumps({**payload, "state": "resolved", "at": int(time.time() * 1000)}).decode()
    client.hdel(f"{prefix}:alerts:active", payload["id"])
    client.xadd(f"{prefix}:alerts:log", {"alert": data}, maxlen=10_000, approximate=True)
    client.publish(f"{prefix}:alerts", data)


# -- a believable contact center -------------------------------------------------------------------
#: queue: contacts per 15 min, CSAT top-2, NPS promoters, NPS detractors, CES easy, CES high effort,
#: repeat share, transfer share, channel-switch share, survey response share per metric.
QUEUES: dict[str, tuple[float, ...]] = {
    "billing": (180, 0.79, 0.44, 0.21, 0.63, 0.21, 0.22, 0.12, 0.06, 0.26),
    "general": (95, 0.86, 0.55, 0.12, 0.75, 0.11, 0.14, 0.17, 0.04, 0.24),
    "retention": (44, 0.74, 0.36, 0.30, 0.58, 0.24, 0.19, 0.09, 0.05, 0.20),
    "sales": (120, 0.88, 0.58, 0.10, 0.78, 0.09, 0.10, 0.08, 0.03, 0.22),
    "tech_support": (210, 0.68, 0.31, 0.33, 0.49, 0.33, 0.31, 0.27, 0.11, 0.25),
}
#: partition -> (worker, channel, share of each queue's traffic): two workers, three partitions.
PARTITION_CHANNELS = {
    0: ("worker-a:6066", "voice", 0.55),
    1: ("worker-b:6067", "chat", 0.3),
    2: ("worker-b:6067", "email", 0.15),
}
WORKERS = sorted({worker for worker, _, _ in PARTITION_CHANNELS.values()})
#: queue: answered within the threshold (share of answered), abandoned (share of waits),
#: short abandons (share of abandons), average speed of answer (s), contacts waiting now,
#: longest wait now (s), agents available, agents busy.
OPS: dict[str, tuple[float, ...]] = {
    "billing": (0.86, 0.04, 0.4, 14, 3, 45, 6, 22),
    "general": (0.91, 0.03, 0.5, 9, 1, 12, 4, 11),
    "retention": (0.74, 0.06, 0.3, 24, 2, 70, 1, 6),
    "sales": (0.81, 0.05, 0.5, 17, 4, 75, 3, 14),
    "tech_support": (0.62, 0.12, 0.3, 41, 9, 150, 0, 31),
}


def queue_counts(queue: str, window: str, share: float, drift: float = 0.0) -> list[float]:
    """Counts of one queue's ``share`` of traffic over ``window``; ``drift`` moves the rates."""
    contacts_15m, csat, prom, det, easy, high, repeat, transfer, switch, response = QUEUES[queue]
    scale = WINDOW_SCALE[window]
    contacts = round(contacts_15m * scale * share)
    ended = round(contacts * 0.96)
    responses = max(0, round(ended * response))
    wobble = drift * (0.6 if window == "15m" else 0.25 if window == "1h" else 0.05)
    csat_r = min(1.0, max(0.0, csat + wobble))
    high_r = min(1.0, max(0.0, high - wobble / 2))
    return vector(
        csat_responses=responses,
        csat_satisfied=round(responses * csat_r),
        csat_score_sum=round(responses * (2.2 + 2.6 * csat_r)),
        nps_responses=responses,
        nps_promoters=round(responses * min(1.0, prom + wobble)),
        nps_passives=responses - round(responses * min(1.0, prom + wobble)) - round(responses * det),
        nps_detractors=round(responses * det),
        ces_responses=responses,
        ces_easy=round(responses * min(1.0 - high_r, easy + wobble / 2)),
        ces_high_effort=round(responses * high_r),
        contacts=contacts,
        repeat_checked_contacts=contacts,
        repeat_contacts=round(contacts * max(0.0, repeat - wobble / 3)),
        channel_switches=round(contacts * max(0.0, switch - wobble / 6)),
        contacts_ended=ended,
        transferred_contacts=round(ended * max(0.0, transfer + wobble / 4)),
        **wait_counts(queue, contacts, wobble),
    )


def wait_counts(queue: str, contacts: int, wobble: float) -> dict[str, float]:
    """The wait counters of ``contacts`` waits of ``queue`` (its OPS row, moved by ``wobble``)."""
    within, abandon, short, asa = OPS[queue][:4]
    abandoned = round(contacts * max(0.0, abandon - wobble / 4))
    answered = contacts - abandoned
    return {
        "waits_ended": contacts,
        "answered_contacts": answered,
        "answered_within_threshold": round(answered * min(1.0, max(0.0, within + wobble))),
        "abandoned_contacts": abandoned,
        "short_abandoned_contacts": round(abandoned * short),
        "answer_wait_seconds": round(answered * asa),
    }


def demo_views(at_ms: int, step: int = 0, queues: Sequence[str] = tuple(QUEUES)) -> dict[int, str]:
    """Partition views (JSON) for the demo contact center; ``step`` animates the trends."""
    result = {}
    for partition, (worker, channel, share) in PARTITION_CHANNELS.items():
        windows = {}
        for window in WINDOWS:
            rows = []
            for qi, queue in enumerate(queues):
                drift = 0.06 * math.sin(step / 5.0 + qi * 1.3) + 0.025 * math.sin(step / 1.7 + qi)
                rows.append((queue, channel, queue_counts(queue, window, share, drift)))
            windows[window] = rows
        waiting, agents, agent_queues = [], [], []
        for queue in queues:
            n_waiting, longest, free, busy = OPS[queue][4:]
            if partition == 0:  # voice holds the waits, one team per queue answers them
                waiting.append((queue, channel, int(n_waiting), at_ms - int(longest * 1000)))
                agents += [("available", f"team-{queue}", int(free)), ("busy", f"team-{queue}", int(busy))]
                agent_queues += [("available", queue, int(free)), ("busy", queue, int(busy))]
        result[partition] = partition_view(
            partition,
            len(PARTITION_CHANNELS),
            worker,
            at_ms,
            windows,
            position=step + 1,
            waiting=waiting,
            agents=agents,
            agent_queues=agent_queues,
        )
    return result


def expected_operations(views: Mapping[int, str], window: str) -> dict[str, dict[str, Any]]:
    """Independent re-computation of the queue figures per queue (and ``*``): waiting now,
    longest wait as of the views' time, service level and abandonment (default policy),
    agents free and busy."""
    totals = expected_totals(views, window)
    out: dict[str, dict[str, Any]] = {}
    for queue, c in totals.items():
        get = lambda name, c=c: c[kpi.COUNTERS.index(name)]  # noqa: E731
        offered = get("answered_contacts") + get("abandoned_contacts") - get("short_abandoned_contacts")
        out[queue] = {
            "service_level": get("answered_within_threshold") / offered if offered else None,
            "abandon": (get("abandoned_contacts") - get("short_abandoned_contacts")) / offered
            if offered
            else None,
            "waiting": 0,
            "longest": None,
            "free": 0,
            "busy": 0,
        }
    for text in views.values():
        data = orjson.loads(text)
        for queue, _channel, n, oldest in data["waiting"]:
            for key in (queue, "*"):
                entry = out[key]
                entry["waiting"] += n
                age = (data["at"] - oldest) / 1000
                entry["longest"] = age if entry["longest"] is None else max(entry["longest"], age)
        for state, queue, n in data["agent_queues"]:
            if state in ("available", "busy"):
                out[queue]["free" if state == "available" else "busy"] += n
        for state, _team, n in data["agents"]:
            if state in ("available", "busy"):
                out["*"]["free" if state == "available" else "busy"] += n
    return out


def expected_totals(views: Mapping[int, str], window: str) -> dict[str, list[float]]:
    """Independent re-computation: counts per queue (and ``*``) summed over the views."""
    totals: dict[str, list[float]] = {"*": kpi.zero_counts()}
    for text in views.values():
        for (queue, _channel), counts in orjson.loads(text)["windows"][window]:
            kpi.add_into(totals.setdefault(queue, kpi.zero_counts()), counts)
            kpi.add_into(totals["*"], counts)
    return totals


def js_round(x: float) -> int:
    """JavaScript's Math.round (halves round up), to predict the page's text."""
    return math.floor(x + 0.5)


def percent_text(ratio: float) -> str:
    return f"{js_round(ratio * 100)}%"


def nps_text(score: float) -> str:
    r = js_round(score)
    return ("+" if r > 0 else "\u2212" if r < 0 else "") + str(abs(r))
