"""One batch of readings -> verdicts: gather state, step the model, score, scatter (pure).

A batch may hold several readings of one stream.  They are stepped in *waves*: wave k holds
each stream's k-th reading of the batch, so a stream advances one step per wave, in order, and
every wave is one batched model call (split into chunks of ``max_rows``).

>>> import numpy as np
>>> from streamwatch.engine import waves
>>> [w.tolist() for w in waves(np.array([7, 3, 7, 7, 3, 5]))]
[[0, 1, 5], [2, 4], [3]]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamwatch.model.artifact import ModelSpec
from streamwatch.normalize import COUNT
from streamwatch.scoring import Scorer
from streamwatch.state import StateStore


class StepModel(Protocol):
    spec: ModelSpec

    def step(
        self, x: np.ndarray, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Verdicts:
    """Results aligned with the batch's input order (arrays, not per-reading objects)."""

    prediction: np.ndarray  # forecast of this reading made at the stream's previous reading
    scale: np.ndarray
    score: np.ndarray  # in [0, 1]; 0 during warm-up
    anomaly: np.ndarray  # bool
    seen: np.ndarray  # readings of the stream so far, this one included


def waves(slots: np.ndarray) -> list[np.ndarray]:
    """Positions of ``slots`` grouped so that each slot appears at most once per group,
    groups in occurrence order and positions ascending within a group."""
    n = len(slots)
    if n == 0:
        return []
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.r_[True, sorted_slots[1:] != sorted_slots[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - group_start
    if rank.max() == 0:  # the common case: every stream once
        return [np.arange(n)]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(1, rank.max() + 1))
    return np.split(by_rank, bounds)


class Engine:
    def __init__(
        self, model: StepModel, store: StateStore, scorer: Scorer, max_rows: int = 512
    ) -> None:
        self.model, self.store, self.scorer = model, store, scorer
        self.normalizer = model.spec.normalization
        self.n_features = len(model.spec.features)
        self.max_rows = max_rows
        self.model_calls = 0
        self.model_seconds = 0.0  # cumulative time inside the model, for metrics

    def process(
        self,
        stream_ids: list[str],
        values: np.ndarray,
        now: float,
        covariates: np.ndarray | None = None,
    ) -> Verdicts:
        """Step each reading through its stream's state; ``covariates`` is (n, features - 1)
        for models that take them."""
        n = len(stream_ids)
        values = np.asarray(values, np.float64)
        n_cov = self.n_features - 1
        if n_cov and (covariates is None or covariates.shape != (n, n_cov)):
            raise ValueError(f"this model takes {n_cov} covariates per reading")
        x = np.empty((n, 1 + n_cov), np.float32)
        if n_cov:
            x[:, 1:] = covariates
        out = Verdicts(
            prediction=np.empty(n),
            scale=np.empty(n),
            score=np.empty(n),
            anomaly=np.empty(n, bool),
            seen=np.empty(n, np.int64),
        )
        slots = self.store.assign(stream_ids, now)
        for wave in waves(slots):
            for start in range(0, len(wave), self.max_rows):
                self._step(wave[start : start + self.max_rows], slots, values, x, out)
        return out

    def _step(
        self,
        pos: np.ndarray,
        slots: np.ndarray,
        values: np.ndarray,
        inputs: np.ndarray,
        out: Verdicts,
    ) -> None:
        store, s, x = self.store, slots[pos], values[pos]
        prediction, scale = store.pred[s, 0], store.pred[s, 1]
        score_stats = store.scores[s]
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.abs(x - prediction) / scale  # NaN until the stream has a forecast
        score, flag = self.scorer.update(score_stats, error)
        store.scores[s] = score_stats
        stats = store.norm[s]  # a gathered copy, written back below
        x_in = inputs[pos]
        x_in[:, 0] = self.normalizer.update(stats, x)
        t0 = time.perf_counter()
        mu, sigma, new_state = self.model.step(x_in, store.state[s])
        self.model_seconds += time.perf_counter() - t0
        self.model_calls += 1
        store.state[s] = new_state
        store.norm[s] = stats
        nxt, nxt_scale = self.normalizer.denormalize(stats, mu[:, 0], sigma[:, 0])
        store.pred[s, 0], store.pred[s, 1] = nxt, nxt_scale
        seen = stats[:, COUNT].astype(np.int64)
        out.prediction[pos], out.scale[pos], out.score[pos] = prediction, scale, score
        out.seen[pos] = seen
        out.anomaly[pos] = flag
