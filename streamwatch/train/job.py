"""A training job from YAML and command-line flags, validated like the daemon's config.

::

    data:
      paths: [history.csv]
      targets: [0]         # .npy: the predicted column(s); several make a multivariate model
      covariates: false    # .npy: the other columns come along as covariates
    out: models/mine
    train:
      hidden_size: 32
      epochs: 30
      normalization: {window: 1000}

Flags given on the command line override the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamwatch.config import build, read_yaml
from streamwatch.errors import ConfigError
from streamwatch.train.fit import TrainConfig


@dataclass(frozen=True)
class DataConfig:
    paths: tuple[str, ...]
    targets: tuple[int, ...] = (0,)
    covariates: bool = False

    def check(self, path: str) -> None:
        if not self.paths:
            raise ConfigError(f"{path}.paths", "at least one data file is required")
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"{path}.targets", "distinct column numbers, at least one")


@dataclass(frozen=True)
class TrainJob:
    data: DataConfig
    out: str
    train: TrainConfig = field(default_factory=TrainConfig)


def load_job(path: str | None, overrides: dict[str, Any]) -> TrainJob:
    """``overrides`` maps dotted keys (``train.epochs``) to values; None means not given."""
    raw = read_yaml(path) if path else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("", f"{path}: top level must be a mapping")
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(key, "expected a mapping")
        node[leaf] = value
    job: TrainJob = build(TrainJob, raw, "")
    return job
