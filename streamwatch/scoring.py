"""Forecast error -> anomaly score -> verdict, vectorised over a batch (pure).

The score of a reading is its distance from the forecast in units of the forecast's own scale,
``|x - prediction| / scale``: the model says how sure it is at each step, so a volatile
stretch needs a larger miss than a calm one.  Thresholding is a separate step, and no verdict
is given while a stream is in warm-up (its LSTM state and statistics are still forming).

>>> s = Scorer(threshold=4.0, warmup=2)
>>> score = s.score(np.array([1.0, 9.0, 9.0]), np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0]))
>>> score.tolist()
[0.0, 8.0, 8.0]
>>> s.flag(score, seen=np.array([5, 5, 1])).tolist()
[False, True, False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scorer:
    threshold: float = 6.0  # in forecast-scale units
    warmup: int = 300  # readings per stream before it can be flagged

    def score(self, x: np.ndarray, prediction: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Deviation in scale units; 0 where the stream had no forecast yet."""
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.abs(x - prediction) / scale
        return np.nan_to_num(score, nan=0.0, posinf=np.finfo(np.float64).max)

    def flag(self, score: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """``seen`` counts the stream's readings including this one."""
        return (score >= self.threshold) & (seen > self.warmup)
