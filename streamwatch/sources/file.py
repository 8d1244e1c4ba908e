"""A file source: JSON lines from a file or standard input, for users without a broker at
hand and for pipelines (``... | streamwatch run --config file.yaml``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from streamwatch.records import Record
from streamwatch.sources import Offsets, Partition


class FileSource:
    """Hands out lines as records (topic = the path, partition 0, offset = line number)."""

    def __init__(self, path: str, batch_size: int = 2000) -> None:
        self.path = path
        self.batch_size = batch_size
        # a long-lived handle, closed in close()
        self._file: BinaryIO = sys.stdin.buffer if path == "-" else Path(path).open("rb")  # noqa: SIM115
        self._offset = 0
        self.exhausted = False  # the daemon stops at the end of the input
        self.committed: Offsets = {}

    def poll(self, timeout_ms: int) -> list[Record]:
        records: list[Record] = []
        now_ms = int(time.time() * 1000)
        while len(records) < self.batch_size:
            line = self._file.readline()
            if not line:
                self.exhausted = True
                break
            self._offset += 1
            line = line.rstrip(b"\r\n")
            if line.strip():
                records.append(Record(self.path, 0, self._offset, now_ms, None, line))
        return records

    def commit(self, offsets: Offsets) -> None:
        self.committed.update(offsets)  # nothing to acknowledge: kept for inspection

    def assignment(self) -> set[tuple[str, int]]:
        return {(self.path, 0)}

    def on_revoke(self, callback: Callable[[set[Partition]], None]) -> None:
        pass  # a file is never taken away

    def lag(self) -> dict[Partition, int]:
        return {}

    def close(self) -> None:
        if self._file is not sys.stdin.buffer:
            self._file.close()
