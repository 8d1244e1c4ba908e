"""Per-stream online normalisation, shared bit for bit by training and serving.

One model serves streams whose scales differ by orders of magnitude, so each stream is
normalised by its own running location and spread.  The statistics are learned online (a new
stream starts from nothing), follow slow change (exponential weighting over ``window``
readings) and resist outliers: after ``warmup`` readings each deviation is winsorised to
``clip`` standard deviations before it updates them, so one spike moves the mean by at most
``clip * std / window``.

The state of one stream is three float64 numbers ``(count, mean, var)``; arrays of them are
updated for a whole batch at once.

The model's ``mu`` is its input plus a predicted change (``train/module.py``).  ``base``
says what that change is added to in raw units.  ``"reading"`` (what training writes now):
the forecast is the current reading plus the change times the spread, and the training
target is the change itself, ``(x[t+1] - x[t]) / std``, so the forecast is never pulled
towards the running mean.  ``"mean"`` (models trained before): the forecast is
``mean + mu * std``, where ``mu`` starts from the input *clipped* to ``clip`` deviations, so
after a step far outside the stream's spread (a piecewise-constant telemetry channel that
jumps) the forecast trailed the reading by the part of the step beyond the clip.

>>> norm = Normalizer(window=100, clip=4.0, warmup=5)
>>> stats = norm.new_stats(1)
>>> zs = [float(norm.update(stats, np.array([x]))[0]) for x in [10.0, 12.0, 11.0, 9.0, 10.0]]
>>> round(float(stats[0, 1]), 6), int(stats[0, 0])
(10.4, 5)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamwatch.errors import InvalidSetting

COUNT, MEAN, VAR = 0, 1, 2


@dataclass(frozen=True)
class Normalizer:
    window: int = 1000  # readings; the effective memory of the running statistics
    clip: float = 5.0  # |z| bound for model inputs and for updates after warm-up
    warmup: int = 20  # readings of plain running mean/variance before winsorising starts
    target_clip: float = 20.0  # |z| bound for training targets, so outliers do not dominate
    rel_floor: float = 1e-4  # std floor relative to |mean|: a constant stream is not 0/0
    base: str = "reading"  # what the predicted change is added to: "reading" or "mean"

    def __post_init__(self) -> None:
        if self.window < 2:
            raise InvalidSetting("normalization.window", "must be >= 2")
        if self.clip <= 0:
            raise InvalidSetting("normalization.clip", "must be > 0")
        if self.target_clip <= 0:
            raise InvalidSetting("normalization.target_clip", "must be > 0")
        if self.warmup < 2:
            raise InvalidSetting("normalization.warmup", "must be >= 2")
        if self.base not in ("reading", "mean"):
            raise InvalidSetting("normalization.base", "must be 'reading' or 'mean'")

    def to_dict(self) -> dict[str, Any]:
        return {"method": "ew_winsorized", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        d = dict(d)
        method = d.pop("method", "ew_winsorized")
        if method != "ew_winsorized":
            raise ValueError(f"unknown normalization method {method!r}")
        d.setdefault("base", "mean")  # written before "base" existed: the old denormalisation
        return cls(**d)

    @staticmethod
    def new_stats(n: int) -> np.ndarray:
        return np.zeros((n, 3), dtype=np.float64)

    def std(self, stats: np.ndarray) -> np.ndarray:
        mean, var = stats[:, MEAN], stats[:, VAR]
        floor = self.rel_floor * np.abs(mean) + 1e-12
        return np.sqrt(var + floor * floor)

    def update(self, stats: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Fold readings ``x`` (one per row) into ``stats`` in place; return the model inputs.

        The returned z uses the statistics *after* this reading, clipped to ``clip``.
        """
        count, mean, var = stats[:, COUNT], stats[:, MEAN], stats[:, VAR]
        n = count + 1.0
        delta = x - mean
        # Winsorise the update only once the spread estimate means something.
        bound = self.clip * self.std(stats)
        delta = np.where(count >= self.warmup, np.clip(delta, -bound, bound), delta)
        alpha = 1.0 / np.minimum(n, self.window)
        mean = mean + alpha * delta
        var = (1.0 - alpha) * (var + alpha * delta * delta)
        stats[:, COUNT], stats[:, MEAN], stats[:, VAR] = n, mean, var
        return self.z(stats, x, self.clip)

    def z(self, stats: np.ndarray, x: np.ndarray, clip: float) -> np.ndarray:
        z = (x - stats[:, MEAN]) / self.std(stats)
        return np.clip(z, -clip, clip)

    def denormalize(
        self,
        stats: np.ndarray,
        mu: np.ndarray,
        sigma: np.ndarray,
        x: np.ndarray,
        z_in: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Model outputs in z units of ``stats`` -> prediction and scale in raw units, given the
        reading ``x`` and the model input ``z_in`` it became (see ``base``)."""
        std = self.std(stats)
        if self.base == "reading":
            return x + (mu - z_in) * std, sigma * std
        return stats[:, MEAN] + mu * std, sigma * std

    def sequence(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise whole series ``x`` of shape (streams, time) as serving would.

        Returns (inputs, targets): ``inputs[:, t]`` is z of reading t; ``targets[:, t]`` is
        what ``mu`` should be at t (NaN for the last t): with ``base`` "reading", the input
        plus the change to reading t+1 in units of the spread after reading t; with "mean",
        reading t+1 in the z units of the statistics after reading t.  Either is clipped to
        ``target_clip``.
        """
        n_streams, length = x.shape
        stats = self.new_stats(n_streams)
        inputs = np.empty((n_streams, length), dtype=np.float32)
        targets = np.full((n_streams, length), np.nan, dtype=np.float32)
        for t in range(length):
            inputs[:, t] = self.update(stats, x[:, t])
            if t + 1 < length:
                if self.base == "reading":
                    change = (x[:, t + 1] - x[:, t]) / self.std(stats)
                    bound = self.target_clip
                    targets[:, t] = inputs[:, t] + np.clip(change, -bound, bound)
                else:
                    targets[:, t] = self.z(stats, x[:, t + 1], self.target_clip)
        return inputs, targets
