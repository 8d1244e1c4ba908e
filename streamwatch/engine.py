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

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamwatch import serve
from streamwatch.errors import InvalidSetting
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

    prediction: np.ndarray  # (n, targets): forecast made at the stream's previous reading
    scale: np.ndarray  # (n, targets)
    score: np.ndarray  # in [0, 1]; 0 during warm-up
    anomaly: np.ndarray  # bool
    skipped: np.ndarray  # bool: out of order, not stepped (policy "skip")


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


@dataclass(frozen=True)
class TimePolicy:
    """What to do with a reading older than its stream's last one, and after a long gap.

    ``out_of_order``: "skip" leaves the state alone and marks the reading skipped (the daemon
    dead-letters it); "accept" steps it anyway.  ``max_gap_seconds``: a longer silence is a
    gap; ``on_gap``: "reset" starts the LSTM state over (the old context no longer applies;
    the running statistics stay) and gives the reading no score, "carry" carries on.
    """

    out_of_order: str = "skip"
    max_gap_seconds: float | None = None
    on_gap: str = "reset"

    def __post_init__(self) -> None:
        if self.out_of_order not in ("skip", "accept"):
            raise InvalidSetting("state.out_of_order", "must be 'skip' or 'accept'")
        if self.on_gap not in ("reset", "carry"):
            raise InvalidSetting("state.on_gap", "must be 'reset' or 'carry'")
        if self.max_gap_seconds is not None and self.max_gap_seconds <= 0:
            raise InvalidSetting("state.max_gap_seconds", "must be > 0")


