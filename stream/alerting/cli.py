"""``cxstream alerts``: list active alerts, ack one, snooze or unsnooze a rule, show the log.

Reads and writes the Redis keys of docs/redis.md (``CXSTREAM_REDIS_URL``,
``CXSTREAM_REDIS_PREFIX``); the evaluating worker honours acks and snoozes at its
next evaluation.

  cxstream alerts                       active alerts (acked / snoozed marked)
  cxstream alerts --json                the same as JSON
  cxstream alerts ack ID [--by NAME]    acknowledge a firing alert (this episode only)
  cxstream alerts snooze RULE --for 30m no new alerts of RULE fire for 30 minutes
  cxstream alerts unsnooze RULE
  cxstream alerts log [-n 20]           the latest fire / resolve transitions
  cxstream alerts status [--json]       every rule on the whole contact center now: value,
                                        samples, threshold and why it is (not) firing
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from stream.config.settings import Settings, load_settings
from stream.config.timeutil import now_ms as _now_ms
from stream.config.timeutil import parse_duration
from stream.outputs.redis_keys import RedisKeys
from stream.query.partition_views import GlobalView, decode_views, merge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``cxstream alerts``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = parser.add_subparsers(dest="alerts_command", metavar="ACTION")

    listing = sub.add_parser("list", help="active alerts (the default)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    ack = sub.add_parser("ack", help="acknowledge a firing alert")
    ack.add_argument("id", help='alert id as listed, e.g. ces_high_effort_spike{queue="billing"}')
    ack.add_argument("--by", help="who acknowledges (default: the login name)")

    snooze = sub.add_parser("snooze", help="stop a rule from firing new alerts for a while")
    snooze.add_argument("rule", help="rule name")
    snooze.add_argument("--for", dest="duration", required=True, help="how long, e.g. 30m, 2h")
    snooze.add_argument(
        "--force", action="store_true", help="snooze even if the rule is not in the rules file read here"
    )

    unsnooze = sub.add_parser("unsnooze", help="end a snooze")
    unsnooze.add_argument("rule", help="rule name")

    status = sub.add_parser(
        "status", help="each rule's value, samples and verdict on the whole contact center now"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    history = sub.add_parser("log", help="latest fire / resolve transitions, newest first")
    history.add_argument("-n", "--count", type=int, default=20, help="how many (default 20)")
    history.add_argument("--json", action="store_true", help="print JSON lines")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream alerts``."""
    import redis
    from redis.exceptions import RedisError

    settings = load_settings()
    client = redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=3.0,
        socket_connect_timeout=3.0,
        decode_responses=True,
    )
    command = args.alerts_command or "list"
    actions: dict[str, Callable[[Any, Settings, argparse.Namespace], int]] = {
        "list": _list,
        "ack": _ack,
        "snooze": _snooze,
        "unsnooze": _unsnooze,
        "log": _log,
        "status": _status,
    }
    try:
        return actions[command](client, settings, args)
    except RedisError as exc:
        print(
            f"cxstream alerts: cannot reach Redis at {masked_url(settings.redis_url.get_secret_value())}: "
            f"{exc.__class__.__name__}: {exc} (check CXSTREAM_REDIS_URL)",
            file=sys.stderr,
        )
        return 1
    finally:
        client.close()


def masked_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, ""))


