"""Input events and their validation, exactly as ``CONTRACT.md`` defines them.

Validation is hand-written rather than a pydantic model because it runs once per
input message on the hot path: a dict lookup per field costs far less than model
construction. Every failure maps to a short machine-readable reason code that
travels to the dead-letter topic in a header; nothing here raises to the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import orjson

from stream.timeutil import parse_event_time_ms

CHANNELS: Final = frozenset({"voice", "chat", "email", "sms", "social", "messaging", "web"})
INTERACTION_TYPES: Final = frozenset({"contact_started", "contact_transferred", "contact_ended"})
SURVEY_METRICS: Final = frozenset({"csat", "nps", "ces"})
CES_SCALES: Final = frozenset({"agree_1_7", "effort_1_5"})
SCORE_RANGES: Final = {
    ("csat", None): (1, 5),
    ("nps", None): (0, 10),
    ("ces", "agree_1_7"): (1, 7),
    ("ces", "effort_1_5"): (1, 5),
}
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_ID_LENGTH: Final = 256
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(slots=True)
class Interaction:
    """A validated contact lifecycle event."""

    event_id: str
    type: str
    contact_id: str
    ts_ms: int
    customer_id: str | None = None
    channel: str | None = None
    queue: str | None = None
    agent_id: str | None = None
    team: str | None = None
    reason: str | None = None
    to_queue: str | None = None
    to_agent: str | None = None
    resolved: bool | None = None
    handle_seconds: float | None = None


@dataclass(slots=True)
class Survey:
    """A validated survey response (CES scale already defaulted)."""

    event_id: str
    contact_id: str
    metric: str
    score: int
    ts_ms: int
    scale: str | None = None
    survey_id: str | None = None
    customer_id: str | None = None
    channel: str | None = None
    queue: str | None = None
    agent_id: str | None = None
    team: str | None = None


@dataclass(slots=True, frozen=True)
class Rejection:
    """Why a message was refused: ``reason`` is a stable code, ``detail`` is for humans."""

    reason: str
    detail: str


class _Reject(Exception):
    """Internal control flow: carries a Rejection out of nested checks."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


