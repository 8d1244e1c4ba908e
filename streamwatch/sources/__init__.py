"""Where records come from: small interfaces with in-memory twins for unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from streamwatch.records import Record

Partition = tuple[str, int]  # (topic, partition)
Offsets = dict[Partition, int]  # -> next offset to consume


class Source(Protocol):
    def poll(self, timeout_ms: int) -> list[Record]: ...

    def commit(self, offsets: Offsets) -> None: ...

    def assignment(self) -> set[Partition]: ...

    def on_revoke(self, callback: Callable[[set[Partition]], None]) -> None:
        """Call ``callback`` with the partitions taken away in a rebalance, before they go:
        from inside ``poll``, so never in the middle of a batch."""
        ...

    def unreadable_topics(self) -> dict[str, str]:
        """The input topics this client may not read (each with why, DENIED: the broker's
        ACLs), checked once before anything is consumed; a missing one is waited for."""
        ...

    def reachable(self) -> bool:
        """Whether the broker answers now, as far as the client knows (False while the group
        coordinator is unknown); asked once per loop turn, for readiness."""
        ...

    def lag(self) -> dict[Partition, int]:
        """Records behind the end of each assigned partition, where known."""
        ...

    def close(self) -> None: ...