def _loads(value: str) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def active_alerts(client: Any, prefix: str, now_ms: int) -> list[dict[str, Any]]:
    """Active alerts with ``acked`` (``{"by", "at"}`` or None) and ``snoozed_until`` (ms or None)."""
    keys = RedisKeys(prefix)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.active)
    pipe.hgetall(keys.acks)
    pipe.hgetall(keys.snoozes)
    active, acks, snoozes = pipe.execute()
    alerts = []
    for alert_id, value in sorted(active.items()):
        alert = _loads(value)
        alert.setdefault("id", alert_id)
        ack = _loads(acks[alert_id]) if alert_id in acks else None
        since = alert.get("since")
        if ack is not None and isinstance(since, int) and int(ack.get("at", 0)) < since:
            ack = None  # left over from an earlier episode
        alert["acked"] = ack
        until = _int(snoozes.get(str(alert.get("rule"))))
        alert["snoozed_until"] = until if until and until > now_ms else None
        alerts.append(alert)
    return alerts


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _list(client: Any, settings: Settings, args: argparse.Namespace) -> int:
    now = _now_ms()
    alerts = active_alerts(client, settings.redis_prefix, now)
    snoozes = {
        rule: until
        for rule, raw in client.hgetall(RedisKeys(settings.redis_prefix).snoozes).items()
        if (until := _int(raw)) is not None and until > now
    }
    if getattr(args, "json", False):
        print(orjson.dumps({"alerts": alerts, "snoozed_rules": snoozes}, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not alerts:
        print("no active alerts")
    else:
        rows: list[tuple[str, ...]] = [
            ("ID", "SEVERITY", "VALUE", "THRESHOLD", "SAMPLES", "FIRING FOR", "MARKS")
        ]
        for alert in alerts:
            marks = []
            if alert["acked"]:
                marks.append(f"acked by {alert['acked'].get('by', '?')}")
            if alert["snoozed_until"]:
                marks.append(f"rule snoozed {age((alert['snoozed_until'] - now) // 1000)}")
            since = alert.get("since")
            firing_for = age((now - since) // 1000) if isinstance(since, int) else "?"
            rows.append(
                (
                    str(alert.get("id")),
                    str(alert.get("severity", "")),
                    _number(alert.get("value")),
                    _number(alert.get("threshold")),
                    _number(alert.get("samples")),
                    firing_for,
                    ", ".join(marks),
                )
            )
        _print_table(rows)
        for alert in alerts:
            if alert.get("summary"):
                print(f"  {alert['id']}: {alert['summary']}")
    for rule, until in sorted(snoozes.items()):
        print(f"rule {rule} snoozed until {_time(until)} ({age((until - now) // 1000)} left)")
    print(_coverage_line(client, settings, now))
    return 0


def read_global_view(client: Any, settings: Settings) -> tuple[GlobalView, str | None, int | None]:
    """The global view the evaluator sums, and who holds the evaluator lease under which epoch."""
    keys = RedisKeys(settings.redis_prefix)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.views)
    pipe.get(keys.lease)
    pipe.get(keys.epoch)
    raw, holder, epoch = pipe.execute()
    views, _ = decode_views(raw, settings.label_names)
    return merge(settings.partitions, views), holder, _int(epoch)


def _coverage_line(client: Any, settings: Settings, now: int) -> str:
    view, holder, epoch = read_global_view(client, settings)
    evaluator = f"evaluator {holder} (epoch {epoch})" if holder else "no evaluator holds the lease"
    ages = [now - v.at for v in view.views.values()]
    seen = f"views of {view.partitions - len(view.missing())}/{view.partitions} partitions"
    if ages:
        seen += f", oldest {max(ages) / 1000:.1f}s old"
    return f"{evaluator}; {seen}"


def rule_status(view: GlobalView, settings: Settings, now: int) -> list[dict[str, Any]]:
    """Every rule and group on the global view: value, samples, threshold and the verdict."""
    from stream.alerting.evaluator import check, observe
    from stream.alerting.rules import load_rules_for

    rows: list[dict[str, Any]] = []
    totals = view.totals()
    for rule in load_rules_for(settings, settings.label_names):
        observations = observe(rule, totals, settings.label_names, view.waiting_now(now))
        if not observations:
            rows.append({"rule": rule.name, "labels": {}, "value": None, "samples": 0, "verdict": "no data"})
        for key, obs in sorted(observations.items()):
            verdict = check(rule, obs, firing=False)
            rows.append(
                {
                    "rule": rule.name,
                    "labels": dict(zip(rule.group_by, key, strict=True)),
                    "value": obs.value,
                    "samples": obs.samples,
                    "min_samples": rule.min_samples,
                    "threshold": verdict.threshold,
                    "baseline": obs.baseline,
                    "verdict": "condition holds" if verdict.holds else verdict.reason,
                }
            )
    return rows


def _status(client: Any, settings: Settings, args: argparse.Namespace) -> int:
    now = _now_ms()
    view, holder, epoch = read_global_view(client, settings)
    rows = rule_status(view, settings, now)
    if getattr(args, "json", False):
        document = {"evaluator": holder, "epoch": epoch, "coverage": view.describe(now), "rules": rows}
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return 0
    table: list[tuple[str, ...]] = [("RULE", "GROUP", "VALUE", "SAMPLES", "THRESHOLD", "VERDICT")]
    for row in rows:
        group = ",".join(f"{k}={v}" for k, v in row["labels"].items()) or "all"
        samples = _number(row["samples"])
        if row.get("min_samples"):
            samples += f"/{row['min_samples']}"
        table.append(
            (
                row["rule"],
                group,
                _number(row["value"]),
                samples,
                _number(row.get("threshold")),
                row["verdict"],
            )
        )
    _print_table(table)
    print(_coverage_line(client, settings, now))
    if view.missing():
        print(f"no view yet of partitions {view.missing()}: the evaluator waits for them")
    return 0


def _ack(client: Any, settings: Settings, args: argparse.Namespace) -> int:
    keys = RedisKeys(settings.redis_prefix)
    if not client.hexists(keys.active, args.id):
        ids = sorted(client.hkeys(keys.active))
        print(f"cxstream alerts: no active alert {args.id!r}", file=sys.stderr)
        if ids:
            print("active alerts:\n  " + "\n  ".join(ids), file=sys.stderr)
        return 1
    by = args.by or getpass.getuser()
    client.hset(keys.acks, args.id, orjson.dumps({"by": by, "at": _now_ms()}).decode())
    print(f"acknowledged {args.id} (by {by})")
    return 0


def _snooze(client: Any, settings: Settings, args: argparse.Namespace) -> int:
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        print(f"cxstream alerts: --for: {exc}", file=sys.stderr)
        return 2
    if seconds <= 0:
        print("cxstream alerts: --for must be positive", file=sys.stderr)
        return 2
    if not args.force:
        from stream.alerting.rules import load_rules_for

        names = [rule.name for rule in load_rules_for(settings)]
        if args.rule not in names:
            print(
                f"cxstream alerts: unknown rule {args.rule!r} (rules: {', '.join(names) or 'none'}); "
                "use --force if the workers read a different rules file",
                file=sys.stderr,
            )
            return 2
    until = _now_ms() + int(seconds * 1000)
    client.hset(RedisKeys(settings.redis_prefix).snoozes, args.rule, str(until))
    print(f"snoozed rule {args.rule} until {_time(until)}")
    return 0


def _unsnooze(client: Any, settings: Settings, args: argparse.Namespace) -> int:
    removed = client.hdel(RedisKeys(settings.redis_prefix).snoozes, args.rule)
    print(f"rule {args.rule} unsnoozed" if removed else f"rule {args.rule} was not snoozed")
    return 0


def _log(client: Any, settings: Settings, args: argparse.Namespace) -> int:
    entries = client.xrevrange(RedisKeys(settings.redis_prefix).log, count=max(1, args.count))
    for _entry_id, fields in entries:
        transition = _loads(fields.get("alert", ""))
        if args.json:
            print(orjson.dumps(transition).decode())
            continue
        at = transition.get("at")
        print(
            f"{_time(at) if isinstance(at, int) else '?'}  {transition.get('state', '?'):8}  "
            f"{transition.get('id', '?')}  {transition.get('summary', '')}"
        )
    if not entries and not args.json:
        print("no transitions logged")
    return 0


def age(seconds: float) -> str:
    """A short human duration: 45s, 6m, 2h05m, 3d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _number(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4g}"
    return "-"


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
