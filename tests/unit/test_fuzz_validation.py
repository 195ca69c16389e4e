"""Bad input, without a broker: a hostile-message corpus and property-based tests.

``hostile_corpus()`` builds malformed and hostile messages, each with the outcome the
contract prescribes, decided here from CONTRACT.md rather than from the validator:

* rejected, with its reason code -- broken JSON, invalid UTF-8, wrong types, NaN and
  infinities, out-of-range scores, far-future timestamps (beyond the 5 min skew) and
  pre-1970 ones, oversized strings, deep nesting, values over 64 KiB up to 1 MB,
  tombstones, unknown enum values;
* ``late`` -- valid events with ancient (but post-1970) timestamps: counted as late by
  design, never dead-lettered;
* accepted -- valid events that merely look hostile: unknown fields (the contract ignores
  them), nested unknown fields, boundary lengths, labels with quotes, backslashes and
  emoji, ids with NUL and unicode, every timestamp form, explicit nulls for optional
  fields; and ``duplicate`` -- an accepted event_id sent again with another payload.

The same corpus drives the broker fuzz run (tests/integration/test_fuzz.py). Here it is
checked against the pure validator and processor, and hypothesis explores the space
around it: arbitrary bytes and JSON never raise, single faults map to their reason,
valid events with arbitrary extra fields are accepted, and the processor's counts do
not depend on how the input is split into batches or redelivered.
"""

from __future__ import annotations

import os
import random
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config.settings import ENV_PREFIX, Settings
from stream.domain import kpi
from stream.domain.events import MAX_MESSAGE_BYTES, EventValidator, Interaction, Rejection, Survey
from stream.domain.processor import InputMessage, Processor
from stream.domain.state import PartitionState

NOW = 1_795_341_600_000  # 2026-11-22T10:00:00Z
MIN = 60_000
DAY = 86_400_000
SKEW = 5 * MIN
CHANNELS = ["voice", "chat", "email", "sms", "social", "messaging", "web"]
#: Valid but hostile label values: quotes, backslashes, braces, commas, unicode (no control chars).
HOSTILE_LABELS = [
    'q"quoted"',
    "back\\slash\\",
    "brace{}=,",
    "emoji-☎️📞",
    "ünïcödé-队列",
    "x" * 64,
    "  spaced  ",
    "#hash-not-comment",
]
REASON_CODES = (
    "empty_value",
    "too_large",
    "invalid_json",
    "invalid_utf8",
    "not_an_object",
    "missing_field:",
    "invalid_type:",
    "invalid_length:",
    "invalid_characters:",
    "invalid_timestamp",
    "future_timestamp",
    "unknown_type",
    "unknown_channel",
    "unknown_metric",
    "unknown_scale",
    "out_of_range:",
)


@dataclass
class FuzzCase:
    """One message and the outcome the contract prescribes for it."""

    kind: str  # "interactions" or "surveys"
    key: bytes | None
    value: bytes | None
    outcome: str  # "rejected", "accepted", "late" or "duplicate"
    reason: str | None = None  # rejection reason code (the cx-reason header)
    event: dict[str, Any] | None = None  # the event, for accepted/late/duplicate
    label: str = ""  # which builder made it, for failure messages
    tags: set[str] = field(default_factory=set)


def exact(ms: int) -> datetime:
    """``ms`` as an aware UTC datetime, without float rounding."""
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def iso(ms: int, offset: str = "Z") -> str:
    return exact(ms).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + offset


class _Builder:
    """Makes cases; ``now`` is the wall clock the worker will validate them against."""

    def __init__(self, rng: random.Random, now_ms: int, prefix: str) -> None:
        self.rng = rng
        self.now = now_ms
        self.prefix = prefix
        self.n = 0

    def uid(self) -> str:
        self.n += 1
        return f"{self.prefix}{self.n}"

    def recent(self) -> int:
        """An event time comfortably inside the 1h window and outside the 15m edge."""
        return self.now - 20 * MIN - self.rng.randrange(0, 10 * MIN)

    # -- valid bases -----------------------------------------------------------------
    def started(self, uid: str, **extra: Any) -> dict[str, Any]:
        event = {
            "event_id": f"{uid}-s",
            "type": "contact_started",
            "contact_id": f"c-{uid}",
            "customer_id": f"u-{uid}",
            "channel": self.rng.choice(CHANNELS),
            "queue": self.rng.choice(["fz-billing", "fz-support"]),
            "timestamp": self.recent(),
        }
        event.update(extra)
        return event

    def survey(self, uid: str, **extra: Any) -> dict[str, Any]:
        metric = self.rng.choice(["csat", "nps", "ces"])
        event = {
            "event_id": f"{uid}-v",
            "contact_id": f"c-{uid}",
            "metric": metric,
            "score": {"csat": 4, "nps": 9, "ces": 6}[metric],
            "queue": "fz-surveys",
            "channel": self.rng.choice(CHANNELS),
            "timestamp": self.recent(),
        }
        event.update(extra)
        return event

    def base(self, kind: str, uid: str) -> dict[str, Any]:
        return self.started(uid) if kind == "interactions" else self.survey(uid)

    def key_for(self, event: dict[str, Any]) -> bytes:
        return str(event.get("contact_id", "k")).encode()

    def hostile_key(self) -> bytes | None:
        return self.rng.choice([None, b"", b"\xff\xfe\xfd", b"k" * 10_000, "ключ".encode(), b"\x00"])

    # -- outcomes -------------------------------------------------------------------------
    def reject(
        self, kind: str, value: bytes | None, reason: str, label: str, key: bytes | None = None
    ) -> FuzzCase:
        if key is None and self.rng.random() < 0.7:
            key = f"c-{self.uid()}".encode()
        elif key is None:
            key = self.hostile_key()
        return FuzzCase(kind, key, value, "rejected", reason, None, label)

    def bad_field(
        self, kind: str, label: str, reason: str, mutate: Callable[[dict[str, Any]], None]
    ) -> FuzzCase:
        event = self.base(kind, self.uid())
        mutate(event)
        return self.reject(kind, orjson.dumps(event), reason, label, self.key_for(event))

    def accept(self, kind: str, event: dict[str, Any], label: str, raw: bytes | None = None) -> FuzzCase:
        return FuzzCase(kind, self.key_for(event), raw or orjson.dumps(event), "accepted", None, event, label)


