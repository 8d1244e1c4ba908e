"""The small frozen records that cross module boundaries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Record(NamedTuple):
    """A consumed message, field for field what kafka-python's ConsumerRecord carries that
    streamwatch uses; in-memory and file sources produce the same shape."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch, as Kafka stores it
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()  # a Kafka header's value may be null


class Outgoing(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()
