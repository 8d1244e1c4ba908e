"""An in-memory sink for unit tests."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from streamwatch.records import Outgoing
from streamwatch.sinks import DENIED, MISSING


class MemorySink:
    def __init__(self, existing: Iterable[str] | None = None, denied: Iterable[str] = ()) -> None:
        """``existing``: the topics the twin's broker has; None: any topic, as on a broker that
        creates topics on first use.  ``denied``: topics its ACLs do not let us write to."""
        self.existing = None if existing is None else set(existing)
        self.denied = set(denied)
        self.pending: list[Outgoing] = []
        self.delivered: list[Outgoing] = []
        self.flushes = 0

    def send(self, message: Outgoing) -> None:
        # kafka-python's producer refuses these; the twin must too, or tests miss it
        if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in message.headers):
            raise TypeError("All headers items must be (str, bytes) tuples")
        self.pending.append(message)

    def flush(self, timeout_s: float) -> None:
        self.delivered.extend(self.pending)
        self.pending.clear()
        self.flushes += 1

    def topic(self, name: str) -> list[Outgoing]:
        return [m for m in self.delivered if m.topic == name]

    def unwritable_topics(self, topics: Collection[str]) -> dict[str, str]:
        out = {t: DENIED for t in topics if t in self.denied}
        if self.existing is not None:
            out.update({t: MISSING for t in topics if t not in self.existing and t not in out})
        return out

    def close(self) -> None:
        self.flush(0)