def _set(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        event[name] = value

    return mutate


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        event.pop(name, None)

    return mutate


def _rejected_builders(b: _Builder, one_mb: bool) -> list[Callable[[], list[FuzzCase]]]:
    """Builders of messages the contract says must be dead-lettered (one fault each)."""
    rng = b.rng

    def broken_json() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        raw = orjson.dumps(b.base(kind, b.uid()))  # ASCII only: a cut never splits a character
        variants = [
            raw[: rng.randrange(1, len(raw) - 1)],  # truncated
            raw + b"}",
            raw + b"garbage",
            raw.replace(b'"', b"'"),
            raw[:-1] + b",}",
            b"{/* comment */" + raw[1:],
            b"",
            b"   ",
            b"{",
            b'{"event_id": "a", "event_id"}',
        ]
        return [b.reject(kind, rng.choice(variants), "invalid_json", "broken_json")]

    def nan_and_infinity() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        field_ = "score" if kind == "surveys" else "timestamp"
        literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"nan"])
        event = b.base(kind, b.uid())
        event[field_] = "@@"
        raw = orjson.dumps(event).replace(b'"@@"', literal)
        return [b.reject(kind, raw, "invalid_json", "nan_infinity", b.key_for(event))]

    def deep_nesting() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        depth = rng.choice([1100, 5000, 20_000])
        if rng.random() < 0.5:
            raw = b"[" * depth + b"]" * depth
        else:
            event = b.base(kind, b.uid())
            event["nested"] = "@@"
            raw = orjson.dumps(event).replace(b'"@@"', b'{"a":' * depth + b"1" + b"}" * depth)
        if len(raw) > MAX_MESSAGE_BYTES:
            return [b.reject(kind, raw, "too_large", "deep_nesting_large")]
        return [b.reject(kind, raw, "invalid_json", "deep_nesting")]

    def invalid_utf8() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        event = b.base(kind, b.uid())
        bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xe9t\xe9", b"\x80\x80"])
        event["contact_id"] = "@@"
        raw = orjson.dumps(event).replace(b"@@", bad)
        return [b.reject(kind, raw, "invalid_utf8", "invalid_utf8")]

    def byte_order_mark() -> list[FuzzCase]:
        # Valid UTF-8, but JSON text must not start with a BOM (RFC 8259); orjson names it UTF-8.
        kind = rng.choice(["interactions", "surveys"])
        raw = b"\xef\xbb\xbf" + orjson.dumps(b.base(kind, b.uid()))
        return [b.reject(kind, raw, "invalid_utf8", "bom")]

    def not_an_object() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        raw = rng.choice(
            [b"null", b"[]", b'"contact_started"', b"42", b"true", b"-0.5", orjson.dumps([b.base(kind, "x")])]
        )
        return [b.reject(kind, raw, "not_an_object", "not_an_object")]

    def tombstone() -> list[FuzzCase]:
        # A record needs a key or a value: a tombstone always has a key.
        key = rng.choice([f"c-{b.uid()}".encode(), b"", b"\xff\xfe", "☠".encode()])
        return [b.reject(rng.choice(["interactions", "surveys"]), None, "empty_value", "tombstone", key)]

    def too_large() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        size = rng.choice([MAX_MESSAGE_BYTES + 1, 70_000, 100_000, 300_000])
        if rng.random() < 0.5:  # a valid event padded with an unknown field
            event = b.base(kind, b.uid())
            event["padding"] = "p" * size
            raw = orjson.dumps(event)
        else:
            raw = bytes(rng.randrange(256) for _ in range(64)) * (size // 64 + 1)
        return [b.reject(kind, raw, "too_large", "too_large")]

    def one_megabyte() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        event = b.base(kind, b.uid())
        event["blob"] = "B" * 1_000_000
        return [b.reject(kind, orjson.dumps(event), "too_large", "1MB", b.key_for(event))]

    def missing_field() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        names = (
            ["event_id", "type", "contact_id", "timestamp", "customer_id", "channel", "queue"]
            if kind == "interactions"
            else ["event_id", "contact_id", "metric", "score", "timestamp"]
        )
        name = rng.choice(names)
        how = _drop(name) if rng.random() < 0.6 else _set(name, None)  # null counts as absent
        return [b.bad_field(kind, "missing_field", f"missing_field:{name}", how)]

    def wrong_type() -> list[FuzzCase]:
        choices: list[tuple[str, str, Any, str]] = [
            ("interactions", "event_id", 12345, "invalid_type:event_id"),
            ("interactions", "event_id", ["a"], "invalid_type:event_id"),
            ("interactions", "contact_id", {"id": 1}, "invalid_type:contact_id"),
            ("interactions", "contact_id", True, "invalid_type:contact_id"),
            ("interactions", "customer_id", 7, "invalid_type:customer_id"),
            ("interactions", "queue", 5, "invalid_type:queue"),
            ("interactions", "agent_id", 1.5, "invalid_type:agent_id"),
            ("interactions", "team", [], "invalid_type:team"),
            ("interactions", "reason", False, "invalid_type:reason"),
            ("interactions", "type", 3, "unknown_type"),
            ("interactions", "type", ["contact_started"], "unknown_type"),
            ("interactions", "channel", 1, "unknown_channel"),
            ("interactions", "channel", ["voice"], "unknown_channel"),
            ("interactions", "channel", {"voice": 1}, "unknown_channel"),
            ("interactions", "timestamp", [2026, 11, 22], "invalid_timestamp"),
            ("interactions", "timestamp", {"ms": 1}, "invalid_timestamp"),
            ("interactions", "timestamp", True, "invalid_timestamp"),
            ("interactions", "timestamp", 1.7e12, "invalid_timestamp"),
            ("interactions", "timestamp", "", "invalid_timestamp"),
            ("surveys", "score", "5", "invalid_type:score"),
            ("surveys", "score", 4.0, "invalid_type:score"),
            ("surveys", "score", True, "invalid_type:score"),
            ("surveys", "score", [5], "invalid_type:score"),
            ("surveys", "score", {"v": 5}, "invalid_type:score"),
            ("surveys", "score", 1e29, "invalid_type:score"),
            ("surveys", "metric", ["csat"], "unknown_metric"),
            ("surveys", "metric", 1, "unknown_metric"),
            ("surveys", "survey_id", 9, "invalid_type:survey_id"),
            ("surveys", "customer_id", ["u"], "invalid_type:customer_id"),
            ("surveys", "queue", {"q": 1}, "invalid_type:queue"),
            ("surveys", "channel", 0, "unknown_channel"),
            ("surveys", "timestamp", None, "missing_field:timestamp"),
        ]
        kind, name, value, reason = rng.choice(choices)
        return [b.bad_field(kind, "wrong_type", reason, _set(name, value))]

    def wrong_type_by_event_type() -> list[FuzzCase]:
        uid = b.uid()
        choice = rng.randrange(4)
        if choice == 0:
            event = {**b.started(uid), "type": "contact_ended", "resolved": "yes"}
            reason = "invalid_type:resolved"
        elif choice == 1:
            event = {**b.started(uid), "type": "contact_ended", "handle_seconds": "10"}
            reason = "invalid_type:handle_seconds"
        elif choice == 2:
            event = {**b.started(uid), "type": "contact_transferred", "to_queue": 5}
            reason = "invalid_type:to_queue"
        else:
            event = {**b.survey(uid), "metric": "ces", "score": 3, "scale": 7}
            reason = "unknown_scale"
        kind = "surveys" if choice == 3 else "interactions"
        return [b.reject(kind, orjson.dumps(event), reason, "wrong_type_by_event_type", b.key_for(event))]

    def out_of_range() -> list[FuzzCase]:
        uid = b.uid()
        metric, scale, score = rng.choice(
            [
                ("csat", None, 0),
                ("csat", None, 6),
                ("csat", None, -1),
                ("csat", None, 2**63),
                ("nps", None, -1),
                ("nps", None, 11),
                ("nps", None, -(2**63)),
                ("ces", None, 0),
                ("ces", None, 8),
                ("ces", "agree_1_7", 8),
                ("ces", "effort_1_5", 6),
                ("ces", "effort_1_5", 0),
            ]
        )
        event = {**b.survey(uid), "metric": metric, "score": score}
        if scale:
            event["scale"] = scale
        if rng.random() < 0.2:  # duplicate keys: the last one wins
            raw = orjson.dumps({**event, "score": 1})[:-1] + b',"score":' + str(score).encode() + b"}"
        else:
            raw = orjson.dumps(event)
        return [b.reject("surveys", raw, "out_of_range:score", "out_of_range", b.key_for(event))]

    def handle_out_of_range() -> list[FuzzCase]:
        value = rng.choice([-1, -0.001, 1e7, 1e300, -(2**63)])
        event = {**b.started(b.uid()), "type": "contact_ended", "handle_seconds": value}
        return [
            b.reject(
                "interactions",
                orjson.dumps(event),
                "out_of_range:handle_seconds",
                "handle_range",
                b.key_for(event),
            )
        ]

    def far_future() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        ts = rng.choice(
            [
                b.now + SKEW + 30 * MIN,  # margin: the worker validates later than this is built
                b.now + DAY,
                iso(b.now + 365 * DAY),
                "9999-12-31T23:59:59Z",
                "2999-01-01T00:00:00+14:00",
                2**63 - 1,
                10**15,
            ]
        )
        return [b.bad_field(kind, "far_future", "future_timestamp", _set("timestamp", ts))]

    def bad_timestamp() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        ts = rng.choice(
            [
                "1969-12-31T23:59:59Z",
                "0001-01-01T00:00:00Z",
                -1,
                -(2**63),
                "yesterday",
                "2026-13-45T99:00:00Z",
                "2026-11-22T10:00:00+25:00",
                "2026-11-22T10:00:00Z" + "0" * 60,
                "\uff11\uff12\uff13",  # fullwidth digits
                1.8446744073709552e19,
            ]
        )
        return [b.bad_field(kind, "bad_timestamp", "invalid_timestamp", _set("timestamp", ts))]

    def bad_length() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        name, value = rng.choice(
            [
                ("event_id", "e" * 257),
                ("event_id", ""),
                ("contact_id", "c" * 10_000),
                ("contact_id", ""),
                ("queue", "q" * 65),
                ("queue", ""),
                ("agent_id", "a" * 65),
                ("team", "t" * 1000),
            ]
        )
        return [b.bad_field(kind, "bad_length", f"invalid_length:{name}", _set(name, value))]

    def control_characters() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        name = rng.choice(["queue", "team", "agent_id"])
        value = rng.choice(["line\nbreak", "nul\x00", "tab\there", "esc\x1b[31m", "del\x7f", "\x1f\x1e"])
        return [b.bad_field(kind, "control_chars", f"invalid_characters:{name}", _set(name, value))]

    def unknown_enum() -> list[FuzzCase]:
        kind, name, value, reason = rng.choice(
            [
                ("interactions", "type", "contact_paused", "unknown_type"),
                ("interactions", "type", "CONTACT_STARTED", "unknown_type"),
                ("interactions", "type", "", "unknown_type"),
                ("interactions", "channel", "fax", "unknown_channel"),
                ("interactions", "channel", "Voice", "unknown_channel"),
                ("surveys", "metric", "ces2", "unknown_metric"),
                ("surveys", "metric", "", "unknown_metric"),
                ("surveys", "channel", "pigeon", "unknown_channel"),
            ]
        )
        return [b.bad_field(kind, "unknown_enum", reason, _set(name, value))]

    def lone_surrogate() -> list[FuzzCase]:
        # A JSON escape of an unpaired UTF-16 surrogate: not a Unicode string at all.
        kind = rng.choice(["interactions", "surveys"])
        event = b.base(kind, b.uid())
        event["queue"] = "@@"
        raw = orjson.dumps(event).replace(b"@@", rng.choice([b"\\ud800", b"\\udfff", b"a\\ud83d"]))
        return [b.reject(kind, raw, "invalid_json", "lone_surrogate", b.key_for(event))]

    builders = [
        broken_json,
        nan_and_infinity,
        deep_nesting,
        invalid_utf8,
        byte_order_mark,
        not_an_object,
        tombstone,
        too_large,
        missing_field,
        wrong_type,
        wrong_type_by_event_type,
        out_of_range,
        handle_out_of_range,
        far_future,
        bad_timestamp,
        bad_length,
        control_characters,
        unknown_enum,
        lone_surrogate,
    ]
    if one_mb:
        builders.append(one_megabyte)
    return builders


def _other_builders(b: _Builder) -> list[Callable[[], list[FuzzCase]]]:
    """Builders of hostile-looking messages the contract says are accepted (or late)."""
    rng = b.rng

    def unknown_fields() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        event = b.base(kind, b.uid())
        extras: dict[str, Any] = {
            "x_unknown": "whatever",
            "nested": {"a": [1, {"b": None}], "c": "☃"},
            "big_list": list(range(rng.randrange(1, 2000))),
            # fields of the *other* event kind are unknown here, and ignored
            "metric" if kind == "interactions" else "type": "bogus",
            "score" if kind == "interactions" else "resolved": "not-a-number",
        }
        event.update(rng.sample(sorted(extras.items()), k=rng.randrange(1, len(extras) + 1)))
        return [b.accept(kind, event, "unknown_fields")]

    def nested_unknown_field() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        event = b.base(kind, b.uid())
        event["deep"] = "@@"
        depth = rng.choice([10, 100, 500, 1000])
        raw = orjson.dumps(event).replace(b'"@@"', b"[" * depth + b"]" * depth)
        event["deep"] = "(nested list)"
        return [b.accept(kind, event, "nested_unknown_field", raw)]

    def hostile_labels() -> list[FuzzCase]:
        uid = b.uid()
        queue = rng.choice(HOSTILE_LABELS)
        if rng.random() < 0.5:
            return [
                b.accept("interactions", b.started(uid, queue=queue, team="队", agent_id="a\\b"), "labels")
            ]
        return [b.accept("surveys", b.survey(uid, queue=queue), "labels")]

    def boundary_lengths() -> list[FuzzCase]:
        uid = b.uid()
        event = b.started(uid)
        event["event_id"] = (uid + "-" + "e" * 256)[:256]
        event["contact_id"] = (f"c-{uid}-" + "c" * 256)[:256]
        event["queue"] = "Q" * 64
        return [b.accept("interactions", event, "boundary_lengths")]

    def hostile_ids() -> list[FuzzCase]:
        uid = b.uid()
        suffix = rng.choice(["\x00", "📞", "'; DROP TABLE--", "\u202e", " ", "\\u0000", "\x1f"])
        event = b.started(uid, event_id=f"{uid}-s{suffix}", contact_id=f"c-{uid}{suffix}")
        return [b.accept("interactions", event, "hostile_ids")]

    def timestamp_forms() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        event = b.base(kind, b.uid())
        ms = event["timestamp"]
        event["timestamp"] = rng.choice(
            [
                ms,
                iso(ms),
                iso(ms, "+00:00"),
                iso(ms, ""),  # no offset: taken as UTC
                exact(ms).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
                exact(ms).astimezone(timezone(timedelta(hours=-8))).isoformat(timespec="microseconds"),
                exact(ms).astimezone().isoformat(),
                exact(ms).isoformat(),
            ]
        )
        return [b.accept(kind, event, "timestamp_forms")]

    def explicit_nulls() -> list[FuzzCase]:
        uid = b.uid()
        if rng.random() < 0.5:
            event = b.started(uid, agent_id=None, team=None, reason=None, resolved=None)
            return [b.accept("interactions", event, "nulls")]
        event = b.survey(uid, survey_id=None, customer_id=None, agent_id=None, team=None)
        if event["metric"] == "ces":
            event["scale"] = None  # null scale means the default, agree_1_7
        return [b.accept("surveys", event, "nulls")]

    def lifecycle() -> list[FuzzCase]:
        uid = b.uid()
        start = b.started(uid)
        end = {
            "event_id": f"{uid}-e",
            "type": "contact_ended",
            "contact_id": start["contact_id"],
            "timestamp": start["timestamp"] + 1000,
            "resolved": rng.choice([True, False, None]),
            "handle_seconds": rng.choice([0, 0.5, 123.25, 9_999_999]),
            "to_queue": 42,  # unknown on contact_ended (only checked on transfers): ignored
        }
        return [b.accept("interactions", start, "lifecycle"), b.accept("interactions", end, "lifecycle")]

    def duplicate_with_other_payload() -> list[FuzzCase]:
        uid = b.uid()
        first = b.survey(uid, metric="csat", score=5)
        again = {**first, "score": 1, "x": "retry"}
        return [
            b.accept("surveys", first, "dup_first"),
            FuzzCase("surveys", b.key_for(again), orjson.dumps(again), "duplicate", None, again, "dup_again"),
        ]

    def ancient() -> list[FuzzCase]:
        kind = rng.choice(["interactions", "surveys"])
        event = b.base(kind, b.uid())
        event["timestamp"] = rng.choice(
            [
                1,
                1000,
                "1970-01-01T00:00:01Z",
                "1999-12-31T23:59:59-05:00",
                b.now - 2 * DAY,
                iso(b.now - 30 * DAY),
            ]
        )
        return [FuzzCase(kind, b.key_for(event), orjson.dumps(event), "late", None, event, "ancient")]

    return [
        unknown_fields,
        nested_unknown_field,
        hostile_labels,
        boundary_lengths,
        hostile_ids,
        timestamp_forms,
        explicit_nulls,
        lifecycle,
        duplicate_with_other_payload,
        ancient,
    ]


def hostile_corpus(
    n_rejected: int, *, seed: int = 1, now_ms: int = NOW, accepted_share: float = 0.15, one_mb: int = 2
) -> list[FuzzCase]:
    """``n_rejected`` malformed messages (``one_mb`` of them 1 MB), plus hostile valid ones.

    Every rejection builder is used at least once; order is random but each multi-message
    case (start then end, first then duplicate) stays in order.
    """
    rng = random.Random(seed)
    b = _Builder(rng, now_ms, f"fz{seed}x")
    rejected_builders = _rejected_builders(b, one_mb=False)
    groups: list[list[FuzzCase]] = []
    for i in range(n_rejected - one_mb):
        builder = rejected_builders[i] if i < len(rejected_builders) else rng.choice(rejected_builders)
        groups.append(builder())
    for _ in range(one_mb):
        groups.append(_rejected_builders(b, one_mb=True)[-1]())
    others = _other_builders(b)
    for i in range(int(n_rejected * accepted_share)):
        groups.append((others[i] if i < len(others) else rng.choice(others))())
    rng.shuffle(groups)
    return [case for group in groups for case in group]


# ---------------------------------------------------------------------------------------------
# The corpus against the pure validator and processor
# ---------------------------------------------------------------------------------------------

VALIDATOR = EventValidator(max_label_length=64, max_future_skew_ms=SKEW)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() here must be the defaults, whatever CXSTREAM_* the shell has."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def validate(kind: str, raw: bytes | None, now: int = NOW) -> Interaction | Survey | Rejection:
    return VALIDATOR.interaction(raw, now) if kind == "interactions" else VALIDATOR.survey(raw, now)


@pytest.fixture(scope="module")
def corpus() -> list[FuzzCase]:
    return hostile_corpus(2000, seed=3)


def test_corpus_covers_every_fault_class(corpus: list[FuzzCase]) -> None:
    reasons = Counter(c.reason.split(":")[0] + (":" if ":" in c.reason else "") for c in corpus if c.reason)
    missing = [code for code in REASON_CODES if not any(r.startswith(code) for r in reasons)]
    assert not missing, f"corpus has no case for {missing}"
    outcomes = Counter(c.outcome for c in corpus)
    assert outcomes["rejected"] == 2000
    assert outcomes["accepted"] > 0 and outcomes["late"] > 0 and outcomes["duplicate"] > 0
    assert sum(1 for c in corpus if c.value and len(c.value) >= 1_000_000) == 2


def test_every_corpus_case_gets_the_contract_outcome(corpus: list[FuzzCase]) -> None:
    wrong = []
    for case in corpus:
        result = validate(case.kind, case.value)
        if case.outcome == "rejected":
            ok = isinstance(result, Rejection) and result.reason == case.reason
        else:
            ok = not isinstance(result, Rejection)
        if not ok:
            wrong.append((case.label, case.outcome, case.reason, result, (case.value or b"")[:120]))
    assert not wrong, f"{len(wrong)} cases disagree, e.g. {wrong[:5]}"


def test_accepted_cases_keep_their_fields(corpus: list[FuzzCase]) -> None:
    for case in corpus:
        if case.outcome != "accepted" or case.event is None:
            continue
        result = validate(case.kind, case.value)
        assert isinstance(result, Interaction | Survey)
        assert result.event_id == case.event["event_id"]
        assert result.contact_id == case.event["contact_id"]
        if case.event.get("queue") is not None:
            assert result.queue == case.event["queue"]


def _process(
    corpus: list[FuzzCase], batches: list[int], now: int = NOW
) -> tuple[Processor, PartitionState, list[Any]]:
    """Run the corpus through one partition's pipeline, split into batches at ``batches``."""
    processor = Processor(Settings())
    state = PartitionState(0)
    topics = {"interactions": "cx.interactions", "surveys": "cx.surveys"}
    offsets = Counter[str]()
    messages = []
    for case in corpus:
        topic = topics[case.kind]
        messages.append(InputMessage(topic, offsets[topic], case.key, case.value))
        offsets[topic] += 1
    dead: list[Any] = []
    start = 0
    for end in [*batches, len(messages)]:
        dead.extend(processor.process_batch(state, messages[start:end], now))
        start = end
    return processor, state, dead


def _totals(state: PartitionState) -> list[float]:
    out = kpi.zero_counts()
    for dims in state.buckets.values():
        for counts in dims.values():
            kpi.add_into(out, counts)
    return out


def test_processor_dead_letters_exactly_the_rejects_and_counts_the_rest(corpus: list[FuzzCase]) -> None:
    processor, state, dead = _process(corpus, batches=[10, 500, 501, 1700])
    rejects = [c for c in corpus if c.outcome == "rejected"]
    assert Counter((d.value, d.reason) for d in dead) == Counter((c.value, c.reason) for c in rejects)
    for kind, topic in (("interactions", "cx.interactions"), ("surveys", "cx.surveys")):
        by_outcome = Counter(c.outcome for c in corpus if c.kind == kind)
        for outcome in ("rejected", "accepted", "late", "duplicate"):
            assert processor.outcomes[(topic, outcome)] == by_outcome[outcome], (kind, outcome)
    accepted = [c.event for c in corpus if c.outcome == "accepted" and c.event and c.kind == "interactions"]
    totals = _totals(state)
    assert totals[kpi.CONTACTS] == sum(1 for e in accepted if e.get("type") == "contact_started")
    assert totals[kpi.CONTACTS_ENDED] == sum(1 for e in accepted if e.get("type") == "contact_ended")
    surveys = [c.event for c in corpus if c.outcome == "accepted" and c.event and c.kind == "surveys"]
    for metric, index in (
        ("csat", kpi.CSAT_RESPONSES),
        ("nps", kpi.NPS_RESPONSES),
        ("ces", kpi.CES_RESPONSES),
    ):
        assert totals[index] == sum(1 for e in surveys if e["metric"] == metric), metric


def test_processor_result_does_not_depend_on_batching(corpus: list[FuzzCase]) -> None:
    _, one_batch, _ = _process(corpus, batches=[])
    rng = random.Random(5)
    cuts = sorted(rng.sample(range(1, len(corpus)), 40))
    _, many, _ = _process(corpus, batches=cuts)
    assert one_batch.buckets == many.buckets


# ---------------------------------------------------------------------------------------------
# Property-based tests
# ---------------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # orjson's range
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
CONTRACT_FIELDS = [
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
    "survey_id",
    "metric",
    "score",
    "scale",
]
field_values = (
    json_values
    | st.sampled_from(
        [
            *("contact_started", "contact_transferred", "contact_ended", "csat", "nps", "ces"),
            *("voice", "chat", "agree_1_7", "effort_1_5", "2026-11-22T09:00:00Z"),
        ]
    )
    | st.integers(min_value=NOW - 2 * DAY, max_value=NOW + DAY)
)
contract_shaped = st.dictionaries(
    st.sampled_from(CONTRACT_FIELDS), field_values, max_size=len(CONTRACT_FIELDS)
)
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_result(result: object) -> None:
    assert isinstance(result, Interaction | Survey | Rejection)
    if isinstance(result, Rejection):
        assert result.reason.startswith(REASON_CODES), result
        assert isinstance(result.detail, str)


@PROPERTY_SETTINGS
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    for kind in ("interactions", "surveys"):
        _check_result(validate(kind, raw))


@PROPERTY_SETTINGS
@given(value=json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    raw = orjson.dumps(value)
    for kind in ("interactions", "surveys"):
        result = validate(kind, raw)
        _check_result(result)
        if not isinstance(value, dict):
            assert isinstance(result, Rejection) and result.reason == "not_an_object"


@PROPERTY_SETTINGS
@given(obj=contract_shaped)
def test_contract_shaped_objects_never_raise_and_accepted_ones_are_sound(obj: dict[str, Any]) -> None:
    raw = orjson.dumps(obj)
    for kind in ("interactions", "surveys"):
        result = validate(kind, raw)
        _check_result(result)
        if isinstance(result, Interaction):
            assert result.type in ("contact_started", "contact_transferred", "contact_ended")
            assert 0 <= result.ts_ms <= NOW + SKEW
            if result.type == "contact_started":
                assert result.channel is not None and result.queue and result.customer_id
        elif isinstance(result, Survey):
            low, high = {"csat": (1, 5), "nps": (0, 10)}.get(
                result.metric, (1, 7 if result.scale == "agree_1_7" else 5)
            )
            assert type(result.score) is int and low <= result.score <= high
            assert 0 <= result.ts_ms <= NOW + SKEW


labels = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="".join(map(chr, [*range(32), 127]))
    ),
    min_size=1,
    max_size=64,
)
valid_ts = st.integers(min_value=0, max_value=NOW + SKEW) | st.integers(
    min_value=NOW - 30 * DAY, max_value=NOW
).map(lambda ms: iso(ms))
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in CONTRACT_FIELDS), json_values, max_size=4
)


