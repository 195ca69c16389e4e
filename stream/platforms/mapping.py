"""Declarative platform mappings: a vendor payload in, contract events out.

A mapping is data (a YAML file, ``stream/platforms/mappings/<format>.yml`` for the shipped
platforms, any path for an in-house one), not code; docs/platforms.md ("Writing a mapping
for your own platform") shows a whole one, and the unit tests load that example. It names
the vendor (``format``, ``title``, ``id_prefix``), how to tell its records (``recognize``)
and find them in a payload (``inputs``: envelopes unwrapped, batches split), value
``tables``, and ``rules``: every rule whose ``when`` holds for a record emits one contract
event (``event``) with its ``fields``.

Every ``when``, ``id`` and field is a JMESPath expression over one record (literals are
quoted: ``'voice'``), with the functions of :mod:`stream.platforms.functions`. A field that
evaluates to null or ``""`` is left out; a number where the contract wants text (Zendesk's
numeric ids) becomes text. Every event a payload maps to is then validated exactly as the
worker would (:class:`~stream.domain.events.EventValidator`), so a translated payload is
either wholly valid contract events or one :class:`TranslationError` with a reason; nothing
is half-translated.

**Deterministic event ids** (``<id_prefix>:<vendor ids>:<step>``) are what make at-least-once
vendors exact: a re-delivered payload, or a new version of a record (an Amazon Connect
contact record updated after the contact), maps to the same ids, and the worker's dedup
drops the repeat. Two formats of one vendor share the prefix, so the same lifecycle step
read from both (a queue wait in Amazon Connect's contact events and in its contact record)
counts once.

``skip_without`` names fields without which a rule emits nothing (instead of an invalid
event): where a vendor cannot provide what the contract requires (a customer id on
``contact_started``), the mapping says so and derives none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import jmespath
import jmespath.exceptions
import msgspec
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stream.config.settings import Settings, SettingsError
from stream.domain import events as ev
from stream.platforms.functions import MappingFunctions, UnmappedValue

Topic = Literal["interactions", "surveys", "agents"]
_CLASSES: Final[dict[str, type[msgspec.Struct]]] = {
    "contact_started": ev.ContactStarted,
    "contact_transferred": ev.ContactTransferred,
    "contact_ended": ev.ContactEnded,
    "contact_queued": ev.ContactQueued,
    "contact_answered": ev.ContactAnswered,
    "contact_abandoned": ev.ContactAbandoned,
    "csat": ev.CsatResponse,
    "nps": ev.NpsResponse,
    "ces": ev.CesResponse,
    "agent_state": ev.AgentState,
}
#: Contract fields that are not text (everything else is: a vendor's number becomes text).
_NOT_TEXT: Final = frozenset({"timestamp", "resolved", "handle_seconds", "score", "queues"})
#: Fields the engine sets itself.
_ENGINE_FIELDS: Final = frozenset({"event_id", "type", "metric"})
_NAME = r"^[a-z0-9][a-z0-9_.-]*$"


def input_topics(settings: Settings) -> dict[Topic, str]:
    """The configured topic of each kind of translated event."""
    return {
        "interactions": settings.topic_interactions,
        "surveys": settings.topic_surveys,
        "agents": settings.topic_agents,
    }


def topic_of(kind: str) -> Topic:
    """The input topic an event kind goes to."""
    if kind in ("csat", "nps", "ces"):
        return "surveys"
    return "agents" if kind == "agent_state" else "interactions"


def contract_fields(kind: str) -> frozenset[str]:
    """The wire names of the contract fields an event kind has."""
    return frozenset(f.encode_name for f in msgspec.structs.fields(_CLASSES[kind]))


class MappingFileError(SettingsError):
    """A mapping file cannot be used; the message names the file, rule and field."""


class TranslationError(ValueError):
    """A payload that maps to no valid contract events: ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- the file's schema --------------------------------------------------------------------------
def _compiles(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"not a JMESPath expression: {expression!r} ({exc})") from None
    return expression