class EventValidator:
    """Validates raw message bytes against the contract.

    Holds the limits that come from settings (label length, future skew) so the
    per-message functions take only the message and the current time.
    """

    def __init__(self, *, max_label_length: int = 64, max_future_skew_ms: int = 300_000) -> None:
        self.max_label_length = max_label_length
        self.max_future_skew_ms = max_future_skew_ms

    # -- shared pieces ------------------------------------------------------
    def _decode(self, raw: bytes | None) -> dict:
        if raw is None:
            raise _Reject("empty_value", "message has no value")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise _Reject("too_large", f"message is {len(raw)} bytes; limit {MAX_MESSAGE_BYTES}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            text = str(exc)
            reason = "invalid_utf8" if "utf-8" in text.lower() else "invalid_json"
            raise _Reject(reason, text[:200]) from None
        if type(obj) is not dict:
            raise _Reject("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
        return obj

    def _string(self, obj: dict, field: str, *, required: bool, label: bool = False) -> str | None:
        value = obj.get(field)
        if value is None:
            if required:
                raise _Reject(f"missing_field:{field}", f"{field} is required")
            return None
        if type(value) is not str:
            raise _Reject(f"invalid_type:{field}", f"{field} must be a string")
        limit = self.max_label_length if label else MAX_ID_LENGTH
        if not value or len(value) > limit:
            raise _Reject(f"invalid_length:{field}", f"{field} must be 1..{limit} characters")
        if label and _CONTROL_CHARACTERS.search(value):
            # Labels become Prometheus label values and internal dimension keys.
            raise _Reject(f"invalid_characters:{field}", f"{field} must not contain control characters")
        return value

    def _timestamp(self, obj: dict, now_ms: int) -> int:
        raw = obj.get("timestamp")
        if raw is None:
            raise _Reject("missing_field:timestamp", "timestamp is required")
        try:
            ts = parse_event_time_ms(raw)
        except (ValueError, OverflowError, OSError) as exc:
            raise _Reject("invalid_timestamp", str(exc)[:200]) from None
        if ts > now_ms + self.max_future_skew_ms:
            raise _Reject("future_timestamp", f"timestamp {ts} is beyond the allowed skew")
        if ts < 0:
            raise _Reject("invalid_timestamp", "timestamp before 1970")
        return ts

    def _channel(self, obj: dict, *, required: bool) -> str | None:
        channel = obj.get("channel")
        if channel is None:
            if required:
                raise _Reject("missing_field:channel", "channel is required on contact_started")
            return None
        if type(channel) is not str or channel not in CHANNELS:  # a list or dict is unhashable
            raise _Reject("unknown_channel", f"channel must be one of {sorted(CHANNELS)}")
        return channel  # type: ignore[no-any-return]

    # -- public entry points ------------------------------------------------
    def interaction(self, raw: bytes | None, now_ms: int) -> Interaction | Rejection:
        """Validate one ``cx.interactions`` message."""
        try:
            obj = self._decode(raw)
            kind = obj.get("type")
            if kind is None:
                raise _Reject("missing_field:type", "type is required")
            if type(kind) is not str or kind not in INTERACTION_TYPES:
                raise _Reject("unknown_type", f"type must be one of {sorted(INTERACTION_TYPES)}")
            started = kind == "contact_started"
            event = Interaction(
                event_id=self._string(obj, "event_id", required=True),  # type: ignore[arg-type]
                type=kind,
                contact_id=self._string(obj, "contact_id", required=True),  # type: ignore[arg-type]
                ts_ms=self._timestamp(obj, now_ms),
                customer_id=self._string(obj, "customer_id", required=started),
                channel=self._channel(obj, required=started),
                queue=self._string(obj, "queue", required=started, label=True),
                agent_id=self._string(obj, "agent_id", required=False, label=True),
                team=self._string(obj, "team", required=False, label=True),
                reason=self._string(obj, "reason", required=False, label=True),
            )
            if kind == "contact_transferred":
                event.to_queue = self._string(obj, "to_queue", required=False, label=True)
                event.to_agent = self._string(obj, "to_agent", required=False, label=True)
            elif kind == "contact_ended":
                resolved = obj.get("resolved")
                if resolved is not None and type(resolved) is not bool:
                    raise _Reject("invalid_type:resolved", "resolved must be true or false")
                event.resolved = resolved
                handle = obj.get("handle_seconds")
                if handle is not None:
                    if type(handle) not in (int, float):
                        raise _Reject("invalid_type:handle_seconds", "must be a number")
                    if not 0 <= handle < 1e7:  # also false for NaN
                        raise _Reject("out_of_range:handle_seconds", "must be >= 0 and finite")
                    event.handle_seconds = float(handle)
            return event
        except _Reject as exc:
            return exc.rejection

    def survey(self, raw: bytes | None, now_ms: int) -> Survey | Rejection:
        """Validate one ``cx.surveys`` message."""
        try:
            obj = self._decode(raw)
            metric = obj.get("metric")
            if metric is None:
                raise _Reject("missing_field:metric", "metric is required")
            if type(metric) is not str or metric not in SURVEY_METRICS:
                raise _Reject("unknown_metric", f"metric must be one of {sorted(SURVEY_METRICS)}")
            scale = None
            if metric == "ces":
                scale = obj.get("scale")
                if scale is None:  # absent or null, like every other optional field
                    scale = "agree_1_7"
                if type(scale) is not str or scale not in CES_SCALES:
                    raise _Reject("unknown_scale", f"scale must be one of {sorted(CES_SCALES)}")
            score = obj.get("score")
            if score is None:
                raise _Reject("missing_field:score", "score is required")
            if type(score) is not int:
                raise _Reject("invalid_type:score", "score must be an integer")
            low, high = SCORE_RANGES[(metric, scale)]
            if not low <= score <= high:
                raise _Reject("out_of_range:score", f"{metric} score must be {low}..{high}")
            return Survey(
                event_id=self._string(obj, "event_id", required=True),  # type: ignore[arg-type]
                contact_id=self._string(obj, "contact_id", required=True),  # type: ignore[arg-type]
                metric=metric,
                score=score,
                ts_ms=self._timestamp(obj, now_ms),
                scale=scale,
                survey_id=self._string(obj, "survey_id", required=False),
                customer_id=self._string(obj, "customer_id", required=False),
                channel=self._channel(obj, required=False),
                queue=self._string(obj, "queue", required=False, label=True),
                agent_id=self._string(obj, "agent_id", required=False, label=True),
                team=self._string(obj, "team", required=False, label=True),
            )
        except _Reject as exc:
            return exc.rejection
