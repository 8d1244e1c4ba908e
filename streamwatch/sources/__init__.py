"""Where records come from: small interfaces with in-memory twins for unit tests."""

from __future__ import annotations

from typing import Protocol

from streamwatch.records import Record

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to consume


class Source(Protocol):
    def poll(self, timeout_ms: int) -> list[Record]: ...

    def commit(self, offsets: Offsets) -> None: ...

    def assignment(self) -> set[tuple[str, int]]: ...

    def close(self) -> None: ...