class InputSpec(BaseModel):
    """Where a payload's records are: ``records`` gives a list, for payloads where ``when`` holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = "`true`"
    records: str = "[@]"

    @field_validator("when", "records")
    @classmethod
    def _expression(cls, value: str) -> str:
        return _compiles(value)


class RuleSpec(BaseModel):
    """One lifecycle step: when it holds for a record, one contract event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The contract event the rule emits: an interaction ``type``, a survey ``metric`` or
    #: ``agent_state``.
    event: str
    step: str = Field(pattern=_NAME, max_length=40)
    when: str = "`true`"
    id: str
    fields: dict[str, str]
    skip_without: tuple[str, ...] = ()
    note: str | None = None

    @field_validator("when", "id")
    @classmethod
    def _expression(cls, value: str) -> str:
        return _compiles(value)

    @field_validator("event")
    @classmethod
    def _event_kind(cls, value: str) -> str:
        if value not in _CLASSES:
            raise ValueError(f"{value!r} is no contract event; one of {', '.join(_CLASSES)}")
        return value

    @model_validator(mode="after")
    def _contract_fields(self) -> RuleSpec:
        allowed = contract_fields(self.event) - _ENGINE_FIELDS
        unknown = sorted(set(self.fields) - allowed)
        if unknown:
            known = ", ".join(sorted(allowed))
            raise ValueError(f"{self.event} has no field {', '.join(unknown)} (contract fields: {known})")
        for name, expression in self.fields.items():
            try:
                _compiles(expression)
            except ValueError as exc:
                raise ValueError(f"fields.{name}: {exc}") from None
        missing = sorted(set(self.skip_without) - set(self.fields))
        if missing:
            raise ValueError(f"skip_without names fields the rule does not set: {', '.join(missing)}")
        return self


