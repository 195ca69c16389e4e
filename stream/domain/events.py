"""Input events as typed msgspec Structs, validated exactly as ``CONTRACT.md`` defines them.

Why msgspec: it decodes JSON bytes straight into typed, constrained Structs in C (types,
lengths, enums, ranges, the tagged union on ``type`` / ``metric``), faster than
``orjson.loads`` plus field-by-field checks, and the classes below *are* the
contract's field tables. What a type annotation cannot say is checked right after
decoding, in :meth:`EventValidator.interaction` / :meth:`EventValidator.survey`:
ISO timestamps and the future skew (they depend on now), the label length (a
setting), the CES scale default and its score range.

Every failure maps to a short machine-readable reason code (docs/faults.md, a public
contract: the ``cx-reason`` header of the dead-letter topic); nothing here raises to
the caller. A rejection is classified off the hot path (:func:`_classify`): JSON
well-formedness as strict RFC 8259 (orjson: no NaN, no ``1e400``, no byte-order mark),
then the field msgspec names, so the codes are the same as those of the hand-written
validator this replaced, message for message.

(No ``from __future__ import annotations`` here: msgspec reads these annotations at
class creation, and :data:`WireTime` is deliberately seen differently by mypy.)
"""

import re
from typing import TYPE_CHECKING, Annotated, ClassVar, Final, Literal, TypeVar

import msgspec
import orjson

from stream.config.timeutil import parse_event_time_ms

CHANNELS: Final = frozenset({"voice", "chat", "email", "sms", "social", "messaging", "web"})
INTERACTION_TYPES: Final = frozenset(
    {
        "contact_started",
        "contact_transferred",
        "contact_ended",
        "contact_queued",
        "contact_answered",
        "contact_abandoned",
    }
)
AGENT_STATES: Final = frozenset({"available", "busy", "after_contact_work", "away", "offline"})
#: Most queues one agent_state may list.
MAX_AGENT_QUEUES: Final = 64
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
#: The longest label any configuration accepts (``CXSTREAM_MAX_LABEL_LENGTH``'s upper bound);
#: the configured, usually shorter, limit is checked after decoding.
MAX_LABEL_LENGTH: Final = 1024
_BOM: Final = b"\xef\xbb\xbf"
T = TypeVar("T")

# -- field types --------------------------------------------------------------------------------
#: An identifier: event, contact, customer, survey id.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
#: A label (queue, team, agent, reason): becomes a Prometheus label value and a dimension key,
#: so no control characters.
Label = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_LENGTH, pattern=r"^[^\x00-\x1f\x7f]*$")
]
Channel = Literal["voice", "chat", "email", "sms", "social", "messaging", "web"]
CesScale = Literal["agree_1_7", "effort_1_5"]
HandleSeconds = Annotated[float, msgspec.Meta(ge=0, lt=1e7)]

if TYPE_CHECKING:
    from stream.config.settings import Settings

    #: Epoch milliseconds once validated (what the pipeline reads).
    WireTime = int
    #: A CES scale once validated; None on CSAT and NPS.
    ScaleAsSent = str | None
else:
    #: As sent: epoch milliseconds or ISO-8601 text; normalised to int before anyone reads it.
    WireTime = int | str
    #: As sent: anything on CSAT and NPS (ignored, set to None), a CesScale on CES.
    ScaleAsSent = object


# -- interactions (tagged union on ``type``) ----------------------------------------------------
class Interaction(msgspec.Struct, kw_only=True, tag_field="type"):
    """A validated contact lifecycle event: one of the three classes below."""

    type: ClassVar[str]
    #: Label fields, checked against the configured length after decoding.
    LABELS: ClassVar[tuple[str, ...]] = ("queue", "agent_id", "team", "reason")

    event_id: Id
    contact_id: Id
    ts_ms: WireTime = msgspec.field(name="timestamp")
    customer_id: Id | None = None
    channel: Channel | None = None
    queue: Label | None = None
    agent_id: Label | None = None
    team: Label | None = None
    reason: Label | None = None


class ContactStarted(Interaction, tag="contact_started"):
    """A contact begins: customer, channel and queue are required."""

    type: ClassVar[str] = "contact_started"
    customer_id: Id
    channel: Channel
    queue: Label


class ContactTransferred(Interaction, tag="contact_transferred"):
    """The contact moved to another queue or agent."""

    type: ClassVar[str] = "contact_transferred"
    LABELS: ClassVar[tuple[str, ...]] = ("queue", "agent_id", "team", "reason", "to_queue", "to_agent")
    to_queue: Label | None = None
    to_agent: Label | None = None


class ContactEnded(Interaction, tag="contact_ended"):
    """The contact is over; the customer may say whether it was resolved."""

    type: ClassVar[str] = "contact_ended"
    resolved: bool | None = None
    handle_seconds: HandleSeconds | None = None


