"""``cxstream translate --from FORMAT [FILE]``: vendor payloads in, contract events out.

Reads one JSON document (an EventBridge event, a Twilio Event Streams batch ...) or one
payload per line (JSON lines; form-encoded lines for Twilio callbacks) from FILE, or stdin
when no file is given, and prints the contract events they map to, one JSON object per
line, with deterministic ``event_id`` s (re-delivered payloads print the same ids, which the
worker deduplicates). The mappings are the ones the ingest server and the Kafka bridge use
(docs/platforms.md).

A payload that cannot be translated is reported on stderr with its line and a reason code,
the others are still translated, and the exit status is 1. ``--records`` prints what
``cxstream replay`` reads (``{"topic", "key", "value"}``), so
``cxstream translate --from zendesk --records export.jsonl > r.jsonl && cxstream replay r.jsonl``
gives a platform's KPIs without a broker.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from stream.config.settings import load_settings
from stream.domain.events import EventValidator
from stream.platforms.mapping import MappingFileError, Topic, Translated, TranslationError, input_topics
from stream.platforms.registry import FORMATS, Platform, load_format, load_mapping_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream translate``."""
    parser.add_argument(
        "--from",
        dest="format",
        metavar="FORMAT",
        help=f"the payloads' format: {', '.join(FORMATS)} (or a --mapping file's)",
    )
    parser.add_argument("--mapping", type=Path, help="your own mapping file (YAML, docs/platforms.md)")
    parser.add_argument("file", nargs="?", type=Path, help="payload file (default: stdin)")
    parser.add_argument(
        "--records",
        action="store_true",
        help="print {topic, key, value} records for `cxstream replay` instead of bare events",
    )
    parser.add_argument("--list", action="store_true", help="list the formats and exit")


def payloads(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, payload bytes) from a file's lines, streamed: one payload per line
    (JSON lines, form lines), unless the first line is the start of one multi-line JSON
    document (a pretty-printed EventBridge event), which is then read whole."""
    lines = iter(lines)
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped[:1] in (b"{", b"["):
            try:
                orjson.loads(stripped)
            except orjson.JSONDecodeError:
                rest = b"".join(lines)
                whole = (line + rest).strip()
                try:
                    orjson.loads(whole)
                except orjson.JSONDecodeError:
                    yield number, stripped  # not one document either: report the line
                    yield from _numbered(rest.splitlines(keepends=True), number + 1)
                    return
                yield number, whole
                return
        yield number, stripped
        yield from _numbered(lines, number + 1)
        return


def _numbered(lines: Iterable[bytes], first: int) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, first):
        if line.strip():
            yield number, line.strip()


def _platform(args: argparse.Namespace, validator: EventValidator) -> Platform:
    if args.mapping is not None:
        platform = load_mapping_file(args.mapping, validator=validator)
        if args.format not in (None, platform.format):
            raise MappingFileError(f"--from {args.format} but {args.mapping} maps format {platform.format!r}")
        return platform
    if args.format is None:
        raise MappingFileError("say which format the payloads are in: --from FORMAT (see --list)")
    return load_format(args.format, validator=validator)


def _open(args: argparse.Namespace) -> BinaryIO:
    if args.file is None:
        return sys.stdin.buffer
    return args.file.open("rb")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream translate``."""
    if args.list:
        for name, auth in FORMATS.items():
            print(f"{name}\t(webhook authentication: {auth})")
        return 0
    settings = load_settings()
    try:
        platform = _platform(args, EventValidator.for_settings(settings))
    except MappingFileError as exc:
        print(f"cxstream translate: {exc}", file=sys.stderr)
        return 2
    try:
        source = _open(args)
    except OSError as exc:
        print(f"cxstream translate: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    topics = input_topics(settings)
    now_ms = int(time.time() * 1000)
    failed = 0
    out = sys.stdout.buffer
    for number, payload in payloads(source):
        try:
            events = platform.mapping.translate_body(payload, now_ms)
        except TranslationError as exc:
            failed += 1
            where = f"{args.file or '<stdin>'}:{number}"
            print(f"cxstream translate: {where}: {exc.reason}: {exc.detail}", file=sys.stderr)
            continue
        for event in events:
            out.write(_line(event, topics if args.records else None))
    out.flush()
    if args.file is not None:
        source.close()
    if failed:
        print(f"cxstream translate: {failed} payload(s) not translated", file=sys.stderr)
    return 1 if failed else 0


def _line(event: Translated, topics: dict[Topic, str] | None) -> bytes:
    if topics is None:
        return event.value + b"\n"
    record = {"topic": topics[event.topic], "key": event.key, "value": event.event}
    return orjson.dumps(record) + b"\n"
