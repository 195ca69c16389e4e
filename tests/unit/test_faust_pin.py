"""The Faust and aiokafka internals stream/runtime/transport.py overrides or mirrors, pinned to their source.

``stream/runtime/transport.py`` re-implements Faust's fetch loop for chunked delivery, extends its
ack bookkeeping, subclasses the consumer thread (fetch long-poll, tansu end offsets) and
the producer (batched writes). If an upgrade changes any of the upstream functions below,
this test fails and names them: re-read each one against its counterpart in
``stream/runtime/transport.py`` (and ``stream/runtime/tansu_compat.py``), carry the change over, then
update the hash here. pyproject.toml bounds both libraries to the series checked.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap

import aiokafka
import faust
from aiokafka.consumer.consumer import AIOKafkaConsumer
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_driver

#: upstream function -> first 16 hex digits of the SHA-256 of its dedented source
#: (faust-streaming 0.15.3, aiokafka 0.14.0).
PINNED = {
    "faust.transport.consumer.Consumer._drain_messages": "8f35dd7a11144daa",
    "faust.transport.consumer.Consumer.getmany": "e486c434b7928ee8",
    "faust.transport.consumer.Consumer._wait_next_records": "ba40cd3671328d3b",
    "faust.transport.consumer.Consumer.ack": "5548cf0f75843f73",
    "faust.transport.consumer.Consumer._add_gap": "f1cc1db634f5ea09",
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._highwaters": "829699ec62b7ec5b",
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer": "c179c0bdb9755c3a",
    "faust.transport.drivers.aiokafka.Producer.flush": "31d2ece965d57f14",
    "faust.transport.drivers.aiokafka.Producer._ensure_producer": "04016bd22147281a",
    "aiokafka.AIOKafkaConsumer.start": "5ba1baa38f6246a0",
}
FUNCTIONS = {
    "faust.transport.consumer.Consumer._drain_messages": faust_consumer.Consumer._drain_messages,
    "faust.transport.consumer.Consumer.getmany": faust_consumer.Consumer.getmany,
    "faust.transport.consumer.Consumer._wait_next_records": faust_consumer.Consumer._wait_next_records,
    "faust.transport.consumer.Consumer.ack": faust_consumer.Consumer.ack,
    "faust.transport.consumer.Consumer._add_gap": faust_consumer.Consumer._add_gap,
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._highwaters": (
        faust_driver.AIOKafkaConsumerThread._highwaters
    ),
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer": (
        faust_driver.AIOKafkaConsumerThread._create_worker_consumer
    ),
    "faust.transport.drivers.aiokafka.Producer.flush": faust_driver.Producer.flush,
    "faust.transport.drivers.aiokafka.Producer._ensure_producer": faust_driver.Producer._ensure_producer,
    "aiokafka.AIOKafkaConsumer.start": AIOKafkaConsumer.start,
}


def fingerprint(function: object) -> str:
    source = textwrap.dedent(inspect.getsource(function))  # type: ignore[arg-type]
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_overridden_upstream_internals_are_the_ones_checked() -> None:
    assert set(FUNCTIONS) == set(PINNED)
    changed = [name for name, function in FUNCTIONS.items() if fingerprint(function) != PINNED[name]]
    assert not changed, (
        f"faust-streaming {faust.__version__} / aiokafka {aiokafka.__version__} changed internals that "
        "stream/runtime/transport.py overrides or mirrors; re-check them against it and update the pins:\n  "
        + "\n  ".join(f"{name}: now {fingerprint(FUNCTIONS[name])}" for name in changed)
    )


def test_private_attributes_the_transport_uses_still_exist() -> None:
    """Attributes read or written by name, which no signature check would catch."""
    consumer = inspect.getsource(faust_consumer.Consumer)
    for attribute in ("_committed_offset", "_acked_index", "_acked", "_n_acked", "_read_offset"):
        assert f"self.{attribute}: " in consumer or f"self.{attribute} = " in consumer, attribute
    assert "self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.__init__)
    # stream.runtime.fetch_pacing: the fetcher reads both for every fetch request it builds.
    from aiokafka.consumer.fetcher import Fetcher

    for attribute in ("_fetch_max_wait_ms", "_fetch_min_bytes"):
        assert f"self.{attribute} = " in inspect.getsource(Fetcher.__init__), attribute
        assert f"self.{attribute}," in inspect.getsource(Fetcher._get_actions_per_node), attribute
    assert "self._consumer = self._create_consumer(" in inspect.getsource(faust_driver.AIOKafkaConsumerThread)
    assert hasattr(faust_driver, "credentials_to_aiokafka_auth")
