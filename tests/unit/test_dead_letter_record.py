"""The dead-letter record (value and headers) the worker, the ingest server and the bridge write."""

from __future__ import annotations

from stream.domain.processor import DeadLetter


def test_headers_name_reason_and_source() -> None:
    value, headers = DeadLetter("cx.surveys", 3, 42, b"k", b"{bad", "invalid_json", "at 1").record(1024)
    assert value == b"{bad"
    assert dict(headers) == {
        "cx-reason": b"invalid_json",
        "cx-detail": b"at 1",
        "cx-source-topic": b"cx.surveys",
        "cx-source-partition": b"3",
        "cx-source-offset": b"42",
    }


def test_a_copy_too_large_is_truncated_and_says_so() -> None:
    value, headers = DeadLetter("ingest/zendesk", -1, -1, None, b"x" * 5000, "too_large", "").record(1024)
    assert value == b"x" * 1024
    assert dict(headers)["cx-truncated"] == b"true" and dict(headers)["cx-original-size"] == b"5000"


def test_a_tombstone_is_an_empty_copy() -> None:
    value, _ = DeadLetter("cx.interactions", 0, 7, b"k", None, "empty_value", "").record(1024)
    assert value == b""
