"""An in-memory sink for unit tests."""

from __future__ import annotations

from streamwatch.records import Outgoing


class MemorySink:
    def __init__(self) -> None:
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

    def close(self) -> None:
        self.flush(0)
