"""Where verdicts and dead letters go: small interfaces with in-memory twins."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from streamwatch.records import Outgoing

MISSING = "missing"
DENIED = "denied"


class Sink(Protocol):
    def send(self, message: Outgoing) -> None: ...

    def flush(self, timeout_s: float) -> None:
        """Return once every message sent so far is acknowledged; raise SourceError if any
        failed (the caller must then not commit the offsets they came from)."""
        ...

    def unwritable_topics(self, topics: Collection[str]) -> dict[str, str]:
        """The topics among ``topics`` that ``send`` cannot write to, each with why: MISSING
        (it does not exist and is not created on first use) or DENIED (the broker's ACLs do
        not let this client write to it).  Checked once, before anything is consumed."""
        ...

    def close(self) -> None: ...
