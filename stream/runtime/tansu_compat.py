"""The tansu broker's one quirk cxstream works around (embedded mode and tests only).

tansu answers ListOffsets(latest) with "first offset of the last record batch
+ 1" instead of the true end of the partition. Faust's table recovery reads a
changelog up to that "highwater" and stops, so recovery can end before the last
records and lose committed state. With ``CXSTREAM_TANSU_COMPAT=true`` (set by
``cxstream demo`` and the test fixtures; never needed on Apache Kafka) the app's
own consumer thread (:class:`stream.runtime.transport.TunedConsumerThread`) asks
:func:`true_end_offsets` instead, which reads forward from tansu's answer until
the partition is exhausted. Nothing is patched process-wide: another Faust app
in the same process is unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


async def true_end_offsets(
    consumer: Any, partitions: list[Any], auth: Mapping[str, Any] | None = None
) -> dict[Any, int]:
    """End offsets found by reading past what ListOffsets(latest) claims.

    ``auth``: the app's aiokafka security settings (SASL, TLS), so the probe consumer
    connects the way the app's own consumer does.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    claimed: Mapping[Any, int] = await consumer.end_offsets(partitions)
    result: dict[Any, int] = dict(claimed)
    bootstrap = consumer._client._bootstrap_servers
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=200,
        **dict(auth or {}),
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
