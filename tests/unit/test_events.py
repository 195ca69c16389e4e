"""Input validation against every rule of CONTRACT.md (stream.domain.events)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.domain.events import (
    MAX_MESSAGE_BYTES,
    ContactEnded,
    ContactStarted,
    EventValidator,
    Interaction,
    Rejection,
    Survey,
)

NOW_MS = 1_795_341_600_000  # 2026-11-22T10:00:00Z
SKEW_MS = 300_000
CHANNELS = ["voice", "chat", "email", "sms", "social", "messaging", "web"]

V = EventValidator(max_label_length=64, max_future_skew_ms=SKEW_MS)

#: The reason codes that travel in the dead-letter header: other teams route on them.
REASON = re.compile(
    r"^(empty_value|too_large|invalid_json|invalid_utf8|not_an_object|unknown_type|unknown_channel"
    r"|unknown_metric|unknown_scale|invalid_timestamp|future_timestamp"
    r"|(missing_field|invalid_type|invalid_length|out_of_range):[a-z_]+)$"
)


def enc(obj: Any) -> bytes:
    return orjson.dumps(obj)


def started(**fields: Any) -> dict[str, Any]:
    base = {
        "event_id": "e-1",
        "type": "contact_started",
        "contact_id": "c-1",
        "customer_id": "u-1",
        "channel": "voice",
        "queue": "billing",
        "timestamp": "2026-11-22T09:59:00Z",
    }
    base.update(fields)
    return base


def ended(**fields: Any) -> dict[str, Any]:
    base = {"event_id": "e-2", "type": "contact_ended", "contact_id": "c-1", "timestamp": NOW_MS - 1000}
    base.update(fields)
    return base


def transferred(**fields: Any) -> dict[str, Any]:
    base = {"event_id": "e-3", "type": "contact_transferred", "contact_id": "c-1", "timestamp": NOW_MS}
    base.update(fields)
    return base


def survey(**fields: Any) -> dict[str, Any]:
    base = {
        "event_id": "s-1",
        "contact_id": "c-1",
        "metric": "csat",
        "score": 4,
        "timestamp": "2026-11-22T10:00:00Z",
    }
    base.update(fields)
    return base


def drop(obj: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != field}


def interaction(obj: Any) -> Interaction | Rejection:
    return V.interaction(obj if isinstance(obj, bytes) else enc(obj), NOW_MS)


def survey_result(obj: Any) -> Survey | Rejection:
    return V.survey(obj if isinstance(obj, bytes) else enc(obj), NOW_MS)


def reason(result: object) -> str:
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert REASON.match(result.reason), result.reason
    assert isinstance(result.detail, str)
    return result.reason


# -- interactions: accepted ----------------------------------------------------------------
def test_contact_started_accepted_with_all_fields() -> None:
    event = interaction(started(agent_id="a-7", team="t-1", reason="billing_question"))
    assert isinstance(event, Interaction)
    assert event.event_id == "e-1"
    assert event.type == "contact_started"
    assert event.contact_id == "c-1"
    assert event.customer_id == "u-1"
    assert event.channel == "voice"
    assert event.queue == "billing"
    assert event.agent_id == "a-7"
    assert event.team == "t-1"
    assert event.reason == "billing_question"
    assert event.ts_ms == NOW_MS - 60_000


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_contract_channel_accepted(channel: str) -> None:
    event = interaction(started(channel=channel))
    assert isinstance(event, Interaction)
    assert event.channel == channel


def test_transferred_needs_no_start_fields() -> None:
    event = interaction(transferred(to_queue="retention", to_agent="a-9"))
    assert isinstance(event, Interaction)
    assert (event.to_queue, event.to_agent) == ("retention", "a-9")
    assert event.customer_id is None and event.channel is None and event.queue is None


def test_ended_with_resolution_and_handle_time() -> None:
    event = interaction(ended(resolved=True, handle_seconds=312.5))
    assert isinstance(event, Interaction)
    assert event.resolved is True
    assert event.handle_seconds == 312.5
    event = interaction(ended(resolved=False, handle_seconds=0))
    assert isinstance(event, Interaction)
    assert event.resolved is False
    assert event.handle_seconds == 0.0
    assert type(event.handle_seconds) is float


def test_ended_without_optional_fields() -> None:
    event = interaction(ended())
    assert isinstance(event, Interaction)
    assert event.resolved is None and event.handle_seconds is None


def test_null_optional_fields_are_absent() -> None:
    event = interaction(ended(resolved=None, handle_seconds=None, agent_id=None, channel=None))
    assert isinstance(event, Interaction)
    assert event.resolved is None and event.handle_seconds is None and event.agent_id is None


def test_unknown_extra_fields_are_ignored() -> None:
    assert isinstance(interaction(started(extra={"x": [1, 2]}, version=3)), Interaction)


def test_transfer_fields_ignored_on_other_types() -> None:
    # Only a contact_transferred has a to_queue; elsewhere it is an unknown field, any type.
    event = interaction(started(to_queue="elsewhere", resolved="maybe"))
    assert isinstance(event, ContactStarted)
    assert not hasattr(event, "to_queue") and not hasattr(event, "resolved")
    event = interaction(ended(to_queue=5))
    assert isinstance(event, ContactEnded) and not hasattr(event, "to_queue")


# -- interactions: required fields ----------------------------------------------------------
@pytest.mark.parametrize(
    "field", ["event_id", "type", "contact_id", "customer_id", "channel", "queue", "timestamp"]
)
def test_contact_started_required_fields(field: str) -> None:
    assert reason(interaction(drop(started(), field))) == f"missing_field:{field}"


@pytest.mark.parametrize("field", ["event_id", "type", "contact_id", "timestamp"])
@pytest.mark.parametrize("make", [ended, transferred])
def test_other_types_required_fields(make: Any, field: str) -> None:
    assert reason(interaction(drop(make(), field))) == f"missing_field:{field}"


@pytest.mark.parametrize("field", ["customer_id", "channel", "queue"])
def test_null_required_field_is_missing(field: str) -> None:
    assert reason(interaction(started(**{field: None}))) == f"missing_field:{field}"


@pytest.mark.parametrize("kind", ["contact_created", "CONTACT_STARTED", "", "started", 1, True, [], {}])
def test_unknown_type(kind: object) -> None:
    assert reason(interaction(started(type=kind))) == "unknown_type"


@pytest.mark.parametrize("channel", ["phone", "Voice", "", "fax", 3, False, ["voice"], {"name": "voice"}])
def test_unknown_channel(channel: object) -> None:
    assert reason(interaction(started(channel=channel))) == "unknown_channel"


def test_optional_channel_still_checked_when_present() -> None:
    assert reason(interaction(ended(channel="fax"))) == "unknown_channel"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", 17),
        ("contact_id", 17),
        ("contact_id", ["c"]),
        ("customer_id", {"id": 1}),
        ("queue", True),
        ("agent_id", 7),
        ("team", 1.5),
        ("reason", ["x"]),
    ],
)
def test_string_fields_reject_other_types(field: str, value: object) -> None:
    assert reason(interaction(started(**{field: value}))) == f"invalid_type:{field}"


@pytest.mark.parametrize("field", ["event_id", "contact_id", "customer_id", "queue", "agent_id", "team"])
def test_empty_strings_rejected(field: str) -> None:
    assert reason(interaction(started(**{field: ""}))) == f"invalid_length:{field}"


def test_label_length_limit() -> None:
    assert isinstance(interaction(started(queue="q" * 64)), Interaction)
    assert reason(interaction(started(queue="q" * 65))) == "invalid_length:queue"
    narrow = EventValidator(max_label_length=8)
    assert isinstance(narrow.interaction(enc(started(queue="q" * 8)), NOW_MS), Interaction)
    assert reason(narrow.interaction(enc(started(queue="q" * 9)), NOW_MS)) == "invalid_length:queue"


def test_id_length_limit_is_256() -> None:
    assert isinstance(interaction(started(event_id="e" * 256)), Interaction)
    assert reason(interaction(started(event_id="e" * 257))) == "invalid_length:event_id"


def test_transfer_to_queue_is_a_label() -> None:
    assert reason(interaction(transferred(to_queue=5))) == "invalid_type:to_queue"
    assert reason(interaction(transferred(to_queue="q" * 65))) == "invalid_length:to_queue"


@pytest.mark.parametrize("value", ["true", 1, 0, "yes", [True]])
def test_resolved_must_be_bool(value: object) -> None:
    assert reason(interaction(ended(resolved=value))) == "invalid_type:resolved"


@pytest.mark.parametrize("value", ["12", True, False, [1], {"s": 1}])
def test_handle_seconds_must_be_number(value: object) -> None:
    assert reason(interaction(ended(handle_seconds=value))) == "invalid_type:handle_seconds"


@pytest.mark.parametrize("value", [-1, -0.001, 1e7, 1e300])
def test_handle_seconds_range(value: float) -> None:
    assert reason(interaction(ended(handle_seconds=value))) == "out_of_range:handle_seconds"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan"])
def test_handle_seconds_nan_or_infinite_rejected(literal: bytes) -> None:
    raw = enc(ended(handle_seconds=0)).replace(b'"handle_seconds":0', b'"handle_seconds":' + literal)
    assert literal in raw
    assert reason(interaction(raw)) in {"invalid_json", "out_of_range:handle_seconds"}


# -- timestamps ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-22T10:00:00Z", NOW_MS),
        ("2026-11-22T11:00:00+01:00", NOW_MS),
        ("2026-11-22T10:00:00", NOW_MS),
        ("2026-11-22T09:00:00.5Z", NOW_MS - 3_600_000 + 500),
        (NOW_MS - 5, NOW_MS - 5),
        (0, 0),
    ],
)
def test_both_timestamp_forms(value: object, expected: int) -> None:
    event = interaction(started(timestamp=value))
    assert isinstance(event, Interaction)
    assert event.ts_ms == expected
    answer = survey_result(survey(timestamp=value))
    assert isinstance(answer, Survey)
    assert answer.ts_ms == expected


@pytest.mark.parametrize(
    "value",
    [float(NOW_MS), 1.795e12, True, "soon", "", "2026-02-30T00:00:00Z", [NOW_MS], {"ms": 1}, "1795341600000"],
)
def test_invalid_timestamp(value: object) -> None:
    assert reason(interaction(started(timestamp=value))) == "invalid_timestamp"
    assert reason(survey_result(survey(timestamp=value))) == "invalid_timestamp"


def test_negative_epoch_rejected() -> None:
    assert reason(interaction(started(timestamp=-1))) == "invalid_timestamp"
    assert reason(interaction(started(timestamp="1969-12-31T23:59:59Z"))) == "invalid_timestamp"


def test_future_skew_boundary() -> None:
    assert isinstance(interaction(started(timestamp=NOW_MS + SKEW_MS)), Interaction)
    assert reason(interaction(started(timestamp=NOW_MS + SKEW_MS + 1))) == "future_timestamp"
    assert reason(survey_result(survey(timestamp="2026-11-22T10:05:01Z"))) == "future_timestamp"
    assert isinstance(survey_result(survey(timestamp="2026-11-22T11:05:00+01:00")), Survey)
    # +01:00 means one hour EARLIER in UTC: 11:06 local is 10:06Z, beyond 5 minutes.
    assert reason(survey_result(survey(timestamp="2026-11-22T11:06:00+01:00"))) == "future_timestamp"


def test_future_skew_is_configurable() -> None:
    strict = EventValidator(max_future_skew_ms=0)
    assert isinstance(strict.interaction(enc(started(timestamp=NOW_MS)), NOW_MS), Interaction)
    assert reason(strict.interaction(enc(started(timestamp=NOW_MS + 1)), NOW_MS)) == "future_timestamp"


def test_far_future_and_huge_epoch() -> None:
    assert reason(interaction(started(timestamp="9999-12-31T23:59:59Z"))) == "future_timestamp"
    assert reason(interaction(started(timestamp=2**62))) == "future_timestamp"


# -- bytes-level problems ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "empty_value"),
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b'{"event_id": "e-1",}', "invalid_json"),
        (b"{'event_id': 'e-1'}", "invalid_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"event_id": "\xc3\x28"}', "invalid_utf8"),
        (b"[]", "not_an_object"),
        (b'"contact_started"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (b"true", "not_an_object"),
    ],
)
def test_bytes_problems(raw: bytes | None, expected: str) -> None:
    assert reason(V.interaction(raw, NOW_MS)) == expected
    assert reason(V.survey(raw, NOW_MS)) == expected


def test_too_large() -> None:
    padding = "x" * MAX_MESSAGE_BYTES
    assert reason(interaction(started(note=padding))) == "too_large"
    assert reason(survey_result(survey(note=padding))) == "too_large"


def test_message_at_size_limit_accepted() -> None:
    body = enc(started(note=""))
    raw = enc(started(note="x" * (MAX_MESSAGE_BYTES - len(body))))
    assert len(raw) == MAX_MESSAGE_BYTES
    assert isinstance(interaction(raw), Interaction)


def test_utf8_text_is_fine() -> None:
    event = interaction(started(queue="facturación", customer_id="客户-1"))
    assert isinstance(event, Interaction)
    assert event.queue == "facturación"


# -- surveys -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("metric", "scale", "low", "high"),
    [
        ("csat", None, 1, 5),
        ("nps", None, 0, 10),
        ("ces", None, 1, 7),  # default scale agree_1_7
        ("ces", "agree_1_7", 1, 7),
        ("ces", "effort_1_5", 1, 5),
    ],
)
def test_score_ranges(metric: str, scale: str | None, low: int, high: int) -> None:
    extra = {"scale": scale} if scale else {}
    for score in range(low - 3, high + 4):
        result = survey_result(survey(metric=metric, score=score, **extra))
        if low <= score <= high:
            assert isinstance(result, Survey), (metric, scale, score)
            assert result.score == score
        else:
            assert reason(result) == "out_of_range:score", (metric, scale, score)


def test_ces_scale_defaults_to_agree() -> None:
    result = survey_result(survey(metric="ces", score=6))
    assert isinstance(result, Survey)
    assert result.scale == "agree_1_7"


def test_ces_null_scale_is_the_default() -> None:
    result = survey_result(survey(metric="ces", score=6, scale=None))
    assert isinstance(result, Survey)
    assert result.scale == "agree_1_7"


@pytest.mark.parametrize("scale", ["agree_1_5", "1-7", "", 7, ["agree_1_7"], {"s": 1}])
def test_unknown_ces_scale(scale: object) -> None:
    assert reason(survey_result(survey(metric="ces", score=3, scale=scale))) == "unknown_scale"


def test_scale_is_ignored_outside_ces() -> None:
    result = survey_result(survey(metric="nps", score=9, scale="effort_1_5"))
    assert isinstance(result, Survey)
    assert result.scale is None


@pytest.mark.parametrize("metric", ["CSAT", "nps2", "fcr", "", 1, None, ["csat"], {"m": "csat"}])
def test_metric_enum(metric: object) -> None:
    expected = "missing_field:metric" if metric is None else "unknown_metric"
    assert reason(survey_result(survey(metric=metric))) == expected


@pytest.mark.parametrize("score", [4.0, 4.5, "4", True, False, [4], {"v": 4}])
def test_score_must_be_integer(score: object) -> None:
    assert reason(survey_result(survey(score=score))) == "invalid_type:score"
    assert reason(survey_result(survey(metric="nps", score=score))) == "invalid_type:score"


@pytest.mark.parametrize("field", ["event_id", "contact_id", "metric", "score", "timestamp"])
def test_survey_required_fields(field: str) -> None:
    assert reason(survey_result(drop(survey(), field))) == f"missing_field:{field}"


def test_survey_optional_fields() -> None:
    result = survey_result(
        survey(
            survey_id="sv-1",
            customer_id="u-1",
            channel="chat",
            queue="billing",
            agent_id="a-1",
            team="t-1",
        )
    )
    assert isinstance(result, Survey)
    assert (result.survey_id, result.customer_id, result.channel, result.queue) == (
        "sv-1",
        "u-1",
        "chat",
        "billing",
    )
    assert (result.agent_id, result.team, result.metric) == ("a-1", "t-1", "csat")
    bare = survey_result(survey())
    assert isinstance(bare, Survey)
    assert bare.survey_id is None and bare.queue is None and bare.channel is None


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("channel", "fax", "unknown_channel"),
        ("channel", 3, "unknown_channel"),
        ("queue", 3, "invalid_type:queue"),
        ("queue", "q" * 65, "invalid_length:queue"),
        ("survey_id", 9, "invalid_type:survey_id"),
        ("survey_id", "", "invalid_length:survey_id"),
        ("contact_id", None, "missing_field:contact_id"),
        ("team", False, "invalid_type:team"),
    ],
)
def test_survey_optional_fields_checked(field: str, value: object, expected: str) -> None:
    assert reason(survey_result(survey(**{field: value}))) == expected


def test_interaction_on_survey_validator_is_rejected() -> None:
    assert reason(V.survey(enc(started()), NOW_MS)) == "missing_field:metric"


def test_rejection_is_frozen_value() -> None:
    rejection = survey_result(survey(score=9))
    assert rejection == Rejection("out_of_range:score", rejection.detail)  # type: ignore[union-attr]
    with pytest.raises(AttributeError):
        rejection.reason = "x"  # type: ignore[misc,union-attr]


# -- never raises ----------------------------------------------------------------------------
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "event_id",
    "type",
    "contact_id",
    "customer_id",
    "channel",
    "queue",
    "timestamp",
    "metric",
    "score",
    "scale",
    "survey_id",
    "resolved",
    "handle_seconds",
    "to_queue",
]
PLAUSIBLE = st.sampled_from(
    [
        "contact_started",
        "contact_ended",
        "contact_transferred",
        "csat",
        "nps",
        "ces",
        "voice",
        "agree_1_7",
        "effort_1_5",
        "2026-11-22T10:00:00Z",
        "x",
    ]
)
OBJECTS = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | PLAUSIBLE | st.integers(-2, 12), max_size=12)


def _check(result: object) -> None:
    assert isinstance(result, Interaction | Survey | Rejection)
    if isinstance(result, Rejection):
        assert REASON.match(result.reason), result.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_never_raise(raw: bytes) -> None:
    _check(V.interaction(raw, NOW_MS))
    _check(V.survey(raw, NOW_MS))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(OBJECTS)
def test_any_json_object_never_raises(obj: dict[str, Any]) -> None:
    raw = enc(obj) if _encodable(obj) else b"{}"
    _check(V.interaction(raw, NOW_MS))
    _check(V.survey(raw, NOW_MS))


def _encodable(obj: object) -> bool:
    try:
        orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True