class MappingSpec(BaseModel):
    """A whole mapping file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(pattern=_NAME, max_length=60)
    title: str
    id_prefix: str = Field(pattern=_NAME, max_length=40)
    body: Literal["json", "json_or_form"] = "json"
    recognize: str
    inputs: tuple[InputSpec, ...] = (InputSpec(),)
    tables: dict[str, dict[str, Any]] = {}
    rules: tuple[RuleSpec, ...] = Field(min_length=1)
    #: Where the payload shapes come from (vendor documentation), for docs/platforms.md.
    source: str = ""
    #: What the vendor cannot provide, said once here and in docs/platforms.md.
    gaps: tuple[str, ...] = ()

    @field_validator("recognize")
    @classmethod
    def _expression(cls, value: str) -> str:
        return _compiles(value)


def load_spec(path: Path) -> MappingSpec:
    """Read and validate a mapping file; errors name the file and the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingFileError(f"mapping file {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise MappingFileError(f"mapping file {path}: not valid YAML ({exc})") from None
    try:
        return MappingSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise MappingFileError(f"mapping file {path}: {where}: {first['msg']}") from None


# -- what a translation produces ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Translated:
    """One contract event: its topic, partition key (contact or agent id) and JSON bytes."""

    topic: Topic
    key: str
    value: bytes
    event: dict[str, Any]


def _text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


def _id_part(value: Any) -> str:
    if isinstance(value, list):
        return ":".join(_id_part(v) for v in value if v not in (None, ""))
    if value in (None, ""):
        return ""
    return str(_text(value))


class Mapping:
    """A compiled mapping: :meth:`translate` one decoded payload, :meth:`translate_body` bytes."""

    def __init__(self, spec: MappingSpec, *, validator: ev.EventValidator | None = None) -> None:
        self.spec = spec
        self.format = spec.format
        self._options = jmespath.Options(custom_functions=MappingFunctions(spec.tables))
        self._recognize = jmespath.compile(spec.recognize)
        self._inputs = [(jmespath.compile(i.when), jmespath.compile(i.records)) for i in spec.inputs]
        self._rules = [
            (
                rule,
                jmespath.compile(rule.when),
                jmespath.compile(rule.id),
                [(name, jmespath.compile(expression)) for name, expression in rule.fields.items()],
            )
            for rule in spec.rules
        ]
        #: The worker's own checks (its settings' label length and future skew).
        self._validator = validator or ev.EventValidator()

    # -- decoding ----------------------------------------------------------------
    def decode(self, body: bytes, content_type: str | None = None) -> Any:
        """The payload as JSON values: a JSON document, or (``json_or_form``) a form body."""
        form = content_type is not None and content_type.startswith("application/x-www-form-urlencoded")
        if self.spec.body == "json_or_form" and (form or body.lstrip()[:1] not in (b"{", b"[")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise TranslationError("invalid_utf8", "form body is not UTF-8") from None
            pairs = parse_qsl(text, keep_blank_values=True)
            if not pairs:
                raise TranslationError("invalid_form", "an empty or unparseable form body")
            return dict(pairs)
        if form:
            raise TranslationError("unsupported_media_type", f"{self.format} payloads are JSON")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            text = str(exc)
            reason = "invalid_utf8" if "utf-8" in text.lower() else "invalid_json"
            raise TranslationError(reason, text[:200]) from None

    def translate_body(self, body: bytes, now_ms: int, content_type: str | None = None) -> list[Translated]:
        """Decode and translate one request body or one line of a file."""
        return self.translate(self.decode(body, content_type), now_ms)

    # -- mapping -----------------------------------------------------------------
    def _search(self, expression: Any, record: Any) -> Any:
        try:
            return expression.search(record, self._options)
        except UnmappedValue as exc:
            raise TranslationError(f"unmapped_value:{exc.table}", str(exc)[:200]) from None
        except (jmespath.exceptions.JMESPathError, ValueError, TypeError) as exc:
            raise TranslationError("invalid_payload", str(exc).replace("\n", " ")[:200]) from None
        except RecursionError:
            raise TranslationError("invalid_payload", "payload nested too deeply") from None

    def records(self, payload: Any) -> list[Any]:
        """The payload's records (an envelope unwrapped, a batch split)."""
        for when, records in self._inputs:
            if self._search(when, payload):
                found = self._search(records, payload)
                if not isinstance(found, list):
                    found = [] if found is None else [found]
                return found
        return []

    def translate(self, payload: Any, now_ms: int) -> list[Translated]:
        """Every contract event of one payload, validated; or a :class:`TranslationError`.

        A recognised record no rule matches (an event type cxstream does not use, such as
        Amazon Connect's ``CONTACT_DATA_UPDATED``) maps to nothing, which is not an error. In
        a batch, records of other kinds (a Twilio Event Streams sink also subscribed to voice
        events) are skipped, as long as one record is this vendor's.
        """
        records = self.records(payload)
        if not records:
            raise TranslationError("unrecognized_payload", f"no {self.spec.title} in the payload")
        mine = [r for r in records if isinstance(r, dict) and self._search(self._recognize, r)]
        if not mine:
            raise TranslationError(
                "unrecognized_payload", f"this is no {self.spec.title} (format {self.format})"
            )
        out: list[Translated] = []
        for record in mine:
            for rule, when, id_expression, fields in self._rules:
                if self._search(when, record):
                    event = self._event(rule, id_expression, fields, record)
                    if event is not None:
                        out.append(self._validated(rule, event, now_ms))
        return out

    def _event(
        self, rule: RuleSpec, id_expression: Any, fields: list[tuple[str, Any]], record: Any
    ) -> dict[str, Any] | None:
        event: dict[str, Any] = {}
        for name, expression in fields:
            value = self._search(expression, record)
            if value is None or value == "" or value == []:
                continue
            event[name] = value if name in _NOT_TEXT else _text(value)
        if any(name not in event for name in rule.skip_without):
            return None
        vendor_id = _id_part(self._search(id_expression, record))
        if not vendor_id:
            raise TranslationError(
                "missing_field:id", f"rule {rule.step}: the vendor id ({rule.id}) is absent"
            )
        event_id = f"{self.spec.id_prefix}:{vendor_id}:{rule.step}"
        if len(event_id) > ev.MAX_ID_LENGTH:
            digest = hashlib.sha256(vendor_id.encode()).hexdigest()[:40]
            event_id = f"{self.spec.id_prefix}:{digest}:{rule.step}"
        tag = "metric" if topic_of(rule.event) == "surveys" else "type"
        return {"event_id": event_id, tag: rule.event, **event}

    def _validated(self, rule: RuleSpec, event: dict[str, Any], now_ms: int) -> Translated:
        topic = topic_of(rule.event)
        value = orjson.dumps(event)
        check = {
            "interactions": self._validator.interaction,
            "surveys": self._validator.survey,
            "agents": self._validator.agent,
        }[topic]
        result = check(value, now_ms)
        if isinstance(result, ev.Rejection):
            raise TranslationError(
                f"invalid_event:{result.reason}", f"rule {rule.step} ({rule.event}): {result.detail}"
            )
        key = event["agent_id"] if topic == "agents" else event["contact_id"]
        return Translated(topic=topic, key=str(key), value=value, event=event)
