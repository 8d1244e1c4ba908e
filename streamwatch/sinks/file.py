"""A file sink: verdicts as JSON lines to a file or standard output; dead letters as JSON
lines (reason, source position, original bytes) to another file or standard error."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TextIO

from streamwatch.records import Outgoing


class FileSink:
    def __init__(
        self, path: str = "-", dead_letter_path: str = "-", dead_letter_topic: str = ""
    ) -> None:
        # long-lived handles, closed in close()
        self._out: TextIO = sys.stdout if path == "-" else Path(path).open("a", encoding="utf-8")  # noqa: SIM115
        self._dead: TextIO = (
            sys.stderr
            if dead_letter_path == "-"
            else Path(dead_letter_path).open("a", encoding="utf-8")  # noqa: SIM115
        )
        self.dead_letter_topic = dead_letter_topic

    def send(self, message: Outgoing) -> None:
        if message.topic == self.dead_letter_topic:
            headers = {k: v.decode("utf-8", "replace") for k, v in message.headers}
            line = {
                "dead_letter": headers.pop("streamwatch.reason", ""),
                "detail": headers.pop("streamwatch.detail", ""),
                "source": headers.pop("streamwatch.topic", ""),
                "line": int(headers.pop("streamwatch.offset", "0") or 0),
                "value": message.value.decode("utf-8", "replace"),
            }
            self._dead.write(json.dumps(line) + "\n")
        else:
            self._out.write(message.value.decode() + "\n")

    def flush(self, timeout_s: float) -> None:
        self._out.flush()
        self._dead.flush()

    def unwritable_topics(self, topics: Collection[str]) -> dict[str, str]:
        return {}  # topics are only labels here: every output goes to a file

    def close(self) -> None:
        self.flush(0)
        for f in (self._out, self._dead):
            if f not in (sys.stdout, sys.stderr):
                f.close()
