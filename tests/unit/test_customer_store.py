"""Customer-history stores: expiry hands out exactly the customers idle since the cutoff.

Both stores answer ``expired(cutoff)`` incrementally; the processor drops what they
return. A customer who came back after being queued must not expire early, and must
not linger behind newer customers either (the in-memory store keeps a heap for that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream.domain.customer_store import DictCustomerStore, RocksCustomerStore
from stream.domain.records import CustomerContact

MIN = 60_000


def entry(ts: int) -> CustomerContact:
    """A history entry as the processor writes it."""
    return CustomerContact(ts, "voice", "billing\x1fvoice", None, f"c{ts}")


def add(store: Any, customer: str, ts: int) -> None:
    history = store.get(customer)
    is_new = history is None
    history = [*(history or []), entry(ts)]
    store[customer] = history
    store.note_contact(customer, ts, is_new)


def expire_all(store: Any, cutoff: int) -> set[str]:
    """Everything ``expired`` reports until it has nothing more (the Rocks sweep is paged)."""
    found: set[str] = set()
    for _ in range(10):
        batch = store.expired(cutoff)
        found.update(batch)
        for customer in batch:
            del store[customer]
    return found


@pytest.fixture(params=["dict", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "dict":
        yield DictCustomerStore()
    else:
        rocks = RocksCustomerStore(tmp_path / "customers")
        yield rocks
        rocks.close()


def test_only_customers_idle_since_the_cutoff_expire(store: Any) -> None:
    add(store, "old", 0)
    add(store, "recent", 20 * MIN)
    add(store, "returning", 1 * MIN)
    add(store, "returning", 25 * MIN)  # came back: its newest contact counts
    assert expire_all(store, 10 * MIN) == {"old"}
    assert set(store) == {"recent", "returning"}
    assert expire_all(store, 30 * MIN) == {"recent", "returning"}
    assert len(store) == 0


def test_a_returning_customer_does_not_wait_behind_newer_ones() -> None:
    """It is re-queued with its newer contact time, older than later newcomers'."""
    store = DictCustomerStore()
    add(store, "returning", 0)
    add(store, "returning", 5 * MIN)
    for i in range(100):  # newcomers after the return
        add(store, f"new{i}", 10 * MIN + i)
    assert store.expired(2 * MIN) == []  # re-queued at 5 min, not expired
    assert store.expired(6 * MIN) == ["returning"]  # due now, not after the newcomers


def test_rebuilt_index_expires_like_the_live_one(store: Any) -> None:
    for i in range(20):
        add(store, f"cust{i}", i * MIN)
    store.rebuild_index()
    assert expire_all(store, 10 * MIN) == {f"cust{i}" for i in range(10)}
