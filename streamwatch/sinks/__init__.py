"""Where verdicts and dead letters go: small interfaces with in-memory twins."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from streamwatch.records import Outgoing


class Sink(Protocol):
    def send(self, message: Outgoing) -> None: ...

    def flush(self, timeout_s: float) -> None:
        """Return once every message sent so far is acknowledged; raise SourceError if any
        failed (the caller must then not commit the offsets they came from)."""
        ...

    def missing_topics(self, topics: Collection[str]) -> set[str]:
        """The topics among ``topics`` that ``send`` cannot write to because they do not exist
        and are not created on first use; checked once, before anything is consumed."""
        ...

    def close(self) -> None: ...
