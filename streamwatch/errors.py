"""One exception tree for streamwatch; each class says what the caller should do.

::

    StreamwatchError
    ├── ConfigError        bad configuration: exit 78 (EX_CONFIG), name the key path
    ├── InvalidSetting     a core object's setting out of range (also a ValueError); the
    │                      config loader turns it into a ConfigError at the setting's key
    ├── ModelError         a model artifact is refused at load: name the file and the reason
    ├── DecodeError        one record is unusable: dead-letter it with ``reason``, carry on
    ├── SourceError        an I/O edge failed; ``retriable`` says whether to try again
    └── CheckpointError    a state checkpoint segment is unusable (checkpoint.py): restore
                           falls back to an older one, or starts the streams cold
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


class InvalidSetting(StreamwatchError, ValueError):
    """A setting of a core object (Scorer, TimePolicy, Normalizer, TrainConfig) is invalid.
    ``key`` is its name as the config file spells it (``scoring.threshold``), so that the
    loader can name the key path under which the section was read without parsing text."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key = key
        self.message = message


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
