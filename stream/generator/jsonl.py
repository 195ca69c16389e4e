"""Replay files: one JSON object per line, ``{"topic", "key", "value"}`` (or ``value_b64``).

The input of ``cxstream replay`` and the output of ``cxstream generate --out``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import orjson

from stream.generator.profile import TrafficProfile
from stream.generator.simulator import TrafficSimulator

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Replay files
# --------------------------------------------------------------------------------------


class ReplayRecord(NamedTuple):
    """One line of a replay file: the topic, the key and the value to send."""

    topic: str
    key: str
    value: dict[str, Any] | bytes
    """A JSON object to serialise, or raw bytes to send verbatim (malformed on purpose)."""


def write_jsonl(
    path: str | os.PathLike[str],
    count: int,
    profile: TrafficProfile | None = None,
    seed: int | None = None,
    start_ms: int | None = None,
    *,
    duplicate_ratio: float = 0.0,
    bad_ratio: float = 0.0,
    interactions_topic: str = "cx.interactions",
    surveys_topic: str = "cx.surveys",
    agents_topic: str = "cx.agents",
) -> int:
    """Write ``count`` simulated-time events to a replay file; return the number written.

    Why a file: a fixed, reviewable input for ``cxstream replay FILE.jsonl``,
    integration tests and benchmarks, independent of the generator's future changes.

    Format (JSON Lines, UTF-8, one object per line, in generation order)::

        {"topic": "cx.interactions", "key": "c-…", "value": {…event…}, "kind": "contact_started"}
        {"topic": "cx.surveys", "key": "c-…", "value_b64": "eyJldmVud…", "kind": "bad:broken_json"}

    * ``topic`` -- the Kafka topic (``interactions_topic`` / ``surveys_topic`` / ``agents_topic``).
    * ``key`` -- the partition key, the ``contact_id``; send it UTF-8 encoded.
    * ``value`` -- the event as a JSON object; send ``orjson.dumps(value)``.
    * ``value_b64`` -- instead of ``value`` for a deliberately malformed message: the
      exact bytes, base64; send them verbatim.
    * ``kind`` -- informational (what :meth:`TrafficSimulator.events_with_kind`
      reports); a reader must ignore it and any other unknown field.

    Timestamps are simulated time from ``start_ms`` (default: now), so a replay is
    meaningful to a processor whose future-skew check uses the wall clock only when
    ``start_ms`` is in the past. The file is written to a temporary name and renamed,
    so a reader never sees half a file.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    sim = TrafficSimulator(profile, seed, start_ms, duplicate_ratio=duplicate_ratio, bad_ratio=bad_ratio)
    log.info("writing %d events to %s (seed %d)", count, path, sim.seed)
    topics = {"interactions": interactions_topic, "surveys": surveys_topic, "agents": agents_topic}
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    written = 0
    try:
        with tmp.open("wb") as fh:
            for ev, kind in sim.events_with_kind(count):
                record: dict[str, Any] = {"topic": topics[ev.topic_kind], "key": ev.key}
                if isinstance(ev.value, bytes):
                    record["value_b64"] = base64.b64encode(ev.value).decode("ascii")
                else:
                    record["value"] = ev.value
                record["kind"] = kind
                fh.write(dumps(record, option=newline))
                written += 1
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return written


class _ReplayLine(msgspec.Struct):
    """One line of a replay file, as :func:`write_jsonl` documents it."""

    topic: str
    key: str
    #: The value's JSON text exactly as in the file (empty: the line has ``value_b64``).
    value: msgspec.Raw = msgspec.Raw(b"")
    value_b64: str | None = None


_line_decoder = msgspec.json.Decoder(_ReplayLine)


def read_raw(path: str | os.PathLike[str]) -> Iterator[tuple[str, str, bytes, bool]]:
    """(topic, key, value bytes, value is JSON) per record of a replay file.

    The value's JSON text is handed on verbatim (``cxstream replay`` sends it to the
    pipeline without a parse and re-encode); a ``value_b64`` value is decoded to its
    bytes (``False``: malformed on purpose). Blank lines are skipped; a line that is
    not a valid record raises ``ValueError`` naming the line, because a replay that
    silently skips input would mislead.
    """
    decode = _line_decoder.decode
    with Path(path).open("rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                record = decode(line)
                if len(record.value):
                    yield record.topic, record.key, bytes(record.value), True
                elif record.value_b64 is not None:
                    yield record.topic, record.key, base64.b64decode(record.value_b64, validate=True), False
                else:
                    raise ValueError("no value or value_b64")
            except (msgspec.DecodeError, ValueError) as exc:
                if not line.strip():
                    continue
                raise ValueError(f"{path}:{number}: not a replay record ({exc})") from None


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[ReplayRecord]:
    """Read a replay file written by :func:`write_jsonl` (format documented there).

    Values as written: the JSON value decoded, or the raw bytes of a ``value_b64``.
    Errors as :func:`read_raw`.
    """
    for topic, key, value, is_json in read_raw(path):
        yield ReplayRecord(topic, key, orjson.loads(value) if is_json else value)