@st.composite
def valid_interactions(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": draw(st.text(min_size=1, max_size=256)),
        "type": draw(st.sampled_from(["contact_started", "contact_transferred", "contact_ended"])),
        "contact_id": draw(st.text(min_size=1, max_size=256)),
        "timestamp": draw(valid_ts),
    }
    if event["type"] == "contact_started" or draw(st.booleans()):
        event["customer_id"] = draw(st.text(min_size=1, max_size=256))
        event["channel"] = draw(st.sampled_from(CHANNELS))
        event["queue"] = draw(labels)
    for name in ("agent_id", "team", "reason"):
        if draw(st.booleans()):
            event[name] = draw(labels | st.none())
    if event["type"] == "contact_ended":
        event["resolved"] = draw(st.none() | st.booleans())
        event["handle_seconds"] = draw(
            st.none() | st.integers(0, 10**6) | st.floats(0, 9_999_999, allow_nan=False)
        )
    event.update(draw(extra_fields))
    return event


@st.composite
def valid_surveys(draw: st.DrawFn) -> dict[str, Any]:
    metric = draw(st.sampled_from(["csat", "nps", "ces"]))
    scale = draw(st.sampled_from([None, "agree_1_7", "effort_1_5"])) if metric == "ces" else None
    low, high = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 5 if scale == "effort_1_5" else 7)}[metric]
    event: dict[str, Any] = {
        "event_id": draw(st.text(min_size=1, max_size=256)),
        "contact_id": draw(st.text(min_size=1, max_size=256)),
        "metric": metric,
        "score": draw(st.integers(low, high)),
        "timestamp": draw(valid_ts),
    }
    if scale is not None:
        event["scale"] = scale
    for name in ("queue", "team", "agent_id"):
        if draw(st.booleans()):
            event[name] = draw(labels)
    if draw(st.booleans()):
        event["channel"] = draw(st.sampled_from(CHANNELS))
    event.update(draw(extra_fields))
    return event


