"""One exception tree for streamwatch; each class says what the caller should do.

::

    StreamwatchError
    ├── ConfigError        bad configuration: exit 78 (EX_CONFIG), name the key path
    ├── ModelError         a model artifact is refused at load: name the file and the reason
    ├── DecodeError        one record is unusable: dead-letter it with ``reason``, carry on
    └── SourceError        an I/O edge failed; ``retriable`` says whether to try again
"""

from __future__ import annotations


class StreamwatchError(Exception):
    """Root of every error streamwatch raises on purpose."""


class ConfigError(StreamwatchError):
    """A configuration value is missing, unknown or invalid; ``path`` is the key path."""

    exit_code = 78  # EX_CONFIG from sysexits.h, as systemd and Vector use it

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ModelError(StreamwatchError):
    """A model artifact cannot be served as it is."""


class DecodeError(StreamwatchError):
    """A record cannot become an observation; ``reason`` is a short, bounded label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SourceError(StreamwatchError):
    """Reading from or writing to an edge failed."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
