"""Offset bookkeeping of chunked delivery (stream/transport.py), without a broker.

Acking one chunk message must ack every offset it carries, exactly once, and never
offsets below the committed one: Faust commits the highest contiguous acked offset,
so a missed offset would stall commits and a duplicated one would skew its counts.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.transport import ChunkedConsumer, RecordChunk

TOPIC_PARTITION = TP("cx.interactions", 0)


class FakeConsumer:
    """The attributes Faust's ``Consumer.ack`` touches."""

    def __init__(self, committed: int | None = None) -> None:
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: committed)
        self._acked_index: dict[TP, set[int]] = defaultdict(set)
        self._acked: dict[TP, list[int]] = defaultdict(list)
        self._unacked_messages: set[Any] = set()
        self._n_acked = 0
        self._waiting_for_ack = None


def chunk_message(offsets: list[int]) -> ConsumerMessage:
    records = RecordChunk(SimpleNamespace(offset=o) for o in offsets)
    return ConsumerMessage(
        TOPIC_PARTITION.topic,
        TOPIC_PARTITION.partition,
        offsets[-1],
        0.0,
        0,
        [],
        None,
        records,  # type: ignore[arg-type]
        None,
        0,
        0,
        TOPIC_PARTITION,
    )


def ack(consumer: FakeConsumer, message: ConsumerMessage) -> bool:
    return ChunkedConsumer.ack(consumer, message)  # type: ignore[arg-type]


def test_acking_a_chunk_acks_every_offset_in_it_once() -> None:
    consumer = FakeConsumer()
    message = chunk_message([10, 11, 12, 13])
    assert ack(consumer, message) is True
    assert sorted(consumer._acked[TOPIC_PARTITION]) == [10, 11, 12, 13]
    assert consumer._n_acked == 4
    assert ack(consumer, message) is False  # a second ack of the same message changes nothing
    assert consumer._n_acked == 4


def test_offsets_below_the_committed_one_are_not_acked_again() -> None:
    consumer = FakeConsumer(committed=12)
    ack(consumer, chunk_message([10, 11, 12, 13]))
    assert sorted(consumer._acked[TOPIC_PARTITION]) == [12, 13]


def test_a_plain_message_is_acked_as_faust_does() -> None:
    consumer = FakeConsumer()
    message = ConsumerMessage(
        TOPIC_PARTITION.topic, 0, 7, 0.0, 0, [], None, b"{}", None, 0, 2, TOPIC_PARTITION
    )
    assert ack(consumer, message) is True
    assert consumer._acked[TOPIC_PARTITION] == [7]