@PROPERTY_SETTINGS
@given(event=valid_interactions())
def test_valid_interactions_with_any_extra_fields_are_accepted(event: dict[str, Any]) -> None:
    result = validate("interactions", orjson.dumps(event))
    assert isinstance(result, Interaction), (result, event)
    assert (result.event_id, result.type, result.contact_id) == (
        event["event_id"],
        event["type"],
        event["contact_id"],
    )


@PROPERTY_SETTINGS
@given(event=valid_surveys())
def test_valid_surveys_with_any_extra_fields_are_accepted(event: dict[str, Any]) -> None:
    result = validate("surveys", orjson.dumps(event))
    assert isinstance(result, Survey), (result, event)
    assert (result.metric, result.score) == (event["metric"], event["score"])
    assert result.scale == ((event.get("scale") or "agree_1_7") if event["metric"] == "ces" else None)


MUTATIONS: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    ("interactions", "event_id", _drop("event_id"), "missing_field:event_id"),
    ("interactions", "contact_id", _set("contact_id", 1), "invalid_type:contact_id"),
    ("interactions", "timestamp", _set("timestamp", NOW + DAY), "future_timestamp"),
    ("interactions", "timestamp", _set("timestamp", -5), "invalid_timestamp"),
    ("interactions", "type", _set("type", "contact_exploded"), "unknown_type"),
    ("interactions", "event_id", _set("event_id", "x" * 257), "invalid_length:event_id"),
    ("surveys", "score", _set("score", 99), "out_of_range:score"),
    ("surveys", "score", _set("score", "3"), "invalid_type:score"),
    ("surveys", "metric", _set("metric", "csat2"), "unknown_metric"),
    ("surveys", "contact_id", _drop("contact_id"), "missing_field:contact_id"),
    ("surveys", "timestamp", _set("timestamp", "not a time"), "invalid_timestamp"),
]