class Engine:
    def __init__(
        self,
        model: StepModel,
        store: StateStore,
        scorer: Scorer,
        max_rows: int = 512,
        policy: TimePolicy | None = None,
    ) -> None:
        self.model, self.store, self.scorer = model, store, scorer
        self.policy = policy or TimePolicy()
        self.normalizer = model.spec.normalization
        self.n_features = len(model.spec.features)
        self.n_targets = len(model.spec.targets)
        if (store.state_size, store.n_targets) != (model.spec.state_size, self.n_targets):
            raise ValueError("the state store is not shaped for this model")
        store.set_window(scorer.window_width)
        store.set_envelopes(model.spec.envelopes())
        self.max_rows = max_rows
        self.moved_streams = 0  # readings of a stream held for another partition

    def replace_model(self, model: StepModel) -> None:
        """Serve ``model`` from the next batch on; the caller has checked that the state
        layout, features and targets are the same."""
        self.model = model
        self.normalizer = model.spec.normalization
        self.store.set_envelopes(model.spec.envelopes())

    def process(
        self,
        stream_ids: list[str],
        values: np.ndarray,
        now: float,
        covariates: np.ndarray | None = None,
        owners: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
    ) -> Verdicts:
        """Step each reading through its stream's state.  ``values`` is (n,) or (n, targets);
        ``covariates`` is (n, features - targets) for models that take them; ``owners``
        (n,) ints say which source partition each reading came from; ``timestamps`` (n,)
        epoch seconds enable the out-of-order and gap policies."""
        n, n_t = len(stream_ids), self.n_targets
        values = np.asarray(values, np.float64).reshape(n, -1)
        if values.shape[1] != n_t:
            raise ValueError(f"this model predicts {n_t} value(s) per reading")
        n_cov = self.n_features - n_t
        if n_cov and (covariates is None or covariates.shape != (n, n_cov)):
            raise ValueError(f"this model takes {n_cov} covariates per reading")
        x = np.empty((n, self.n_features), np.float32)
        if n_cov:
            x[:, n_t:] = covariates
        out = Verdicts(
            prediction=np.empty((n, n_t)),
            scale=np.empty((n, n_t)),
            score=np.empty(n),
            anomaly=np.empty(n, bool),
            skipped=np.zeros(n, bool),
        )
        ts = None if timestamps is None else np.asarray(timestamps, np.float64)
        slots = self.store.assign(stream_ids, now)
        if owners is not None:
            # a stream's readings all arrive on one partition (keyed by stream id): one seen on
            # another moves its state there, and is counted
            before = self.store.owner[slots]
            self.moved_streams += int(np.count_nonzero((before >= 0) & (before != owners)))
            self.store.owner[slots] = owners
        for wave in waves(slots):
            for start in range(0, len(wave), self.max_rows):
                pos = wave[start : start + self.max_rows]
                if ts is not None:
                    pos = self._apply_time_policy(pos, slots, ts, out)
                if len(pos):
                    self._step(pos, slots, values, x, out)
        return out

    def _apply_time_policy(
        self, pos: np.ndarray, slots: np.ndarray, ts: np.ndarray, out: Verdicts
    ) -> np.ndarray:
        """Positions of ``pos`` to step; skipped ones are marked in ``out``."""
        store, policy, s, t = self.store, self.policy, slots[pos], ts[pos]
        last = store.last_ts[s]
        late = t < last  # NaN (a new stream) compares False
        if late.any() and policy.out_of_order == "skip":
            skip = pos[late]
            out.skipped[skip] = True
            out.anomaly[skip] = False
            out.score[skip] = 0.0
            out.prediction[skip] = out.scale[skip] = np.nan
            pos, s, t, last = pos[~late], s[~late], t[~late], last[~late]
        if policy.max_gap_seconds is not None and policy.on_gap == "reset":
            gap = s[(t - last) > policy.max_gap_seconds]
            if len(gap):
                store.state[gap] = 0.0
                store.forecast[gap] = store.scale[gap] = np.nan  # no score across the gap
                store.serve[gap, serve.MODEL] = store.serve[gap, serve.PREVIOUS] = np.nan
        store.last_ts[s] = np.fmax(last, t)
        return pos

    def _step(
        self,
        pos: np.ndarray,
        slots: np.ndarray,
        values: np.ndarray,
        inputs: np.ndarray,
        out: Verdicts,
    ) -> None:
        store, s, x, n_t = self.store, slots[pos], values[pos], self.n_targets
        prediction, scale = store.forecast[s], store.scale[s]
        score_stats = store.scores[s].astype(np.float64)  # computed in double, kept in single
        with np.errstate(invalid="ignore", divide="ignore"):
            # NaN until the stream has a forecast; several targets: their root mean square
            miss = x - prediction
            error = np.sqrt(np.mean((miss / scale) ** 2, axis=1))
            raw = np.sqrt(np.mean(miss**2, axis=1))  # for the novelty gate: the stream's units
        outside = None
        if self.scorer.envelope is not None:
            bounds = store.envelope[s]
            outside = self.scorer.outside(x, bounds)
            store.envelope[s] = bounds
        if self.scorer.window is not None:
            wstats = store.window_stats[s].astype(np.float64)
            over = self.scorer.window_test(store.window, s, wstats, raw)
            store.window_stats[s] = wstats
            outside = over if outside is None else outside | over
        score, flag = self.scorer.update(score_stats, error, raw, outside)
        store.scores[s] = score_stats
        stats = store.norm[s].reshape(-1, 3)  # a gathered copy, written back below
        x_in = inputs[pos]
        x_in[:, :n_t] = self.normalizer.update(stats, x.reshape(-1)).reshape(-1, n_t)
        mu, sigma, new_state = self.model.step(x_in, store.state[s])
        store.state[s] = new_state
        store.norm[s] = stats.reshape(-1, n_t, 3)
        nxt, nxt_scale = self.normalizer.denormalize(
            stats, mu.reshape(-1), sigma.reshape(-1), x.reshape(-1), x_in[:, :n_t].reshape(-1)
        )
        seen = stats[::n_t, COUNT].astype(np.int64)
        rows = store.serve[s]  # a gathered copy, written back below
        store.forecast[s] = serve.step(rows, x, nxt.reshape(-1, n_t), seen)
        store.scale[s] = nxt_scale.reshape(-1, n_t)
        store.serve[s] = rows
        out.prediction[pos], out.scale[pos], out.score[pos] = prediction, scale, score
        out.anomaly[pos] = flag
