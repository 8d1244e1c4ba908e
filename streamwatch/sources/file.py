"""A file source: JSON lines from a file or standard input, for users without a broker at
hand and for pipelines (``... | streamwatch run --config file.yaml``)."""

from __future__ import annotations

import os
import select
import sys
import time

from streamwatch.records import Record
from streamwatch.sources import Offsets, Partition, PartitionEvent

_CHUNK = 1 << 16


class FileSource:
    """Hands out lines as records (topic = the path, partition 0, offset = line number).

    Reads the file descriptor directly, without blocking past ``timeout_ms``: a pipe that
    delivers a few lines and then waits yields those lines now, and an idle pipe lets the
    run loop turn (health, reloads, signals) instead of hanging in a read.
    """

    def __init__(self, path: str, batch_size: int = 2000) -> None:
        self.path = path
        self.batch_size = batch_size
        self._fd = sys.stdin.fileno() if path == "-" else os.open(path, os.O_RDONLY)
        self._buffer = b""
        self._offset = 0
        self.exhausted = False  # the daemon stops at the end of the input
        self.committed: Offsets = {}

    def poll(self, timeout_ms: int) -> list[Record]:
        records: list[Record] = []
        now_ms = int(time.time() * 1000)
        wait = timeout_ms / 1000.0
        while len(records) < self.batch_size and not self.exhausted:
            if b"\n" not in self._buffer:
                ready, _, _ = select.select([self._fd], [], [], wait)
                if not ready:
                    break  # nothing more for now
                chunk = os.read(self._fd, _CHUNK)
                if not chunk:
                    self.exhausted = True
                    if self._buffer.strip():  # a last line without its newline
                        self._buffer += b"\n"
                    else:
                        break
                self._buffer += chunk
            wait = 0.0  # block only for the first line of a batch
            line, sep, rest = self._buffer.partition(b"\n")
            if not sep:
                continue
            self._buffer = rest
            self._offset += 1
            line = line.rstrip(b"\r")
            if line.strip():
                records.append(Record(self.path, 0, self._offset, now_ms, None, line))
        return records

    def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)  # nothing to acknowledge: kept for inspection

    def assignment(self) -> set[Partition]:
        return {(self.path, 0)}

    def events(self) -> list[PartitionEvent]:
        return []  # a file is never taken away: its streams are keyed by a lazy partition id

    def committed_offsets(self, partitions: set[Partition]) -> Offsets:
        return {}

    def start(self, offsets: dict[Partition, int | None]) -> None:
        pass  # never assigned: nothing to start

    def unreadable_topics(self) -> dict[str, str]:
        return {}  # a file, not topics

    def reachable(self) -> bool:
        return True  # no broker

    def lag(self) -> dict[Partition, int]:
        return {}

    def close(self) -> None:
        if self.path != "-":
            os.close(self._fd)