@PROPERTY_SETTINGS
@given(data=st.data(), mutation=st.sampled_from(MUTATIONS))
def test_one_fault_in_a_valid_event_gives_its_reason(data: st.DataObject, mutation: Any) -> None:
    kind, _, mutate, reason = mutation
    event = data.draw(valid_interactions() if kind == "interactions" else valid_surveys())
    mutate(event)
    result = validate(kind, orjson.dumps(event))
    assert isinstance(result, Rejection) and result.reason == reason, (result, event)


@PROPERTY_SETTINGS
@given(raw=st.binary(min_size=1, max_size=200), position=st.integers(min_value=0))
def test_garbage_spliced_into_valid_json_is_rejected_not_raised(raw: bytes, position: int) -> None:
    good = orjson.dumps({"event_id": "e", "contact_id": "c", "metric": "csat", "score": 4, "timestamp": NOW})
    at = position % len(good)
    _check_result(validate("surveys", good[:at] + raw + good[at:]))


@st.composite
def message_streams(draw: st.DrawFn) -> list[FuzzCase]:
    """Valid surveys and starts, duplicates and garbage, in random order, one partition."""
    cases: list[FuzzCase] = []
    sent: list[FuzzCase] = []
    for i in range(draw(st.integers(1, 40))):
        choice = draw(st.integers(0, 3))
        if choice == 0 and sent:
            original = draw(st.sampled_from(sent))
            cases.append(FuzzCase(original.kind, b"k", original.value, "duplicate", event=original.event))
        elif choice == 1:
            raw = draw(st.binary(max_size=50) | json_values.map(orjson.dumps))
            result = validate("surveys", raw)
            if isinstance(result, Rejection):
                cases.append(FuzzCase("surveys", b"k", raw, "rejected", result.reason))
        else:
            event = draw(valid_surveys())
            event["event_id"] = f"prop-{i}"
            event["timestamp"] = NOW - draw(st.integers(0, 20 * MIN))
            event.setdefault("queue", "q")
            event.setdefault("channel", "voice")
            case = FuzzCase("surveys", b"k", orjson.dumps(event), "accepted", event=event)
            cases.append(case)
            sent.append(case)
    return cases


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(stream=message_streams(), cuts=st.lists(st.integers(0, 40), max_size=6), redeliver=st.integers(0, 40))
def test_counts_are_exact_whatever_the_batching_and_redelivery(
    stream: list[FuzzCase], cuts: list[int], redeliver: int
) -> None:
    processor, state, dead = _process(stream, batches=sorted({c for c in cuts if c < len(stream)}))
    expected_responses = sum(1 for c in stream if c.outcome == "accepted")
    totals = _totals(state)
    responses = totals[kpi.CSAT_RESPONSES] + totals[kpi.NPS_RESPONSES] + totals[kpi.CES_RESPONSES]
    assert responses == expected_responses
    assert [d.value for d in dead] == [c.value for c in stream if c.outcome == "rejected"]
    # Redelivery of an already processed prefix (a consumer restart) changes nothing.
    before = repr(state.buckets)
    again = [
        InputMessage("cx.surveys", offset, c.key, c.value) for offset, c in enumerate(stream[: redeliver + 1])
    ]
    assert processor.process_batch(state, again, NOW) == []
    assert repr(state.buckets) == before


def test_reason_codes_are_stable_ascii_tokens(corpus: list[FuzzCase]) -> None:
    allowed = set(string.ascii_lowercase + string.digits + "_:")
    for case in corpus:
        if case.reason:
            assert set(case.reason) <= allowed, case.reason


def test_hostile_labels_are_counted_with_team_and_agent_labels_on(corpus: list[FuzzCase]) -> None:
    """Regression: dim_key once took only (queue, channel), so with team/agent labels every
    valid event was dead-lettered as processing_error:TypeError."""
    processor = Processor(Settings(label_team=True, label_agent=True))
    state = PartitionState(0)
    labelled = [c for c in corpus if c.label == "labels"]
    messages = [InputMessage(f"cx.{c.kind}", i, c.key, c.value) for i, c in enumerate(labelled)]
    assert processor.process_batch(state, messages, NOW) == []
    totals = _totals(state)
    assert totals[kpi.CONTACTS] + totals[kpi.CSAT_RESPONSES] + totals[kpi.NPS_RESPONSES] + totals[
        kpi.CES_RESPONSES
    ] == len(labelled)