class ContactQueued(Interaction, tag="contact_queued"):
    """The contact entered a queue (contract v2): a wait starts; the queue is required."""

    type: ClassVar[str] = "contact_queued"
    queue: Label


class ContactAnswered(Interaction, tag="contact_answered"):
    """An agent connected (contract v2): ends the contact's open wait."""

    type: ClassVar[str] = "contact_answered"


class ContactAbandoned(Interaction, tag="contact_abandoned"):
    """The customer left while waiting (contract v2): ends the contact's open wait."""

    type: ClassVar[str] = "contact_abandoned"


#: The events that open or end a wait in queue (stream.domain.waits).
WAIT_EVENTS: Final = (ContactQueued, ContactAnswered, ContactAbandoned)


# -- agents (cx.agents, contract v2) ---------------------------------------------------------
AgentStateName = Literal["available", "busy", "after_contact_work", "away", "offline"]


class AgentState(msgspec.Struct, kw_only=True, tag_field="type", tag="agent_state"):
    """An agent's state from ``timestamp`` on (the newest event time wins)."""

    type: ClassVar[str] = "agent_state"
    LABELS: ClassVar[tuple[str, ...]] = ("agent_id", "team")

    event_id: Id
    agent_id: Label
    ts_ms: WireTime = msgspec.field(name="timestamp")
    state: AgentStateName
    team: Label | None = None
    queues: Annotated[list[Label], msgspec.Meta(max_length=MAX_AGENT_QUEUES)] | None = None


# -- surveys (tagged union on ``metric``) -------------------------------------------------------
class Survey(msgspec.Struct, kw_only=True, tag_field="metric"):
    """A validated survey response: one of the three classes below."""

    metric: ClassVar[str]
    LABELS: ClassVar[tuple[str, ...]] = ("queue", "agent_id", "team")

    event_id: Id
    contact_id: Id
    ts_ms: WireTime = msgspec.field(name="timestamp")
    score: int
    #: CES only (its scale, defaulted to ``agree_1_7``); ignored as sent on CSAT and NPS.
    scale: ScaleAsSent = None
    survey_id: Id | None = None
    customer_id: Id | None = None
    channel: Channel | None = None
    queue: Label | None = None
    agent_id: Label | None = None
    team: Label | None = None


class CsatResponse(Survey, tag="csat"):
    """CSAT 1..5."""

    metric: ClassVar[str] = "csat"
    score: Annotated[int, msgspec.Meta(ge=1, le=5)]


class NpsResponse(Survey, tag="nps"):
    """NPS 0..10."""

    metric: ClassVar[str] = "nps"
    score: Annotated[int, msgspec.Meta(ge=0, le=10)]


class CesResponse(Survey, tag="ces"):
    """CES on its scale: agree 1..7 (default) or effort 1..5; the range is checked by scale."""

    metric: ClassVar[str] = "ces"
    scale: CesScale | None = None


_INTERACTIONS: Final = msgspec.json.Decoder(
    ContactStarted | ContactTransferred | ContactEnded | ContactQueued | ContactAnswered | ContactAbandoned
)
_AGENTS: Final = msgspec.json.Decoder(AgentState)
_SURVEYS: Final = msgspec.json.Decoder(CsatResponse | NpsResponse | CesResponse)


class Rejection(msgspec.Struct, frozen=True):
    """Why a message was refused: ``reason`` is a stable code, ``detail`` is for humans."""

    reason: str
    detail: str


# -- rejections: msgspec's error -> the documented reason code ---------------------------------
_AT: Final = re.compile(r" - at `\$\.([A-Za-z_]+)(?:\[\d+\])?`$")
_MISSING: Final = re.compile(r"^Object missing required field `([A-Za-z_]+)`")
#: Enum-like fields: a wrong value of any type is "unknown" (docs/faults.md).
_UNKNOWN: Final = {
    "type": "unknown_type",
    "channel": "unknown_channel",
    "metric": "unknown_metric",
    "scale": "unknown_scale",
    "state": "unknown_state",
}
#: Numbers whose wrong *value* is out_of_range (a wrong type stays invalid_type).
_RANGED: Final = {"score": (int,), "handle_seconds": (int, float)}


