"""The label cardinality cap is a function of the input, never of the process.

Which queues (teams, agents) are exported under their own name and which as ``other``
used to depend on the order values reached each *process* since it started: it changed
with the number of workers and after every restart, while stored buckets kept the old
keys. Now an allow-list decides where one is configured, and otherwise the first
``CXSTREAM_MAX_LABEL_VALUES`` values *of each partition* are kept, remembered in the
partition state and its changelog.
"""

from __future__ import annotations

import os

import pytest

from stream.config.settings import ENV_PREFIX, load_settings
from stream.domain.processor import Processor
from stream.domain.state import PartitionState
from stream.runtime.commitlog import StateLogTable
from tests.unit.test_processor import WALL, FakeChangelog, Feed, commit, totals

MIN = 60_000


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def starts(feed: Feed, queues: list[str]) -> list:
    return [feed.start(f"c-{i}-{q}", WALL - MIN, queue=q) for i, q in enumerate(queues)]


def queues_of(state: PartitionState) -> set[str]:
    return {queue for queue, _ in totals(state)}


def test_the_first_values_of_a_partition_are_kept_whatever_process_applies_them() -> None:
    settings = load_settings(max_label_values=2)
    feed = Feed()
    batch = starts(feed, ["billing", "sales", "tech", "billing", "returns"])
    one = PartitionState(1)
    Processor(settings).process_batch(one, batch, WALL)
    assert queues_of(one) == {"billing", "sales", "other"}

    # Another process (another worker, or the same one restarted) that has seen other
    # queues on other partitions decides this partition the same way.
    busy = Processor(settings)
    busy.process_batch(PartitionState(2), starts(Feed(), ["x", "y", "z"]), WALL)
    two = PartitionState(1)
    busy.process_batch(two, batch, WALL)
    assert totals(two) == totals(one)


def test_the_admitted_values_survive_recovery_from_the_changelog() -> None:
    settings = load_settings(max_label_values=2)
    feed = Feed()
    state = PartitionState(1)
    Processor(settings).process_batch(state, starts(feed, ["billing", "sales", "tech"]), WALL)
    log = commit(state)

    recovered = PartitionState(1)
    for _, key, (_, _, payload) in log.sent:
        StateLogTable._apply_record(recovered, {}, key.decode(), payload)
    assert recovered.label_values == state.label_values == {"queue": ["billing", "sales"]}

    # After the restart a new queue is still "other", a known one still itself.
    later = Processor(settings)
    later.process_batch(recovered, starts(feed, ["returns", "sales"]), WALL)
    assert queues_of(recovered) == {"billing", "sales", "other"}


def test_an_allow_list_decides_alone_and_the_same_everywhere() -> None:
    settings = load_settings(allowed_queues="billing, returns", max_label_values=1)
    state = PartitionState(0)
    Processor(settings).process_batch(state, starts(Feed(), ["sales", "billing", "returns", "tech"]), WALL)
    assert queues_of(state) == {"billing", "returns", "other"}
    assert state.label_values == {}  # nothing to remember: the list decides


def test_a_changed_cap_record_is_written_once_per_batch() -> None:
    settings = load_settings(max_label_values=5)
    state, feed = PartitionState(0), Feed()
    processor = Processor(settings)
    processor.process_batch(state, starts(feed, ["a", "b"]), WALL)
    first = [key for _, key, _ in commit(state).sent if key.startswith(b"l:")]
    processor.process_batch(state, starts(feed, ["a", "b"]), WALL + 1)
    again = [key for _, key, _ in commit(state, FakeChangelog()).sent if key.startswith(b"l:")]
    assert first == [b"l:queue"] and again == []
