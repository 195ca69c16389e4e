"""Offset bookkeeping of chunked delivery (stream/runtime/transport.py), without a broker.

Acking one chunk message must ack every offset it carries, exactly once, and never
offsets below the committed one: Faust commits the highest contiguous acked offset,
so a missed offset would stall commits and a duplicated one would skew its counts.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.runtime.transport import ChunkedConsumer, OrderedWrites, RecordChunk

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


# -- OrderedWrites: the ordering and waiting rules the state log relies on ---------------------
class Gate:
    """A write that records when it ran and finishes only when released."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.open = asyncio.Event()

    async def __call__(self) -> None:
        self.log.append(f"start {self.name}")
        await self.open.wait()
        self.log.append(f"end {self.name}")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_writes_with_the_same_key_run_in_call_order() -> None:
    log: list[str] = []
    writes = OrderedWrites()
    first, second = Gate("first", log), Gate("second", log)
    writes.submit(("changelog", 0), first)
    done = writes.submit(("changelog", 0), second)
    await settle()
    assert log == ["start first"]  # the second waits for the first
    first.open.set()
    second.open.set()
    await done
    assert log == ["start first", "end first", "start second", "end second"]


async def test_writes_with_other_keys_do_not_wait_for_each_other() -> None:
    log: list[str] = []
    writes = OrderedWrites()
    writes.submit(("changelog", 0), Gate("p0", log))
    writes.submit(("changelog", 1), Gate("p1", log))
    await settle()
    assert log == ["start p0", "start p1"]


async def test_a_write_starts_only_after_its_prerequisites() -> None:
    log: list[str] = []
    writes = OrderedWrites()
    forward = Gate("forward", log)
    forward_task = writes.submit(("customers", 2), forward)
    marker = writes.submit(("changelog", 0), Gate("marker", log), after=[forward_task])
    await settle()
    assert log == ["start forward"]
    forward.open.set()
    await settle()
    assert log == ["start forward", "end forward", "start marker"]
    marker.cancel()


async def test_wait_scheduled_ignores_writes_submitted_after_it_was_called() -> None:
    """Faust flushes before every offset commit: under steady traffic there is always a
    newer write, so waiting for all of them would postpone commits forever."""
    log: list[str] = []
    writes = OrderedWrites()
    old = Gate("old", log)
    writes.submit(("changelog", 0), old)
    flushing = asyncio.ensure_future(writes.wait_scheduled())
    await settle()  # the flush has begun waiting
    newer = writes.submit(("changelog", 1), Gate("newer", log))  # never released
    await settle()
    assert not flushing.done()
    old.open.set()
    await asyncio.wait_for(flushing, timeout=1)
    assert not newer.done()
    newer.cancel()


async def test_a_failed_write_fails_every_later_wait_and_write_on_its_key() -> None:
    failures: list[BaseException] = []
    writes = OrderedWrites(on_failure=failures.append)

    async def broken() -> None:
        raise OSError("broker said no")

    writes.submit(("changelog", 0), broken)
    later = writes.submit(("changelog", 0), Gate("later", []))
    with pytest.raises(OSError):
        await writes.wait_scheduled()
    with pytest.raises(OSError):
        await later  # chained behind the failure: never sent
    with pytest.raises(OSError):
        await writes.wait_scheduled()  # sticky
    assert len(failures) == 1


async def test_wait_for_room_blocks_until_writes_drain_below_the_limit() -> None:
    writes = OrderedWrites()
    gates = [Gate(str(i), []) for i in range(3)]
    for i, gate in enumerate(gates):
        writes.submit(("changelog", i), gate)
    waiting = asyncio.ensure_future(writes.wait_for_room(1))
    await settle()
    assert not waiting.done() and len(writes) == 3
    gates[0].open.set()
    gates[1].open.set()
    await asyncio.wait_for(waiting, timeout=1)
    assert len(writes) == 1
    gates[2].open.set()


def test_fair_order_goes_round_robin_over_topics() -> None:
    """A topic with many fetched partitions must not starve the others (Faust's scheduler)."""
    from faust.types import TP

    from stream.runtime.transport import fair_order

    fetched = [TP("interactions", p) for p in range(4)] + [TP("surveys", 0), TP("customers", 2)]
    assert fair_order(fetched) == [
        TP("interactions", 0),
        TP("surveys", 0),
        TP("customers", 2),
        TP("interactions", 1),
        TP("interactions", 2),
        TP("interactions", 3),
    ]
    assert fair_order([]) == []
