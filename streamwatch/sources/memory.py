"""An in-memory source for unit tests: hands out given records in batches, records commits,
and plays a group's partition lifecycle (assigned at the first poll; ``revoke`` and ``seek``
as hooks)."""

from __future__ import annotations

from collections.abc import Iterable

from streamwatch.records import Record
from streamwatch.sinks import DENIED
from streamwatch.sources import Offsets, Partition, PartitionEvent


class MemorySource:
    def __init__(
        self, records: Iterable[Record], batch_size: int = 500, denied: Iterable[str] = ()
    ) -> None:
        """``denied``: input topics the twin's ACLs do not let us read."""
        self.denied = set(denied)
        self.log = list(records)  # everything, for seeks back
        self.pending = list(self.log)
        self.batch_size = batch_size
        self.parts = {(r.topic, r.partition) for r in self.log}
        self.committed: Offsets = {}
        self.closed = False
        self.broker_up = True  # test hook: what reachable() says
        self.started: list[dict[Partition, int | None]] = []  # what start() was given
        self._events: list[PartitionEvent] = []
        self._joined = False

    def poll(self, timeout_ms: int) -> list[Record]:
        if not self._joined:  # the first poll joins the group: every partition is ours
            self._joined = True
            self._events.append(PartitionEvent("assigned", frozenset(self.parts)))
        batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        return batch

    def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)

    def assignment(self) -> set[Partition]:
        return set(self.parts) if self._joined else set()

    def events(self) -> list[PartitionEvent]:
        out, self._events = self._events, []
        return out

    def committed_offsets(self, partitions: set[Partition]) -> Offsets:
        return {p: o for p, o in self.committed.items() if p in partitions}

    def start(self, offsets: dict[Partition, int | None]) -> None:
        self.started.append(dict(offsets))
        for part, offset in offsets.items():
            if offset is None:  # as Kafka: from the committed offset, or the beginning
                offset = self.committed.get(part)
            if offset is not None:
                self.seek(part, offset)

    def seek(self, part: Partition, offset: int) -> None:
        """Read ``part`` again from ``offset`` (its records come before the others')."""
        again = [r for r in self.log if (r.topic, r.partition) == part and r.offset >= offset]
        self.pending = again + [r for r in self.pending if (r.topic, r.partition) != part]

    def revoke(self, partitions: set[Partition]) -> None:
        """Test hook: what a rebalance does (their unread records go to another member)."""
        self.parts -= partitions
        self.pending = [r for r in self.pending if (r.topic, r.partition) not in partitions]
        self._events.append(PartitionEvent("revoked", frozenset(partitions)))

    def unreadable_topics(self) -> dict[str, str]:
        return dict.fromkeys(sorted(self.denied), DENIED)

    def reachable(self) -> bool:
        return self.broker_up

    def lag(self) -> dict[Partition, int]:
        left = dict.fromkeys(self.parts, 0)
        for r in self.pending:
            left[(r.topic, r.partition)] += 1
        return left

    def close(self) -> None:
        self.closed = True
