"""Reading replay files (stream/tools/replay.py ``read_records``): values handed on verbatim."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream.generator import read_jsonl, write_jsonl
from stream.tools.replay import read_records


def test_same_records_as_the_generic_reader(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_jsonl(path, 3000, seed=4, duplicate_ratio=0.02, bad_ratio=0.02)
    generic = list(read_jsonl(path))
    fast = list(read_records(path))
    assert len(fast) == len(generic) == 3000
    for record, (topic, key, value) in zip(generic, fast, strict=True):
        assert (topic, key) == (record.topic, record.key.encode())
        if isinstance(record.value, bytes):
            assert value == record.value  # malformed on purpose: the exact bytes
        else:
            assert orjson.loads(value) == record.value


def test_blank_lines_skipped_bad_lines_named(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'{"topic":"cx.surveys","key":"c-1","value": {"a": 1}}\n\n   \n{"topic":"cx.surveys","key":"c-1"}\n'
    )
    records = read_records(path)
    assert next(records) == ("cx.surveys", b"c-1", b'{"a": 1}')
    with pytest.raises(ValueError, match=r"r\.jsonl:4: not a replay record"):
        next(records)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b'{"topic": 1, "key": "c", "value": {}}',
        b'{"topic": "t", "key": "c", "value_b64": "%%%"}',
        b'["topic", "key"]',
    ],
)
def test_malformed_lines(tmp_path: Path, line: bytes) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(line + b"\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: not a replay record"):
        list(read_records(path))
