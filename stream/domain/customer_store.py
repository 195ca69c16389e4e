"""Where customer contact histories live: a dict (default) or RocksDB (large deployments).

Repeat detection needs every customer seen within the repeat horizon plus the
longest window (8 days with the defaults): at 10 million customers that is several
GB as Python objects. With ``CXSTREAM_STORE=rocksdb://`` each partition keeps them
in a local RocksDB database instead (block cache and write buffers bounded below),
so worker memory stays flat however many customers there are. The changelog stays
the source of truth: the local database is wiped and rebuilt from it whenever the
partition is assigned, which keeps recovery exact (same commit-marker rules).

Both stores also answer "which customers have had no contact since ``cutoff``?"
incrementally, so expiry never scans everything at once.
"""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec

from stream.domain.records import History, encoder

#: RocksDB values are the changelog's encoding of a history (stream.domain.records).
_decode_history = msgspec.json.Decoder(History).decode

#: RocksDB memory budget per partition: 8 MB memtables x 2 + 32 MB block cache.
ROCKS_WRITE_BUFFER = 8 * 1024 * 1024
ROCKS_BLOCK_CACHE = 32 * 1024 * 1024


class DictCustomerStore(dict[str, History]):
    """In-memory histories; expiry candidates from a heap ordered by last contact.

    A heap, not a FIFO queue: a customer who came back is re-queued with the time of
    their newer contact, which is older than the newest entries, and in a FIFO it
    would wait behind them, holding its memory up to a whole horizon too long.
    """

    def __init__(self) -> None:
        super().__init__()
        self._expiry: list[tuple[int, str]] = []

    def note_contact(self, customer_id: str, newest_ms: int, is_new: bool) -> None:
        """Record that a customer's newest contact time is ``newest_ms``."""
        if is_new:
            heapq.heappush(self._expiry, (newest_ms, customer_id))

    def expired(self, cutoff_ms: int, limit: int = 10_000) -> list[str]:
        """Customers whose newest contact is older than ``cutoff_ms`` (at most ``limit``)."""
        out: list[str] = []
        heap = self._expiry
        while heap and heap[0][0] < cutoff_ms and len(out) < limit:
            _, customer_id = heapq.heappop(heap)
            history = self.get(customer_id)
            if not history:
                continue
            if history[-1].ts_ms >= cutoff_ms:
                heapq.heappush(heap, (history[-1].ts_ms, customer_id))  # had newer contacts since
            else:
                out.append(customer_id)
        return out

    def rebuild_index(self) -> None:
        """After recovery: order every customer by newest contact."""
        self._expiry = sorted((h[-1].ts_ms, c) for c, h in self.items() if h)  # a sorted list is a heap


class RocksCustomerStore(MutableMapping[str, History]):
    """Histories in a per-partition RocksDB; expiry by a cursor sweep over the keys."""

    def __init__(self, path: Path) -> None:
        from rocksdict import BlockBasedOptions, Cache, Options, Rdict

        shutil.rmtree(path, ignore_errors=True)  # rebuilt from the changelog on assignment
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(ROCKS_WRITE_BUFFER)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(ROCKS_BLOCK_CACHE))
        options.set_block_based_table_factory(table)
        self.path = path
        self._db = Rdict(str(path), options)
        self._count = 0
        self._cursor: bytes | None = None

    def __getitem__(self, key: str) -> History:
        raw = self._db.get(key.encode())
        if raw is None:
            raise KeyError(key)
        return _decode_history(raw)

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._db.get(key.encode())
        return default if raw is None else _decode_history(raw)

    def __setitem__(self, key: str, value: History) -> None:
        encoded = key.encode()
        if not self._db.key_may_exist(encoded) or self._db.get(encoded) is None:
            self._count += 1
        self._db.put(encoded, encoder.encode(value))

    def __delitem__(self, key: str) -> None:
        encoded = key.encode()
        if self._db.get(encoded) is None:
            raise KeyError(key)
        self._db.delete(encoded)
        self._count -= 1

    def __iter__(self) -> Iterator[str]:
        for key in self._db.keys():  # noqa: SIM118 (Rdict iteration yields items)
            yield bytes(key).decode()  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._count

    def note_contact(self, customer_id: str, newest_ms: int, is_new: bool) -> None:
        """Nothing to index: the sweep reads the newest contact from the record."""

    def expired(self, cutoff_ms: int, limit: int = 10_000) -> list[str]:
        """Sweep up to ``limit`` keys from where the last sweep stopped."""
        out: list[str] = []
        it = self._db.iter()
        if self._cursor is None:
            it.seek_to_first()
        else:
            it.seek(self._cursor)
        seen = 0
        while it.valid() and seen < limit:
            history = _decode_history(it.value())
            if not history or history[-1].ts_ms < cutoff_ms:
                out.append(bytes(it.key()).decode())
            seen += 1
            it.next()
        self._cursor = it.key() if it.valid() else None
        return out

    def rebuild_index(self) -> None:
        """Nothing to rebuild: the sweep needs no index."""

    def close(self) -> None:
        """Close and delete the local database (the changelog keeps the data)."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)


CustomerStore = DictCustomerStore | RocksCustomerStore


def customer_store_factory(store_url: str, data_dir: Path) -> Any:
    """A function partition -> customer store, for ``CXSTREAM_STORE``."""
    if store_url.startswith(("rocksdb://", "rocksdict://")):
        return lambda partition: RocksCustomerStore(data_dir / "customers" / f"p{partition}")
    return lambda partition: DictCustomerStore()
