"""Where records come from: small interfaces with in-memory twins for unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from streamwatch.records import Record

Partition = tuple[str, int]  # (topic, partition)
Offsets = dict[Partition, int]  # -> next offset to consume


@dataclass(frozen=True)
class PartitionEvent:
    """A change of the partitions this member reads, in the order the group made them.

    ``assigned``: new to this member; the source reads nothing of them until ``start``.
    ``revoked``: handed over in a rebalance (the member may still save their state).
    ``lost``: taken away without a handover (the member was expelled from the group).
    """

    kind: Literal["assigned", "revoked", "lost"]
    partitions: frozenset[Partition]


class Source(Protocol):
    def poll(self, timeout_ms: int) -> list[Record]: ...

    def commit(self, offsets: Offsets) -> None: ...

    def assignment(self) -> set[Partition]: ...

    def events(self) -> list[PartitionEvent]:
        """The partition changes since the last call, oldest first; asked after every poll,
        so that the run loop (not the client's IO thread) restores and saves state."""
        ...

    def committed_offsets(self, partitions: set[Partition]) -> Offsets:
        """The group's committed offsets of these partitions, where there are any."""
        ...

    def start(self, offsets: dict[Partition, int | None]) -> None:
        """Begin reading newly assigned partitions: each from the offset given, or from its
        committed offset (the reset policy without one) where the offset is None."""
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
        """Records behind the end of each assigned partition, where known; asked after
        every poll, empty ones too, so from what the client holds (no broker call)."""
        ...

    def close(self) -> None: ...