def _classify(raw: bytes, error: Exception) -> Rejection:
    """The reason code of a message msgspec refused (only rejected messages get here)."""
    message = str(error)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        invalid_utf8 = "utf-8" in text.lower() or raw.startswith(_BOM)
        return Rejection("invalid_utf8" if invalid_utf8 else "invalid_json", text[:200])
    if type(obj) is not dict:
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if not isinstance(error, msgspec.ValidationError):  # well-formed for orjson, not for msgspec
        return Rejection("invalid_json", message[:200])  # (nesting orjson allows, msgspec does not)
    missing = _MISSING.match(message)
    at = _AT.search(message)
    name = missing.group(1) if missing else at.group(1) if at else None
    if name is None:  # pragma: no cover - every field error names its field
        return Rejection("invalid_json", message[:200])
    value = obj.get(name)
    if value is None:
        return Rejection(f"missing_field:{name}", f"{name} is required")
    if name in _UNKNOWN:
        return Rejection(_UNKNOWN[name], f"{name}: {message}"[:200])
    if name == "timestamp":
        return Rejection("invalid_timestamp", message[:200])
    if "of length" in message:
        return Rejection(f"invalid_length:{name}", message[:200])
    if "matching regex" in message:
        return Rejection(f"invalid_characters:{name}", f"{name} must not contain control characters")
    ranged = _RANGED.get(name)
    if ranged is not None and type(value) in ranged:
        return Rejection(f"out_of_range:{name}", message[:200])
    return Rejection(f"invalid_type:{name}", message[:200])


def _decode(decoder: "msgspec.json.Decoder[T]", raw: bytes | None) -> "T | Rejection":
    """Decode and type-check ``raw``; a rejection names the documented reason."""
    if raw is None:
        return Rejection("empty_value", "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection("too_large", f"message is {len(raw)} bytes; limit {MAX_MESSAGE_BYTES}")
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        return _classify(raw, exc)
    except RecursionError:
        # Deeper nesting (in an unknown field) than msgspec's recursion allows but within
        # orjson's limit is still a valid event: convert orjson's objects instead, which does
        # not descend into fields the event does not have.
        try:
            return msgspec.convert(orjson.loads(raw), decoder.type)  # type: ignore[no-any-return]
        except orjson.JSONDecodeError as exc:
            return _classify(raw, exc)
        except msgspec.ValidationError as exc:
            return _classify(raw, exc)


class EventValidator:
    """Validates raw message bytes against the contract.

    Holds the limits that come from settings (label length, future skew) so the
    per-message functions take only the message and the current time.
    """

    def __init__(self, *, max_label_length: int = 64, max_future_skew_ms: int = 300_000) -> None:
        self.max_label_length = max_label_length
        self.max_future_skew_ms = max_future_skew_ms

    @classmethod
    def for_settings(cls, settings: "Settings") -> "EventValidator":
        """The limits of ``CXSTREAM_MAX_LABEL_LENGTH`` and ``CXSTREAM_MAX_FUTURE_SKEW``: one
        validator for the worker and for everything that translates into its input."""
        return cls(
            max_label_length=settings.max_label_length,
            max_future_skew_ms=int(settings.max_future_skew * 1000),
        )

    def _checked(self, event: Interaction | Survey | AgentState, now_ms: int) -> Rejection | None:
        """What the types cannot say: the timestamp against now, the configured label length."""
        ts = event.ts_ms
        if type(ts) is not int:
            try:
                ts = event.ts_ms = parse_event_time_ms(ts)
            except (ValueError, OverflowError, OSError) as exc:
                return Rejection("invalid_timestamp", str(exc)[:200])
        if ts > now_ms + self.max_future_skew_ms:
            return Rejection("future_timestamp", f"timestamp {ts} is beyond the allowed skew")
        if ts < 0:
            return Rejection("invalid_timestamp", "timestamp before 1970")
        limit = self.max_label_length
        if limit < MAX_LABEL_LENGTH:
            for name in event.LABELS:
                value = getattr(event, name)
                if value is not None and len(value) > limit:
                    return Rejection(f"invalid_length:{name}", f"{name} must be 1..{limit} characters")
            queues = getattr(event, "queues", None)
            if queues and any(len(queue) > limit for queue in queues):
                return Rejection("invalid_length:queues", f"each of queues must be 1..{limit} characters")
        return None

    # -- public entry points ------------------------------------------------
    def interaction(self, raw: bytes | None, now_ms: int) -> Interaction | Rejection:
        """Validate one ``cx.interactions`` message."""
        decoded = _decode(_INTERACTIONS, raw)
        if isinstance(decoded, Rejection):
            return decoded
        return self._checked(decoded, now_ms) or decoded

    def agent(self, raw: bytes | None, now_ms: int) -> AgentState | Rejection:
        """Validate one ``cx.agents`` message (contract v2)."""
        decoded = _decode(_AGENTS, raw)
        if isinstance(decoded, Rejection):
            return decoded
        return self._checked(decoded, now_ms) or decoded

    def survey(self, raw: bytes | None, now_ms: int) -> Survey | Rejection:
        """Validate one ``cx.surveys`` message."""
        event = _decode(_SURVEYS, raw)
        if isinstance(event, Rejection):
            return event
        if type(event) is CesResponse:
            scale = event.scale = event.scale or "agree_1_7"
            low, high = SCORE_RANGES[("ces", scale)]
            if not low <= event.score <= high:
                return Rejection("out_of_range:score", f"ces score must be {low}..{high} on {scale}")
        else:
            event.scale = None
        return self._checked(event, now_ms) or event
