"""An in-memory source for unit tests: hands out given records in batches, records commits."""

from __future__ import annotations

from collections.abc import Iterable

from streamwatch.records import Record
from streamwatch.sources import Offsets


class MemorySource:
    def __init__(self, records: Iterable[Record], batch_size: int = 500) -> None:
        self.pending = list(records)
        self.batch_size = batch_size
        self.committed: Offsets = {}
        self.closed = False

    def poll(self, timeout_ms: int) -> list[Record]:
        batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        return batch

    def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)

    def assignment(self) -> set[tuple[str, int]]:
        return {(r.topic, r.partition) for r in self.pending} | set(self.committed)

    def close(self) -> None:
        self.closed = True
