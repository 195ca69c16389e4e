"""Compatibility shim for the tansu broker (embedded mode and tests only).

tansu answers ListOffsets(latest) with "first offset of the last record batch
+ 1" instead of the true end of the partition. Faust's table recovery reads a
changelog up to that "highwater" and stops, so recovery can end before the last
records and lose committed state. The shim replaces the highwater lookup used
by recovery with one that reads forward from tansu's answer until the partition
is exhausted. It is enabled by ``CXSTREAM_TANSU_COMPAT=true`` (set automatically
by ``cxstream demo`` and the test fixtures) and is never needed on Apache Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)
_installed = False


async def true_end_offsets(consumer: Any, partitions: list[Any]) -> dict[Any, int]:
    """End offsets found by reading past what ListOffsets(latest) claims."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    claimed: Mapping[Any, int] = await consumer.end_offsets(partitions)
    result: dict[Any, int] = dict(claimed)
    bootstrap = consumer._client._bootstrap_servers
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=200
    )
    await probe.start()
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        probe.assign(tps)
        for tp, original in zip(tps, partitions, strict=True):
            start = max(0, claimed[original] - 1)
            probe.seek(tp, start)
            end = claimed[original]
            while True:
                batch = await probe.getmany(tp, timeout_ms=300, max_records=10_000)
                records = batch.get(tp, [])
                if not records:
                    break
                end = max(end, records[-1].offset + 1)
            result[original] = end
    finally:
        await probe.stop()
    return result


def install_tansu_compat() -> None:
    """Patch Faust's aiokafka driver so table recovery sees true end offsets."""
    global _installed
    if _installed:
        return
    from faust.transport.drivers import aiokafka as driver

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        if self.consumer.in_transaction:
            return {tp: consumer.last_stable_offset(tp) for tp in partitions}
        return await true_end_offsets(consumer, list(partitions))

    driver.AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
    _installed = True
    log.info("tansu compatibility shim installed (recovery reads to the true end offset)")
