"""An in-memory source for unit tests: hands out given records in batches, records commits."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from streamwatch.records import Record
from streamwatch.sinks import DENIED
from streamwatch.sources import Offsets, Partition


class MemorySource:
    def __init__(
        self, records: Iterable[Record], batch_size: int = 500, denied: Iterable[str] = ()
    ) -> None:
        """``denied``: input topics the twin's ACLs do not let us read."""
        self.denied = set(denied)
        self.pending = list(records)
        self.batch_size = batch_size
        self._left: dict[Partition, int] = {}
        for r in self.pending:
            self._left[(r.topic, r.partition)] = self._left.get((r.topic, r.partition), 0) + 1
        self.committed: Offsets = {}
        self.closed = False
        self._on_revoke: Callable[[set[Partition]], None] | None = None
        self.broker_up = True  # test hook: what reachable() says

    def poll(self, timeout_ms: int) -> list[Record]:
        batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        for r in batch:
            self._left[(r.topic, r.partition)] -= 1
        return batch

    def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)

    def assignment(self) -> set[tuple[str, int]]:
        return set(self._left)

    def unreadable_topics(self) -> dict[str, str]:
        return dict.fromkeys(sorted(self.denied), DENIED)

    def on_revoke(self, callback: Callable[[set[Partition]], None]) -> None:
        self._on_revoke = callback

    def revoke(self, partitions: set[Partition]) -> None:
        """Test hook: what a rebalance does."""
        if self._on_revoke is not None:
            self._on_revoke(partitions)

    def reachable(self) -> bool:
        return self.broker_up

    def lag(self) -> dict[Partition, int]:
        return dict(self._left)

    def close(self) -> None:
        self.closed = True
